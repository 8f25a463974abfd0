/* Every op in ops.h against central finite differences, first and second
 * order (see gradcheck.h for the objective and the tolerances). Third order
 * two ways: the same checks applied to the gradient of the nonlinear ops
 * (taken with create_graph), and three nested ts_grad calls on sigmoid
 * (against the closed form) and exp(silu) (against finite differences of the
 * second derivative).
 *
 * Inputs are drawn where each op is smooth: positive and away from zero for
 * log, sqrt, rsqrt and denominators; masks keep at least one visible entry
 * per row. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "gradcheck.h"
#include "engine_fixture.h"
#include "splitmix.h"

typedef engine_fixture fixture;

static int setup(void **state) {
    return engine_fixture_setup(state, 1 << 20, 0x6A09E667F3BCC908ull);
}

static int teardown(void **state) {
    return engine_fixture_teardown(state);
}

/* What a case needs besides its tensor inputs. */
typedef struct op_args {
    int i[6];
    double s;
    const int32_t *index;
    long n;
    const ts_tensor *mask;
} op_args;

/* Runs both objectives of gradcheck.h and fails the test with the worst
 * entry. plain_tolerance: how far the gradient without create_graph may be
 * from the one with it, relative; 0 (bit for bit) for every op whose plain
 * and recorded passes run the same rule, rounding for a fused op whose
 * recorded pass falls back to primitives (ts_causal_attention). */
static void check_gradients(fixture *fx, const char *name, gc_fn f, const void *args,
                            double first_tolerance, double second_tolerance, double plain_tolerance,
                            int n_in, ts_tensor *const *inputs) {
    static const enum gc_loss losses[] = {GC_LINEAR_LOSS, GC_QUADRATIC_LOSS};
    static const char *const loss_names[] = {"linear", "quadratic"};
    for (int l = 0; l < 2; l++) {
        gc_result r = gc_check(&fx->ctx, f, args, n_in, inputs, losses[l], 1000u + (unsigned)l);
        if (getenv("GC_VERBOSE"))
            print_message("%-32s %-9s n=%3ld first %.2e second %.2e%s\n", name, loss_names[l],
                          r.n_elements, r.first_error, r.second_error,
                          r.second_is_constant ? " (constant gradient)" : "");
        if (r.n_elements == 0) fail_msg("%s: no input requires a gradient", name);
        if (!(r.first_error <= first_tolerance))
            fail_msg("%s, %s loss: first-order relative error %.3g > %.1g at %s", name,
                     loss_names[l], r.first_error, first_tolerance, r.first_worst);
        if (!(r.plain_vs_recorded <= plain_tolerance))
            fail_msg("%s, %s loss: the gradient differs without create_graph (%.3g) at %s", name,
                     loss_names[l], r.plain_vs_recorded, r.plain_worst);
        if (!(r.second_error <= second_tolerance))
            fail_msg("%s, %s loss: second-order relative error %.3g > %.1g at %s", name,
                     loss_names[l], r.second_error, second_tolerance, r.second_worst);
        /* With the quadratic loss the output gradient depends on x, so the
         * gradient of every op depends on x: the engine must record that. */
        if (losses[l] == GC_QUADRATIC_LOSS && r.second_is_constant)
            fail_msg("%s: create_graph recorded no dependence of the gradient on the input", name);
    }
}

static void expect_gradients_within(fixture *fx, const char *name, gc_fn f, const void *args,
                                    double plain_tolerance, int n_in, ts_tensor *const *inputs) {
    check_gradients(fx, name, f, args, GC_TOL_FIRST, GC_TOL_SECOND, plain_tolerance, n_in, inputs);
}

static void expect_gradients(fixture *fx, const char *name, gc_fn f, const void *args, int n_in,
                             ts_tensor *const *inputs) {
    expect_gradients_within(fx, name, f, args, 0, n_in, inputs);
}

#define ARGS(...) (&(op_args){__VA_ARGS__})
// clang-format off
#define INPUTS(...) N_INPUTS_(__VA_ARGS__), (ts_tensor *[]){__VA_ARGS__}
// clang-format on
#define N_INPUTS_(...) (int)(sizeof((ts_tensor *[]){__VA_ARGS__}) / sizeof(ts_tensor *))

/* ---------------------------------------------------------------- builders */

static ts_tensor *f_matmul(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_matmul(ctx, in[0], in[1], a->i[0], a->i[1]);
}

#define BINARY_BUILDER(NAME)                                                                       \
    static ts_tensor *f_##NAME(ts_ctx *ctx, ts_tensor *const *in, const void *args) {              \
        (void)args;                                                                                \
        return ts_##NAME(ctx, in[0], in[1]);                                                       \
    }
BINARY_BUILDER(add)
BINARY_BUILDER(sub)
BINARY_BUILDER(mul)
BINARY_BUILDER(div)
BINARY_BUILDER(swiglu)

static ts_tensor *f_swiglu_packed(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    (void)args;
    return ts_swiglu_packed(ctx, in[0]);
}

/* The same tensor on both sides: its two gradient contributions must add up. */
static ts_tensor *f_mul_self(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    (void)args;
    return ts_mul(ctx, in[0], in[0]);
}

#define UNARY_BUILDER(NAME)                                                                        \
    static ts_tensor *f_##NAME(ts_ctx *ctx, ts_tensor *const *in, const void *args) {              \
        (void)args;                                                                                \
        return ts_##NAME(ctx, in[0]);                                                              \
    }
UNARY_BUILDER(exp)
UNARY_BUILDER(log)
UNARY_BUILDER(sqrt)
UNARY_BUILDER(rsqrt)
UNARY_BUILDER(square)
UNARY_BUILDER(sigmoid)
UNARY_BUILDER(silu)
UNARY_BUILDER(sum_all)
UNARY_BUILDER(mean_all)

static ts_tensor *f_scale(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_scale(ctx, in[0], ((const op_args *)args)->s);
}

static ts_tensor *f_add_scalar(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_add_scalar(ctx, in[0], ((const op_args *)args)->s);
}

/* Shape-taking ops read i[0] = ndim and i[1..] = shape. */
static ts_tensor *f_sum_to(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_sum_to(ctx, in[0], a->i[0], a->i + 1);
}

static ts_tensor *f_broadcast_to(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_broadcast_to(ctx, in[0], a->i[0], a->i + 1);
}

static ts_tensor *f_reshape(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_reshape(ctx, in[0], a->i[0], a->i + 1);
}

static ts_tensor *f_sum(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_sum(ctx, in[0], a->i[0], a->i[1]);
}

static ts_tensor *f_mean(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_mean(ctx, in[0], a->i[0], a->i[1]);
}

static ts_tensor *f_softmax(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_softmax(ctx, in[0], ((const op_args *)args)->mask);
}

static ts_tensor *f_log_softmax(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_log_softmax(ctx, in[0], ((const op_args *)args)->mask);
}

/* A masked log-softmax is -inf where the mask hides an entry, which no
 * weighted sum can take. The visible entries are picked out column by column
 * with gather_last, whose negative indices give 0 for the hidden ones. */
static ts_tensor *f_log_softmax_visible(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const ts_tensor *mask = ((const op_args *)args)->mask;
    ts_tensor *y = ts_log_softmax(ctx, in[0], mask);
    int cols = mask->shape[1], mask_rows = mask->shape[0];
    long rows = y->numel / cols;
    ts_tensor *parts[16];
    for (int c = 0; c < cols; c++) {
        int32_t *idx = ts_alloc(ctx, (size_t)rows * sizeof *idx);
        for (long r = 0; r < rows; r++)
            idx[r] = mask->data[(r % mask_rows) * cols + c] == 0 ? c : -1;
        parts[c] = ts_gather_last(ctx, y, idx);
    }
    return ts_concat(ctx, cols, parts, 0);
}

static ts_tensor *f_cross_entropy(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_cross_entropy(ctx, in[0], a->index, a->i[0]);
}

static ts_tensor *f_permute(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_permute(ctx, in[0], ((const op_args *)args)->i);
}

static ts_tensor *f_transpose(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_transpose(ctx, in[0], a->i[0], a->i[1]);
}

static ts_tensor *f_slice(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_slice(ctx, in[0], a->i[0], a->i[1], a->i[2]);
}

static ts_tensor *f_pad(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_pad(ctx, in[0], a->i[0], a->i[1], a->i[2]);
}

static ts_tensor *f_concat(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_concat(ctx, a->i[0], in, a->i[1]);
}

static ts_tensor *f_embedding(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_embedding(ctx, in[0], a->index, a->n);
}

static ts_tensor *f_scatter_rows(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_scatter_rows(ctx, in[0], a->index, a->i[0]);
}

static ts_tensor *f_gather_last(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_gather_last(ctx, in[0], ((const op_args *)args)->index);
}

static ts_tensor *f_scatter_last(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_scatter_last(ctx, in[0], a->index, a->i[0]);
}

static ts_tensor *f_rmsnorm(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_rmsnorm(ctx, in[0], in[1], ((const op_args *)args)->s);
}

static ts_tensor *f_rope(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_rope(ctx, in[0], a->index, a->s);
}

/* x [2, 3, 4] times the rows of in[0] and in[1], adjacent in memory, as one
 * [r_0 + r_1, 4] weight: y = x W^T. */
static ts_tensor *f_adjacent_rows(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    (void)args;
    return ts_matmul(ctx, in[2], ts_adjacent_rows(ctx, 2, in), false, true);
}

static ts_tensor *f_causal_attention_packed(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_causal_attention_packed(ctx, in[0], a->i[0], a->index, 10000, a->s);
}

/* Part i[0] of i[1] of in[0] as i[2] heads (RoPE at index when given),
 * beside the packed attention over the same input when i[3] (as EBT's
 * observed stream takes its keys: the attention's d(qkv) is the sum the
 * plain rule adds into); the heads seen as the attention's [B, T, D]. */
static ts_tensor *f_packed_heads(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    ts_tensor *heads = ts_packed_heads(ctx, in[0], a->i[0], a->i[1], a->i[2], a->index, 10000);
    if (!a->i[3]) return heads;
    ts_tensor *rows = ts_reshape(ctx, heads, TS_SHAPE(in[0]->shape[0], in[0]->shape[1], -1));
    return ts_add(ctx, rows,
                  ts_causal_attention_packed(ctx, in[0], a->i[2], a->index, 10000, a->s));
}

static ts_tensor *f_attention(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const op_args *a = args;
    return ts_attention(ctx, in[0], in[1], in[2], a->mask, a->s);
}

static ts_tensor *f_causal_attention(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_causal_attention(ctx, in[0], in[1], in[2], ((const op_args *)args)->s);
}

static ts_tensor *f_full_attention(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_full_attention(ctx, in[0], in[1], in[2], ((const op_args *)args)->s);
}

static ts_tensor *f_context_attention(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_context_attention(ctx, in[0], in[1], in[2], in[3], in[4], ((const op_args *)args)->s);
}

static ts_tensor *f_context_attention_tokens(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return ts_context_attention_tokens(ctx, in[0], in[1], in[2], in[3], in[4],
                                       ((const op_args *)args)->s);
}

/* A leaf holding head-major rows [B, H, L, dh] token-major, [B, L, H, dh]:
 * the token-major cases check the same function values as the head-major
 * ones (so the same finite-difference rounding in the float build). */
static ts_tensor *token_major_leaf(ts_ctx *ctx, const ts_tensor *heads) {
    int b = heads->shape[0], h = heads->shape[1], l = heads->shape[2], dh = heads->shape[3];
    ts_tensor *t = ts_new(ctx, TS_SHAPE(b, l, h, dh));
    for (long i = 0; i < (long)b * h * l; i++) {
        long bi = i / ((long)h * l), hi = i / l % h, r = i % l;
        for (int c = 0; c < dh; c++)
            t->data[((bi * l + r) * h + hi) * dh + c] = heads->data[i * dh + c];
    }
    ts_set_requires_grad(ctx, t, true);
    return t;
}

/* Relative rounding allowed between the fused plain backward of
 * ts_causal_attention and its primitive recorded one (sums split by strip). */
#ifdef TS_DOUBLE
#define FUSED_PLAIN_TOL (1024 * DBL_EPSILON)
#else
#define FUSED_PLAIN_TOL (1024 * FLT_EPSILON)
#endif

/* ---------------------------------------------------------------- matmul */

/* Shapes are stored as op(a) = [m, k], op(b) = [k, n] with m, k, n = 3, 4, 2. */
static void check_matmul_2d(fixture *fx, bool ta, bool tb, const char *name) {
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *a = ta ? gc_leaf(ctx, &fx->rng, TS_SHAPE(4, 3), -1, 1)
                      : gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 4), -1, 1);
    ts_tensor *b = tb ? gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4), -1, 1)
                      : gc_leaf(ctx, &fx->rng, TS_SHAPE(4, 2), -1, 1);
    expect_gradients(fx, name, f_matmul, ARGS(.i = {ta, tb}), INPUTS(a, b));
}

static void test_matmul_nn(void **state) {
    check_matmul_2d(*state, false, false, "matmul NN");
}
static void test_matmul_nt(void **state) {
    check_matmul_2d(*state, false, true, "matmul NT");
}
static void test_matmul_tn(void **state) {
    check_matmul_2d(*state, true, false, "matmul TN");
}
static void test_matmul_tt(void **state) {
    check_matmul_2d(*state, true, true, "matmul TT");
}

/* Batched [2, 2, ., .] operands, every transpose combination. */
static void test_matmul_batched_4d(void **state) {
    fixture *fx = *state;
    static const char *const names[] = {"batched matmul NN", "batched matmul NT",
                                        "batched matmul TN", "batched matmul TT"};
    for (int combo = 0; combo < 4; combo++) {
        bool ta = combo & 2, tb = combo & 1;
        ts_tensor *a = ta ? gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1)
                          : gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 2, 3, 4), -1, 1);
        ts_tensor *b = tb ? gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 2, 2, 4), -1, 1)
                          : gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 2, 4, 2), -1, 1);
        expect_gradients(fx, names[combo], f_matmul, ARGS(.i = {ta, tb}), INPUTS(a, b));
    }
}

/* A 2-D right operand shared by every batch of a 3-D or 4-D left operand. */
static void test_matmul_shared_right(void **state) {
    fixture *fx = *state;
    ts_tensor *a3 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *a4 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 2, 3, 4), -1, 1);
    ts_tensor *b = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(4, 5), -1, 1);
    ts_tensor *bt = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(5, 4), -1, 1);
    expect_gradients(fx, "shared matmul 3-D NN", f_matmul, ARGS(.i = {0, 0}), INPUTS(a3, b));
    expect_gradients(fx, "shared matmul 3-D NT", f_matmul, ARGS(.i = {0, 1}), INPUTS(a3, bt));
    expect_gradients(fx, "shared matmul 4-D NN", f_matmul, ARGS(.i = {0, 0}), INPUTS(a4, b));
    expect_gradients(fx, "shared matmul 4-D NT", f_matmul, ARGS(.i = {0, 1}), INPUTS(a4, bt));
}

/* ---------------------------------------------------------------- elementwise */

static void test_add(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *y = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *row = gc_leaf(ctx, &fx->rng, TS_SHAPE(4), -1, 1);
    ts_tensor *col = gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 1), -1, 1);
    expect_gradients(fx, "add same shape", f_add, ARGS(0), INPUTS(x, y));
    expect_gradients(fx, "add [2,3,4]+[4]", f_add, ARGS(0), INPUTS(x, row));
    expect_gradients(fx, "add [4]+[2,3,4]", f_add, ARGS(0), INPUTS(row, x));
    expect_gradients(fx, "add [2,3,4]+[3,1]", f_add, ARGS(0), INPUTS(x, col));
}

static void test_sub(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *y = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *col = gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 1), -1, 1);
    ts_tensor *row = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 4), -1, 1);
    expect_gradients(fx, "sub same shape", f_sub, ARGS(0), INPUTS(x, y));
    expect_gradients(fx, "sub [3,1]-[1,4]", f_sub, ARGS(0), INPUTS(col, row));
    expect_gradients(fx, "sub [1,4]-[2,3,4]", f_sub, ARGS(0), INPUTS(row, x));
}

static void test_mul(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *y = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *mid = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 1, 4), -1, 1);
    ts_tensor *col = gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 1), -1, 1);
    ts_tensor *row = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 4), -1, 1);
    expect_gradients(fx, "mul same shape", f_mul, ARGS(0), INPUTS(x, y));
    expect_gradients(fx, "mul [2,3,4]*[2,1,4]", f_mul, ARGS(0), INPUTS(x, mid));
    expect_gradients(fx, "mul [3,1]*[1,4]", f_mul, ARGS(0), INPUTS(col, row));
    expect_gradients(fx, "mul x*x", f_mul_self, ARGS(0), INPUTS(x));
}

static void test_div(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *y = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), 0.5, 1.5);
    ts_tensor *mid = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 1, 4), 0.5, 1.5);
    ts_tensor *col = gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 1), -1, 1);
    ts_tensor *row = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 4), -1.5, -0.5);
    ts_tensor *positive = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), 0.5, 1.5);
    expect_gradients(fx, "div same shape", f_div, ARGS(0), INPUTS(x, y));
    expect_gradients(fx, "div [2,3,4]/[2,1,4]", f_div, ARGS(0), INPUTS(x, mid));
    expect_gradients(fx, "div [3,1]/[1,4]", f_div, ARGS(0), INPUTS(col, row));
    expect_gradients(fx, "div [3,1]/[2,3,4]", f_div, ARGS(0), INPUTS(col, positive));
}

static void test_scale_and_add_scalar(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -1, 1);
    expect_gradients(fx, "scale", f_scale, ARGS(.s = -1.7), INPUTS(x));
    expect_gradients(fx, "add_scalar", f_add_scalar, ARGS(.s = 0.3), INPUTS(x));
}

static void test_exp(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -1.5, 1.5);
    expect_gradients(fx, "exp", f_exp, ARGS(0), INPUTS(x));
}

static void test_log(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), 0.5, 2);
    expect_gradients(fx, "log", f_log, ARGS(0), INPUTS(x));
}

static void test_sqrt(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), 0.5, 2);
    expect_gradients(fx, "sqrt", f_sqrt, ARGS(0), INPUTS(x));
}

static void test_rsqrt(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), 0.5, 2);
    expect_gradients(fx, "rsqrt", f_rsqrt, ARGS(0), INPUTS(x));
}

static void test_square(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -1.5, 1.5);
    expect_gradients(fx, "square", f_square, ARGS(0), INPUTS(x));
}

static void test_sigmoid(void **state) {
    fixture *fx = *state;
    /* Both tails: the forward kernel branches on the sign. */
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -4, 4);
    expect_gradients(fx, "sigmoid", f_sigmoid, ARGS(0), INPUTS(x));
}

static void test_silu(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -4, 4);
    expect_gradients(fx, "silu", f_silu, ARGS(0), INPUTS(x));
}

static void test_swiglu(void **state) {
    fixture *fx = *state;
    ts_tensor *a = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -4, 4);
    ts_tensor *b = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 4), -2, 2);
    expect_gradients(fx, "swiglu", f_swiglu, ARGS(0), INPUTS(a, b));
}

/* Gate and up side by side in each row of one [..., 2 F] input. */
static void test_swiglu_packed(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 8), -4, 4);
    expect_gradients(fx, "swiglu_packed", f_swiglu_packed, ARGS(0), INPUTS(x));
}

/* ---------------------------------------------------------------- reductions */

static void test_sum_to(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    expect_gradients(fx, "sum_to [3,1]", f_sum_to, ARGS(.i = {2, 3, 1}), INPUTS(x));
    expect_gradients(fx, "sum_to [4]", f_sum_to, ARGS(.i = {1, 4}), INPUTS(x));
    expect_gradients(fx, "sum_to [2,1,4]", f_sum_to, ARGS(.i = {3, 2, 1, 4}), INPUTS(x));
    expect_gradients(fx, "sum_to [1]", f_sum_to, ARGS(.i = {1, 1}), INPUTS(x));
}

static void test_broadcast_to(void **state) {
    fixture *fx = *state;
    ts_tensor *col = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(3, 1), -1, 1);
    ts_tensor *row = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(4), -1, 1);
    expect_gradients(fx, "broadcast_to [3,1]->[2,3,4]", f_broadcast_to, ARGS(.i = {3, 2, 3, 4}),
                     INPUTS(col));
    expect_gradients(fx, "broadcast_to [4]->[2,3,4]", f_broadcast_to, ARGS(.i = {3, 2, 3, 4}),
                     INPUTS(row));
}

static void test_sum_and_mean_axis(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    char name[64];
    for (int axis = -1; axis < 3; axis++)
        for (int keepdim = 0; keepdim < 2; keepdim++) {
            snprintf(name, sizeof name, "sum axis %d keepdim %d", axis, keepdim);
            expect_gradients(fx, name, f_sum, ARGS(.i = {axis, keepdim}), INPUTS(x));
            snprintf(name, sizeof name, "mean axis %d keepdim %d", axis, keepdim);
            expect_gradients(fx, name, f_mean, ARGS(.i = {axis, keepdim}), INPUTS(x));
        }
}

static void test_sum_all_and_mean_all(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    expect_gradients(fx, "sum_all", f_sum_all, ARGS(0), INPUTS(x));
    expect_gradients(fx, "mean_all", f_mean_all, ARGS(0), INPUTS(x));
}

/* ---------------------------------------------------------------- softmax family */

/* A [3, 4] mask hiding a scattered pattern; every row keeps at least one entry. */
static ts_tensor *custom_mask(ts_ctx *ctx) {
    static const int hidden[3][4] = {{0, 1, 0, 1}, {1, 1, 0, 1}, {0, 0, 0, 0}};
    ts_tensor *mask = ts_new(ctx, TS_SHAPE(3, 4));
    for (int r = 0; r < 3; r++)
        for (int c = 0; c < 4; c++) mask->data[r * 4 + c] = hidden[r][c] ? -INFINITY : 0;
    return mask;
}

static void test_softmax(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 5), -2, 2);
    ts_tensor *square = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 4), -2, 2);
    ts_tensor *x34 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -2, 2);
    expect_gradients(fx, "softmax", f_softmax, ARGS(.mask = NULL), INPUTS(x));
    expect_gradients(fx, "softmax causal", f_softmax, ARGS(.mask = ts_causal_mask(ctx, 4)),
                     INPUTS(square));
    expect_gradients(fx, "softmax custom mask", f_softmax, ARGS(.mask = custom_mask(ctx)),
                     INPUTS(x34));
}

static void test_log_softmax(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 5), -2, 2);
    ts_tensor *square = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 4), -2, 2);
    ts_tensor *x34 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -2, 2);
    expect_gradients(fx, "log_softmax", f_log_softmax, ARGS(.mask = NULL), INPUTS(x));
    expect_gradients(fx, "log_softmax causal", f_log_softmax_visible,
                     ARGS(.mask = ts_causal_mask(ctx, 4)), INPUTS(square));
    expect_gradients(fx, "log_softmax custom mask", f_log_softmax_visible,
                     ARGS(.mask = custom_mask(ctx)), INPUTS(x34));
}

static void test_cross_entropy(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *logits3 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 5), -2, 2);
    ts_tensor *logits2 = gc_leaf(ctx, &fx->rng, TS_SHAPE(4, 6), -2, 2);
    static const int32_t with_ignored[6] = {0, 4, -100, 2, -100, 1};
    static const int32_t all_used[4] = {5, 0, 3, 3};
    expect_gradients(fx, "cross_entropy ignored targets", f_cross_entropy,
                     ARGS(.index = with_ignored, .i = {-100}), INPUTS(logits3));
    expect_gradients(fx, "cross_entropy", f_cross_entropy, ARGS(.index = all_used, .i = {-1}),
                     INPUTS(logits2));
}

/* ---------------------------------------------------------------- shape */

static void test_reshape(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    expect_gradients(fx, "reshape [6,4]", f_reshape, ARGS(.i = {2, 6, 4}), INPUTS(x));
    expect_gradients(fx, "reshape [4,-1,2]", f_reshape, ARGS(.i = {3, 4, -1, 2}), INPUTS(x));
}

static void test_permute_and_transpose(void **state) {
    fixture *fx = *state;
    ts_tensor *x3 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    ts_tensor *x4 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 2, 4), -1, 1);
    expect_gradients(fx, "permute {2,0,1}", f_permute, ARGS(.i = {2, 0, 1}), INPUTS(x3));
    expect_gradients(fx, "permute {0,2,1,3}", f_permute, ARGS(.i = {0, 2, 1, 3}), INPUTS(x4));
    expect_gradients(fx, "permute {3,1,0,2}", f_permute, ARGS(.i = {3, 1, 0, 2}), INPUTS(x4));
    expect_gradients(fx, "transpose 0,2", f_transpose, ARGS(.i = {0, 2}), INPUTS(x3));
    expect_gradients(fx, "transpose -1,-2", f_transpose, ARGS(.i = {-1, -2}), INPUTS(x4));
}

static void test_slice(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(4, 5, 3), -1, 1);
    expect_gradients(fx, "slice axis 0 (view)", f_slice, ARGS(.i = {0, 1, 2}), INPUTS(x));
    expect_gradients(fx, "slice axis 1", f_slice, ARGS(.i = {1, 2, 3}), INPUTS(x));
    expect_gradients(fx, "slice axis -1", f_slice, ARGS(.i = {-1, 1, 1}), INPUTS(x));
}

static void test_pad(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 2), -1, 1);
    expect_gradients(fx, "pad axis 0", f_pad, ARGS(.i = {0, 1, 4}), INPUTS(x));
    expect_gradients(fx, "pad axis 1", f_pad, ARGS(.i = {1, 2, 6}), INPUTS(x));
    expect_gradients(fx, "pad axis -1", f_pad, ARGS(.i = {-1, 0, 3}), INPUTS(x));
}

static void test_concat(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *a = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3), -1, 1);
    ts_tensor *b = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2), -1, 1);
    expect_gradients(fx, "concat 2 parts axis 1", f_concat, ARGS(.i = {2, 1}), INPUTS(a, b));
    /* Five parts exceed one node's inputs: the op nests a second concat. */
    ts_tensor *p0 = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 3), -1, 1);
    ts_tensor *p1 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3), -1, 1);
    ts_tensor *p2 = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 3), -1, 1);
    ts_tensor *p3 = gc_leaf(ctx, &fx->rng, TS_SHAPE(3, 3), -1, 1);
    ts_tensor *p4 = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 3), -1, 1);
    expect_gradients(fx, "concat 5 parts axis 0", f_concat, ARGS(.i = {5, 0}),
                     INPUTS(p0, p1, p2, p3, p4));
    ts_tensor *q0 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 1, 2), -1, 1);
    ts_tensor *q1 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 2), -1, 1);
    ts_tensor *q2 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 1, 2), -1, 1);
    ts_tensor *q3 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 2), -1, 1);
    ts_tensor *q4 = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 1, 2), -1, 1);
    expect_gradients(fx, "concat 5 parts axis 1", f_concat, ARGS(.i = {5, 1}),
                     INPUTS(q0, q1, q2, q3, q4));
}

/* ---------------------------------------------------------------- indexing */

static void test_embedding(void **state) {
    fixture *fx = *state;
    ts_tensor *table = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(5, 3), -1, 1);
    static const int32_t ids[7] = {1, 3, 1, 0, 1, 4, 3}; /* row 2 unused, 1 and 3 repeated */
    expect_gradients(fx, "embedding", f_embedding, ARGS(.index = ids, .n = 7), INPUTS(table));
}

static void test_scatter_rows(void **state) {
    fixture *fx = *state;
    ts_tensor *g = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(7, 3), -1, 1);
    static const int32_t ids[7] = {1, 3, 1, 0, 1, 4, 3};
    expect_gradients(fx, "scatter_rows", f_scatter_rows, ARGS(.index = ids, .i = {5}), INPUTS(g));
}

static void test_gather_last(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 5), -1, 1);
    static const int32_t idx[6] = {0, 4, -1, 2, -7, 4};
    expect_gradients(fx, "gather_last", f_gather_last, ARGS(.index = idx), INPUTS(x));
}

static void test_scatter_last(void **state) {
    fixture *fx = *state;
    ts_tensor *g = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(6), -1, 1);
    static const int32_t idx[6] = {0, 4, -1, 2, 2, 4};
    expect_gradients(fx, "scatter_last", f_scatter_last, ARGS(.index = idx, .i = {5}), INPUTS(g));
}

/* ---------------------------------------------------------------- layers */

static void test_rmsnorm(void **state) {
    fixture *fx = *state;
    ts_tensor *x = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 3, 6), -1, 1);
    ts_tensor *weight = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(6), 0.5, 1.5);
    expect_gradients(fx, "rmsnorm", f_rmsnorm, ARGS(.s = 1e-5), INPUTS(x, weight));
    /* A large eps weighs in against mean(x^2) and must be differentiated through. */
    expect_gradients(fx, "rmsnorm eps 0.5", f_rmsnorm, ARGS(.s = 0.5), INPUTS(x, weight));
}

static void test_rope(void **state) {
    fixture *fx = *state;
    static const int32_t positions[5] = {0, 3, 1, 7, 2};
    ts_tensor *x4 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(2, 5, 2, 4), -1, 1);
    ts_tensor *x3 = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(5, 2, 6), -1, 1);
    expect_gradients(fx, "rope [B,T,H,dh]", f_rope, ARGS(.index = positions, .s = 10000),
                     INPUTS(x4));
    expect_gradients(fx, "rope [T,H,dh] theta 10", f_rope, ARGS(.index = positions, .s = 10),
                     INPUTS(x3));
}

/* Two leaves over consecutive rows of one buffer, viewed as one weight. */
static void test_adjacent_rows(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *buffer = gc_leaf(ctx, &fx->rng, TS_SHAPE(5, 4), -1, 1);
    ts_tensor *w0 = ts_wrap(ctx, buffer->data, TS_SHAPE(2, 4));
    ts_tensor *w1 = ts_wrap(ctx, buffer->data + 8, TS_SHAPE(3, 4));
    ts_set_requires_grad(ctx, w0, true);
    ts_set_requires_grad(ctx, w1, true);
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -1, 1);
    assert_true(ts_rows_adjacent(ctx, 2, (ts_tensor *[]){w0, w1}));
    assert_false(ts_rows_adjacent(ctx, 2, (ts_tensor *[]){w1, w0}));
    expect_gradients(fx, "adjacent_rows", f_adjacent_rows, ARGS(.s = 0), INPUTS(w0, w1, x));
}

static void test_attention(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *q = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    ts_tensor *k = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    ts_tensor *v = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    double scale = 1 / sqrt(3.0);
    expect_gradients(fx, "attention causal", f_attention,
                     ARGS(.mask = ts_causal_mask(ctx, 4), .s = scale), INPUTS(q, k, v));
    expect_gradients(fx, "attention unmasked", f_attention, ARGS(.mask = NULL, .s = scale),
                     INPUTS(q, k, v));
    /* The fused causal op: one strip, then three (the last partial), so the
     * strips' masks and the sums across strips are all checked. */
    expect_gradients_within(fx, "causal_attention", f_causal_attention, ARGS(.s = scale),
                            FUSED_PLAIN_TOL, INPUTS(q, k, v));
    /* The three-strip cases' objectives sum 300 outputs of softmaxes over up
     * to 152 keys: in float their finite differences scatter more than
     * elsewhere (the context case's first-order error read 1.2e-3 to 5.0e-3
     * over 12 input draws; the causal case's 3.25e-3 once the strips' GEMMs
     * became ts_small_gemm, which sums in another order), so they allow
     * 1e-2 there. A wrong rule is off at O(1); the double build checks the
     * same cases at GC_TOL_FIRST = 1e-6. */
#ifdef TS_DOUBLE
    const double long_float_first = GC_TOL_FIRST;
#else
    const double long_float_first = 1e-2;
#endif
    ts_tensor *ql = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 150, 2), -1, 1);
    ts_tensor *kl = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 150, 2), -1, 1);
    ts_tensor *vl = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 150, 2), -1, 1);
    check_gradients(fx, "causal_attention, 3 strips", f_causal_attention, ARGS(.s = 0.8),
                    long_float_first, GC_TOL_SECOND, FUSED_PLAIN_TOL, INPUTS(ql, kl, vl));
    /* The fused op without a mask: one strip, then three, each row over
     * all 150 keys. Its probabilities near 1/150 make every entry small
     * against the objective's rounding: on these inputs the composition
     * ts_attention(q, k, v, NULL) itself reads first/second-order errors
     * of 6.0e-3/8.6e-3 (float) and 1.3e-6/5.3e-7 (double) against finite
     * differences, so this case allows 1e-2 (float) and 5e-6 (double,
     * first order). Each key's dK and dV sum all 150 rows, in three strips'
     * partial sums: without create_graph they differ from the recorded
     * composition's by up to 2.9e-13 relative in double (1300 ulp), so
     * 4 FUSED_PLAIN_TOL. A wrong rule is off at O(1); the small case above
     * and test_engine_fused hold the fused op to the composition. */
    expect_gradients_within(fx, "full_attention", f_full_attention, ARGS(.s = scale),
                            FUSED_PLAIN_TOL, INPUTS(q, k, v));
#ifdef TS_DOUBLE
    const double unmasked_first = 5e-6, unmasked_second = GC_TOL_SECOND;
#else
    const double unmasked_first = 1e-2, unmasked_second = 1e-2;
#endif
    check_gradients(fx, "full_attention, 3 strips", f_full_attention, ARGS(.s = 0.8),
                    unmasked_first, unmasked_second, 4 * FUSED_PLAIN_TOL, INPUTS(ql, kl, vl));
    /* The packed layout: qkv [B, T, 3 H dh], 2 heads of 3; then 150 rows
     * (three strips, the last partial), 2 heads of 2. */
    ts_tensor *qkv = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 18), -1, 1);
    expect_gradients_within(fx, "causal_attention_packed", f_causal_attention_packed,
                            ARGS(.s = scale, .i = {2}), FUSED_PLAIN_TOL, INPUTS(qkv));
    ts_tensor *qkv_long = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 150, 12), -1, 1);
    expect_gradients_within(fx, "causal_attention_packed, 3 strips", f_causal_attention_packed,
                            ARGS(.s = 0.8, .i = {2}), FUSED_PLAIN_TOL, INPUTS(qkv_long));
    /* With RoPE inside: 2 heads of 4 at positions out of order; then 150
     * consecutive positions (the table's recurrence). */
    static const int32_t positions[4] = {0, 3, 1, 7};
    ts_tensor *qkv_rope = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 24), -1, 1);
    expect_gradients_within(fx, "causal_attention_packed, RoPE", f_causal_attention_packed,
                            ARGS(.s = scale, .i = {2}, .index = positions), FUSED_PLAIN_TOL,
                            INPUTS(qkv_rope));
    static int32_t consecutive[150];
    for (int t = 0; t < 150; t++) consecutive[t] = t + 5;
    ts_tensor *qkv_rope_long = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 150, 12), -1, 1);
    expect_gradients_within(
        fx, "causal_attention_packed, RoPE, 3 strips", f_causal_attention_packed,
        ARGS(.s = 0.8, .i = {2}, .index = consecutive), FUSED_PLAIN_TOL, INPUTS(qkv_rope_long));
    /* The context attention (EBT's prediction stream): 4 queries against 5
     * context keys (row r sees 0..r + 1) and their own keys; then 150
     * queries against 152 (three strips, the last partial). */
    ts_tensor *cq = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    ts_tensor *ck = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 5, 3), -1, 1);
    ts_tensor *cv = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 5, 3), -1, 1);
    ts_tensor *cks = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    ts_tensor *cvs = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4, 3), -1, 1);
    /* Its plain and recorded passes run the same ops: bit for bit. */
    expect_gradients(fx, "context_attention", f_context_attention, ARGS(.s = scale),
                     INPUTS(cq, ck, cv, cks, cvs));
    /* Token-major rows [B, L, H, dh] against context [B, H, C, dh]. */
    expect_gradients(fx, "context_attention_tokens", f_context_attention_tokens, ARGS(.s = scale),
                     INPUTS(token_major_leaf(ctx, cq), ck, cv, token_major_leaf(ctx, cks),
                            token_major_leaf(ctx, cvs)));
    ts_tensor *lq = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 1, 150, 2), -1, 1);
    ts_tensor *lk = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 1, 152, 2), -1, 1);
    ts_tensor *lv = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 1, 152, 2), -1, 1);
    ts_tensor *lks = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 1, 150, 2), -1, 1);
    ts_tensor *lvs = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 1, 150, 2), -1, 1);
    check_gradients(fx, "context_attention, 3 strips", f_context_attention, ARGS(.s = 0.8),
                    long_float_first, GC_TOL_SECOND, 0, INPUTS(lq, lk, lv, lks, lvs));
    /* Heads of one part of a packed projection: keys with RoPE (positions
     * out of order) of qkv [2, 4, 3 x 2 heads of 4], values of kv [2, 4, 2 x
     * 8], then the keys and the values beside the packed attention. */
    ts_tensor *packed = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 24), -1, 1);
    ts_tensor *kv = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 4, 16), -1, 1);
    expect_gradients_within(fx, "packed_heads, keys", f_packed_heads,
                            ARGS(.i = {1, 3, 2, 0}, .index = positions), FUSED_PLAIN_TOL,
                            INPUTS(packed));
    expect_gradients_within(fx, "packed_heads, values", f_packed_heads, ARGS(.i = {1, 2, 2, 0}),
                            FUSED_PLAIN_TOL, INPUTS(kv));
    expect_gradients_within(fx, "packed_heads, keys beside the attention", f_packed_heads,
                            ARGS(.s = scale, .i = {1, 3, 2, 1}, .index = positions),
                            FUSED_PLAIN_TOL, INPUTS(packed));
    expect_gradients_within(fx, "packed_heads, values beside the attention", f_packed_heads,
                            ARGS(.s = scale, .i = {2, 3, 2, 1}, .index = positions),
                            FUSED_PLAIN_TOL, INPUTS(packed));
}

/* ---------------------------------------------------------------- third order */

/* f(x) = grad_{x_wrt} sum(w * (y + y^2 / 2)), y = inner(x), taken with
 * create_graph: checking its first and second derivatives checks the second
 * and third derivatives of inner, which exercises the rules of the backward
 * ops themselves (softmax_backward, log_softmax_backward, ...). The y^2 term
 * makes the gradient reaching inner, w (1 + y), depend on x, so the rules'
 * derivatives with respect to that gradient are exercised too. Recording is
 * switched on inside because the gradient check also evaluates f in no-grad
 * mode. */
typedef struct gradient_of_args {
    gc_fn inner;
    const op_args *inner_args;
    const ts_tensor *w;
    int wrt;
} gradient_of_args;

static ts_tensor *f_gradient_of(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const gradient_of_args *a = args;
    bool was_enabled = ts_set_grad_enabled(ctx, true);
    ts_tensor *y = a->inner(ctx, in, a->inner_args);
    ts_tensor *y_and_square = ts_add(ctx, y, ts_scale(ctx, ts_square(ctx, y), 0.5));
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, (ts_tensor *)a->w, y_and_square));
    ts_tensor *grad;
    ts_grad(ctx, 1, &loss, NULL, 1, &in[a->wrt], &grad, true);
    ts_set_grad_enabled(ctx, was_enabled);
    return grad;
}

static void expect_third_order_within(fixture *fx, const char *name, gc_fn inner,
                                      const op_args *args, int wrt, double plain_tolerance,
                                      int n_in, ts_tensor *const *inputs) {
    bool was_enabled = ts_set_grad_enabled(&fx->ctx, false);
    ts_tensor *probe = inner(&fx->ctx, inputs, args);
    ts_set_grad_enabled(&fx->ctx, was_enabled);
    ts_tensor *w = gc_constant(&fx->ctx, &fx->rng, probe->ndim, probe->shape, -1, 1);
    char full_name[96];
    snprintf(full_name, sizeof full_name, "grad %d of %s", wrt, name);
    expect_gradients_within(fx, full_name, f_gradient_of, &(gradient_of_args){inner, args, w, wrt},
                            plain_tolerance, n_in, inputs);
}

static void expect_third_order(fixture *fx, const char *name, gc_fn inner, const op_args *args,
                               int wrt, int n_in, ts_tensor *const *inputs) {
    expect_third_order_within(fx, name, inner, args, wrt, 0, n_in, inputs);
}

static void test_third_order_elementwise(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 5), -1.5, 1.5);
    ts_tensor *positive = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 5), 0.5, 2);
    ts_tensor *row = gc_leaf(ctx, &fx->rng, TS_SHAPE(5), 0.5, 1.5);
    expect_third_order(fx, "exp", f_exp, ARGS(0), 0, INPUTS(x));
    expect_third_order(fx, "log", f_log, ARGS(0), 0, INPUTS(positive));
    expect_third_order(fx, "sqrt", f_sqrt, ARGS(0), 0, INPUTS(positive));
    expect_third_order(fx, "rsqrt", f_rsqrt, ARGS(0), 0, INPUTS(positive));
    expect_third_order(fx, "sigmoid", f_sigmoid, ARGS(0), 0, INPUTS(x));
    expect_third_order(fx, "silu", f_silu, ARGS(0), 0, INPUTS(x));
    expect_third_order(fx, "swiglu", f_swiglu, ARGS(0), 0, INPUTS(x, positive));
    expect_third_order(fx, "swiglu", f_swiglu, ARGS(0), 1, INPUTS(x, positive));
    ts_tensor *gate_up = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 6), -1.5, 1.5);
    expect_third_order(fx, "swiglu_packed", f_swiglu_packed, ARGS(0), 0, INPUTS(gate_up));
    expect_third_order(fx, "div", f_div, ARGS(0), 0, INPUTS(x, row));
    expect_third_order(fx, "div", f_div, ARGS(0), 1, INPUTS(x, row));
}

static void test_third_order_softmax_family(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 3, 4), -2, 2);
    static const int32_t targets[6] = {0, 3, -100, 2, 1, 1};
    expect_third_order(fx, "softmax", f_softmax, ARGS(.mask = NULL), 0, INPUTS(x));
    expect_third_order(fx, "softmax custom mask", f_softmax, ARGS(.mask = custom_mask(ctx)), 0,
                       INPUTS(x));
    expect_third_order(fx, "log_softmax", f_log_softmax, ARGS(.mask = NULL), 0, INPUTS(x));
    expect_third_order(fx, "log_softmax custom mask", f_log_softmax_visible,
                       ARGS(.mask = custom_mask(ctx)), 0, INPUTS(x));
    expect_third_order(fx, "cross_entropy", f_cross_entropy, ARGS(.index = targets, .i = {-100}), 0,
                       INPUTS(x));
}

static void test_third_order_layers(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *x = gc_leaf(ctx, &fx->rng, TS_SHAPE(2, 2, 4), -1, 1);
    ts_tensor *weight = gc_leaf(ctx, &fx->rng, TS_SHAPE(4), 0.5, 1.5);
    ts_tensor *q = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 3, 2), -1, 1);
    ts_tensor *k = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 3, 2), -1, 1);
    ts_tensor *v = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 3, 2), -1, 1);
    expect_third_order(fx, "rmsnorm", f_rmsnorm, ARGS(.s = 1e-5), 0, INPUTS(x, weight));
    expect_third_order(fx, "rmsnorm", f_rmsnorm, ARGS(.s = 1e-5), 1, INPUTS(x, weight));
    const ts_tensor *mask = ts_causal_mask(ctx, 3);
    for (int wrt = 0; wrt < 3; wrt++)
        expect_third_order(fx, "attention causal", f_attention, ARGS(.mask = mask, .s = 0.7), wrt,
                           INPUTS(q, k, v));
    for (int wrt = 0; wrt < 3; wrt++)
        expect_third_order_within(fx, "causal_attention", f_causal_attention, ARGS(.s = 0.7), wrt,
                                  FUSED_PLAIN_TOL, INPUTS(q, k, v));
    for (int wrt = 0; wrt < 3; wrt++)
        expect_third_order_within(fx, "full_attention", f_full_attention, ARGS(.s = 0.7), wrt,
                                  FUSED_PLAIN_TOL, INPUTS(q, k, v));
    ts_tensor *ck = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 4, 2), -1, 1);
    ts_tensor *cv = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 4, 2), -1, 1);
    ts_tensor *cks = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 3, 2), -1, 1);
    ts_tensor *cvs = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 2, 3, 2), -1, 1);
    for (int wrt = 0; wrt < 5; wrt++)
        expect_third_order(fx, "context_attention", f_context_attention, ARGS(.s = 0.7), wrt,
                           INPUTS(q, ck, cv, cks, cvs));
    /* Drawn last, so the cases above keep their inputs. */
    ts_tensor *qkv = gc_leaf(ctx, &fx->rng, TS_SHAPE(1, 3, 12), -1, 1);
    static const int32_t positions[3] = {2, 0, 1};
    expect_third_order_within(fx, "causal_attention_packed", f_causal_attention_packed,
                              ARGS(.s = 0.7, .i = {2}, .index = positions), 0, FUSED_PLAIN_TOL,
                              INPUTS(qkv));
    expect_third_order_within(fx, "packed_heads beside the attention", f_packed_heads,
                              ARGS(.s = 0.7, .i = {1, 3, 2, 1}, .index = positions), 0,
                              FUSED_PLAIN_TOL, INPUTS(qkv));
    ts_tensor *tq = token_major_leaf(ctx, q), *tks = token_major_leaf(ctx, cks);
    ts_tensor *tvs = token_major_leaf(ctx, cvs);
    for (int wrt = 0; wrt < 5; wrt++)
        expect_third_order(fx, "context_attention_tokens", f_context_attention_tokens,
                           ARGS(.s = 0.7), wrt, INPUTS(tq, ck, cv, tks, tvs));
}

/* d^n/dx^n of an elementwise f, n = 1..order, by nested ts_grad: the gradient
 * of sum(f^(n-1)(x)) is f^(n)(x) elementwise. All but the last pass keep
 * their graph so the next one can differentiate it. */
static void nested_derivatives(ts_ctx *ctx, ts_tensor *y, ts_tensor *x, int order,
                               ts_tensor **derivatives) {
    ts_tensor *current = ts_sum_all(ctx, y);
    for (int n = 0; n < order; n++) {
        ts_grad(ctx, 1, &current, NULL, 1, &x, &derivatives[n], n + 1 < order);
        if (n + 1 < order) current = ts_sum_all(ctx, derivatives[n]);
    }
}

/* Relative agreement that allows for a few hundred roundings in the type. */
#ifdef TS_DOUBLE
#define EXACT_TOL (256 * DBL_EPSILON)
#else
#define EXACT_TOL (256 * FLT_EPSILON)
#endif

static void test_third_derivative_sigmoid(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    static const ts_real points[7] = {-3, -1.25, -0.5, 0, 0.7, 1.5, 4};
    ts_tensor *x = ts_from_array(ctx, TS_SHAPE(7), points);
    ts_set_requires_grad(ctx, x, true);
    ts_tensor *d[3];
    nested_derivatives(ctx, ts_sigmoid(ctx, x), x, 3, d);
    for (int i = 0; i < 7; i++) {
        double s = 1 / (1 + exp(-(double)points[i]));
        double expected[3] = {s * (1 - s), s * (1 - s) * (1 - 2 * s),
                              s * (1 - s) * (1 - 6 * s + 6 * s * s)};
        for (int n = 0; n < 3; n++) {
            double got = d[n]->data[i];
            /* sigma'' and sigma''' vanish near 0 and +-1.15: scale by sigma'. */
            double error = fabs(got - expected[n]) / fmax(fabs(expected[n]), s * (1 - s));
            if (!(error <= EXACT_TOL))
                fail_msg("sigmoid derivative %d at x=%g: engine %.12g, analytic %.12g", n + 1,
                         (double)points[i], got, expected[n]);
        }
    }
}

/* The second derivative of exp(silu(x)) at x, elementwise, as plain numbers. */
static void second_derivative_exp_silu(ts_ctx *ctx, const ts_real *points, int n, double *out) {
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *x = ts_from_array(ctx, TS_SHAPE(n), points);
    ts_set_requires_grad(ctx, x, true);
    ts_tensor *d[2];
    nested_derivatives(ctx, ts_exp(ctx, ts_silu(ctx, x)), x, 2, d);
    for (int i = 0; i < n; i++) out[i] = d[1]->data[i];
    ts_release(ctx, mark);
}

static void test_third_derivative_exp_silu(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { N = 7 };
    static const ts_real points[N] = {-3, -1.25, -0.5, 0, 0.7, 1.5, 2.5};
    ts_tensor *x = ts_from_array(ctx, TS_SHAPE(N), points);
    ts_set_requires_grad(ctx, x, true);
    ts_tensor *d[3];
    nested_derivatives(ctx, ts_exp(ctx, ts_silu(ctx, x)), x, 3, d);

    /* The function is elementwise, so one central difference of the whole
     * second-derivative vector gives every element's third derivative. */
    double second_at[4][N], third_fd[N], third[N];
    for (int k = 0; k < GC_STENCIL_POINTS; k++) {
        ts_real shifted[N];
        for (int i = 0; i < N; i++)
            shifted[i] = (ts_real)(points[i] + GC_STENCIL_OFFSET[k] * GC_STEP);
        second_derivative_exp_silu(ctx, shifted, N, second_at[k]);
    }
    for (int i = 0; i < N; i++) {
        double values[4];
        for (int k = 0; k < GC_STENCIL_POINTS; k++) values[k] = second_at[k][i];
        third_fd[i] = gc_stencil(values);
        third[i] = d[2]->data[i];
    }
    long worst;
    double error = gc_relative_error(third, third_fd, N, 0, &worst);
    if (!(error <= GC_TOL_SECOND))
        fail_msg("third derivative of exp(silu(x)) at x=%g: engine %.12g, finite difference "
                 "%.12g (relative error %.3g)",
                 (double)points[worst], third[worst], third_fd[worst], error);
    /* Nothing vanishes identically: a silently dropped term would show. */
    for (int i = 0; i < N; i++) assert_true(fabs(third[i]) > 1e-3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_matmul_nn),
        T(test_matmul_nt),
        T(test_matmul_tn),
        T(test_matmul_tt),
        T(test_matmul_batched_4d),
        T(test_matmul_shared_right),
        T(test_add),
        T(test_sub),
        T(test_mul),
        T(test_div),
        T(test_scale_and_add_scalar),
        T(test_exp),
        T(test_log),
        T(test_sqrt),
        T(test_rsqrt),
        T(test_square),
        T(test_sigmoid),
        T(test_silu),
        T(test_swiglu),
        T(test_swiglu_packed),
        T(test_sum_to),
        T(test_broadcast_to),
        T(test_sum_and_mean_axis),
        T(test_sum_all_and_mean_all),
        T(test_softmax),
        T(test_log_softmax),
        T(test_cross_entropy),
        T(test_reshape),
        T(test_permute_and_transpose),
        T(test_slice),
        T(test_pad),
        T(test_concat),
        T(test_embedding),
        T(test_scatter_rows),
        T(test_gather_last),
        T(test_scatter_last),
        T(test_rmsnorm),
        T(test_rope),
        T(test_adjacent_rows),
        T(test_attention),
        T(test_third_order_elementwise),
        T(test_third_order_softmax_family),
        T(test_third_order_layers),
        T(test_third_derivative_sigmoid),
        T(test_third_derivative_exp_silu),
#undef T
    };
    printf("element type: %s\n", TS_REAL_NAME);
    return cmocka_run_group_tests_name("engine gradcheck (" TS_REAL_NAME ")", tests, NULL, NULL);
}
