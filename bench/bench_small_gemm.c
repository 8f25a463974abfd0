/* The attentions' strip products on OpenBLAS and on ts_small_gemm
 * (src/engine/small_gemm.c; seventh round, docs/performance.md), at the
 * shapes of one causal attention call of the benchmark size: 32 heads
 * (8 sequences x 4) of T = 256, dh = 64, strips of 64 rows seeing 64, 128,
 * 192 and 256 keys, operands read in place from the packed [B, T, 3 D]
 * projection (rows 768 apart), as the attention reads them:
 *   - scores S = q K^T: OpenBLAS's NT product against ts_small_gemm on
 *     the head's keys transposed once per head (the transposes are timed
 *     with it);
 *   - mix O = P V (NN);
 *   - dV += P^T G (TN, beta 1).
 * Each line: the fastest of REPS alternating repetitions of each side, in
 * GFLOP/s and as a fraction of sgemm 768^3 measured in the same run
 * (process CPU time with BENCH_CLOCK=cpu). No verdict: the targets are on
 * bench_profile's lines. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/clock.h"
#include "engine/small_gemm.h"
#include "train/machine_peak.h"

enum { REPS = 15, HEADS = 32, SEQ = 256, DH = 64, STRIP = 64, LD = 3 * 4 * DH };

typedef enum product { SCORES, MIX, MIX_T } product;
static const char *const product_names[] = {"S = q K^T (NT)", "O = P V (NN)", "dV += P^T G (TN)"};

/* One call's strips of one product over every head; the head's operands
 * at its offset in qkv (q, k, v at 0, D, 2 D of a row), P and G shared. */
static void run_product(product which, bool own, const ts_real *qkv, ts_real *p, ts_real *kt,
                        ts_real *out) {
    for (int h = 0; h < HEADS; h++) {
        const ts_real *q = qkv + (long)(h / 4) * SEQ * LD + (h % 4) * DH;
        const ts_real *k = q + 4 * DH, *v = q + 8 * DH;
        ts_real *o = out + (long)(h % 8) * SEQ * DH;
        if (which == SCORES && own) ts_transpose_rows(k, SEQ, DH, LD, kt, SEQ);
        for (int i0 = 0; i0 < SEQ; i0 += STRIP) {
            int keys = i0 + STRIP;
            if (which == SCORES && own)
                ts_small_gemm(false, STRIP, keys, DH, 0.125f, q + (long)i0 * LD, LD, kt, SEQ, 0, p,
                              keys);
            else if (which == SCORES)
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, STRIP, keys, DH, 0.125f,
                              q + (long)i0 * LD, LD, k, LD, 0, p, keys);
            else if (which == MIX && own)
                ts_small_gemm(false, STRIP, DH, keys, 1, p, keys, v, LD, 0, o + (long)i0 * DH, DH);
            else if (which == MIX)
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, STRIP, DH, keys, 1, p,
                              keys, v, LD, 0, o + (long)i0 * DH, DH);
            else if (own)
                ts_small_gemm(true, keys, DH, STRIP, 1, p, keys, q + (long)i0 * LD, LD, 1, o, DH);
            else
                ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, DH, STRIP, 1, p, keys,
                              q + (long)i0 * LD, LD, 1, o, DH);
        }
    }
}

int main(int argc, char **argv) {
    (void)argc;
    ts_blas_prefer_vector_kernels(argv); /* the kernels thinkscale runs */
    openblas_set_num_threads(1);
    bool cpu = ts_clock_cpu_requested();
    long qkv_size = 8L * SEQ * LD, out_size = 8L * SEQ * DH;
    ts_real *qkv = malloc((size_t)qkv_size * sizeof *qkv);
    ts_real *p = malloc((size_t)STRIP * SEQ * sizeof *p);
    ts_real *kt = malloc((size_t)DH * SEQ * sizeof *kt);
    ts_real *out = calloc((size_t)out_size, sizeof *out);
    if (!qkv || !p || !kt || !out) {
        fprintf(stderr, "bench_small_gemm: out of memory\n");
        return 1;
    }
    unsigned seed = 7;
    for (long i = 0; i < qkv_size; i++) qkv[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX - 0.5);
    for (long i = 0; i < (long)STRIP * SEQ; i++) p[i] = (ts_real)(rand_r(&seed) / (double)RAND_MAX);
    double flops = 0; /* one product over every strip of every head */
    for (int i0 = 0; i0 < SEQ; i0 += STRIP) flops += 2.0 * STRIP * (i0 + STRIP) * DH * HEADS;
    double peak = ts_measure_peak_gflops();
    printf("%s; fastest of %d alternating repetitions; GEMM peak 768^3: %.1f GFLOP/s\n",
           cpu ? "process CPU time" : "wall time", REPS, peak);
    printf("%-20s %14s %9s %14s %9s %8s\n", "strip product", "OpenBLAS", "%sgemm", "ts_small_gemm",
           "%sgemm", "speedup");
    for (int which = SCORES; which <= MIX_T; which++) {
        double best[2] = {1e30, 1e30};
        for (int r = -1; r < REPS; r++)
            for (int own = 0; own < 2; own++) {
                double t0 = ts_clock_seconds(cpu);
                run_product((product)which, own, qkv, p, kt, out);
                double dt = ts_clock_seconds(cpu) - t0;
                if (r >= 0 && dt < best[own]) best[own] = dt;
            }
        double blas = flops / best[0] * 1e-9, own = flops / best[1] * 1e-9;
        printf("%-20s %9.1f GF/s %8.1f%% %9.1f GF/s %8.1f%% %7.2fx\n", product_names[which], blas,
               100 * blas / peak, own, 100 * own / peak, best[0] / best[1]);
    }
    free(qkv);
    free(p);
    free(kt);
    free(out);
    return 0;
}
