#ifndef TS_ENGINE_CLOCK_H
#define TS_ENGINE_CLOCK_H

#include <stdbool.h>

/* Seconds for measuring intervals. In the engine, the lowest layer, so the
 * profiler, the metrics writer, the watchdog, the GEMM peak probe and the
 * benchmarks all read time the same way. */

/* Monotonic wall time: unaffected by clock adjustments, for durations and
 * rates. */
double ts_monotonic_seconds(void);

/* CPU time of this process: steadier than wall time when other processes
 * share the cores (it excludes time spent waiting for one). */
double ts_process_cpu_seconds(void);

/* One of the two, chosen at run time (the benchmarks' and the profiler's
 * BENCH_CLOCK=cpu). */
double ts_clock_seconds(bool process_cpu);

/* Whether the environment asks the benchmarks for the process's CPU time
 * (BENCH_CLOCK=cpu) rather than wall time. */
bool ts_clock_cpu_requested(void);

#endif
