/* The engine's clocks (src/engine/clock.c): monotonic seconds follow a sleep,
 * and the process's CPU seconds follow work done but not time spent asleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "engine/clock.h"

static void sleep_seconds(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static void monotonic_follows_a_sleep(void **state) {
    (void)state;
    double t0 = ts_monotonic_seconds();
    sleep_seconds(0.05);
    double t1 = ts_monotonic_seconds();
    assert_true(t1 - t0 >= 0.049);
    assert_true(t1 - t0 < 5.0);
    assert_true(ts_monotonic_seconds() >= t1);
}

static void cpu_time_counts_work_not_sleep(void **state) {
    (void)state;
    double c0 = ts_process_cpu_seconds();
    sleep_seconds(0.2);
    double c1 = ts_process_cpu_seconds();
    assert_true(c1 >= c0);
    assert_true(c1 - c0 < 0.1);
    /* Busy until 0.02 s of CPU time has been used: terminates only if the
     * clock advances with work. */
    volatile double sink = 0;
    double w0 = ts_monotonic_seconds();
    while (ts_process_cpu_seconds() - c1 < 0.02) {
        for (int i = 0; i < 100000; i++) sink += i * 1e-9;
        assert_true(ts_monotonic_seconds() - w0 < 60.0);
    }
    assert_true(sink > 0);
}

static void chosen_clock_is_the_one_asked_for(void **state) {
    (void)state;
    /* After a sleep the wall clock is well ahead of the CPU clock's advance. */
    double w0 = ts_clock_seconds(false), c0 = ts_clock_seconds(true);
    sleep_seconds(0.1);
    double w1 = ts_clock_seconds(false), c1 = ts_clock_seconds(true);
    assert_true(w1 - w0 >= 0.099);
    assert_true(c1 - c0 < 0.05);
    assert_true(ts_monotonic_seconds() >= w1);
}

/* BENCH_CLOCK=cpu and nothing else asks the benchmarks for CPU time. */
static void cpu_clock_requested_by_bench_clock_only(void **state) {
    (void)state;
    assert_int_equal(unsetenv("BENCH_CLOCK"), 0);
    assert_false(ts_clock_cpu_requested());
    assert_int_equal(setenv("BENCH_CLOCK", "cpu", 1), 0);
    assert_true(ts_clock_cpu_requested());
    assert_int_equal(setenv("BENCH_CLOCK", "wall", 1), 0);
    assert_false(ts_clock_cpu_requested());
    assert_int_equal(setenv("BENCH_CLOCK", "cpux", 1), 0);
    assert_false(ts_clock_cpu_requested());
    assert_int_equal(unsetenv("BENCH_CLOCK"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(monotonic_follows_a_sleep),
        cmocka_unit_test(cpu_time_counts_work_not_sleep),
        cmocka_unit_test(chosen_clock_is_the_one_asked_for),
        cmocka_unit_test(cpu_clock_requested_by_bench_clock_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
