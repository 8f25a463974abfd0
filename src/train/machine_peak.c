#include "train/machine_peak.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/real.h"

double ts_measure_peak_gflops(void) {
    /* One untimed GEMM first: it pays the page faults of the three buffers and
     * wakes the BLAS (and the core's clock) up. Then the best of as many
     * GEMMs as fit in PROBE_SECONDS (at least MIN_REPS): a peak read during
     * a moment of contention with another process would make every later
     * step look faster than "the machine's peak" (an MFU above 100% was seen
     * with the earlier four-GEMM probe on a shared machine). */
    enum { N = 768, MIN_REPS = 5, MAX_REPS = 64 };
    const double PROBE_SECONDS = 0.25;
    ts_real *a = malloc(sizeof(ts_real) * N * N), *b = malloc(sizeof(ts_real) * N * N),
            *c = malloc(sizeof(ts_real) * N * N);
    double best = 0;
    if (a && b && c) {
        for (long i = 0; i < (long)N * N; i++) {
            a[i] = (ts_real)((i % 7) - 3) * (ts_real)0.1;
            b[i] = (ts_real)((i % 5) - 2) * (ts_real)0.1;
        }
        ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c, N);
        double start = ts_monotonic_seconds();
        for (int r = 0; r < MAX_REPS; r++) {
            double t0 = ts_monotonic_seconds();
            ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c,
                          N);
            double t1 = ts_monotonic_seconds();
            if (t1 > t0) {
                double rate = 2.0 * N * N * N / (t1 - t0) / 1e9;
                if (rate > best) best = rate;
            }
            if (r + 1 >= MIN_REPS && t1 - start >= PROBE_SECONDS) break;
        }
    }
    free(a);
    free(b);
    free(c);
    return best; /* 0: the buffers could not be allocated */
}

bool ts_blas_core_advice(const char *core, bool cpu_avx2, bool cpu_avx512f, char *advice,
                         size_t len) {
    /* OpenBLAS's x86 kernel sets without AVX (its cpuid tables' names). */
    static const char *const sse_only[] = {"Prescott",  "Core2",  "Penryn",  "Dunnington",
                                           "Nehalem",   "Atom",   "Katmai",  "Coppermine",
                                           "Northwood", "Banias", "Opteron", "Barcelona"};
    if (!core || !(cpu_avx2 || cpu_avx512f)) return false;
    bool old = false;
    for (size_t i = 0; i < sizeof sse_only / sizeof sse_only[0]; i++)
        old = old || !strcmp(core, sse_only[i]);
    if (!old) return false;
    snprintf(advice, len,
             "OpenBLAS chose its %s kernels on a CPU with %s: GEMM runs several times below "
             "what this CPU can do, and MFU is measured against that slow rate. Set "
             "OPENBLAS_CORETYPE=%s before starting for the vector kernels (docs/performance.md)",
             core, cpu_avx512f ? "AVX-512" : "AVX2", cpu_avx512f ? "SkylakeX" : "Haswell");
    return true;
}

bool ts_blas_core_advice_here(char *advice, size_t len) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return ts_blas_core_advice(openblas_get_corename(), __builtin_cpu_supports("avx2"),
                               __builtin_cpu_supports("avx512f"), advice, len);
#else
    (void)advice;
    (void)len;
    return false;
#endif
}
