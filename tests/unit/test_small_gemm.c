/* The small GEMM (src/engine/small_gemm.c) against a plain triple loop
 * summed in long double: every tile shape it dispatches (full tiles, single
 * rows, one- and two-vector column panels, zero-padded edge panels), A and
 * A^T, strided operands, alpha and beta, a depth over one chunk, products
 * over several blocks of rows and columns, and beta 0 with C full of NaN
 * (never read). The stride ts_small_gemm_b_stride lays B out in, and that
 * a product reads the same values from it (bit for bit). Then
 * ts_transpose_rows element for element. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/small_gemm.h"
#include "splitmix.h"

/* Relative to the sum of |terms|: one rounding per multiply-add in the
 * element type, k of them. */
static double tolerance(int k) {
    return (sizeof(ts_real) == 4 ? 1.2e-7 : 2.3e-16) * (k + 2) * 2;
}

typedef struct gemm_case {
    bool trans_a;
    int m, n, k;
    double alpha, beta;
    int pad; /* extra elements at the end of every operand row */
} gemm_case;

/* Runs one case and compares every element of C, and checks that C's
 * padding is untouched. */
static void expect_gemm_matches(const gemm_case *g, uint64_t seed) {
    test_rng rng = test_rng_seeded(seed);
    int a_rows = g->trans_a ? g->k : g->m, a_cols = g->trans_a ? g->m : g->k;
    int lda = a_cols + g->pad, ldb = g->n + g->pad, ldc = g->n + g->pad;
    long a_size = (long)a_rows * lda + 1, b_size = (long)g->k * ldb + 1,
         c_size = (long)g->m * ldc + 1;
    ts_real *a = malloc((size_t)a_size * sizeof *a), *b = malloc((size_t)b_size * sizeof *b);
    ts_real *c = malloc((size_t)c_size * sizeof *c), *c0 = malloc((size_t)c_size * sizeof *c0);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(c0);
    test_rng_fill_uniform(&rng, a, a_size, -1, 1);
    test_rng_fill_uniform(&rng, b, b_size, -1, 1);
    test_rng_fill_uniform(&rng, c0, c_size, -1, 1);
    if (g->beta == 0) /* beta 0 must not read C */
        for (long i = 0; i < c_size; i++) c0[i] = NAN;
    memcpy(c, c0, (size_t)c_size * sizeof *c);
    ts_small_gemm(g->trans_a, g->m, g->n, g->k, (ts_real)g->alpha, a, lda, b, ldb, (ts_real)g->beta,
                  c, ldc);
    for (int i = 0; i < g->m; i++) {
        for (int j = 0; j < g->n; j++) {
            long double sum = 0, magnitude = 0;
            for (int p = 0; p < g->k; p++) {
                ts_real ap = g->trans_a ? a[(long)p * lda + i] : a[(long)i * lda + p];
                long double term = (long double)ap * b[(long)p * ldb + j];
                sum += term;
                magnitude += fabsl(term);
            }
            long double want = g->alpha * sum;
            long double scale = fabsl(g->alpha) * magnitude;
            if (g->beta != 0) {
                want += g->beta * (long double)c0[(long)i * ldc + j];
                scale += fabsl(g->beta * c0[(long)i * ldc + j]);
            }
            double got = (double)c[(long)i * ldc + j];
            double error = fabs(got - (double)want),
                   limit = tolerance(g->k) * ((double)scale + 1e-30);
            if (!(error <= limit))
                fail_msg(
                    "%s m %d n %d k %d alpha %g beta %g pad %d: C[%d, %d] = %.17g, want %.17Lg "
                    "(error %.3g, limit %.3g)",
                    g->trans_a ? "A^T" : "A", g->m, g->n, g->k, g->alpha, g->beta, g->pad, i, j,
                    got, want, error, limit);
        }
        for (int j = g->n; j < ldc && i < g->m - 1; j++) /* padding between rows untouched */
            if (memcmp(&c[(long)i * ldc + j], &c0[(long)i * ldc + j], sizeof *c))
                fail_msg("m %d n %d: padding C[%d, %d] was written", g->m, g->n, i, j);
    }
    free(a);
    free(b);
    free(c);
    free(c0);
}

/* Sizes around every tile boundary of both vector widths (4 to 16 lanes,
 * tiles of 4 or 8 rows), and the attentions' shapes (64 x keys x 64, keys
 * of 65 and 257 for EBT's context). */
static void small_gemm_matches_the_triple_loop(void **state) {
    (void)state;
    const int sizes[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65};
    int n_sizes = (int)(sizeof sizes / sizeof *sizes), cases = 0;
    uint64_t seed = 1;
    for (int trans = 0; trans < 2; trans++)
        for (int mi = 0; mi < n_sizes; mi++)
            for (int ni = 0; ni < n_sizes; ni++) {
                /* depths: the size itself and a fixed odd one */
                int depths[2] = {sizes[(mi + ni) % n_sizes], 13};
                for (int d = 0; d < 2; d++) {
                    gemm_case g = {trans, sizes[mi], sizes[ni], depths[d], 1, 0, (mi + ni) % 3};
                    expect_gemm_matches(&g, seed++);
                    cases++;
                }
            }
    const gemm_case chosen[] = {
        /* the attentions' shapes, then edges of the chunks and blocks */
        {false, 64, 256, 64, 0.125, 0, 0},
        {false, 64, 64, 256, 1, 0, 704},
        {true, 256, 64, 64, 1, 1, 704},
        {true, 257, 64, 64, 0.125, 1, 0},
        {false, 64, 65, 64, 0.125, 0, 1},
        {false, 64, 64, 257, 1, 0, 192},
        {false, 5, 37, 600, -0.5, 0, 3}, /* a depth over one chunk */
        {true, 9, 70, 1100, 2, 0.5, 1},
        {false, 33, 48, 7, 1.5, -2, 2},
        /* more rows and columns than a block, deeper than a chunk: the
         * weight products' blocking, beta once per element */
        {false, 300, 520, 530, 1, 0, 3},
        {true, 140, 300, 520, -1, 0.5, 0},
    };
    for (size_t i = 0; i < sizeof chosen / sizeof *chosen; i++) {
        expect_gemm_matches(&chosen[i], seed++);
        cases++;
    }
    assert_int_equal(cases, 2 * 14 * 14 * 2 + 11);
}

/* k = 0 leaves beta C (0 for beta 0, even over NaN); m or n 0 touch
 * nothing. */
static void small_gemm_empty_products(void **state) {
    (void)state;
    ts_real a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 4};
    ts_real c[4] = {1, -2, 3, NAN};
    ts_small_gemm(false, 2, 2, 0, 1, a, 2, b, 2, 0.5, c, 2);
    assert_true(c[0] == 0.5 && c[1] == -1 && c[2] == 1.5 && isnan(c[3]));
    c[3] = NAN;
    ts_small_gemm(true, 2, 2, 0, 1, a, 2, b, 2, 0, c, 2);
    for (int i = 0; i < 4; i++) assert_true(c[i] == 0);
    c[0] = 7;
    ts_small_gemm(false, 0, 2, 2, 1, a, 2, b, 2, 0, c, 2);
    ts_small_gemm(false, 2, 0, 2, 1, a, 2, b, 2, 0, c, 2);
    assert_true(c[0] == 7);
}

/* Rows of whole cache lines get half a line more; other widths stay. */
static void b_stride_staggers_rows_of_whole_lines(void **state) {
    (void)state;
    const int line = 64 / (int)sizeof(ts_real);
    const int widths[] = {1, 7, line - 1, line, line + 1, 3 * line, 256, 257, 512, 768};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
        int n = widths[i], stride = ts_small_gemm_b_stride(n);
        if (n % line == 0)
            assert_int_equal(stride, n + line / 2);
        else
            assert_int_equal(stride, n);
    }
}

/* The weight products' shapes with B in rows of n and of the staggered
 * stride: the same sums in the same order, so C is the same bit for bit
 * (op_matmul.c lays its transposed weights out so). */
static void small_gemm_reads_the_same_at_the_staggered_stride(void **state) {
    (void)state;
    const int shapes[][3] = {{300, 256, 256}, {136, 768, 256}, {40, 512, 600}, {17, 32, 5}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int stride = ts_small_gemm_b_stride(n);
        assert_true(stride > n); /* every width here is whole lines */
        test_rng rng = test_rng_seeded(100 + s);
        ts_real *a = malloc((size_t)m * k * sizeof *a), *b = malloc((size_t)k * n * sizeof *b);
        ts_real *staggered = malloc((size_t)k * stride * sizeof *staggered);
        ts_real *c = malloc((size_t)m * n * sizeof *c),
                *c_staggered = malloc((size_t)m * n * sizeof *c);
        assert_true(a && b && staggered && c && c_staggered);
        test_rng_fill_uniform(&rng, a, (long)m * k, -1, 1);
        test_rng_fill_uniform(&rng, b, (long)k * n, -1, 1);
        for (long i = 0; i < (long)k * stride; i++) staggered[i] = NAN; /* the gaps: never read */
        for (int p = 0; p < k; p++)
            memcpy(staggered + (long)p * stride, b + (long)p * n, (size_t)n * sizeof *b);
        ts_small_gemm(false, m, n, k, 1, a, k, b, n, 0, c, n);
        ts_small_gemm(false, m, n, k, 1, a, k, staggered, stride, 0, c_staggered, n);
        if (memcmp(c, c_staggered, (size_t)m * n * sizeof *c))
            fail_msg("%d x %d x %d: C differs between B strides %d and %d", m, n, k, n, stride);
        free(a);
        free(b);
        free(staggered);
        free(c);
        free(c_staggered);
    }
}

static void transpose_rows_moves_every_element(void **state) {
    (void)state;
    const int shapes[][2] = {{1, 1},    {15, 3}, {16, 64}, {17, 5},  {256, 64},
                             {257, 64}, {3, 40}, {33, 20}, {48, 17}, {64, 71}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int rows = shapes[s][0], cols = shapes[s][1], ld_src = cols + 3, ld_dst = rows + 2;
        ts_real *src = malloc((size_t)rows * ld_src * sizeof *src);
        ts_real *dst = malloc((size_t)cols * ld_dst * sizeof *dst);
        assert_non_null(src);
        assert_non_null(dst);
        for (long i = 0; i < (long)rows * ld_src; i++) src[i] = (ts_real)i;
        for (long i = 0; i < (long)cols * ld_dst; i++) dst[i] = -1;
        ts_transpose_rows(src, rows, cols, ld_src, dst, ld_dst);
        for (int j = 0; j < cols; j++) {
            for (int i = 0; i < rows; i++)
                if (dst[(long)j * ld_dst + i] != src[(long)i * ld_src + j])
                    fail_msg("[%d, %d]: dst[%d, %d] = %g, want %g", rows, cols, j, i,
                             (double)dst[(long)j * ld_dst + i], (double)src[(long)i * ld_src + j]);
            for (int i = rows; i < ld_dst; i++) assert_true(dst[(long)j * ld_dst + i] == -1);
        }
        free(src);
        free(dst);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_gemm_matches_the_triple_loop),
        cmocka_unit_test(small_gemm_empty_products),
        cmocka_unit_test(b_stride_staggers_rows_of_whole_lines),
        cmocka_unit_test(small_gemm_reads_the_same_at_the_staggered_stride),
        cmocka_unit_test(transpose_rows_moves_every_element),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
