/* Would overlapping the gradient all-reduce with the backward pass pay on
 * this machine and MPI (issue 16's lever: buckets reduced as the layers
 * finish)? A data-parallel step is imitated: for each bucket, compute (a
 * weight-gradient GEMM, 256 x 256 x 2048, repeated for BENCH_COMPUTE_MS),
 * then the bucket's gradient written, as the backward writes a finished
 * block's. The buckets are then summed over the ranks in three ways, step
 * by step in turn:
 *   blocking    one MPI_Allreduce of every bucket after the last compute
 *               (what the trainer's ddp does);
 *   iallreduce  each bucket's MPI_Iallreduce started as soon as it is
 *               written, every started one tested after each compute (MPI
 *               progresses non-blocking collectives inside MPI calls),
 *               all waited for after the last;
 *   persistent  the same with persistent requests made once
 *               (MPI_Allreduce_init of MPI 4, or Open MPI's
 *               MPIX_Allreduce_init), started each step.
 * Per way, medians over the steps of: the step (the slowest rank's), the
 * time inside MPI calls and the time after the last compute (what the
 * reduction adds to a step: all of it can be hidden only if the MPI moves
 * the data without the CPU that computes), both the ranks' mean. The sums
 * are checked every step: a wrong one exits naming the way.
 *
 *   mpirun -np P build/float/bench/bench_overlap
 *
 * Environment: BENCH_BUCKETS (elements per bucket, comma-separated, in the
 * order the backward finishes them; default the gradient units of the
 * benchmark Transformer++ (bench_size.h; param_units.h): its four blocks,
 * last first, of 459,264 elements each, then the embeddings, head and
 * final norm, 131,328), BENCH_COMPUTE_MS (per bucket, default 30: a
 * block's share of that model's backward at 8 sequences a rank),
 * BENCH_STEPS (per way, default 20). Summary line OVERLAP_BENCH, no
 * verdict. */
#include <limits.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(OPEN_MPI) && MPI_VERSION < 4
#include <mpi-ext.h>
#endif

#include "bench_env.h"
#include "bench_median.h"
#include "bench_size.h"
#include "engine/real.h"
#include "models/model.h"
#include "parallel/data_parallel.h"
#include "parallel/param_units.h"
#include "train/machine_peak.h"

#if MPI_VERSION >= 4
#define HAVE_PERSISTENT 1
#define allreduce_init(buf, n, comm, req)                                                          \
    MPI_Allreduce_init(MPI_IN_PLACE, buf, n, TS_MPI_REAL, MPI_SUM, comm, MPI_INFO_NULL, req)
#elif defined(OMPI_HAVE_MPI_EXT_PCOLLREQ) && OMPI_HAVE_MPI_EXT_PCOLLREQ
#define HAVE_PERSISTENT 1
#define allreduce_init(buf, n, comm, req)                                                          \
    MPIX_Allreduce_init(MPI_IN_PLACE, buf, n, TS_MPI_REAL, MPI_SUM, comm, MPI_INFO_NULL, req)
#else
#define HAVE_PERSISTENT 0
#endif

enum { MAX_BUCKETS = 64, GEMM_M = 256, GEMM_N = 256, GEMM_K = 2048 };

typedef enum way { BLOCKING, IALLREDUCE, PERSISTENT, N_WAYS } way;
static const char *const way_names[N_WAYS] = {"blocking", "iallreduce", "persistent"};
static const char *const way_labels[N_WAYS] = {"blocking: one MPI_Allreduce at the end",
                                               "MPI_Iallreduce per bucket, tested",
                                               "persistent request per bucket, tested"};

typedef struct setup {
    int n_buckets;
    long bucket[MAX_BUCKETS], offset[MAX_BUCKETS], total;
    double compute_ms;
    int steps;
} setup;

typedef struct step_times {
    double step, in_mpi, after_compute;
} step_times;

static _Noreturn void fail(MPI_Comm comm, int rank, const char *what) {
    fprintf(stderr, "bench_overlap: rank %d: %s\n", rank, what);
    MPI_Abort(comm, 1);
    exit(1); /* MPI_Abort does not return */
}

static void check_mpi(MPI_Comm comm, int rank, int rc, const char *what) {
    if (rc != MPI_SUCCESS) fail(comm, rank, what);
}

/* BENCH_BUCKETS: positive element counts, comma-separated, at most
 * INT_MAX in all. */
static bool parse_buckets(const char *text, setup *s) {
    s->n_buckets = 0;
    s->total = 0;
    for (const char *p = text; *p;) {
        char *end;
        long n = strtol(p, &end, 10);
        if (end == p || n < 1 || n > (1L << 28) || s->n_buckets == MAX_BUCKETS) return false;
        s->offset[s->n_buckets] = s->total;
        s->bucket[s->n_buckets++] = n;
        s->total += n;
        if (*end == ',' && end[1]) /* a comma must have a count after it */
            end++;
        else if (*end)
            return false;
        p = end;
    }
    /* the blocking way reduces them all in one call, whose count is an int */
    return s->n_buckets > 0 && s->total <= INT_MAX;
}

/* The benchmark Transformer++'s gradient units (param_units.h) as buckets,
 * in the order its backward finishes them: blocks L .. 1, then unit 0
 * (embeddings, final norm, head). */
static bool model_buckets(setup *s, char *err, size_t errlen) {
    ts_run_config c;
    static const char *const arch[] = {"model.arch=transformerpp", NULL};
    if (!bench_size_config(&c, arch, err, errlen)) return false;
    ts_model *model = ts_model_create_counting(&c.model, err, errlen);
    if (!model) return false;
    ts_param_units units;
    bool ok = ts_param_units_build(&units, model, 1, err, errlen);
    ts_model_destroy(model);
    if (!ok) return false;
    ok = units.count <= MAX_BUCKETS;
    s->n_buckets = 0;
    s->total = 0;
    for (int i = 0; ok && i < units.count; i++) {
        /* blocks from the last to the first, then unit 0 */
        int unit = i < units.count - 1 ? units.count - 1 - i : 0;
        s->offset[i] = s->total;
        s->bucket[i] = units.units[unit].elems;
        s->total += s->bucket[i];
        s->n_buckets++;
    }
    ts_param_units_free(&units);
    if (!ok) snprintf(err, errlen, "the model has more than %d units", MAX_BUCKETS);
    return ok;
}

static setup setup_from_environment(void) {
    setup s = {0};
    const char *buckets = getenv("BENCH_BUCKETS");
    char err[256] = "";
    if ((!buckets || !*buckets) && !model_buckets(&s, err, sizeof err)) {
        fprintf(stderr, "bench_overlap: the benchmark Transformer++'s units: %s\n", err);
        exit(1);
    }
    if (buckets && *buckets && !parse_buckets(buckets, &s)) {
        fprintf(stderr,
                "bench_overlap: BENCH_BUCKETS=%s is not a list of element counts (1 .. 2^28, "
                "at most %d, comma-separated, at most 2^31 - 1 in all)\n",
                buckets, MAX_BUCKETS);
        exit(1);
    }
    s.compute_ms = bench_env_number("bench_overlap", "BENCH_COMPUTE_MS", 30, 0, 1e5);
    s.steps = (int)bench_env_long("bench_overlap", "BENCH_STEPS", 20, 1, 100000);
    return s;
}

/* The compute between buckets: GEMMs of a weight gradient's shape. */
typedef struct compute {
    ts_real *a, *b, *c;
    int reps; /* per bucket */
} compute;

static void run_compute(const compute *w) {
    for (int r = 0; r < w->reps; r++)
        ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, GEMM_M, GEMM_N, GEMM_K, 1, w->a,
                      GEMM_M, w->b, GEMM_N, 1, w->c, GEMM_N);
}

/* Repetitions for compute_ms a bucket (the nearest count, at least one),
 * from the fastest of a few timed GEMMs; the ranks take the largest count,
 * so they compute alike. */
static int calibrate(compute *w, double compute_ms, MPI_Comm comm) {
    w->reps = 1;
    double best = 1e30;
    for (int i = 0; i < 5; i++) {
        double t0 = MPI_Wtime();
        run_compute(w);
        double t = MPI_Wtime() - t0;
        if (t < best) best = t;
    }
    /* at least one GEMM unless no compute is asked for */
    int reps = compute_ms > 0 ? (int)(compute_ms / 1e3 / best + 0.5) : 0, most = 0;
    if (compute_ms > 0 && reps < 1) reps = 1;
    MPI_Allreduce(&reps, &most, 1, MPI_INT, MPI_MAX, comm);
    return most;
}

/* One step of `w`: every bucket computed and written, reduced as the way
 * says; the times of this rank. */
static step_times run_step(way w, const setup *s, const compute *work, ts_real *grads,
                           MPI_Request *requests, const MPI_Request *persistent, int rank,
                           MPI_Comm comm) {
    double in_mpi = 0, t0 = MPI_Wtime();
    for (int k = 0; k < s->n_buckets; k++) {
        run_compute(work);
        ts_real *g = grads + s->offset[k];
        for (long i = 0; i < s->bucket[k]; i++) g[i] = (ts_real)(rank + 1);
        if (w == BLOCKING) continue;
        double m0 = MPI_Wtime();
        if (w == IALLREDUCE)
            check_mpi(comm, rank,
                      MPI_Iallreduce(MPI_IN_PLACE, g, (int)s->bucket[k], TS_MPI_REAL, MPI_SUM, comm,
                                     &requests[k]),
                      "MPI_Iallreduce failed");
        else {
            requests[k] = persistent[k];
            check_mpi(comm, rank, MPI_Start(&requests[k]), "MPI_Start failed");
        }
        int done;
        check_mpi(comm, rank, MPI_Testall(k + 1, requests, &done, MPI_STATUSES_IGNORE),
                  "MPI_Testall failed");
        in_mpi += MPI_Wtime() - m0;
    }
    double t1 = MPI_Wtime();
    if (w == BLOCKING)
        check_mpi(comm, rank,
                  MPI_Allreduce(MPI_IN_PLACE, grads, (int)s->total, TS_MPI_REAL, MPI_SUM, comm),
                  "MPI_Allreduce failed");
    else
        check_mpi(comm, rank, MPI_Waitall(s->n_buckets, requests, MPI_STATUSES_IGNORE),
                  "MPI_Waitall failed");
    double t2 = MPI_Wtime();
    return (step_times){t2 - t0, in_mpi + (t2 - t1), t2 - t1};
}

/* Every element of the buffer is the sum of the ranks' rank + 1. */
static bool sums_right(const ts_real *grads, long n, int ranks) {
    ts_real want = (ts_real)ranks * (ranks + 1) / 2;
    for (long i = 0; i < n; i++)
        if (grads[i] != want) return false;
    return true;
}

int main(int argc, char **argv) {
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    setup s = setup_from_environment();  /* a bad setting exits before MPI starts */
    if (MPI_Init(&argc, &argv) != MPI_SUCCESS) return 1;
    MPI_Comm comm = MPI_COMM_WORLD;
    int rank, ranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);
    openblas_set_num_threads(1);

    compute work = {malloc(sizeof(ts_real) * GEMM_K * GEMM_M),
                    malloc(sizeof(ts_real) * GEMM_K * GEMM_N),
                    calloc((size_t)GEMM_M * GEMM_N, sizeof(ts_real)), 1};
    ts_real *grads = malloc(sizeof(ts_real) * (size_t)s.total);
    /* This rank's times, one array each of the steps, the times in MPI and
     * those after the compute, every way's steps in turn: the first
     * reduced to the slowest rank's, the other two summed over ranks. */
    int n_times = N_WAYS * s.steps;
    double *mine = calloc(3 * (size_t)n_times, sizeof(double)); /* 0 for a way not run */
    double *slowest = malloc(sizeof(double) * (size_t)n_times);
    double *summed = malloc(sizeof(double) * 2 * (size_t)n_times);
    double *mine_steps = mine, *mine_in_mpi = mine + n_times, *mine_after = mine + 2 * n_times;
    if (!work.a || !work.b || !work.c || !grads || !mine || !slowest || !summed)
        fail(comm, rank, "out of memory for the operands and the gradient buffer");
    for (long i = 0; i < (long)GEMM_K * GEMM_M; i++) work.a[i] = (ts_real)(i % 7 - 3) * 1e-3f;
    for (long i = 0; i < (long)GEMM_K * GEMM_N; i++) work.b[i] = (ts_real)(i % 5 - 2) * 1e-3f;
    work.reps = calibrate(&work, s.compute_ms, comm);

    MPI_Request requests[MAX_BUCKETS], persistent[MAX_BUCKETS];
    for (int k = 0; k < s.n_buckets; k++) persistent[k] = requests[k] = MPI_REQUEST_NULL;
#if HAVE_PERSISTENT
    for (int k = 0; k < s.n_buckets; k++)
        check_mpi(comm, rank,
                  allreduce_init(grads + s.offset[k], (int)s.bucket[k], comm, &persistent[k]),
                  "making a persistent all-reduce failed");
#endif
    int n_ways = HAVE_PERSISTENT ? N_WAYS : PERSISTENT;

    /* Two untimed steps of each way (first touches, connections), then the
     * ways in turn step by step, so a drift of the machine hits all. */
    for (int step = -2; step < s.steps; step++)
        for (int w = 0; w < n_ways; w++) {
            check_mpi(comm, rank, MPI_Barrier(comm), "MPI_Barrier failed");
            step_times t = run_step((way)w, &s, &work, grads, requests, persistent, rank, comm);
            if (!sums_right(grads, s.total, ranks)) {
                char what[128];
                snprintf(what, sizeof what, "the %s reduction summed wrongly", way_names[w]);
                fail(comm, rank, what);
            }
            if (step < 0) continue;
            int at = w * s.steps + step;
            mine_steps[at] = t.step;
            mine_in_mpi[at] = t.in_mpi;
            mine_after[at] = t.after_compute;
        }
    int n_taken = n_ways * s.steps;
    check_mpi(comm, rank, MPI_Reduce(mine_steps, slowest, n_taken, MPI_DOUBLE, MPI_MAX, 0, comm),
              "MPI_Reduce failed");
    check_mpi(comm, rank,
              MPI_Reduce(mine_in_mpi, summed, 2 * n_times, MPI_DOUBLE, MPI_SUM, 0, comm),
              "MPI_Reduce failed");
    const double *summed_in_mpi = summed, *summed_after = summed + n_times;
    if (rank == 0) {
        printf("overlap of the gradient all-reduce with compute: %d rank%s, %d bucket%s, %.2f MB "
               "in all; compute a bucket: %d GEMM%s (BENCH_COMPUTE_MS=%g); medians of %d steps a "
               "way\n",
               ranks, ranks == 1 ? "" : "s", s.n_buckets, s.n_buckets == 1 ? "" : "s",
               (double)s.total * sizeof(ts_real) / 1e6, work.reps, work.reps == 1 ? "" : "s",
               s.compute_ms, s.steps);
        printf("buckets, in the order reduced (elements):");
        for (int k = 0; k < s.n_buckets; k++) printf(" %ld", s.bucket[k]);
        printf("\n%-40s %10s %10s %16s\n", "way", "step ms", "in MPI ms", "after compute ms");
        double step_ms[N_WAYS] = {0}, mpi_ms[N_WAYS] = {0}, after_ms[N_WAYS] = {0};
        double *column = malloc(sizeof(double) * (size_t)s.steps);
        if (!column) fail(comm, rank, "out of memory for the medians");
        for (int w = 0; w < n_ways; w++) {
            int at = w * s.steps;
            for (int i = 0; i < s.steps; i++) column[i] = slowest[at + i];
            step_ms[w] = 1e3 * bench_median(column, s.steps);
            for (int i = 0; i < s.steps; i++) column[i] = summed_in_mpi[at + i] / ranks;
            mpi_ms[w] = 1e3 * bench_median(column, s.steps);
            for (int i = 0; i < s.steps; i++) column[i] = summed_after[at + i] / ranks;
            after_ms[w] = 1e3 * bench_median(column, s.steps);
            printf("%-40s %10.2f %10.3f %16.3f\n", way_labels[w], step_ms[w], mpi_ms[w],
                   after_ms[w]);
        }
        if (!HAVE_PERSISTENT)
            printf("%-40s (this MPI has no persistent all-reduce)\n", way_labels[PERSISTENT]);
        free(column);
        printf("OVERLAP_BENCH ranks=%d buckets=%d elements=%ld compute_ms=%.1f", ranks, s.n_buckets,
               s.total, s.compute_ms);
        for (int w = 0; w < n_ways; w++)
            printf(" %s_step_ms=%.3f %s_mpi_ms=%.3f %s_after_ms=%.3f", way_names[w], step_ms[w],
                   way_names[w], mpi_ms[w], way_names[w], after_ms[w]);
        printf("\n");
    }
#if HAVE_PERSISTENT
    for (int k = 0; k < s.n_buckets; k++) MPI_Request_free(&persistent[k]);
#endif
    free(work.a);
    free(work.b);
    free(work.c);
    free(grads);
    free(mine);
    free(slowest);
    free(summed);
    MPI_Finalize();
    return 0;
}
