/* Forward values of every op against naive reference loops written here from
 * the semantics in ops.h. The gradient checks cannot see a forward bug that
 * the backward rule shares (a wrong RoPE frequency, a mask applied to the
 * wrong rows): these tests can. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_fixture.h"
#include "splitmix.h"

#ifdef TS_DOUBLE
#define TOL (64 * DBL_EPSILON)
#else
#define TOL (64 * FLT_EPSILON)
#endif

typedef engine_fixture fixture;

static int setup(void **state) {
    return engine_fixture_setup(state, 1 << 20, 0xBB67AE8584CAA73Bull);
}

static int teardown(void **state) {
    return engine_fixture_teardown(state);
}

static ts_tensor *random_tensor(fixture *fx, int ndim, const int *shape, double lo, double hi) {
    ts_tensor *t = ts_new(&fx->ctx, ndim, shape);
    test_rng_fill_uniform(&fx->rng, t->data, t->numel, lo, hi);
    return t;
}

/* Every element within TOL of the reference, relative to max(1, |reference|);
 * infinities must match exactly. */
static void expect_values(const char *what, const ts_tensor *got, const double *expected, long n) {
    if (got->numel != n) fail_msg("%s: %ld elements, expected %ld", what, got->numel, n);
    for (long i = 0; i < n; i++) {
        double g = got->data[i], e = expected[i];
        bool ok = isinf(e) ? g == e : fabs(g - e) <= TOL * fmax(1, fabs(e));
        if (!ok) fail_msg("%s: element %ld is %.17g, expected %.17g", what, i, g, e);
    }
}

static void expect_shape(const ts_tensor *t, int ndim, const int *shape) {
    char got[64];
    assert_int_equal(t->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i])
            fail_msg("unexpected shape %s", ts_shape_str(t, got, sizeof got));
}

static double *scratch(long n) {
    double *p = calloc((size_t)n, sizeof *p);
    assert_non_null(p);
    return p;
}

/* ---------------------------------------------------------------- matmul */

/* op(a)[i][p] for a stored [rows, cols], op = transpose when t. */
static double at(const ts_real *a, int cols, bool t, int i, int p) {
    return t ? a[(long)p * cols + i] : a[(long)i * cols + p];
}

static void check_matmul(fixture *fx, int batch, bool shared_b, bool ta, bool tb) {
    enum { M = 3, K = 4, N = 5 };
    int a_shape[3] = {batch, ta ? K : M, ta ? M : K};
    int b_shape[3] = {batch, tb ? N : K, tb ? K : N};
    ts_tensor *a = random_tensor(fx, 3, a_shape, -1, 1);
    ts_tensor *b =
        shared_b ? random_tensor(fx, 2, b_shape + 1, -1, 1) : random_tensor(fx, 3, b_shape, -1, 1);
    ts_tensor *c = ts_matmul(&fx->ctx, a, b, ta, tb);
    expect_shape(c, 3, (const int[]){batch, M, N});
    double *expected = scratch((long)batch * M * N);
    for (int s = 0; s < batch; s++) {
        const ts_real *as = a->data + (long)s * M * K;
        const ts_real *bs = shared_b ? b->data : b->data + (long)s * K * N;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double sum = 0;
                for (int p = 0; p < K; p++)
                    sum += at(as, a_shape[2], ta, i, p) * at(bs, b_shape[2], tb, p, j);
                expected[((long)s * M + i) * N + j] = sum;
            }
    }
    char what[64];
    snprintf(what, sizeof what, "matmul batch %d%s ta %d tb %d", batch, shared_b ? " shared" : "",
             ta, tb);
    expect_values(what, c, expected, (long)batch * M * N);
    free(expected);
}

static void test_matmul(void **state) {
    for (int combo = 0; combo < 4; combo++) {
        check_matmul(*state, 1, false, combo & 2, combo & 1);
        check_matmul(*state, 3, false, combo & 2, combo & 1);
    }
    check_matmul(*state, 3, true, false, false);
    check_matmul(*state, 3, true, false, true);
}

/* ts_matmul's two kernels: products into a fresh output with an
 * untransposed left operand, at most 768 columns and depth 2048, run on
 * ts_small_gemm (a transposed right operand laid out first); the others on
 * BLAS. Each case against a long-double triple loop, within one rounding
 * per multiply-add of the terms' magnitudes, and the kernel the profile
 * books for it: both sides of each limit, several row and column blocks
 * and depth chunks of ts_small_gemm, a shared right operand over a batch
 * and a 2-D product. */
typedef struct kernel_case {
    int batch, m, k, n; /* batch 0: 2-D operands; else a shared right operand */
    bool ta, tb, small;
} kernel_case;

static void check_matmul_kernel(fixture *fx, const kernel_case *c) {
    int rows = c->batch ? c->batch * c->m : c->m;
    int a_shape[3] = {c->batch, c->ta ? c->k : c->m, c->ta ? c->m : c->k};
    int b_shape[2] = {c->tb ? c->n : c->k, c->tb ? c->k : c->n};
    ts_tensor *a =
        c->batch ? random_tensor(fx, 3, a_shape, -1, 1) : random_tensor(fx, 2, a_shape + 1, -1, 1);
    ts_tensor *b = random_tensor(fx, 2, b_shape, -1, 1);
    ts_profile profile;
    ts_profile_start(&fx->ctx, &profile, TS_PROFILE_CPU);
    ts_tensor *out = ts_matmul(&fx->ctx, a, b, c->ta, c->tb);
    ts_profile_stop(&fx->ctx);
    assert_int_equal(profile.n_gemms, 1);
    if (profile.gemms[0].small_gemm != c->small)
        fail_msg("m %d k %d n %d ta %d tb %d: booked on %s", c->m, c->k, c->n, c->ta, c->tb,
                 profile.gemms[0].small_gemm ? "ts_small_gemm" : "BLAS");
    double eps = sizeof(ts_real) == 4 ? FLT_EPSILON : DBL_EPSILON;
    for (int i = 0; i < rows; i++) {
        const ts_real *as = a->data + (long)(i / c->m) * c->m * c->k;
        for (int j = 0; j < c->n; j++) {
            long double sum = 0, magnitude = 0;
            for (int p = 0; p < c->k; p++) {
                long double term = (long double)at(as, a_shape[2], c->ta, i % c->m, p) *
                                   at(b->data, b_shape[1], c->tb, p, j);
                sum += term;
                magnitude += fabsl(term);
            }
            double got = out->data[(long)i * c->n + j];
            if (!(fabs(got - (double)sum) <= 2.0 * (c->k + 2) * eps * (double)magnitude))
                fail_msg("m %d k %d n %d ta %d tb %d: [%d, %d] = %.17g, want %.17Lg", c->m, c->k,
                         c->n, c->ta, c->tb, i, j, got, sum);
        }
    }
}

static void test_matmul_kernels(void **state) {
    const kernel_case cases[] = {
        {2, 65, 600, 300, false, false, true}, /* 2 row, 2 column blocks, 2 depth chunks */
        {2, 65, 600, 300, false, true, true},  /* x W^T: W laid out transposed */
        {0, 5, 64, 768, false, true, true},    {0, 5, 64, 769, false, true, false},
        {0, 4, 2048, 8, false, false, true},   {0, 4, 2049, 8, false, false, false},
        {0, 6, 9, 7, true, false, false}, /* A^T: BLAS */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_matmul_kernel(*state, &cases[i]);
    /* beta 1 (a product added into a sum): BLAS */
    fixture *fx = *state;
    ts_tensor *x = random_tensor(fx, 2, (const int[]){4, 3}, -1, 1);
    ts_tensor *w = random_tensor(fx, 2, (const int[]){3, 5}, -1, 1);
    ts_tensor *sum = random_tensor(fx, 2, (const int[]){4, 5}, -1, 1);
    ts_profile profile;
    ts_profile_start(&fx->ctx, &profile, TS_PROFILE_CPU);
    ts_matmul_add(&fx->ctx, sum, x, w, false, false);
    ts_profile_stop(&fx->ctx);
    assert_int_equal(profile.n_gemms, 1);
    assert_true(profile.gemms[0].accumulate && !profile.gemms[0].small_gemm);
}

/* ---------------------------------------------------------------- elementwise */

/* Index into a right-aligned, broadcast operand of the output position. */
static long broadcast_index(const ts_tensor *t, int out_ndim, const int *out_shape,
                            const int *position) {
    long index = 0;
    for (int d = 0; d < t->ndim; d++) {
        int od = d + out_ndim - t->ndim;
        int p = t->shape[d] == 1 ? 0 : position[od];
        index = index * t->shape[d] + p;
    }
    (void)out_shape;
    return index;
}

static void check_binary(fixture *fx, int na, const int *sa, int nb, const int *sb, int nout,
                         const int *sout) {
    ts_tensor *a = random_tensor(fx, na, sa, -2, 2), *b = random_tensor(fx, nb, sb, 0.5, 2);
    ts_tensor *out[4] = {ts_add(&fx->ctx, a, b), ts_sub(&fx->ctx, a, b), ts_mul(&fx->ctx, a, b),
                         ts_div(&fx->ctx, a, b)};
    static const char *const names[4] = {"add", "sub", "mul", "div"};
    long n = out[0]->numel;
    double *expected[4] = {scratch(n), scratch(n), scratch(n), scratch(n)};
    int position[TS_MAX_DIMS] = {0};
    for (long flat = 0; flat < n; flat++) {
        long rest = flat;
        for (int d = nout - 1; d >= 0; d--) {
            position[d] = (int)(rest % sout[d]);
            rest /= sout[d];
        }
        double x = a->data[broadcast_index(a, nout, sout, position)];
        double y = b->data[broadcast_index(b, nout, sout, position)];
        expected[0][flat] = x + y;
        expected[1][flat] = x - y;
        expected[2][flat] = x * y;
        expected[3][flat] = x / y;
    }
    for (int k = 0; k < 4; k++) {
        expect_shape(out[k], nout, sout);
        expect_values(names[k], out[k], expected[k], n);
        free(expected[k]);
    }
}

static void test_binary_broadcasting(void **state) {
    fixture *fx = *state;
    check_binary(fx, TS_SHAPE(2, 3, 4), TS_SHAPE(2, 3, 4), 3, (const int[]){2, 3, 4});
    check_binary(fx, TS_SHAPE(2, 3, 4), TS_SHAPE(4), 3, (const int[]){2, 3, 4});
    check_binary(fx, TS_SHAPE(4), TS_SHAPE(2, 3, 4), 3, (const int[]){2, 3, 4});
    check_binary(fx, TS_SHAPE(2, 3, 4), TS_SHAPE(2, 1, 4), 3, (const int[]){2, 3, 4});
    check_binary(fx, TS_SHAPE(3, 1), TS_SHAPE(1, 4), 2, (const int[]){3, 4});
    check_binary(fx, TS_SHAPE(2, 1, 3, 1), TS_SHAPE(5, 1, 2), 4, (const int[]){2, 5, 3, 2});
}

static void test_unary_and_scalar(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = random_tensor(fx, TS_SHAPE(4, 5), -30, 30); /* both sigmoid tails */
    ts_tensor *p = random_tensor(fx, TS_SHAPE(4, 5), 0.01, 50);
    double e[7][20];
    for (int i = 0; i < 20; i++) {
        double xi = x->data[i], pi = p->data[i];
        e[0][i] = exp(xi / 10);
        e[1][i] = log(pi);
        e[2][i] = sqrt(pi);
        e[3][i] = 1 / sqrt(pi);
        e[4][i] = xi * xi;
        e[5][i] = 1 / (1 + exp(-xi));
        e[6][i] = xi / (1 + exp(-xi));
    }
    expect_values("exp", ts_exp(ctx, ts_scale(ctx, x, 0.1)), e[0], 20);
    expect_values("log", ts_log(ctx, p), e[1], 20);
    expect_values("sqrt", ts_sqrt(ctx, p), e[2], 20);
    expect_values("rsqrt", ts_rsqrt(ctx, p), e[3], 20);
    expect_values("square", ts_square(ctx, x), e[4], 20);
    expect_values("sigmoid", ts_sigmoid(ctx, x), e[5], 20);
    expect_values("silu", ts_silu(ctx, x), e[6], 20);
    /* No NaN or overflow at the far tails. */
    ts_tensor *far = ts_from_array(ctx, TS_SHAPE(2), (ts_real[]){-1000, 1000});
    expect_values("sigmoid tails", ts_sigmoid(ctx, far), (double[]){0, 1}, 2);
    expect_values("silu tails", ts_silu(ctx, far), (double[]){0, 1000}, 2);
    double scaled[20], shifted[20];
    for (int i = 0; i < 20; i++) {
        scaled[i] = -1.5 * x->data[i];
        shifted[i] = x->data[i] + 0.25;
    }
    expect_values("scale", ts_scale(ctx, x, -1.5), scaled, 20);
    expect_values("add_scalar", ts_add_scalar(ctx, x, 0.25), shifted, 20);
}

/* ---------------------------------------------------------------- reductions */

static void test_reductions(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { A = 2, B = 3, C = 4 };
    ts_tensor *x = random_tensor(fx, TS_SHAPE(A, B, C), -1, 1);
    const ts_real *v = x->data;
    double sum0[B * C] = {0}, sum1[A * C] = {0}, sum2[A * B] = {0}, total = 0;
    for (int i = 0; i < A; i++)
        for (int j = 0; j < B; j++)
            for (int k = 0; k < C; k++) {
                double value = v[(i * B + j) * C + k];
                sum0[j * C + k] += value;
                sum1[i * C + k] += value;
                sum2[i * B + j] += value;
                total += value;
            }
    ts_tensor *s;
    expect_values("sum axis 0", s = ts_sum(ctx, x, 0, false), sum0, B * C);
    expect_shape(s, 2, (const int[]){B, C});
    expect_values("sum axis 1 keepdim", s = ts_sum(ctx, x, 1, true), sum1, A * C);
    expect_shape(s, 3, (const int[]){A, 1, C});
    expect_values("sum axis -1", s = ts_sum(ctx, x, -1, false), sum2, A * B);
    expect_shape(s, 2, (const int[]){A, B});
    double mean1[A * C];
    for (int i = 0; i < A * C; i++) mean1[i] = sum1[i] / B;
    expect_values("mean axis 1", ts_mean(ctx, x, 1, false), mean1, A * C);
    expect_values("sum_all", s = ts_sum_all(ctx, x), &total, 1);
    expect_shape(s, 1, (const int[]){1});
    double mean_all = total / (A * B * C);
    expect_values("mean_all", ts_mean_all(ctx, x), &mean_all, 1);

    /* sum_to [B, 1]: sums over axes 0 and 2. */
    double to_b1[B] = {0};
    for (int j = 0; j < B; j++)
        for (int k = 0; k < C; k++) to_b1[j] += sum0[j * C + k];
    expect_values("sum_to [3, 1]", s = ts_sum_to(ctx, x, TS_SHAPE(B, 1)), to_b1, B);
    expect_shape(s, 2, (const int[]){B, 1});
    /* broadcast_to [A, B, C] of a [B, 1] column. */
    ts_tensor *col = random_tensor(fx, TS_SHAPE(B, 1), -1, 1);
    double spread[A * B * C];
    for (int i = 0; i < A * B * C; i++) spread[i] = col->data[(i / C) % B];
    expect_values("broadcast_to", ts_broadcast_to(ctx, col, TS_SHAPE(A, B, C)), spread, A * B * C);
}

/* ---------------------------------------------------------------- softmax family */

static void test_softmax_with_masks(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { B = 2, T = 4 };
    ts_tensor *x = random_tensor(fx, TS_SHAPE(B, T, T), -3, 3);
    ts_tensor *mask = ts_causal_mask(ctx, T);
    /* The causal mask itself: row i sees columns 0..i. */
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            double m = mask->data[i * T + j];
            if (j <= i ? m != 0 : !(isinf(m) && m < 0))
                fail_msg("causal mask (%d, %d) = %g", i, j, m);
        }
    /* A custom mask with one fully hidden row. */
    ts_tensor *custom = ts_zeros(ctx, TS_SHAPE(T, T));
    custom->data[1] = custom->data[2] = -INFINITY;
    for (int j = 0; j < T; j++) custom->data[3 * T + j] = -INFINITY;

    const ts_tensor *masks[3] = {NULL, mask, custom};
    for (int m = 0; m < 3; m++) {
        double soft[B * T * T], logsoft[B * T * T];
        for (int r = 0; r < B * T; r++) {
            const ts_real *row = x->data + r * T;
            double shifted[T], max = -INFINITY;
            for (int c = 0; c < T; c++) {
                shifted[c] = row[c] + (masks[m] ? masks[m]->data[(r % T) * T + c] : 0);
                max = fmax(max, shifted[c]);
            }
            double sum = 0;
            for (int c = 0; c < T; c++) sum += isinf(max) ? 0 : exp(shifted[c] - max);
            for (int c = 0; c < T; c++) {
                /* A fully hidden row has no mass: probabilities 0, log-probabilities -inf. */
                soft[r * T + c] = isinf(max) ? 0 : exp(shifted[c] - max) / sum;
                logsoft[r * T + c] = isinf(max) ? -INFINITY : shifted[c] - max - log(sum);
            }
        }
        static const char *const names[3] = {"unmasked", "causal", "custom"};
        char what[64];
        snprintf(what, sizeof what, "softmax %s", names[m]);
        expect_values(what, ts_softmax(ctx, x, masks[m]), soft, B * T * T);
        snprintf(what, sizeof what, "log_softmax %s", names[m]);
        expect_values(what, ts_log_softmax(ctx, x, masks[m]), logsoft, B * T * T);
    }
}

static void test_cross_entropy(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { ROWS = 6, V = 5 };
    ts_tensor *logits = random_tensor(fx, TS_SHAPE(2, 3, V), -3, 3);
    static const int32_t targets[ROWS] = {0, 4, -100, 2, -100, 1};
    double sum = 0;
    int valid = 0;
    for (int r = 0; r < ROWS; r++) {
        if (targets[r] == -100) continue;
        const ts_real *row = logits->data + r * V;
        double total = 0;
        for (int c = 0; c < V; c++) total += exp(row[c]);
        sum += log(total) - row[targets[r]];
        valid++;
    }
    double expected = sum / valid; /* the mean over rows that are not ignored */
    ts_tensor *loss = ts_cross_entropy(ctx, logits, targets, -100);
    expect_shape(loss, 1, (const int[]){1});
    expect_values("cross_entropy", loss, &expected, 1);
    static const int32_t all_ignored[ROWS] = {-100, -100, -100, -100, -100, -100};
    expect_values("cross_entropy all ignored", ts_cross_entropy(ctx, logits, all_ignored, -100),
                  (double[]){0}, 1);
}

/* The exponential correctly rounded: in float the nearest float to expl's
 * long double value, in double libm's exp bit for bit. Over a sweep of
 * [-110, 95] in steps a little off 1/256 (crossing the underflow to 0 near
 * -103.97 and -745.13 in double, the overflow near 88.72, and the clamps at
 * -104 and 100 of the float build), 2^20 pseudo-random floats of [-104, 89],
 * and the special values. And the cross-entropy of a row with logits far
 * below the rest (their exponentials 0) is that of the row without them. */
static ts_real exp_reference(ts_real x) {
#ifdef TS_DOUBLE
    return exp(x);
#else
    return (float)expl((long double)x);
#endif
}

static void test_exp_accurate_is_correctly_rounded(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    long mismatches = 0, tried = 0;
    for (double x = -110; x <= 95; x += 1.0 / 256 + 1e-7, tried++) {
        ts_real v = (ts_real)x, want = exp_reference(v), got = ts_exp_accurate(v);
        if (memcmp(&want, &got, sizeof want)) mismatches++;
    }
    uint64_t lcg = 12345;
    for (int i = 0; i < 1 << 20; i++, tried++) {
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        ts_real v = (ts_real)(-104.0 + 193.0 * (double)(lcg >> 11) / 9007199254740992.0);
        ts_real want = exp_reference(v), got = ts_exp_accurate(v);
        if (memcmp(&want, &got, sizeof want)) mismatches++;
    }
    assert_true(tried > (1 << 20) + 50000);
    assert_int_equal(mismatches, 0);
    assert_true(ts_exp_accurate(-INFINITY) == 0 && !signbit(ts_exp_accurate(-INFINITY)));
    assert_true(ts_exp_accurate(INFINITY) == INFINITY);
    assert_true(isnan(ts_exp_accurate(NAN)));
    assert_true(ts_exp_accurate(0) == 1);
    assert_true(ts_exp_accurate(-800) == 0 && ts_exp_accurate(800) == INFINITY);
    ts_tensor *wide = ts_from_array(ctx, TS_SHAPE(1, 4), (ts_real[]){1.5, -2000, 0.25, -900});
    ts_tensor *narrow = ts_from_array(ctx, TS_SHAPE(1, 2), (ts_real[]){1.5, 0.25});
    ts_real loss_wide = ts_cross_entropy(ctx, wide, (const int32_t[]){2}, -100)->data[0];
    ts_real loss_narrow = ts_cross_entropy(ctx, narrow, (const int32_t[]){1}, -100)->data[0];
    assert_true(loss_wide == loss_narrow);
}

/* Units in the last place between two finite non-negative values of the
 * element type (their bit patterns are ordered as the values are). */
static int64_t ulps_apart(ts_real a, ts_real b) {
#ifdef TS_DOUBLE
    int64_t ia, ib;
#else
    int32_t ia, ib;
#endif
    memcpy(&ia, &a, sizeof a);
    memcpy(&ib, &b, sizeof b);
    return ia > ib ? (int64_t)ia - ib : (int64_t)ib - ia;
}

/* The kernels' exponential (softmax, the fused attention, silu) within 2
 * ulp of the correctly rounded exp where that is a normal number, as its
 * comment promises, and 0 below ln FLT_MIN (-87.3365) in float, where exp
 * would be subnormal: over a sweep of [-90, 0] in steps a little off
 * 1/256, 2^20 pseudo-random values of [-87.3, 0], the 2^16 values nearest
 * below 0 (exp just under 1) and 0 itself. Until this test, the float
 * form clamped its argument at -87, so on (-87.34, -87) it returned
 * exp(-87) (up to 40% high) where exp is still normal. The form tested
 * is the one the kernels run: the polynomial's fused multiply-adds are
 * written out in real.h, not left to a file's compiler flags. */
static void test_exp_nonpositive_within_two_ulp(void **state) {
    (void)state;
#ifndef TS_DOUBLE
    const ts_real underflow = (ts_real)-87.33654475;
#endif
    int64_t worst = 0;
    long tried = 0, flushed_wrongly = 0;
    for (double x = -90; x <= 0; x += 1.0 / 256 + 1e-7, tried++) {
        ts_real d = (ts_real)x, got = ts_exp_nonpositive(d), want = exp_reference(d);
#ifndef TS_DOUBLE
        if (d < underflow) {
            flushed_wrongly += got != 0;
            continue;
        }
#endif
        if (want >= TS_REAL_MIN && ulps_apart(got, want) > worst) worst = ulps_apart(got, want);
    }
    uint64_t lcg = 4242;
    for (int i = 0; i < 1 << 20; i++, tried++) {
        lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
        ts_real d = (ts_real)(-87.3 * (double)(lcg >> 11) / 9007199254740992.0);
        ts_real got = ts_exp_nonpositive(d), want = exp_reference(d);
        if (ulps_apart(got, want) > worst) worst = ulps_apart(got, want);
    }
    ts_real d = 0;
    for (int i = 0; i < 1 << 16; i++, tried++) {
#ifdef TS_DOUBLE
        d = nextafter(d, -1);
#else
        d = nextafterf(d, -1);
#endif
        int64_t apart = ulps_apart(ts_exp_nonpositive(d), exp_reference(d));
        if (apart > worst) worst = apart;
    }
    assert_true(tried > (1 << 20) + (1 << 16) + 20000);
    assert_true(worst <= 2);
    assert_int_equal(flushed_wrongly, 0);
    assert_true(ts_exp_nonpositive(0) == 1);
}

/* ---------------------------------------------------------------- shape */

static void test_permute_slice_pad_concat(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { A = 2, B = 3, C = 2, D = 4, N = A * B * C * D };
    ts_tensor *x = random_tensor(fx, TS_SHAPE(A, B, C, D), -1, 1);
    const int perm[4] = {3, 1, 0, 2};
    const int in_shape[4] = {A, B, C, D};
    ts_tensor *y = ts_permute(ctx, x, perm);
    expect_shape(y, 4, (const int[]){D, B, A, C});
    double expected[N];
    for (int i = 0; i < N; i++) { /* out[o] = in[i] with o_k = i_perm[k] */
        int idx[4], rest = i;
        for (int d = 3; d >= 0; d--) {
            idx[d] = rest % in_shape[d];
            rest /= in_shape[d];
        }
        int o = 0;
        for (int k = 0; k < 4; k++) o = o * in_shape[perm[k]] + idx[perm[k]];
        expected[o] = x->data[i];
    }
    expect_values("permute", y, expected, N);

    /* Slice along the inner axis 1: rows 1..2 of each [B, C*D] block. */
    ts_tensor *s = ts_slice(ctx, x, 1, 1, 2);
    double sliced[A * 2 * C * D];
    for (int a = 0; a < A; a++)
        for (int j = 0; j < 2 * C * D; j++)
            sliced[a * 2 * C * D + j] = x->data[(a * B + 1) * C * D + j];
    expect_values("slice", s, sliced, A * 2 * C * D);

    /* Pad a [2, 3] into [2, 6] at column 2. */
    ts_tensor *small = random_tensor(fx, TS_SHAPE(2, 3), -1, 1);
    double padded[12] = {0};
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++) padded[r * 6 + 2 + c] = small->data[r * 3 + c];
    expect_values("pad", ts_pad(ctx, small, 1, 2, 6), padded, 12);

    /* Concat of five parts along axis 1. */
    ts_tensor *parts[5];
    int widths[5] = {1, 2, 1, 3, 1}, total = 0;
    for (int k = 0; k < 5; k++) parts[k] = random_tensor(fx, TS_SHAPE(2, widths[k]), -1, 1);
    double joined[2 * 8];
    for (int k = 0; k < 5; k++) {
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < widths[k]; c++)
                joined[r * 8 + total + c] = parts[k]->data[r * widths[k] + c];
        total += widths[k];
    }
    ts_tensor *cat = ts_concat(ctx, 5, parts, 1);
    expect_shape(cat, 2, (const int[]){2, 8});
    expect_values("concat", cat, joined, 16);
}

/* ---------------------------------------------------------------- indexing */

static void test_indexing(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { V = 5, D = 3, N = 6 };
    ts_tensor *table = random_tensor(fx, TS_SHAPE(V, D), -1, 1);
    static const int32_t ids[N] = {1, 3, 1, 0, 1, 4};
    double rows[N * D], scattered[V * D] = {0};
    for (int r = 0; r < N; r++)
        for (int c = 0; c < D; c++) {
            rows[r * D + c] = table->data[ids[r] * D + c];
            scattered[ids[r] * D + c] += rows[r * D + c];
        }
    ts_tensor *looked_up = ts_embedding(ctx, table, ids, N);
    expect_shape(looked_up, 2, (const int[]){N, D});
    expect_values("embedding", looked_up, rows, N * D);
    expect_values("scatter_rows", ts_scatter_rows(ctx, looked_up, ids, V), scattered, V * D);

    ts_tensor *x = random_tensor(fx, TS_SHAPE(2, 3, V), -1, 1);
    static const int32_t idx[N] = {0, 4, -1, 2, -3, 4};
    double picked[N], spread[N * V] = {0}, hot[N * V] = {0};
    for (int r = 0; r < N; r++) {
        picked[r] = idx[r] < 0 ? 0 : x->data[r * V + idx[r]]; /* negative index gives 0 */
        if (idx[r] >= 0) spread[r * V + idx[r]] = picked[r];
    }
    ts_tensor *gathered = ts_gather_last(ctx, x, idx);
    expect_values("gather_last", gathered, picked, N);
    expect_values("scatter_last", ts_scatter_last(ctx, gathered, idx, V), spread, N * V);
    for (int r = 0; r < N; r++) hot[r * V + ids[r]] = 1;
    expect_values("one_hot", ts_one_hot(ctx, ids, N, V), hot, N * V);
}

/* ---------------------------------------------------------------- layers */

static void test_rmsnorm(void **state) {
    fixture *fx = *state;
    enum { ROWS = 4, D = 6 };
    ts_tensor *x = random_tensor(fx, TS_SHAPE(2, 2, D), -2, 2);
    ts_tensor *w = random_tensor(fx, TS_SHAPE(D), 0.5, 1.5);
    double eps = 0.1, expected[ROWS * D];
    for (int r = 0; r < ROWS; r++) {
        double ms = 0;
        for (int c = 0; c < D; c++) ms += (double)x->data[r * D + c] * x->data[r * D + c] / D;
        for (int c = 0; c < D; c++)
            expected[r * D + c] = x->data[r * D + c] / sqrt(ms + eps) * w->data[c];
    }
    expect_values("rmsnorm", ts_rmsnorm(&fx->ctx, x, w, eps), expected, ROWS * D);
}

/* Llama's RoPE: pair (2i, 2i+1) of every head rotated by pos * theta^(-2i/dh),
 * at head width dh: 6 rotates in the scalar loop alone, 40 in two whole
 * vectors (TS_LANES = 16) and then that loop. */
static void expect_rope(fixture *fx, int dh) {
    enum { B = 2, T = 5, H = 2, MAX_DH = 40 };
    static const int32_t positions[T] = {0, 3, 1, 7, 2};
    const double theta = 500;
    ts_tensor *x = random_tensor(fx, TS_SHAPE(B, T, H, dh), -1, 1);
    double expected[B * T * H * MAX_DH];
    assert_true(dh <= MAX_DH);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < dh / 2; i++) {
                    long base = ((long)(b * T + t) * H + h) * dh;
                    double angle = positions[t] * pow(theta, -2.0 * i / dh);
                    double a = x->data[base + 2 * i], c = x->data[base + 2 * i + 1];
                    expected[base + 2 * i] = a * cos(angle) - c * sin(angle);
                    expected[base + 2 * i + 1] = a * sin(angle) + c * cos(angle);
                }
    expect_values("rope", ts_rope(&fx->ctx, x, positions, theta), expected, B * T * H * dh);
}

static void test_rope(void **state) {
    expect_rope(*state, 6);
    expect_rope(*state, 40);
}

static void test_attention(void **state) {
    fixture *fx = *state;
    enum { B = 2, H = 2, T = 4, DH = 3 };
    ts_tensor *q = random_tensor(fx, TS_SHAPE(B, H, T, DH), -1, 1);
    ts_tensor *k = random_tensor(fx, TS_SHAPE(B, H, T, DH), -1, 1);
    ts_tensor *v = random_tensor(fx, TS_SHAPE(B, H, T, DH), -1, 1);
    double scale = 0.8, expected[B * H * T * DH];
    for (int bh = 0; bh < B * H; bh++)
        for (int i = 0; i < T; i++) {
            double score[T], max = -INFINITY, sum = 0;
            for (int j = 0; j <= i; j++) { /* causal: keys 0..i */
                score[j] = 0;
                for (int d = 0; d < DH; d++)
                    score[j] += q->data[(bh * T + i) * DH + d] * k->data[(bh * T + j) * DH + d];
                score[j] *= scale;
                max = fmax(max, score[j]);
            }
            for (int j = 0; j <= i; j++) sum += exp(score[j] - max);
            for (int d = 0; d < DH; d++) {
                double out = 0;
                for (int j = 0; j <= i; j++)
                    out += exp(score[j] - max) / sum * v->data[(bh * T + j) * DH + d];
                expected[(bh * T + i) * DH + d] = out;
            }
        }
    ts_tensor *out = ts_attention(&fx->ctx, q, k, v, ts_causal_mask(&fx->ctx, T), scale);
    expect_values("attention", out, expected, B * H * T * DH);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_matmul),
        T(test_matmul_kernels),
        T(test_binary_broadcasting),
        T(test_unary_and_scalar),
        T(test_reductions),
        T(test_softmax_with_masks),
        T(test_cross_entropy),
        T(test_exp_accurate_is_correctly_rounded),
        T(test_exp_nonpositive_within_two_ulp),
        T(test_permute_slice_pad_concat),
        T(test_indexing),
        T(test_rmsnorm),
        T(test_rope),
        T(test_attention),
#undef T
    };
    return cmocka_run_group_tests_name("engine forward values (" TS_REAL_NAME ")", tests, NULL,
                                       NULL);
}
