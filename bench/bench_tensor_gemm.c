/* The linear layer's GEMM under tensor parallelism (issue 14): the local
 * sgemm (what every rank runs without it) against the distributed op
 * (parallel/tensor_ops.h: this rank's blocks, psgemm on the grid, the result
 * all-gathered back to every rank of the group) at the layer shape x [N, D] W^T,
 * W [D, D], for D = 256 .. max, on one P x Q grid (all ranks one group).
 *
 *   mpirun -np P*Q build/float/bench/bench_tensor_gemm P Q [N tokens] [max D]
 *
 * Per D: median over a few repetitions (fewer for the largest) of the wall
 * time, the slowest rank counting; the share of the distributed op spent in
 * the MPI_Allgather of the N x D result, timed alone at the same size; and a
 * check that the distributed product equals the local one (a relative
 * difference above 1e-4 fails the run). Prints CSV lines
 * "gemm,P,Q,N,D,local_ms,tp_ms,allgather_ms,speedup" after a header; run by
 * bench/bench_tensor.sh, which adds the verdict and the model. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "parallel/data_parallel.h"
#include "parallel/tensor_grid.h"
#include "parallel/tensor_ops.h"
#include "train/machine_peak.h"

#include "bench_median.h"

/* The slowest rank's median time of reps runs of fn. */
typedef void (*timed_fn)(void *state);
static double median_ms(MPI_Comm comm, int reps, timed_fn fn, void *state) {
    double times[16];
    fn(state); /* warm-up */
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(comm);
        double t0 = MPI_Wtime();
        fn(state);
        double dt = MPI_Wtime() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, comm);
        times[r] = dt;
    }
    return 1e3 * bench_median(times, reps);
}

typedef struct layer {
    ts_ctx *ctx;
    ts_tensor_grid *grid;
    ts_tensor *x, *w, *y;
    ts_real *reduce;
    int n, d;
} layer;

static void run_local(void *state) {
    layer *l = state;
    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, l->n, l->d, l->d, 1, l->x->data, l->d,
                  l->w->data, l->d, 0, l->y->data, l->d);
}

static void run_distributed(void *state) {
    layer *l = state;
    ts_mark mark = ts_get_mark(l->ctx);
    ts_tensor_matmul(l->ctx, l->grid, l->x, l->w, false, true);
    ts_release(l->ctx, mark);
}

static void run_allgather(void *state) {
    layer *l = state;
    int share = (int)((long)l->n * l->d / (l->grid->rows * l->grid->cols));
    if (MPI_Allgather(MPI_IN_PLACE, share, TS_MPI_REAL, l->reduce, share, TS_MPI_REAL,
                      l->grid->group) != MPI_SUCCESS) {
        fprintf(stderr, "bench_tensor_gemm: MPI_Allgather failed\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

static void fill(ts_real *v, long n, unsigned seed) {
    for (long i = 0; i < n; i++) v[i] = (ts_real)((double)((seed + 7919 * i) % 2003) / 2003 - 0.5);
}

int main(int argc, char **argv) {
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3) {
        if (rank == 0) fprintf(stderr, "usage: bench_tensor_gemm P Q [N tokens] [max D]\n");
        MPI_Finalize();
        return 2;
    }
    int rows = atoi(argv[1]), cols = atoi(argv[2]);
    int n = argc > 3 ? atoi(argv[3]) : 512, max_d = argc > 4 ? atoi(argv[4]) : 4096;
    ts_tensor_grid grid;
    char err[256];
    if (rows * cols != size ||
        !ts_tensor_grid_init(&grid, MPI_COMM_WORLD, rows, cols, err, sizeof err)) {
        if (rank == 0)
            fprintf(stderr, "bench_tensor_gemm: a %dx%d grid needs %d ranks (%s)\n", rows, cols,
                    rows * cols, rows * cols != size ? "got another number" : err);
        MPI_Finalize();
        return 2;
    }
    ts_ctx ctx;
    if (!ts_ctx_init(&ctx, 0)) MPI_Abort(MPI_COMM_WORLD, 1);
    ts_set_grad_enabled(&ctx, false);
    if (rank == 0) printf("kind,P,Q,N,D,local_ms,tp_ms,allgather_ms,speedup\n");
    int status = 0;
    for (int d = 256; d <= max_d; d *= 2) {
        ts_mark mark = ts_get_mark(&ctx);
        layer l = {.ctx = &ctx, .grid = &grid, .n = n, .d = d};
        l.x = ts_new(&ctx, TS_SHAPE(n, d));
        l.w = ts_new(&ctx, TS_SHAPE(d, d));
        l.y = ts_new(&ctx, TS_SHAPE(n, d));
        l.reduce = ts_alloc(&ctx, (size_t)n * d * sizeof(ts_real));
        fill(l.x->data, l.x->numel, 1);
        fill(l.w->data, l.w->numel, 2);
        memset(l.reduce, 0, (size_t)n * d * sizeof(ts_real));
        int reps = d >= 2048 ? 3 : 7;
        double local = median_ms(MPI_COMM_WORLD, reps, run_local, &l);
        double tp = median_ms(MPI_COMM_WORLD, reps, run_distributed, &l);
        double reduce = size > 1 ? median_ms(MPI_COMM_WORLD, reps, run_allgather, &l) : 0;
        ts_tensor *check = ts_tensor_matmul(&ctx, &grid, l.x, l.w, false, true);
        double diff = 0, scale = 0;
        for (long i = 0; i < check->numel; i++) {
            diff = fmax(diff, fabs((double)check->data[i] - (double)l.y->data[i]));
            scale = fmax(scale, fabs((double)l.y->data[i]));
        }
        if (!(diff <= 1e-4 * scale)) {
            if (rank == 0)
                fprintf(stderr, "D=%d: the distributed product differs by %g\n", d, diff / scale);
            status = 1;
        }
        if (rank == 0)
            printf("gemm,%d,%d,%d,%d,%.3f,%.3f,%.3f,%.3f\n", rows, cols, n, d, local, tp, reduce,
                   local / tp);
        fflush(stdout);
        ts_release(&ctx, mark);
    }
    ts_ctx_free(&ctx);
    ts_tensor_grid_free(&grid);
    MPI_Finalize();
    return status;
}
