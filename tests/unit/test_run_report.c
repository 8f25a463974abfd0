/* src/train/run_report.c: the validation verdict of an invocation. Losses
 * must be finite; the training loss must fall over an invocation that
 * started at step 0, and a resumed one (which starts on the curve's flat
 * part, where batch-to-batch noise decides) is not asked to show it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "train/run_report.h"

static ts_run_summary invocation(long first_step, long last_step, double first_loss,
                                 double last_loss) {
    return (ts_run_summary){.first_step = first_step,
                            .last_step = last_step,
                            .first_loss = first_loss,
                            .last_loss = last_loss};
}

static void a_fresh_run_whose_loss_fell_is_valid(void **state) {
    (void)state;
    char reason[128];
    ts_run_summary s = invocation(0, 400, 5.73, 2.30);
    assert_true(ts_run_summary_valid(&s, reason, sizeof reason));
    assert_non_null(strstr(reason, "fell"));
}

static void a_fresh_run_whose_loss_rose_is_invalid(void **state) {
    (void)state;
    char reason[128];
    ts_run_summary s = invocation(0, 400, 2.20, 2.30);
    assert_false(ts_run_summary_valid(&s, reason, sizeof reason));
    assert_non_null(strstr(reason, "did not fall"));
}

static void a_resumed_tail_on_the_plateau_is_valid(void **state) {
    (void)state;
    char reason[128];
    /* The Slurm signal test's second invocation on a fast machine. */
    ts_run_summary s = invocation(338, 400, 2.1966, 2.3026);
    assert_true(ts_run_summary_valid(&s, reason, sizeof reason));
    assert_non_null(strstr(reason, "resumed at step 338"));
}

static void a_non_finite_loss_is_invalid_resumed_or_not(void **state) {
    (void)state;
    char reason[128];
    ts_run_summary fresh = invocation(0, 10, 5.0, NAN);
    ts_run_summary resumed = invocation(338, 400, INFINITY, 2.3);
    assert_false(ts_run_summary_valid(&fresh, reason, sizeof reason));
    assert_false(ts_run_summary_valid(&resumed, reason, sizeof reason));
    assert_non_null(strstr(reason, "not finite"));
}

static void one_step_is_not_asked_to_fall(void **state) {
    (void)state;
    char reason[128];
    ts_run_summary s = invocation(0, 1, 5.0, 5.0);
    assert_true(ts_run_summary_valid(&s, reason, sizeof reason));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_fresh_run_whose_loss_fell_is_valid),
        cmocka_unit_test(a_fresh_run_whose_loss_rose_is_invalid),
        cmocka_unit_test(a_resumed_tail_on_the_plateau_is_valid),
        cmocka_unit_test(a_non_finite_loss_is_invalid_resumed_or_not),
        cmocka_unit_test(one_step_is_not_asked_to_fall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
