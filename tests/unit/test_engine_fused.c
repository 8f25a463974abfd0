/* Fused kernels against the compositions of primitives they replace
 * (docs/performance.md): RMSNorm (forward and its fused rule), silu's fused
 * rule, the softmax that skips masked entries, the fused attention against
 * ts_attention under the causal mask and without a mask, and the fused
 * context attention (EBT's prediction stream) against its composition. For
 * each, the value, the first-order gradient and a second-order term (the
 * gradient of
 * <grad L, v>, taken with create_graph) must agree with the primitive
 * composition to rounding. The gradient checks (test_engine_gradcheck)
 * compare the same ops with finite differences; this test catches a fused
 * kernel that is consistently wrong in a way a loose tolerance could hide.
 * Also the per-op profile: it books every op of a pass in the right pass. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_fixture.h"
#include "splitmix.h"

#ifdef TS_DOUBLE
#define TOL 1e-11
#else
#define TOL 2e-5
#endif

typedef engine_fixture fixture;

static int setup(void **state) {
    return engine_fixture_setup(state, 1 << 22, 0x510E527FADE682D1ull);
}
static int teardown(void **state) {
    return engine_fixture_teardown(state);
}

static ts_tensor *leaf(fixture *fx, int ndim, const int *shape, double lo, double hi) {
    ts_tensor *t = ts_new(&fx->ctx, ndim, shape);
    test_rng_fill_uniform(&fx->rng, t->data, t->numel, lo, hi);
    ts_set_requires_grad(&fx->ctx, t, true);
    return t;
}

static ts_tensor *constant(fixture *fx, const ts_tensor *like) {
    ts_tensor *t = ts_new_like(&fx->ctx, like);
    test_rng_fill_uniform(&fx->rng, t->data, t->numel, -1, 1);
    return t;
}

static void expect_close(const ts_tensor *a, const ts_tensor *b, const char *what) {
    assert_int_equal(a->numel, b->numel);
    double scale = 0;
    for (long i = 0; i < b->numel; i++) scale = fmax(scale, fabs((double)b->data[i]));
    for (long i = 0; i < a->numel; i++)
        if (!(fabs((double)a->data[i] - (double)b->data[i]) <= TOL * fmax(scale, 1)))
            fail_msg("%s: element %ld: fused %.12g, primitives %.12g", what, i, (double)a->data[i],
                     (double)b->data[i]);
}

typedef ts_tensor *(*unary_fn)(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask);

/* f (fused) and g (primitives) of the same inputs: values, gradients of
 * <w, f> and gradients of <grad <w, f>, v> with respect to every input. */
static void expect_same_function(fixture *fx, unary_fn fused, unary_fn primitives, int n_in,
                                 ts_tensor *const *in, const ts_tensor *mask, const char *name) {
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *y[2] = {fused(ctx, in, mask), primitives(ctx, in, mask)};
    expect_close(y[0], y[1], name);
    ts_tensor *w = constant(fx, y[0]);
    ts_tensor *v[5];
    for (int j = 0; j < n_in; j++) v[j] = constant(fx, in[j]);
    ts_tensor *first[2][5], *second[2][5];
    for (int k = 0; k < 2; k++) {
        ts_grad(ctx, 1, &y[k], &w, n_in, in, first[k], true);
        ts_tensor *h = NULL;
        for (int j = 0; j < n_in; j++) {
            ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, first[k][j], v[j]));
            h = h ? ts_add(ctx, h, term) : term;
        }
        ts_grad(ctx, 1, &h, NULL, n_in, in, second[k], false);
    }
    char what[96];
    for (int j = 0; j < n_in; j++) {
        snprintf(what, sizeof what, "%s: first-order gradient of input %d", name, j);
        expect_close(first[0][j], first[1][j], what);
        snprintf(what, sizeof what, "%s: second-order term of input %d", name, j);
        expect_close(second[0][j], second[1][j], what);
    }
}

static ts_tensor *rmsnorm_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_rmsnorm(ctx, in[0], in[1], 1e-2);
}

static ts_tensor *rmsnorm_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    ts_tensor *ms = ts_mean(ctx, ts_square(ctx, in[0]), -1, true);
    return ts_mul(ctx, ts_mul(ctx, in[0], ts_rsqrt(ctx, ts_add_scalar(ctx, ms, 1e-2))), in[1]);
}

static ts_tensor *silu_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_silu(ctx, in[0]);
}

static ts_tensor *silu_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_mul(ctx, in[0], ts_sigmoid(ctx, in[0]));
}

static ts_tensor *softmax_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return ts_softmax(ctx, in[0], mask);
}

/* exp(x - max) under the mask, normalised: masked entries are exactly 0. */
static ts_tensor *softmax_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    ts_tensor *keep = ts_new_like(ctx, mask); /* 1 where visible */
    for (long i = 0; i < mask->numel; i++) keep->data[i] = mask->data[i] == 0 ? 1 : 0;
    ts_tensor *e = ts_mul(ctx, ts_exp(ctx, in[0]), keep);
    return ts_div(ctx, e, ts_sum(ctx, e, -1, true));
}

static void test_rmsnorm_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_tensor *x = leaf(fx, TS_SHAPE(3, 4, 16), -2, 2), *w = leaf(fx, TS_SHAPE(16), 0.5, 1.5);
    expect_same_function(fx, rmsnorm_fused, rmsnorm_primitives, 2, (ts_tensor *[]){x, w}, NULL,
                         "rmsnorm");
}

static ts_tensor *swiglu_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_swiglu(ctx, in[0], in[1]);
}

static ts_tensor *swiglu_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_mul(ctx, ts_silu(ctx, in[0]), in[1]);
}

/* The fused SwiGLU gate computes the same float operations as silu and mul
 * (and their rules) in the same order: its value and plain gradients equal
 * theirs bit for bit, and its second-order terms to rounding. */
static void test_swiglu_matches_silu_times(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *a = leaf(fx, TS_SHAPE(5, 7), -6, 6), *b = leaf(fx, TS_SHAPE(5, 7), -2, 2);
    ts_tensor *in[2] = {a, b};
    expect_same_function(fx, swiglu_fused, swiglu_primitives, 2, in, NULL, "swiglu");
    ts_tensor *y[2] = {swiglu_fused(ctx, in, NULL), swiglu_primitives(ctx, in, NULL)};
    ts_tensor *w = constant(fx, y[0]), *grads[2][2];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, 2, in, grads[k], false);
    assert_memory_equal(y[0]->data, y[1]->data, (size_t)y[0]->numel * sizeof(ts_real));
    for (int j = 0; j < 2; j++)
        assert_memory_equal(grads[0][j]->data, grads[1][j]->data,
                            (size_t)grads[0][j]->numel * sizeof(ts_real));
}

static ts_tensor *swiglu_packed_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_swiglu_packed(ctx, in[0]);
}

/* ts_swiglu on the two halves of the last axis, cut out by slices. */
static ts_tensor *swiglu_packed_sliced(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    int axis = in[0]->ndim - 1, f = in[0]->shape[axis] / 2;
    return ts_swiglu(ctx, ts_slice(ctx, in[0], axis, 0, f), ts_slice(ctx, in[0], axis, f, f));
}

/* The packed SwiGLU is ts_swiglu on the halves of its input: the same value
 * and plain gradient bit for bit (the same float operations), second-order
 * terms to rounding. */
static void test_swiglu_packed_matches_halves(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *in[1] = {leaf(fx, TS_SHAPE(3, 5, 14), -6, 6)};
    expect_same_function(fx, swiglu_packed_fused, swiglu_packed_sliced, 1, in, NULL,
                         "swiglu_packed");
    ts_tensor *y[2] = {swiglu_packed_fused(ctx, in, NULL), swiglu_packed_sliced(ctx, in, NULL)};
    assert_int_equal(y[0]->ndim, 3);
    assert_int_equal(y[0]->shape[2], 7);
    ts_tensor *w = constant(fx, y[0]), *grads[2];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, 1, in, &grads[k], false);
    assert_memory_equal(y[0]->data, y[1]->data, (size_t)y[0]->numel * sizeof(ts_real));
    assert_memory_equal(grads[0]->data, grads[1]->data, (size_t)grads[0]->numel * sizeof(ts_real));
}

static void test_silu_rule_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_tensor *x = leaf(fx, TS_SHAPE(5, 7), -6, 6);
    expect_same_function(fx, silu_fused, silu_primitives, 1, (ts_tensor *[]){x}, NULL, "silu");
}

/* silu's second derivative is one op (silu_backward_dx) computing the float
 * operations of the eleven primitives it replaced, in their order: the
 * second-order term of silu equals that composition bit for bit. */
static void test_silu_second_derivative_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = leaf(fx, TS_SHAPE(6, 9), -8, 8);
    ts_tensor *w = constant(fx, x), *v = constant(fx, x), *first, *second;
    ts_tensor *y = ts_silu(ctx, x);
    ts_grad(ctx, 1, &y, &w, 1, &x, &first, true);
    ts_tensor *h = ts_sum_all(ctx, ts_mul(ctx, first, v));
    ts_grad(ctx, 1, &h, NULL, 1, &x, &second, false);
    bool recording = ts_set_grad_enabled(ctx, false);
    ts_tensor *s = ts_sigmoid(ctx, x);
    ts_tensor *s_one_minus_s = ts_mul(ctx, s, ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1));
    ts_tensor *slope =
        ts_add_scalar(ctx, ts_mul(ctx, x, ts_add_scalar(ctx, ts_scale(ctx, s, -2), 1)), 2);
    ts_tensor *expected = ts_mul(ctx, ts_mul(ctx, v, w), ts_mul(ctx, s_one_minus_s, slope));
    ts_set_grad_enabled(ctx, recording);
    assert_memory_equal(second->data, expected->data, (size_t)x->numel * sizeof(ts_real));
}

/* silu'(a) h in the primitives swiglu_packed's second order once was: (h s)(a (1 - s) + 1). */
static ts_tensor *silu_slope_primitives(ts_ctx *ctx, ts_tensor *a, ts_tensor *s, ts_tensor *h) {
    ts_tensor *one_minus_s = ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1);
    return ts_mul(ctx, ts_mul(ctx, h, s), ts_add_scalar(ctx, ts_mul(ctx, a, one_minus_s), 1));
}

/* The packed SwiGLU's second order is two ops (swiglu_packed_backward_dx for
 * x, swiglu_packed_jvp for the output gradient) computing the float
 * operations of the composition they replaced (slices, silu's fused rules,
 * products, sums, a concat), in its order: with y = swiglu_packed(x) [a, b],
 * first = grad <w, y> and the direction v = [va, vb], the gradients of
 * <first, v> equal, bit for bit,
 *   for x: [(va (w b)) silu''(a) + silu'(a) (vb w), w silu'(a) va]
 *   for w: b silu'(a) va + a s vb. */
static void test_swiglu_packed_second_order_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = leaf(fx, TS_SHAPE(3, 4, 10), -8, 8);
    ts_tensor *y = ts_swiglu_packed(ctx, x);
    ts_tensor *w = leaf(fx, y->ndim, y->shape, -1, 1), *v = constant(fx, x), *first;
    ts_grad(ctx, 1, &y, &w, 1, &x, &first, true);
    ts_tensor *h = ts_sum_all(ctx, ts_mul(ctx, first, v)), *second[2];
    ts_grad(ctx, 1, &h, NULL, 2, (ts_tensor *[]){x, w}, second, false);
    bool recording = ts_set_grad_enabled(ctx, false);
    int axis = 2, f = 5;
    ts_tensor *a = ts_slice(ctx, x, axis, 0, f), *b = ts_slice(ctx, x, axis, f, f);
    ts_tensor *va = ts_slice(ctx, v, axis, 0, f), *vb = ts_slice(ctx, v, axis, f, f);
    ts_tensor *s = ts_sigmoid(ctx, a);
    ts_tensor *s_one_minus_s = ts_mul(ctx, s, ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1));
    ts_tensor *curvature =
        ts_mul(ctx, s_one_minus_s,
               ts_add_scalar(ctx, ts_mul(ctx, a, ts_add_scalar(ctx, ts_scale(ctx, s, -2), 1)), 2));
    ts_tensor *slope = silu_slope_primitives(ctx, a, s, va);
    ts_tensor *d_a = ts_add(ctx, ts_mul(ctx, ts_mul(ctx, va, ts_mul(ctx, w, b)), curvature),
                            silu_slope_primitives(ctx, a, s, ts_mul(ctx, vb, w)));
    ts_tensor *d_x = ts_concat(ctx, 2, (ts_tensor *[]){d_a, ts_mul(ctx, w, slope)}, axis);
    ts_tensor *d_w = ts_add(ctx, ts_mul(ctx, b, slope), ts_mul(ctx, ts_mul(ctx, a, s), vb));
    ts_set_grad_enabled(ctx, recording);
    assert_memory_equal(second[0]->data, d_x->data, (size_t)x->numel * sizeof(ts_real));
    assert_memory_equal(second[1]->data, d_w->data, (size_t)w->numel * sizeof(ts_real));
}

static void test_causal_softmax_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_tensor *x = leaf(fx, TS_SHAPE(2, 6, 6), -1, 1);
    ts_tensor *mask = ts_causal_mask(&fx->ctx, 6);
    expect_same_function(fx, softmax_fused, softmax_primitives, 1, (ts_tensor *[]){x}, mask,
                         "causal softmax");
}

enum { ATT_T = 150 }; /* three strips of the fused kernel, the last partial */
#define ATT_SCALE 0.4

static ts_tensor *attention_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_causal_attention(ctx, in[0], in[1], in[2], ATT_SCALE);
}

static ts_tensor *full_attention_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_full_attention(ctx, in[0], in[1], in[2], ATT_SCALE);
}

static ts_tensor *attention_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return ts_attention(ctx, in[0], in[1], in[2], mask, ATT_SCALE);
}

/* The gradients of <w, f> without create_graph (the fused backward of a
 * fused op) against the primitives'. */
static void expect_same_plain_gradients(fixture *fx, unary_fn fused, unary_fn primitives, int n_in,
                                        ts_tensor *const *in, const ts_tensor *mask,
                                        const char *name) {
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *y[2] = {fused(ctx, in, mask), primitives(ctx, in, mask)};
    ts_tensor *w = constant(fx, y[0]), *plain[2][5];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, n_in, in, plain[k], false);
    char what[96];
    for (int j = 0; j < n_in; j++) {
        assert_false(plain[0][j]->requires_grad);
        snprintf(what, sizeof what, "%s: plain gradient of input %d", name, j);
        expect_close(plain[0][j], plain[1][j], what);
    }
}

/* An attention's values and gradients, recorded (expect_same_function) and
 * plain (its fused backward), against the primitives'. */
static void expect_same_attention(fixture *fx, unary_fn fused, unary_fn primitives, int n_in,
                                  ts_tensor *const *in, const ts_tensor *mask, const char *name) {
    expect_same_function(fx, fused, primitives, n_in, in, mask, name);
    expect_same_plain_gradients(fx, fused, primitives, n_in, in, mask, name);
}

/* FLOPs booked by f's forward, plain backward and recorded backward
 * (booked[0..2]) for inputs of the given row counts [2, 3, rows[j], 5] and
 * an output of ATT_T rows, on ctx (executing or counting). */
static void book_passes(fixture *fx, ts_ctx *ctx, unary_fn f, int n_in, const int *rows,
                        double *booked) {
    ts_tensor *in[5], *g[5];
    for (int j = 0; j < n_in; j++) {
        in[j] = ts_new(ctx, TS_SHAPE(2, 3, rows[j], 5));
        if (!ts_is_counting(ctx)) test_rng_fill_uniform(&fx->rng, in[j]->data, in[j]->numel, -1, 1);
        ts_set_requires_grad(ctx, in[j], true);
    }
    ts_tensor *seed = ts_new(ctx, TS_SHAPE(2, 3, ATT_T, 5));
    if (!ts_is_counting(ctx)) test_rng_fill_uniform(&fx->rng, seed->data, seed->numel, -1, 1);
    ts_reset_flops(ctx);
    ts_tensor *y = f(ctx, in, NULL);
    booked[0] = ts_flops_total(ctx);
    ts_grad(ctx, 1, &y, &seed, n_in, in, g, false);
    booked[1] = ts_flops_total(ctx) - booked[0];
    ts_grad(ctx, 1, &y, &seed, n_in, in, g, true);
    booked[2] = ts_flops_total(ctx) - booked[0] - booked[1];
}

/* A fused op books the same FLOPs counting as executing (forward, plain and
 * recorded backward), and in its forward fewer than the composition it
 * replaces when it skips masked work (skips), the same otherwise. */
static void expect_counts_as_executed(fixture *fx, unary_fn fused, unary_fn primitives,
                                      const ts_tensor *mask, int n_in, const int *rows,
                                      bool skips) {
    ts_ctx counting;
    assert_true(ts_ctx_init_counting(&counting, 0));
    double booked[2][3];
    book_passes(fx, &fx->ctx, fused, n_in, rows, booked[0]);
    book_passes(fx, &counting, fused, n_in, rows, booked[1]);
    ts_ctx_free(&counting);
    for (int p = 0; p < 3; p++) {
        assert_true(booked[0][p] > 0);
        assert_true(booked[0][p] == booked[1][p]);
    }
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *in[5];
    for (int j = 0; j < n_in; j++) in[j] = leaf(fx, TS_SHAPE(2, 3, rows[j], 5), -1, 1);
    ts_reset_flops(ctx);
    primitives(ctx, in, mask);
    if (skips)
        assert_true(booked[0][0] < ts_flops_total(ctx));
    else
        assert_true(booked[0][0] == ts_flops_total(ctx));
}

/* Values, the plain (fused) first-order gradients, and with create_graph
 * (the primitive fallback) first- and second-order terms, of the fused
 * attention over q, k, v [2, 3, ATT_T, 5] against ts_attention under mask. */
static void expect_attention_matches(fixture *fx, unary_fn fused, const ts_tensor *mask,
                                     const char *name) {
    ts_tensor *in[3];
    for (int j = 0; j < 3; j++) in[j] = leaf(fx, TS_SHAPE(2, 3, ATT_T, 5), -2, 2);
    expect_same_attention(fx, fused, attention_primitives, 3, in, mask, name);
}

static void test_causal_attention_matches_primitives(void **state) {
    fixture *fx = *state;
    expect_attention_matches(fx, attention_fused, ts_causal_mask(&fx->ctx, ATT_T),
                             "causal attention");
}

/* It skips the masked strips. */
static void test_causal_attention_counts_as_executed(void **state) {
    fixture *fx = *state;
    expect_counts_as_executed(fx, attention_fused, attention_primitives,
                              ts_causal_mask(&fx->ctx, ATT_T), 3,
                              (const int[]){ATT_T, ATT_T, ATT_T}, true);
}

/* Without a mask: every strip over all ATT_T keys. */
static void test_full_attention_matches_primitives(void **state) {
    expect_attention_matches(*state, full_attention_fused, NULL, "full attention");
}

/* Its forward executes every score, as the composition does. */
static void test_full_attention_counts_as_executed(void **state) {
    fixture *fx = *state;
    expect_counts_as_executed(fx, full_attention_fused, attention_primitives, NULL, 3,
                              (const int[]){ATT_T, ATT_T, ATT_T}, false);
}

/* The packed layout: qkv [2, ATT_T, 3 D] with 3 heads of 5, output
 * [2, ATT_T, D]; the primitives take the heads apart (slices, reshapes,
 * permutes) and run ts_attention on [B, H, T, dh]. */
enum { PACKED_HEADS = 3, PACKED_DH = 5, PACKED_D = PACKED_HEADS * PACKED_DH };

/* With RoPE the heads are 6 wide (RoPE rotates pairs), at positions 3, 4,
 * 5, ... */
enum { ROPE_HEADS = 2, ROPE_DH = 6, ROPE_D = ROPE_HEADS * ROPE_DH };
static int32_t rope_positions[ATT_T];

static ts_tensor *packed_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_causal_attention_packed(ctx, in[0], PACKED_HEADS, NULL, 0, ATT_SCALE);
}

static ts_tensor *packed_rope_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_causal_attention_packed(ctx, in[0], ROPE_HEADS, rope_positions, 500, ATT_SCALE);
}

static ts_tensor *packed_heads(ts_ctx *ctx, ts_tensor *qkv, int part, int heads, bool rope) {
    int b = qkv->shape[0], t = qkv->shape[1], d = qkv->shape[2] / 3;
    ts_tensor *x = ts_slice(ctx, qkv, 2, part * d, d);
    x = ts_reshape(ctx, x, TS_SHAPE(b, t, heads, d / heads));
    if (rope && part < 2) x = ts_rope(ctx, x, rope_positions, 500);
    return ts_permute(ctx, x, (const int[]){0, 2, 1, 3});
}

static ts_tensor *packed_composition(ts_ctx *ctx, ts_tensor *qkv, int heads, bool rope,
                                     const ts_tensor *mask) {
    ts_tensor *a = ts_attention(ctx, packed_heads(ctx, qkv, 0, heads, rope),
                                packed_heads(ctx, qkv, 1, heads, rope),
                                packed_heads(ctx, qkv, 2, heads, rope), mask, ATT_SCALE);
    a = ts_permute(ctx, a, (const int[]){0, 2, 1, 3});
    return ts_reshape(ctx, a, TS_SHAPE(qkv->shape[0], ATT_T, qkv->shape[2] / 3));
}

static ts_tensor *packed_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return packed_composition(ctx, in[0], PACKED_HEADS, false, mask);
}

static ts_tensor *packed_rope_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    return packed_composition(ctx, in[0], ROPE_HEADS, true, mask);
}

static void test_packed_attention_matches_primitives(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *qkv = leaf(fx, TS_SHAPE(2, ATT_T, 3 * PACKED_D), -2, 2);
    ts_tensor *mask = ts_causal_mask(ctx, ATT_T);
    expect_same_attention(fx, packed_fused, packed_primitives, 1, &qkv, mask,
                          "packed causal attention");
    for (int t = 0; t < ATT_T; t++) rope_positions[t] = t + 3;
    ts_tensor *qkv_rope = leaf(fx, TS_SHAPE(2, ATT_T, 3 * ROPE_D), -2, 2);
    expect_same_attention(fx, packed_rope_fused, packed_rope_primitives, 1, &qkv_rope, mask,
                          "packed causal attention with RoPE");
}

/* ts_packed_heads (EBT's observed keys and values) against the slice,
 * reshape, RoPE and permute it fuses: the keys of qkv (with RoPE) and its
 * values, each alone and beside the packed attention over the same qkv,
 * taken first as EBT takes them, so the attention's d(qkv) is the sum the
 * plain rule adds into. The heads [B, H, T, dh] are seen as [B, T, D] to be
 * added to the attention's output. */
static ts_tensor *as_rows(ts_ctx *ctx, ts_tensor *heads) {
    return ts_reshape(ctx, heads, TS_SHAPE(heads->shape[0], ATT_T, -1));
}

static ts_tensor *keys_values_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    ts_tensor *k = ts_packed_heads(ctx, in[0], 1, 3, ROPE_HEADS, rope_positions, 500);
    ts_tensor *v = ts_packed_heads(ctx, in[0], 2, 3, ROPE_HEADS, NULL, 0);
    return ts_add(ctx, as_rows(ctx, k), as_rows(ctx, v));
}

static ts_tensor *keys_values_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    ts_tensor *k = packed_heads(ctx, in[0], 1, ROPE_HEADS, true);
    ts_tensor *v = packed_heads(ctx, in[0], 2, ROPE_HEADS, false);
    return ts_add(ctx, as_rows(ctx, k), as_rows(ctx, v));
}

static ts_tensor *beside_attention_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    ts_tensor *kv = keys_values_fused(ctx, in, mask);
    return ts_add(ctx, packed_rope_fused(ctx, in, mask), kv);
}

static ts_tensor *beside_attention_primitives(ts_ctx *ctx, ts_tensor *const *in,
                                              const ts_tensor *mask) {
    ts_tensor *kv = keys_values_primitives(ctx, in, mask);
    return ts_add(ctx, packed_rope_fused(ctx, in, mask), kv);
}

/* The values and plain gradients of f and g at in for a random seed, equal
 * element by element (bit for bit but for the sign of a zero: the fused
 * rule leaves a sum's -0 where adding a padded +0 would make it +0). */
static void expect_identical_plain_gradients(fixture *fx, unary_fn f, unary_fn g, ts_tensor *in,
                                             const char *name) {
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *y[2] = {f(ctx, &in, NULL), g(ctx, &in, NULL)};
    assert_memory_equal(y[0]->data, y[1]->data, (size_t)y[0]->numel * sizeof(ts_real));
    ts_tensor *w = constant(fx, y[0]), *plain[2];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, 1, &in, &plain[k], false);
    for (long i = 0; i < in->numel; i++)
        if (plain[0]->data[i] != plain[1]->data[i])
            fail_msg("%s: plain gradients differ at %ld (column %ld): %.9g, %.9g", name, i,
                     i % in->shape[2], (double)plain[0]->data[i], (double)plain[1]->data[i]);
}

static void test_packed_heads_match_their_composition(void **state) {
    fixture *fx = *state;
    for (int t = 0; t < ATT_T; t++) rope_positions[t] = t + 3;
    ts_tensor *qkv = leaf(fx, TS_SHAPE(2, ATT_T, 3 * ROPE_D), -2, 2);
    /* (alone the op is linear: no second-order term to compare) */
    expect_same_function(fx, beside_attention_fused, beside_attention_primitives, 1, &qkv, NULL,
                         "packed heads beside the packed attention");
    /* the same rotations and the same additions: values and plain
     * gradients bit for bit, with a fresh gradient and added into a sum */
    expect_identical_plain_gradients(fx, keys_values_fused, keys_values_primitives, qkv,
                                     "packed heads");
    expect_identical_plain_gradients(fx, beside_attention_fused, beside_attention_primitives, qkv,
                                     "packed heads beside the packed attention");
}

/* FLOPs booked by the forward and the plain backward of the packed op on
 * ctx (executing or counting). */
static void book_packed(fixture *fx, ts_ctx *ctx, double *booked) {
    ts_tensor *qkv = ts_new(ctx, TS_SHAPE(2, ATT_T, 3 * PACKED_D)), *g;
    if (!ts_is_counting(ctx)) test_rng_fill_uniform(&fx->rng, qkv->data, qkv->numel, -1, 1);
    ts_set_requires_grad(ctx, qkv, true);
    ts_tensor *seed = ts_new(ctx, TS_SHAPE(2, ATT_T, PACKED_D));
    if (!ts_is_counting(ctx)) test_rng_fill_uniform(&fx->rng, seed->data, seed->numel, -1, 1);
    ts_reset_flops(ctx);
    ts_tensor *y = packed_fused(ctx, &qkv, NULL);
    booked[0] = ts_flops_total(ctx);
    ts_grad(ctx, 1, &y, &seed, 1, &qkv, &g, false);
    booked[1] = ts_flops_total(ctx) - booked[0];
}

/* It books what ts_causal_attention books for the same heads, counting as
 * executing. */
static void test_packed_attention_counts_as_separate(void **state) {
    fixture *fx = *state;
    ts_ctx counting;
    assert_true(ts_ctx_init_counting(&counting, 0));
    double packed[2][2], separate[3];
    book_packed(fx, &fx->ctx, packed[0]);
    book_packed(fx, &counting, packed[1]);
    ts_ctx_free(&counting);
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *in[3], *g[3];
    for (int j = 0; j < 3; j++)
        in[j] = leaf(fx, TS_SHAPE(2, PACKED_HEADS, ATT_T, PACKED_DH), -1, 1);
    ts_tensor *seed = constant(fx, in[0]);
    ts_reset_flops(ctx);
    ts_tensor *y = attention_fused(ctx, in, NULL);
    separate[0] = ts_flops_total(ctx);
    ts_grad(ctx, 1, &y, &seed, 3, in, g, false);
    separate[1] = ts_flops_total(ctx) - separate[0];
    for (int p = 0; p < 2; p++) {
        assert_true(packed[0][p] > 0);
        assert_true(packed[0][p] == packed[1][p]);
        assert_true(packed[0][p] == separate[p]);
    }
}

static ts_tensor *context_fused(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_context_attention(ctx, in[0], in[1], in[2], in[3], in[4], ATT_SCALE);
}

static ts_tensor *context_primitives(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    return ts_context_attention_composed(ctx, in[0], in[1], in[2], in[3], in[4], ATT_SCALE);
}

/* The token-major form on the same inputs: rows permuted to [B, L, H, dh],
 * the result permuted back. */
static ts_tensor *context_tokens(ts_ctx *ctx, ts_tensor *const *in, const ts_tensor *mask) {
    (void)mask;
    static const int swap[4] = {0, 2, 1, 3};
    ts_tensor *y = ts_context_attention_tokens(ctx, ts_permute(ctx, in[0], swap), in[1], in[2],
                                               ts_permute(ctx, in[3], swap),
                                               ts_permute(ctx, in[4], swap), ATT_SCALE);
    return ts_permute(ctx, y, swap);
}

/* q, k, v, k_self, v_self: ATT_T queries (three strips, the last partial)
 * and `keys` context keys. */
static void context_inputs(fixture *fx, ts_tensor **in, int keys) {
    for (int j = 0; j < 5; j++)
        in[j] = leaf(fx, TS_SHAPE(2, 3, j == 1 || j == 2 ? keys : ATT_T, 5), -2, 2);
}

/* Values, the plain (fused) first-order gradients, and with create_graph
 * (the same ops again) first- and second-order terms; at EBT's shape
 * (C = L + 1: row r sees keys 0..r + 1), at C = L + 3 and at C = L + 37,
 * whose strips' keys past their whole GEMM panels (of 32) are seen by more
 * than a strip's last row (by all 22 rows of the last strip: 187 keys, 160
 * in whole panels, its first row sees 166). */
static void test_context_attention_matches_primitives(void **state) {
    fixture *fx = *state;
    static const int offsets[] = {1, 3, 37};
    for (int i = 0; i < 3; i++) {
        int offset = offsets[i];
        ts_tensor *in[5];
        context_inputs(fx, in, ATT_T + offset);
        expect_same_attention(fx, context_fused, context_primitives, 5, in, NULL,
                              "context attention");
    }
}

/* Token-major rows give the head-major op's values and gradients (first and
 * second order, plain and recorded), bit for bit: the same strip GEMMs on
 * rows read and written in place. */
static void test_context_attention_tokens_matches_heads(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    for (int offset = 1; offset <= 3; offset += 2) {
        ts_tensor *in[5];
        context_inputs(fx, in, ATT_T + offset);
        ts_tensor *y[2] = {context_tokens(ctx, in, NULL), context_fused(ctx, in, NULL)};
        for (long i = 0; i < y[0]->numel; i++) assert_true(y[0]->data[i] == y[1]->data[i]);
        expect_same_attention(fx, context_tokens, context_fused, 5, in, NULL,
                              "context attention, token-major");
    }
}

/* A plain pass runs the attention's mix's and probabilities' rules as one
 * loop (engine/autodiff.h: ts_pair_backward_fn); a recorded pass runs them
 * one after the other, and so does a plain pass with ctx.pair_rules off.
 * The gradients agree bit for bit: alone (loss <y, z>); with P shared, so
 * that the loop adds another consumer's gradient of P first (first =
 * d<y, w>/dv = mix_t(P, w), recorded; loss <first, u> + <y, z>); and as in
 * EBT's second-order pass, through the recorded scores' gradient (first =
 * d<y, w>/d(q, k_self); loss <first_q, u_q> + <first_k_self, u_k_self> +
 * <y, z>). */
static void expect_plain_pair_as_recorded(fixture *fx, unary_fn f, ts_tensor *const *in) {
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *y = f(ctx, in, NULL);
    ts_tensor *z = constant(fx, y), *w = constant(fx, y), *first_v, *first_qk[2];
    ts_grad(ctx, 1, &y, &w, 1, &in[2], &first_v, true);
    ts_grad(ctx, 1, &y, &w, 2, (ts_tensor *[]){in[0], in[3]}, first_qk, true);
    ts_tensor *alone = ts_sum_all(ctx, ts_mul(ctx, y, z));
    ts_tensor *shared =
        ts_add(ctx, alone, ts_sum_all(ctx, ts_mul(ctx, first_v, constant(fx, first_v))));
    ts_tensor *second = alone;
    for (int j = 0; j < 2; j++)
        second = ts_add(ctx, second,
                        ts_sum_all(ctx, ts_mul(ctx, first_qk[j], constant(fx, first_qk[j]))));
    ts_tensor *losses[3] = {alone, shared, second};
    for (int l = 0; l < 3; l++) {
        ts_tensor *plain[5], *unpaired[5], *recorded[5];
        ts_grad(ctx, 1, &losses[l], NULL, 5, in, plain, false);
        ctx->pair_rules = false;
        ts_grad(ctx, 1, &losses[l], NULL, 5, in, unpaired, false);
        ctx->pair_rules = true;
        ts_grad(ctx, 1, &losses[l], NULL, 5, in, recorded, true);
        for (int j = 0; j < 5; j++) {
            assert_int_equal(plain[j]->numel, recorded[j]->numel);
            for (long i = 0; i < plain[j]->numel; i++)
                if (plain[j]->data[i] != recorded[j]->data[i] ||
                    plain[j]->data[i] != unpaired[j]->data[i] || isnan(plain[j]->data[i]))
                    fail_msg("loss %d, input %d, element %ld: paired %.9g, unpaired %.9g, "
                             "recorded %.9g",
                             l, j, i, (double)plain[j]->data[i], (double)unpaired[j]->data[i],
                             (double)recorded[j]->data[i]);
        }
    }
}

static void test_context_attention_plain_pair_is_recorded_bit_for_bit(void **state) {
    fixture *fx = *state;
    for (int offset = 1; offset <= 37; offset += 36) {
        ts_tensor *in[5];
        context_inputs(fx, in, ATT_T + offset);
        expect_plain_pair_as_recorded(fx, context_fused, in);
        expect_plain_pair_as_recorded(fx, context_tokens, in);
    }
}

/* It skips the masked context keys. */
static void test_context_attention_counts_as_executed(void **state) {
    fixture *fx = *state;
    expect_counts_as_executed(fx, context_fused, context_primitives, NULL, 5,
                              (const int[]){ATT_T, ATT_T + 1, ATT_T + 1, ATT_T, ATT_T}, true);
}

static const ts_profile_entry *find(const ts_profile *p, enum ts_pass pass, const char *op) {
    for (int i = 0; i < p->n_entries[pass]; i++)
        if (!strcmp(p->entries[pass][i].op, op)) return &p->entries[pass][i];
    return NULL;
}

/* y = x W (forward), its gradient with create_graph (recorded backward),
 * then the gradient of <grad, v> (second order): every matmul lands in its
 * pass with the FLOPs it counted, and the passes add up to ctx.flops. */
static void test_profile_books_ops_by_pass(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = leaf(fx, TS_SHAPE(4, 8), -1, 1), *wt = leaf(fx, TS_SHAPE(8, 3), -1, 1);
    ts_profile profile;
    ts_reset_flops(ctx);
    ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
    ts_tensor *y = ts_silu(ctx, ts_matmul(ctx, x, wt, false, false));
    ts_tensor *seed = constant(fx, y), *g;
    ts_grad(ctx, 1, &y, &seed, 1, &x, &g, true);
    ts_tensor *h = ts_sum_all(ctx, ts_mul(ctx, g, constant(fx, g))), *gw;
    ts_grad(ctx, 1, &h, NULL, 1, &wt, &gw, false);
    ts_profile_stop(ctx);

    const ts_profile_entry *fwd = find(&profile, TS_PASS_FORWARD, "matmul");
    assert_non_null(fwd);
    assert_int_equal(fwd->calls, 1);
    assert_true(fwd->flops == 2.0 * 4 * 8 * 3);
    /* tensor bytes: x [4, 8], W [8, 3] and the output [4, 3]; silu its input and output */
    assert_true(fwd->bytes == (4 * 8 + 8 * 3 + 4 * 3) * (double)sizeof(ts_real));
    const ts_profile_entry *silu = find(&profile, TS_PASS_FORWARD, "silu");
    assert_non_null(silu);
    assert_true(silu->bytes == 2 * 4 * 3 * (double)sizeof(ts_real));
    const ts_profile_entry *recorded = find(&profile, TS_PASS_BACKWARD_GRAPH, "silu_backward");
    assert_non_null(recorded);
    assert_non_null(find(&profile, TS_PASS_BACKWARD_GRAPH, "matmul"));
    assert_non_null(find(&profile, TS_PASS_SECOND_ORDER, "matmul"));
    assert_null(find(&profile, TS_PASS_FORWARD, "silu_backward"));
    double total = 0, seconds = 0;
    for (int p = 0; p < TS_PASSES; p++) {
        double s, f;
        ts_profile_pass_totals(&profile, p, &s, &f);
        assert_true(s >= 0);
        total += f;
        seconds += s;
    }
    assert_true(fabs(total - ts_flops_total(ctx)) <= 1e-9 * total);
    assert_true(seconds > 0);
    /* An input given twice is one buffer: x * x books x and its output. */
    ts_profile twice;
    ts_profile_start(ctx, &twice, TS_PROFILE_CPU);
    ts_mul(ctx, x, x);
    ts_profile_stop(ctx);
    const ts_profile_entry *square = find(&twice, TS_PASS_FORWARD, "mul");
    assert_non_null(square);
    assert_true(square->bytes == 2 * 4 * 8 * (double)sizeof(ts_real));
    /* The context attention's scores are never formed (each strip turned
     * into probabilities in cache): its probabilities' row books q, k,
     * k_self and P [1, 2, 4, 6] only, not the scores. */
    ts_tensor *cq = leaf(fx, TS_SHAPE(1, 2, 4, 3), -1, 1),
              *ck = leaf(fx, TS_SHAPE(1, 2, 5, 3), -1, 1);
    ts_tensor *cv = leaf(fx, TS_SHAPE(1, 2, 5, 3), -1, 1),
              *cks = leaf(fx, TS_SHAPE(1, 2, 4, 3), -1, 1);
    ts_tensor *cvs = leaf(fx, TS_SHAPE(1, 2, 4, 3), -1, 1);
    ts_profile context;
    ts_profile_start(ctx, &context, TS_PROFILE_CPU);
    ts_backward(ctx, ts_sum_all(ctx, ts_context_attention(ctx, cq, ck, cv, cks, cvs, 0.5)), NULL);
    ts_profile_stop(ctx);
    /* Its plain backward is one loop (the mix's and the probabilities'
     * rules): P's gradient and the scores' are formed strip by strip in
     * cache, with no op of their own. */
    assert_non_null(find(&context, TS_PASS_BACKWARD, "context_attention_backward"));
    assert_null(find(&context, TS_PASS_BACKWARD, "context_softmax_mix_pair"));
    assert_null(find(&context, TS_PASS_BACKWARD, "context_product"));
    assert_null(find(&context, TS_PASS_BACKWARD, "softmax_backward"));
    const ts_profile_entry *probabilities =
        find(&context, TS_PASS_FORWARD, "context_probabilities");
    assert_non_null(probabilities);
    assert_null(find(&context, TS_PASS_FORWARD, "softmax"));
    assert_true(probabilities->bytes ==
                (double)(cq->numel + ck->numel + cks->numel + 2 * 4 * 6) * sizeof(ts_real));
    /* Switched off, nothing more is booked. */
    ts_profile before = profile;
    ts_silu(ctx, x);
    assert_int_equal(profile.n_entries[TS_PASS_FORWARD], before.n_entries[TS_PASS_FORWARD]);
    assert_null(ctx->profile);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_matches_primitives),
        cmocka_unit_test(test_silu_rule_matches_primitives),
        cmocka_unit_test(test_swiglu_matches_silu_times),
        cmocka_unit_test(test_swiglu_packed_matches_halves),
        cmocka_unit_test(test_silu_second_derivative_matches_primitives),
        cmocka_unit_test(test_swiglu_packed_second_order_matches_primitives),
        cmocka_unit_test(test_causal_softmax_matches_primitives),
        cmocka_unit_test(test_causal_attention_matches_primitives),
        cmocka_unit_test(test_causal_attention_counts_as_executed),
        cmocka_unit_test(test_full_attention_matches_primitives),
        cmocka_unit_test(test_full_attention_counts_as_executed),
        cmocka_unit_test(test_packed_attention_matches_primitives),
        cmocka_unit_test(test_packed_attention_counts_as_separate),
        cmocka_unit_test(test_packed_heads_match_their_composition),
        cmocka_unit_test(test_context_attention_matches_primitives),
        cmocka_unit_test(test_context_attention_tokens_matches_heads),
        cmocka_unit_test(test_context_attention_counts_as_executed),
        cmocka_unit_test(test_context_attention_plain_pair_is_recorded_bit_for_bit),
        cmocka_unit_test(test_profile_books_ops_by_pass),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
