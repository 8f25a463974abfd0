#include "train/machine_peak.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/clock.h"
#include "engine/real.h"
#include "engine/small_gemm.h"

const char *ts_peak_source_name(bool configured) {
    return configured ? "configured" : "measured";
}

double ts_peak_probe_seconds(double wall, double process_cpu) {
    /* A CPU clock coarser than the GEMM can read 0: fall back to wall time. */
    if (process_cpu <= 0) return wall;
    return process_cpu < wall ? process_cpu : wall;
}

enum { PROBE_N = 768 };
typedef void probe_gemm(const ts_real *a, const ts_real *b, ts_real *c);

static void blas_gemm(const ts_real *a, const ts_real *b, ts_real *c) {
    enum { N = PROBE_N };
    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, b, N, 0, c, N);
}

static void own_gemm(const ts_real *a, const ts_real *b, ts_real *c) {
    ts_small_gemm(false, PROBE_N, PROBE_N, PROBE_N, 1, a, PROBE_N, b, PROBE_N, 0, c, PROBE_N);
}

/* Best GFLOP/s of one kernel: one untimed GEMM first (it pays the page
 * faults of the buffers and wakes the kernel, and the core's clock, up),
 * then the best of as many as fit in PROBE_SECONDS (at least MIN_REPS).
 * Each GEMM is timed by the shorter of its wall and its process-CPU time.
 * On a shared core the wall time includes the slices given to other
 * processes, and a probe that ran during such contention (half the rate
 * when two processes share a core, seen in CI: peak 16.5 GFLOP/s where the
 * core does 31, then a measured MFU of 1.17) would make every later step
 * look faster than the machine's peak. CPU time excludes those slices;
 * with several BLAS threads it sums them, so there the wall time is the
 * shorter and is used. */
static double best_rate(probe_gemm *gemm, const ts_real *a, const ts_real *b, ts_real *c) {
    enum { N = PROBE_N, MIN_REPS = 5, MAX_REPS = 64 };
    const double PROBE_SECONDS = 0.25;
    double best = 0;
    gemm(a, b, c);
    double start = ts_monotonic_seconds();
    for (int r = 0; r < MAX_REPS; r++) {
        double wall0 = ts_monotonic_seconds(), cpu0 = ts_process_cpu_seconds();
        gemm(a, b, c);
        double wall1 = ts_monotonic_seconds(), cpu1 = ts_process_cpu_seconds();
        double seconds = ts_peak_probe_seconds(wall1 - wall0, cpu1 - cpu0);
        if (seconds > 0) {
            double rate = 2.0 * N * N * N / seconds / 1e9;
            if (rate > best) best = rate;
        }
        if (r + 1 >= MIN_REPS && wall1 - start >= PROBE_SECONDS) break;
    }
    return best;
}

double ts_measure_peak_gflops(void) {
    enum { N = PROBE_N };
    ts_real *a = malloc(sizeof(ts_real) * N * N), *b = malloc(sizeof(ts_real) * N * N),
            *c = malloc(sizeof(ts_real) * N * N);
    double best = 0;
    if (a && b && c) {
        for (long i = 0; i < (long)N * N; i++) {
            a[i] = (ts_real)((i % 7) - 3) * (ts_real)0.1;
            b[i] = (ts_real)((i % 5) - 2) * (ts_real)0.1;
        }
        double blas = best_rate(blas_gemm, a, b, c), own = best_rate(own_gemm, a, b, c);
        best = blas > own ? blas : own;
    }
    free(a);
    free(b);
    free(c);
    return best; /* 0: the buffers could not be allocated */
}

/* How wide a vector unit OpenBLAS's x86 kernel set of that name (its cpuid
 * tables' names) was written for: 0 SSE, 1 AVX, 2 AVX2, 3 AVX-512; -1 for a
 * name not listed here (another architecture, a set newer than this table),
 * which is never replaced. */
static int kernel_set_tier(const char *core) {
    static const struct {
        const char *name;
        int tier;
    } sets[] = {
        {"Prescott", 0},    {"Core2", 0},          {"Penryn", 0},     {"Dunnington", 0},
        {"Nehalem", 0},     {"Atom", 0},           {"Katmai", 0},     {"Coppermine", 0},
        {"Northwood", 0},   {"Banias", 0},         {"Opteron", 0},    {"Barcelona", 0},
        {"Sandybridge", 1}, {"Bulldozer", 1},      {"Piledriver", 1}, {"Steamroller", 1},
        {"Excavator", 1},   {"Haswell", 2},        {"Zen", 2},        {"SkylakeX", 3},
        {"Cooperlake", 3},  {"SapphireRapids", 3},
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (!strcmp(core, sets[i].name)) return sets[i].tier;
    return -1;
}

const char *ts_blas_better_core(const char *core, bool cpu_avx2, bool cpu_avx512) {
    if (!core) return NULL;
    int tier = kernel_set_tier(core);
    if (tier < 0) return NULL;
    if (cpu_avx512 && tier < 3) return "SkylakeX";
    if (cpu_avx2 && tier < 2) return "Haswell";
    return NULL;
}

bool ts_blas_core_advice(const char *core, bool cpu_avx2, bool cpu_avx512, char *advice,
                         size_t len) {
    const char *better = ts_blas_better_core(core, cpu_avx2, cpu_avx512);
    if (!better) return false;
    snprintf(advice, len,
             "OpenBLAS runs its %s kernels on a CPU with %s: GEMM runs well below what "
             "this CPU can do (1.8x on an AVX-512 CPU given AVX2 kernels, 3-5x given SSE "
             "ones), and MFU is measured against that slow rate. Set "
             "OPENBLAS_CORETYPE=%s, or leave it unset and thinkscale chooses it "
             "(docs/performance.md)",
             core, cpu_avx512 ? "AVX-512" : "AVX2", better);
    return true;
}

/* Which vector units this CPU has (x86-64 with GCC's builtins; elsewhere
 * none, so no advice and no restart). OpenBLAS's AVX-512 kernels use the F,
 * BW, DQ and VL subsets, so "AVX-512" means all four; GCC's answer also
 * requires the OS to save the vector registers. */
static void cpu_vector_units(bool *avx2, bool *avx512) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    *avx2 = __builtin_cpu_supports("avx2");
    *avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    *avx2 = *avx512 = false;
#endif
}

bool ts_blas_core_advice_here(char *advice, size_t len) {
    bool avx2, avx512;
    cpu_vector_units(&avx2, &avx512);
    return ts_blas_core_advice(openblas_get_corename(), avx2, avx512, advice, len);
}

void ts_blas_prefer_vector_kernels(char **argv) {
    /* OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads, so the
     * only way to change its choice from inside is to start again with the
     * variable set. A value the user set, even the slow one, is obeyed; and
     * since the new image finds it set, this runs at most once. */
    if (getenv("OPENBLAS_CORETYPE")) return;
    bool avx2, avx512;
    cpu_vector_units(&avx2, &avx512);
    const char *better = ts_blas_better_core(openblas_get_corename(), avx2, avx512);
    if (!better) return;
    if (setenv("OPENBLAS_CORETYPE", better, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* Still here: the exec failed (no /proc, say). Carry on with the slow
     * kernels; the trainer's warning will name them. */
    fprintf(stderr,
            "thinkscale: could not restart with OPENBLAS_CORETYPE=%s (%s); running on "
            "OpenBLAS's %s kernels\n",
            better, strerror(errno), openblas_get_corename());
    unsetenv("OPENBLAS_CORETYPE");
}
