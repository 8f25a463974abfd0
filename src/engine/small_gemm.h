/* A register-blocked GEMM for the attentions' strip products (64 x keys x
 * 64 at the benchmark size), where OpenBLAS's per-call packing and
 * small-matrix paths keep it at 37-55% of its own large-GEMM rate
 * (docs/performance.md, seventh round), and for ts_matmul's weight products
 * into fresh outputs (twelfth round), where OpenBLAS zeroes the output in a
 * pass of its own first. Operands are read in place: only a transposed B
 * has to be laid out first (ts_transpose_rows), which the attentions do
 * once per head rather than once per strip. */
#ifndef TS_SMALL_GEMM_H
#define TS_SMALL_GEMM_H

#include <stdbool.h>

#include "engine/real.h"

/* C = alpha op(A) B + beta C, row-major, as cblas_?gemm with B not
 * transposed. op(A) is [m, k]: A itself, row i at a + i lda (trans_a
 * false), or the transpose of A [k, m], row p of A at a + p lda (trans_a
 * true). B is [k, n], row p at b + p ldb with its n entries contiguous. C
 * [m, n], row i at c + i ldc; beta 0 never reads C (it may hold anything).
 * m, n or k of 0 are allowed (k 0: C = beta C). */
void ts_small_gemm(bool trans_a, int m, int n, int k, ts_real alpha, const ts_real *a, int lda,
                   const ts_real *b, int ldb, ts_real beta, ts_real *c, int ldc);

/* The row stride (in elements) to lay out a B of n columns in for
 * ts_small_gemm: n, or n plus half a cache line when n elements are whole
 * lines, so the rows start alternately on a line and half a line into one.
 * With every row on a line (a row stride of 1 KiB), the kernel ran
 * 2048 x 256 x 256 at 94 GFLOP/s and 2048 x 768 x 256 at 89-92; with the
 * rows staggered, 100-101 and 96-99 (twenty-second round,
 * docs/performance.md). */
int ts_small_gemm_b_stride(int n);

/* dst[j, i] = src[i, j] for src [rows, cols] (row stride ld_src) into dst
 * [cols, rows] (row stride ld_dst). */
void ts_transpose_rows(const ts_real *restrict src, int rows, int cols, int ld_src,
                       ts_real *restrict dst, int ld_dst);

#endif
