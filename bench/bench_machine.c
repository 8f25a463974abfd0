/* What this machine's cores do alone and all at once, to read the other
 * benchmarks against (fourteenth round, docs/performance.md):
 *   - the vector multiply-add peak: MULTIPLY_ADD_CHAINS independent chains
 *     of multiply-adds at the build's widest vector width, nothing loaded
 *     or stored; no kernel on the core exceeds it;
 *   - the read rate from memory: sums over a buffer of BENCH_STREAM_MB per
 *     process, far larger than the caches;
 *   - OpenBLAS's sgemm 768^3 (the reference of the benchmarks' %sgemm) on the
 *     first core, as a fraction of that core's multiply-add peak.
 * Each core is measured alone (pinned to it, one core after another), then
 * with every core running the same kernel at once (one pinned process per
 * core, started together). Where two ranks of training lose more than these
 * rates lose together, the loss is not in the cores' arithmetic nor in the
 * memory bandwidth (2-rank weak scaling, issue 16).
 * Environment: BENCH_CORES (how many of this process's CPUs; default all),
 * BENCH_SECONDS (per measurement, default 0.3), BENCH_STREAM_MB (per
 * process, default 256: above the last-level cache a core shares, or the
 * rate read is the cache's). Summary line MACHINE_BENCH, no verdict. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_env.h"
#include "bench_sgemm.h"
#include "bench_stream.h"
#include "engine/real.h"

/* This file is compiled with -ffp-contract=fast (Makefile), so a * x + y
 * below is one fused multiply-add where the CPU has them. */
typedef bench_vec vec;
/* sgemm 768^3 is ~3 ms here: 100 give it as long as a measurement of the others. */
enum { LANES = BENCH_VECTOR_BYTES / (int)sizeof(ts_real), MAX_CORES = 1024, SGEMM_REPS = 100 };

typedef enum kernel { MULTIPLY_ADD, READ, N_KERNELS } kernel;
static const char *const kernel_units[N_KERNELS] = {"GFLOP/s", "GB/s"};

typedef struct bench_setup {
    int n_cores;
    int cpus[MAX_CORES]; /* the CPUs of this process's affinity mask, in order */
    double seconds;
    size_t stream_bytes;
} bench_setup;

static void fail(const char *what) {
    fprintf(stderr, "bench_machine: %s\n", what);
    exit(1);
}

static void fail_errno(const char *what) {
    fprintf(stderr, "bench_machine: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) fail_errno("sched_setaffinity");
}

/* Twelve chains: enough to cover the multiply-add latency on two pipes of
 * current x86 and Arm cores (4-5 cycles x 2), and with the two operands 14
 * vector registers, which AVX2's 16 hold. */
enum { MULTIPLY_ADD_CHAINS = 12, MULTIPLY_ADD_STEPS = 1 << 18 };

static volatile ts_real multiply_add_sink;

static double multiply_add_block(void *state) {
    (void)state;
    vec x = (vec){0} + (ts_real)0.999999, y = (vec){0} + (ts_real)1e-3;
    vec a0 = x, a1 = a0 + y, a2 = a1 + y, a3 = a2 + y, a4 = a3 + y, a5 = a4 + y;
    vec a6 = a5 + y, a7 = a6 + y, a8 = a7 + y, a9 = a8 + y, a10 = a9 + y, a11 = a10 + y;
    for (int s = 0; s < MULTIPLY_ADD_STEPS; s++) {
        /* a -> a x + y stays near y / (1 - x): no overflow, no subnormals */
        a0 = a0 * x + y, a1 = a1 * x + y, a2 = a2 * x + y, a3 = a3 * x + y;
        a4 = a4 * x + y, a5 = a5 * x + y, a6 = a6 * x + y, a7 = a7 * x + y;
        a8 = a8 * x + y, a9 = a9 * x + y, a10 = a10 * x + y, a11 = a11 * x + y;
    }
    vec sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    multiply_add_sink = sum[0];
    return 2.0 * LANES * MULTIPLY_ADD_CHAINS * MULTIPLY_ADD_STEPS;
}

/* One kernel's rate on the calling process's core. */
static double measure(kernel k, const bench_setup *setup) {
    if (k == MULTIPLY_ADD) return bench_best_rate(multiply_add_block, NULL, setup->seconds);
    return bench_read_gbs(setup->stream_bytes, setup->seconds);
}

/* What a measuring child sends back through the results pipe. */
typedef struct core_rate {
    int core;
    double rate;
} core_rate;

/* Every core's rate with all of them running `k` at once: one pinned child
 * per core; each waits until the parent closes the start pipe, so they
 * start together, and sends its rate back through the results pipe. */
static void measure_together(kernel k, const bench_setup *setup, double *rates) {
    int start[2], results[2];
    if (pipe(start) != 0 || pipe(results) != 0) fail_errno("pipe");
    pid_t pids[MAX_CORES];
    for (int c = 0; c < setup->n_cores; c++) {
        pids[c] = fork();
        if (pids[c] < 0) fail_errno("fork");
        if (pids[c] == 0) {
            close(start[1]);
            close(results[0]);
            pin_to(setup->cpus[c]);
            char go;
            if (read(start[0], &go, 1) < 0) _exit(2); /* 0 bytes: the parent closed it */
            core_rate msg = {c, measure(k, setup)};
            _exit(write(results[1], &msg, sizeof msg) == (ssize_t)sizeof msg ? 0 : 2);
        }
    }
    close(start[0]);
    close(results[1]);
    close(start[1]); /* go */
    for (int c = 0; c < setup->n_cores; c++) rates[c] = 0;
    for (int got = 0; got < setup->n_cores; got++) {
        core_rate msg;
        if (read(results[0], &msg, sizeof msg) != (ssize_t)sizeof msg)
            fail("a measuring process ended without its result");
        if (msg.core >= 0 && msg.core < setup->n_cores) rates[msg.core] = msg.rate;
    }
    close(results[0]);
    for (int c = 0; c < setup->n_cores; c++) {
        int status;
        if (waitpid(pids[c], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("a measuring process failed");
    }
}

/* A setting of this benchmark (bench_env.h). */
static double env_number(const char *name, double fallback, double least) {
    return bench_env_number("bench_machine", name, fallback, least, 1e9);
}

static bench_setup setup_from_environment(void) {
    bench_setup s = {0};
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) fail_errno("sched_getaffinity");
    for (int cpu = 0; cpu < CPU_SETSIZE && s.n_cores < MAX_CORES; cpu++)
        if (CPU_ISSET(cpu, &set)) s.cpus[s.n_cores++] = cpu;
    int wanted = (int)bench_env_long("bench_machine", "BENCH_CORES", s.n_cores, 1, MAX_CORES);
    if (wanted > s.n_cores) {
        fprintf(stderr, "bench_machine: BENCH_CORES=%d, but this process may run on %d CPUs\n",
                wanted, s.n_cores);
        exit(1);
    }
    s.n_cores = wanted;
    s.seconds = env_number("BENCH_SECONDS", 0.3, 0.001);
    s.stream_bytes = (size_t)(env_number("BENCH_STREAM_MB", 256, 1) * 1024 * 1024);
    return s;
}

static double mean(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

int main(void) {
    bench_setup setup = setup_from_environment();
    static double alone[N_KERNELS][MAX_CORES], together[N_KERNELS][MAX_CORES];
    for (int c = 0; c < setup.n_cores; c++) {
        pin_to(setup.cpus[c]);
        for (int k = 0; k < N_KERNELS; k++) alone[k][c] = measure((kernel)k, &setup);
    }
    pin_to(setup.cpus[0]);
    /* One BLAS thread whatever the environment says: the figure is one
     * core's, set against that core's peak (OpenBLAS's own threads, started
     * before the pinning, ran on every core and read 154% of it). */
    openblas_set_num_threads(1);
    double sgemm = bench_sgemm_gflops(SGEMM_REPS, false);
    for (int k = 0; k < N_KERNELS; k++) measure_together((kernel)k, &setup, together[k]);

    printf("machine: %d core%s, %d-bit vectors of %s, %.2f s per measurement, %.0f MB read per "
           "process\n",
           setup.n_cores, setup.n_cores == 1 ? "" : "s", BENCH_VECTOR_BYTES * 8,
           sizeof(ts_real) == 4 ? "float" : "double", setup.seconds,
           (double)setup.stream_bytes / (1024 * 1024));
    printf("%6s  %26s  %26s\n", "CPU", "multiply-add GFLOP/s", "read from memory GB/s");
    printf("%6s  %12s %13s  %12s %13s\n", "", "alone", "all at once", "alone", "all at once");
    for (int c = 0; c < setup.n_cores; c++)
        printf("%6d  %12.1f %13.1f  %12.1f %13.1f\n", setup.cpus[c], alone[MULTIPLY_ADD][c],
               together[MULTIPLY_ADD][c], alone[READ][c], together[READ][c]);
    double peak0 = alone[MULTIPLY_ADD][0];
    printf("sgemm %d^3 on CPU %d: %.1f GFLOP/s, %.1f%% of its multiply-add peak\n", BENCH_SGEMM_N,
           setup.cpus[0], sgemm, peak0 > 0 ? 100 * sgemm / peak0 : 0);
    double summary[N_KERNELS][2];
    for (int k = 0; k < N_KERNELS; k++) {
        summary[k][0] = mean(alone[k], setup.n_cores);
        summary[k][1] = mean(together[k], setup.n_cores);
        printf("%s per core: %.1f %s alone, %.1f all at once (%.1f%%)\n",
               k == MULTIPLY_ADD ? "multiply-add" : "read", summary[k][0], kernel_units[k],
               summary[k][1], 100 * summary[k][1] / summary[k][0]);
    }
    printf("MACHINE_BENCH cores=%d fma_gflops_alone=%.1f fma_gflops_together=%.1f "
           "fma_together_ratio=%.3f read_gbs_alone=%.1f read_gbs_together=%.1f "
           "read_together_ratio=%.3f sgemm_gflops=%.1f sgemm_of_fma_peak=%.3f\n",
           setup.n_cores, summary[MULTIPLY_ADD][0], summary[MULTIPLY_ADD][1],
           summary[MULTIPLY_ADD][1] / summary[MULTIPLY_ADD][0], summary[READ][0], summary[READ][1],
           summary[READ][1] / summary[READ][0], sgemm, peak0 > 0 ? sgemm / peak0 : 0);
    return 0;
}
