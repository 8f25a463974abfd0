/* The watchdog's limit (src/train/watchdog.c): a fixed train.watchdog_seconds
 * wins; by default 20 times the longest activity of the same kind so far
 * (before any of that kind: the longest of any kind), never below the 300 s
 * floor. And the thread: started, fed activities for a while below its
 * limit, it keeps quiet and stops when asked; off when configured negative. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "train/watchdog.h"

static void fixed_limit_wins(void **state) {
    (void)state;
    double longest[TS_WATCH_KINDS] = {100, 1000, 5000};
    assert_true(ts_watchdog_limit_for(7, longest, TS_WATCH_STEP) == 7);
    assert_true(ts_watchdog_limit_for(7, longest, TS_WATCH_CHECKPOINT) == 7);
}

static void derived_from_the_same_kind_with_a_floor(void **state) {
    (void)state;
    double longest[TS_WATCH_KINDS] = {0.5, 40, 0};
    /* 20 x 0.5 s is below the floor. */
    assert_true(ts_watchdog_limit_for(0, longest, TS_WATCH_STEP) == TS_WATCHDOG_FLOOR_SECONDS);
    /* 20 x 40 s of evaluation. */
    assert_true(ts_watchdog_limit_for(0, longest, TS_WATCH_EVAL) == 800);
    /* No checkpoint yet: the longest of any kind (the evaluation's 40 s). */
    assert_true(ts_watchdog_limit_for(0, longest, TS_WATCH_CHECKPOINT) == 800);
    longest[TS_WATCH_STEP] = 30;
    assert_true(ts_watchdog_limit_for(0, longest, TS_WATCH_STEP) == 600);
    double none[TS_WATCH_KINDS] = {0, 0, 0};
    assert_true(ts_watchdog_limit_for(0, none, TS_WATCH_STEP) == TS_WATCHDOG_FLOOR_SECONDS);
}

static void sleep_seconds(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static void thread_quiet_below_its_limit(void **state) {
    (void)state;
    ts_watchdog w;
    /* MPI is never called unless the limit is passed. */
    assert_true(ts_watchdog_start(&w, MPI_COMM_WORLD, 0, 0.5));
    assert_true(w.running);
    for (long step = 1; step <= 6; step++) {
        ts_watchdog_enter(&w, TS_WATCH_STEP, step, "a short step");
        ts_watchdog_note(&w, "its reduction");
        sleep_seconds(0.1);
    }
    ts_watchdog_idle(&w);
    sleep_seconds(0.8); /* idle: longer than the limit, and nothing fires */
    assert_true(w.longest[TS_WATCH_STEP] >= 0.1 && w.longest[TS_WATCH_STEP] < 0.5);
    assert_true(ts_watchdog_limit(&w, TS_WATCH_STEP) == 0.5);
    ts_watchdog_stop(&w);
    assert_false(w.running);
}

static void off_when_negative(void **state) {
    (void)state;
    ts_watchdog w;
    assert_true(ts_watchdog_start(&w, MPI_COMM_WORLD, 0, -1));
    assert_false(w.running);
    ts_watchdog_enter(&w, TS_WATCH_CHECKPOINT, 1, "nothing");
    ts_watchdog_stop(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fixed_limit_wins),
        cmocka_unit_test(derived_from_the_same_kind_with_a_floor),
        cmocka_unit_test(thread_quiet_below_its_limit),
        cmocka_unit_test(off_when_negative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
