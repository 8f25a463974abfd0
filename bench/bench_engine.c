/* Engine micro-benchmark (issue 2): the sgemm ceiling of this machine on one
 * thread, and the engine's executed GFLOP/s for one Transformer++ block
 * forward + backward at D = 256, T = 256, batch 8, 4 heads, ffn_mult 1.
 * Target: the block reaches at least 50% of the sgemm rate.
 * Prints a table, then one machine-readable summary line with a verdict. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/engine.h"
#include "models/transformer_block.h"
#include "train/machine_peak.h"

#include "bench_median.h"

enum { BATCH = 8, SEQ = 256, WIDTH = 256, HEADS = 4, REPS = 7 };
static const double TARGET_RATIO = 0.50;

static void fill_normal(ts_real *x, long n, double stddev, unsigned *state) {
    for (long i = 0; i < n; i++) {
        double u1 = (rand_r(state) + 1.0) / (RAND_MAX + 2.0), u2 = rand_r(state) / (RAND_MAX + 1.0);
        x[i] = (ts_real)(stddev * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

/* Median GFLOP/s of a square GEMM of size n (the single-thread ceiling). */
static double gemm_gflops(int n) {
    ts_real *a = malloc(sizeof(ts_real) * n * n), *b = malloc(sizeof(ts_real) * n * n),
            *c = malloc(sizeof(ts_real) * n * n);
    if (!a || !b || !c) {
        fprintf(stderr, "bench_engine: out of memory\n");
        exit(1);
    }
    unsigned seed = 1;
    fill_normal(a, (long)n * n, 1, &seed);
    fill_normal(b, (long)n * n, 1, &seed);
    double rates[REPS];
    for (int r = -1; r < REPS; r++) {
        double t0 = ts_monotonic_seconds();
        ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double dt = ts_monotonic_seconds() - t0;
        if (r >= 0) rates[r] = 2.0 * n * n * n / dt / 1e9;
    }
    free(a);
    free(b);
    free(c);
    return bench_median(rates, REPS);
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    double ceiling = gemm_gflops(1024);

    ts_ctx ctx;
    if (!ts_ctx_init(&ctx, 0)) return 1;
    const int d = WIDTH, f = WIDTH; /* ffn_mult 1: hidden = D, as the EBT experiments */
    long n_params = 4L * d * d + 3L * d * f + 2L * d;
    ts_real *params = malloc(sizeof(ts_real) * n_params),
            *grads = calloc((size_t)n_params, sizeof(ts_real));
    if (!params || !grads) return 1;
    unsigned seed = 2;
    fill_normal(params, n_params, 0.05, &seed);
    ts_real *p = params, *g = grads;
    tpp_block_params block;
    struct {
        ts_tensor **slot;
        int rows, cols;
    } layout[] = {{&block.attn_norm, d, 0}, {&block.wq, d, d}, {&block.wk, d, d},
                  {&block.wv, d, d},        {&block.wo, d, d}, {&block.mlp_norm, d, 0},
                  {&block.w1, f, d},        {&block.w3, f, d}, {&block.w2, d, f}};
    for (size_t i = 0; i < sizeof layout / sizeof layout[0]; i++) {
        int rows = layout[i].rows, cols = layout[i].cols;
        *layout[i].slot = cols ? ts_param(&ctx, p, g, TS_SHAPE(rows, cols), "w")
                               : ts_param(&ctx, p, g, TS_SHAPE(rows), "norm");
        long n = (long)rows * (cols ? cols : 1);
        if (!cols)
            for (long j = 0; j < n; j++) p[j] = 1;
        p += n;
        g += n;
    }
    int32_t positions[SEQ];
    for (int t = 0; t < SEQ; t++) positions[t] = t;
    ts_tensor *mask = ts_causal_mask(&ctx, SEQ);
    ts_tensor *x = ts_new(&ctx, TS_SHAPE(BATCH, SEQ, d));
    ts_tensor *seed_grad = ts_new(&ctx, TS_SHAPE(BATCH, SEQ, d));
    fill_normal(x->data, x->numel, 1, &seed);
    fill_normal(seed_grad->data, seed_grad->numel, 1, &seed);
    ts_set_requires_grad(&ctx, x, true); /* as if earlier blocks needed its gradient */
    tpp_attention_input in = {.mask = mask,
                              .positions = positions,
                              .rope_theta = 10000,
                              .n_heads = HEADS,
                              .norm_eps = 1e-5};

    double times[REPS], flops_fwd = 0, flops_bwd = 0;
    ts_mark mark = ts_get_mark(&ctx);
    for (int r = -2; r < REPS; r++) {
        ts_reset_flops(&ctx);
        double t0 = ts_monotonic_seconds();
        ts_tensor *y = tpp_block_forward(&ctx, &block, x, &in);
        ts_backward(&ctx, y, seed_grad);
        double dt = ts_monotonic_seconds() - t0;
        if (r >= 0) times[r] = dt;
        flops_fwd = ctx.flops[TS_FORWARD];
        flops_bwd = ctx.flops[TS_BACKWARD];
        ts_release(&ctx, mark);
    }
    double t = bench_median(times, REPS);
    double flops = flops_fwd + flops_bwd;
    /* The GEMM-only count: 7 weight GEMMs (with ffn_mult 1) + 2 attention GEMMs, x3 for backward.
     */
    double gemm_flops =
        3.0 * (7.0 * 2 * BATCH * SEQ * (double)d * d + 2.0 * 2 * BATCH * SEQ * (double)SEQ * d);
    double rate = flops / t / 1e9, ratio = rate / ceiling;

    printf("%-44s %12s\n", "measurement", "value");
    printf("%-44s %12.1f\n", "sgemm 1024^3, 1 thread [GFLOP/s]", ceiling);
    printf("%-44s %12.3f\n", "block fwd executed [GFLOP]", flops_fwd / 1e9);
    printf("%-44s %12.3f\n", "block bwd executed [GFLOP]", flops_bwd / 1e9);
    printf("%-44s %12.3f\n", "block GEMM-only formula fwd+bwd [GFLOP]", gemm_flops / 1e9);
    printf("%-44s %12.2f\n", "block fwd+bwd time, median of 7 [ms]", 1e3 * t);
    printf("%-44s %12.1f\n", "block executed rate [GFLOP/s]", rate);
    printf("%-44s %12.3f\n", "ratio to sgemm (target >= 0.50)", ratio);
    printf("%-44s %12ld\n", "arena chunks allocated", ctx.arena.n_mallocs);
    printf("%-44s %12.1f\n", "arena high water [MiB]", ctx.arena.high_water / 1048576.0);
    printf("ENGINE_BENCH type=%s sgemm_gflops=%.1f block_gflops=%.1f ratio=%.3f target=%.2f %s\n",
           TS_REAL_NAME, ceiling, rate, ratio, TARGET_RATIO,
           ratio >= TARGET_RATIO ? "PASSED" : "FAILED");
    ts_ctx_free(&ctx);
    free(params);
    free(grads);
    return 0;
}
