/* The weight GEMMs of a Transformer++ training step at the benchmark size
 * (8 x 256 tokens, D = 256, 4 layers' shapes, FFN = D, V = 256), each run
 * two ways on OpenBLAS (eighth round, docs/performance.md):
 *   - hot: the same call repeated, operands and output in cache, as a GEMM
 *     benchmark (and the 768^3 sgemm rate) measures it;
 *   - cold: before every call a 64 MB buffer is written, so the operands
 *     and the output come from memory, as in a step, where each GEMM reads
 *     activations the ops before it wrote and writes a fresh output.
 * Per product (forward Y = X W^T, dX = G W, dW = G^T X of the fused Q|K|V,
 * Wo, the fused W1|W3, W2 and the head): the fastest of REPS repetitions
 * of each way, alternating, in GFLOP/s; then all fifteen together as
 * fractions of sgemm 768^3 measured in the same run. The gap between the
 * two is the share of the 85% target the weight GEMMs alone cannot reach
 * on this machine (process CPU time with BENCH_CLOCK=cpu). No verdict: the
 * targets are on bench_profile's lines.
 * The cold way reads higher than the step does: replayed in a step's order
 * with every operand at a fresh place in a 400 MB region (as the step's
 * arena lays them out), OpenBLAS ran the products into fresh outputs at
 * 86-92% of sgemm where this cold way reads 97-98% (docs/performance.md,
 * twelfth round). ts_matmul runs those on ts_small_gemm since; this bench
 * measures OpenBLAS alone, and bench_profile's GEMM table the step's own
 * rates by kernel. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/real.h"
#include "train/machine_peak.h"

enum { REPS = 9, ROWS = 8 * 256, WIDTH = 256, EVICT_BYTES = 64 << 20 };

typedef struct weight_product {
    const char *name;
    bool trans_a, trans_b;
    int m, n, k;
} weight_product;

/* Row-major C [m, n] = op(A) op(B), as ts_matmul calls OpenBLAS. */
static const weight_product products[] = {
    {"forward  x Wqkv^T", false, true, ROWS, 3 * WIDTH, WIDTH},
    {"forward  a Wo^T", false, true, ROWS, WIDTH, WIDTH},
    {"forward  u W13^T", false, true, ROWS, 2 * WIDTH, WIDTH},
    {"forward  s W2^T", false, true, ROWS, WIDTH, WIDTH},
    {"forward  x Whead^T", false, true, ROWS, WIDTH, WIDTH},
    {"dX       g Wqkv", false, false, ROWS, WIDTH, 3 * WIDTH},
    {"dX       g Wo", false, false, ROWS, WIDTH, WIDTH},
    {"dX       g W13", false, false, ROWS, WIDTH, 2 * WIDTH},
    {"dX       g W2", false, false, ROWS, WIDTH, WIDTH},
    {"dX       g Whead", false, false, ROWS, WIDTH, WIDTH},
    {"dW       g^T x (qkv)", true, false, 3 * WIDTH, WIDTH, ROWS},
    {"dW       g^T a (o)", true, false, WIDTH, WIDTH, ROWS},
    {"dW       g^T u (13)", true, false, 2 * WIDTH, WIDTH, ROWS},
    {"dW       g^T s (2)", true, false, WIDTH, WIDTH, ROWS},
    {"dW       g^T x (head)", true, false, WIDTH, WIDTH, ROWS},
};
enum { N_PRODUCTS = sizeof products / sizeof *products };

static double run_once(const weight_product *w, const ts_real *a, const ts_real *b, ts_real *c,
                       bool cpu) {
    int lda = w->trans_a ? w->m : w->k, ldb = w->trans_b ? w->k : w->n;
    double t0 = ts_clock_seconds(cpu);
    ts_cblas_gemm(CblasRowMajor, w->trans_a ? CblasTrans : CblasNoTrans,
                  w->trans_b ? CblasTrans : CblasNoTrans, w->m, w->n, w->k, 1, a, lda, b, ldb, 0, c,
                  w->n);
    return ts_clock_seconds(cpu) - t0;
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    bool cpu = ts_clock_cpu_requested();
    size_t largest = (size_t)ROWS * 3 * WIDTH; /* every operand and output fits */
    ts_real *a = malloc(largest * sizeof *a), *b = malloc(largest * sizeof *b);
    ts_real *c = malloc(largest * sizeof *c);
    unsigned char *evict = malloc(EVICT_BYTES);
    if (!a || !b || !c || !evict) {
        fprintf(stderr, "bench_weight_gemm: out of memory\n");
        return 1;
    }
    unsigned seed = 11;
    for (size_t i = 0; i < largest; i++) {
        a[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX - 0.5);
        b[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX - 0.5);
    }
    double peak = ts_measure_peak_gflops();
    printf("%s; fastest of %d alternating repetitions; sgemm 768^3: %.1f GFLOP/s\n",
           cpu ? "process CPU time" : "wall time", REPS, peak);
    printf("%-24s %5s %5s %5s %12s %12s %8s\n", "product", "m", "n", "k", "hot GF/s", "cold GF/s",
           "cold/hot");
    double flops_all = 0, hot_all = 0, cold_all = 0;
    for (int p = 0; p < N_PRODUCTS; p++) {
        const weight_product *w = &products[p];
        double hot = 1e30, cold = 1e30;
        run_once(w, a, b, c, cpu); /* warm up: OpenBLAS's buffers, the pages of c */
        for (int r = 0; r < REPS; r++) {
            double t = run_once(w, a, b, c, cpu);
            hot = t < hot ? t : hot;
            memset(evict, r, EVICT_BYTES);
            t = run_once(w, a, b, c, cpu);
            cold = t < cold ? t : cold;
        }
        double flops = 2.0 * w->m * w->n * w->k;
        flops_all += flops;
        hot_all += hot;
        cold_all += cold;
        printf("%-24s %5d %5d %5d %12.1f %12.1f %7.1f%%\n", w->name, w->m, w->n, w->k,
               flops / hot / 1e9, flops / cold / 1e9, 100 * hot / cold);
    }
    printf("all %d: hot %.1f GFLOP/s (%.1f%% of sgemm), cold %.1f GFLOP/s (%.1f%% of sgemm)\n",
           N_PRODUCTS, flops_all / hot_all / 1e9, 100 * flops_all / hot_all / 1e9 / peak,
           flops_all / cold_all / 1e9, 100 * flops_all / cold_all / 1e9 / peak);
    free(a);
    free(b);
    free(c);
    free(evict);
    return 0;
}
