#include "engine/clock.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static double seconds_of(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double ts_monotonic_seconds(void) {
    return seconds_of(CLOCK_MONOTONIC);
}

double ts_process_cpu_seconds(void) {
    return seconds_of(CLOCK_PROCESS_CPUTIME_ID);
}

bool ts_clock_cpu_requested(void) {
    const char *v = getenv("BENCH_CLOCK");
    return v && !strcmp(v, "cpu");
}

double ts_clock_seconds(bool process_cpu) {
    return process_cpu ? ts_process_cpu_seconds() : ts_monotonic_seconds();
}
