/* The weight products of a Transformer++ training step at the benchmark
 * size (8 x 256 tokens, D = 256, 4 layers' shapes, FFN = D, V = 256), each
 * timed three ways (eighth and twelfth rounds, docs/performance.md):
 *   - hot: OpenBLAS, the same call repeated, operands and output in cache,
 *     as a GEMM benchmark (and the 768^3 sgemm rate) measures it;
 *   - fresh: OpenBLAS with the activations (and the output) at a new place
 *     of a large region for every call, each place last touched SLOTS calls
 *     earlier, as a step's arena lays out what its GEMMs read and write;
 *   - ts_matmul: the engine's product under the same conditions, on the
 *     kernel it picks for the shape (the profile says which: ts_small_gemm
 *     for products into a fresh output of an untransposed left operand up
 *     to 768 columns and depth 2048, OpenBLAS otherwise; op_matmul.c).
 * A 64 MB sweep between calls (this bench's earlier "cold" way) left the
 * products at their hot rate, while the step ran them at the fresh one:
 * replayed in a step's order over fresh memory, OpenBLAS's products into
 * fresh outputs ran at 86-92% of sgemm (twelfth round).
 * Per product (forward Y = X W^T, dX = G W, dW = G^T X of the fused Q|K|V,
 * Wo, the fused W1|W3, W2 and the head; each here into a fresh output,
 * where a step adds a Wo^T and s W2^T into the residual stream and dW into
 * the gradient buffer, on OpenBLAS): the fastest call of each way in
 * GFLOP/s, the fresh ways alternating; then all fifteen together as
 * fractions of sgemm 768^3 measured in the same run (process CPU time with
 * BENCH_CLOCK=cpu). Where the ts_matmul column beats the fresh one, the
 * engine's choice of kernel pays on this machine. No verdict: the targets
 * are on bench_profile's lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/engine.h"
#include "train/machine_peak.h"

enum {
    HOT_REPS = 9,
    SLOTS = 32, /* places of the fresh ways; each call takes the next */
    ROWS = 8 * 256,
    WIDTH = 256,
    SLOT_A = ROWS * 3 * WIDTH, /* every left operand (and dW's G) */
    SLOT_B = ROWS * WIDTH,     /* dW's X */
    SLOT_C = ROWS * 3 * WIDTH, /* every output */
    SLOT_FLOATS = SLOT_A + SLOT_B + SLOT_C
};

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

static _Noreturn void die(const char *what) {
    fprintf(stderr, "bench_weight_gemm: %s\n", what);
    exit(1);
}

/* The operands of one call: A (op(A) [m, k]), B (op(B) [k, n]: the weight,
 * or dW's X from the slot) and C [m, n]. */
typedef struct operands {
    ts_real *a, *b, *c;
} operands;

static operands slot_operands(const weight_product *w, ts_real *slot, ts_real *weights) {
    return (operands){slot, w->trans_a ? slot + SLOT_A : weights, slot + SLOT_A + SLOT_B};
}

static double openblas_call(const weight_product *w, operands o, bool cpu) {
    int lda = w->trans_a ? w->m : w->k, ldb = w->trans_b ? w->k : w->n;
    double t0 = ts_clock_seconds(cpu);
    ts_cblas_gemm(CblasRowMajor, w->trans_a ? CblasTrans : CblasNoTrans,
                  w->trans_b ? CblasTrans : CblasNoTrans, w->m, w->n, w->k, 1, o.a, lda, o.b, ldb,
                  0, o.c, w->n);
    return ts_clock_seconds(cpu) - t0;
}

/* ts_matmul on the slot's operands, its output placed in the arena after
 * `skip` bytes (so the fresh way's outputs rotate as OpenBLAS's do);
 * kernel_small says which kernel it ran when the profile is given. */
static double matmul_call(ts_ctx *ctx, const weight_product *w, operands o, size_t skip, bool cpu,
                          ts_profile *profile, bool *kernel_small) {
    ts_mark mark = ts_get_mark(ctx);
    ts_alloc(ctx, skip);
    int a_rows = w->trans_a ? w->k : w->m, a_cols = w->trans_a ? w->m : w->k;
    int b_rows = w->trans_b ? w->n : w->k, b_cols = w->trans_b ? w->k : w->n;
    ts_tensor *a = ts_wrap(ctx, o.a, 2, (const int[]){a_rows, a_cols});
    ts_tensor *b = ts_wrap(ctx, o.b, 2, (const int[]){b_rows, b_cols});
    if (profile) ts_profile_start(ctx, profile, cpu ? TS_PROFILE_CPU : TS_PROFILE_WALL);
    double t0 = ts_clock_seconds(cpu);
    ts_matmul(ctx, a, b, w->trans_a, w->trans_b);
    double seconds = ts_clock_seconds(cpu) - t0;
    if (profile) {
        ts_profile_stop(ctx);
        if (profile->n_gemms != 1) die("ts_matmul booked no single GEMM");
        *kernel_small = profile->gemms[0].small_gemm;
    }
    ts_release(ctx, mark);
    return seconds;
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    bool cpu = ts_clock_cpu_requested();
    size_t slot_bytes = (size_t)SLOT_FLOATS * sizeof(ts_real);
    ts_real *region = malloc(SLOTS * slot_bytes);
    ts_real *weights = malloc((size_t)3 * WIDTH * WIDTH * sizeof *weights);
    ts_profile *profile = malloc(sizeof *profile);
    ts_ctx ctx;
    /* one arena chunk holds every slot's output after its skip */
    if (!region || !weights || !profile ||
        !ts_ctx_init(&ctx, (size_t)(SLOTS + 1) * SLOT_C * sizeof(ts_real)))
        die("out of memory");
    ts_set_grad_enabled(&ctx, false);
    unsigned seed = 11;
    for (size_t i = 0; i < SLOTS * (size_t)SLOT_FLOATS; i++)
        region[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX - 0.5);
    for (size_t i = 0; i < (size_t)3 * WIDTH * WIDTH; i++)
        weights[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX - 0.5);
    double peak = ts_measure_peak_gflops();
    printf("%s; hot: fastest of %d repetitions; fresh and ts_matmul: fastest of %d alternating "
           "calls, each on operands last touched %d calls earlier; GEMM peak 768^3: %.1f GFLOP/s\n",
           cpu ? "process CPU time" : "wall time", HOT_REPS, SLOTS, SLOTS, peak);
    printf("%-24s %5s %5s %5s %10s %10s %10s  %s\n", "product", "m", "n", "k", "hot GF/s", "fresh",
           "ts_matmul", "kernel");
    double flops_all = 0, hot_all = 0, fresh_all = 0, matmul_all = 0;
    for (int p = 0; p < N_PRODUCTS; p++) {
        const weight_product *w = &products[p];
        operands hot_operands = slot_operands(w, region, weights);
        double hot = 1e30, fresh = 1e30, matmul = 1e30;
        openblas_call(w, hot_operands, cpu); /* warm up: OpenBLAS's buffers */
        for (int r = 0; r < HOT_REPS; r++) {
            double t = openblas_call(w, hot_operands, cpu);
            hot = t < hot ? t : hot;
        }
        bool small = false;
        /* the first 2 SLOTS calls (every place twice, each way on its own
         * half) are not timed; the next 2 SLOTS give SLOTS calls each way */
        for (int call = 0; call < 4 * SLOTS; call++) {
            int slot = call % SLOTS;
            operands o = slot_operands(w, region + (size_t)slot * SLOT_FLOATS, weights);
            bool engine = call % 2;
            double t = engine ? matmul_call(&ctx, w, o, (size_t)slot * SLOT_C * sizeof(ts_real),
                                            cpu, call == 1 ? profile : NULL, &small)
                              : openblas_call(w, o, cpu);
            if (call < 2 * SLOTS) continue;
            if (engine)
                matmul = t < matmul ? t : matmul;
            else
                fresh = t < fresh ? t : fresh;
        }
        double flops = 2.0 * w->m * w->n * w->k;
        flops_all += flops;
        hot_all += hot;
        fresh_all += fresh;
        matmul_all += matmul;
        printf("%-24s %5d %5d %5d %10.1f %10.1f %10.1f  %s\n", w->name, w->m, w->n, w->k,
               flops / hot / 1e9, flops / fresh / 1e9, flops / matmul / 1e9,
               small ? "ts_small_gemm" : "OpenBLAS");
    }
    printf("all %d, of sgemm: hot %.1f%%, fresh %.1f%%, ts_matmul %.1f%%\n", N_PRODUCTS,
           100 * flops_all / hot_all / 1e9 / peak, 100 * flops_all / fresh_all / 1e9 / peak,
           100 * flops_all / matmul_all / 1e9 / peak);
    ts_ctx_free(&ctx);
    free(profile);
    free(weights);
    free(region);
    return 0;
}
