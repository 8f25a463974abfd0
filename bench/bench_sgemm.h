/* OpenBLAS's sgemm 768^3 (dgemm in a double build): the rate the benchmarks'
 * %sgemm figures are fractions of (bench_profile) and that bench_machine
 * sets against the multiply-add peak. */
#ifndef BENCH_SGEMM_H
#define BENCH_SGEMM_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/clock.h"
#include "engine/real.h"

enum { BENCH_SGEMM_N = 768 };

/* Best GFLOP/s of `reps` square GEMMs, each timed on the process CPU clock
 * (cpu) or the wall clock; exits naming the problem when the operands
 * cannot be allocated. */
static inline double bench_sgemm_gflops(int reps, bool cpu) {
    enum { N = BENCH_SGEMM_N };
    ts_real *a = malloc(sizeof(ts_real) * N * N), *b = malloc(sizeof(ts_real) * N * N),
            *c = malloc(sizeof(ts_real) * N * N);
    if (!a || !b || !c) {
        fprintf(stderr, "sgemm %d^3: out of memory for its operands\n", N);
        exit(1);
    }
    for (long i = 0; i < (long)N * N; i++) {
        a[i] = (ts_real)((i % 7) - 3) * (ts_real)0.1;
        b[i] = (ts_real)((i % 5) - 2) * (ts_real)0.1;
    }
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = ts_clock_seconds(cpu);
        ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c, N);
        double t = ts_clock_seconds(cpu) - t0;
        if (t > 0 && 2.0 * N * N * N / t / 1e9 > best) best = 2.0 * N * N * N / t / 1e9;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

#endif
