/* Semantics of the graph and the gradient passes (autodiff.h, context.h):
 * accumulation into .grad, detach, no-grad mode, gradients with respect to
 * intermediates and unused inputs, releasing a graph, arena reuse across
 * training steps, FLOP accounting (docs/engine.md, "FLOP accounting") and the
 * unit markers with their hook (ts_unit_boundary). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "tiny_net.h"
#include "engine_fixture.h"

static int setup(void **state) {
    ts_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx || !ts_ctx_init(ctx, 1 << 20)) return -1;
    ts_ctx_set_error_handler(ctx, fail_test_on_engine_error, NULL);
    *state = ctx;
    return 0;
}

static int teardown(void **state) {
    ts_ctx_free(*state);
    free(*state);
    return 0;
}

static ts_tensor *leaf(ts_ctx *ctx, int ndim, const int *shape, const ts_real *values) {
    ts_tensor *t = ts_from_array(ctx, ndim, shape, values);
    ts_set_requires_grad(ctx, t, true);
    return t;
}

/* Values are small integers and halves so every product below is exact. */
static const ts_real X3[3] = {1.5, -2, 0.5};

static void assert_values(const ts_tensor *t, const ts_real *expected, long n) {
    assert_int_equal(t->numel, n);
    for (long i = 0; i < n; i++)
        if (t->data[i] != expected[i])
            fail_msg("element %ld: %.17g, expected %.17g", i, (double)t->data[i],
                     (double)expected[i]);
}

/* ---------------------------------------------------------------- accumulation */

static void test_backward_accumulates_into_grad(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *loss = ts_sum_all(ctx, ts_square(ctx, x)); /* d/dx = 2x */
    assert_null(x->grad);
    ts_backward(ctx, loss, NULL);
    assert_non_null(x->grad); /* created in the arena, zeroed first */
    assert_values(x->grad, (ts_real[]){3, -4, 1}, 3);
    ts_backward(ctx, loss, NULL);
    assert_values(x->grad, (ts_real[]){6, -8, 2}, 3); /* twice the single pass */
}

/* The gradient of a leaf with respect to itself is its seed. */
static void test_backward_of_a_leaf_seeds_its_grad(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *seed = ts_from_array(ctx, TS_SHAPE(3), (ts_real[]){1, 2, 3});
    ts_backward(ctx, x, seed);
    assert_non_null(x->grad);
    assert_values(x->grad, (ts_real[]){1, 2, 3}, 3);
}

/* A parameter accumulates into the caller's flat gradient buffer. */
static void test_backward_accumulates_into_param_buffer(void **state) {
    ts_ctx *ctx = *state;
    ts_real values[3] = {1.5, -2, 0.5}, grads[3] = {10, 20, 30};
    ts_tensor *p = ts_param(ctx, values, grads, TS_SHAPE(3), "p");
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, p, p));
    ts_backward(ctx, loss, NULL);
    ts_backward(ctx, loss, NULL);
    /* Added to what was there, never reset. */
    const ts_real expected[3] = {10 + 2 * 3, 20 - 2 * 4, 30 + 2 * 1};
    assert_memory_equal(grads, expected, sizeof grads);
    assert_true(p->grad->data == grads);
}

/* ts_grad returns gradients and leaves .grad buffers alone. */
static void test_grad_does_not_touch_grad_buffers(void **state) {
    ts_ctx *ctx = *state;
    ts_real values[3] = {1.5, -2, 0.5}, grads[3] = {7, 7, 7};
    ts_tensor *p = ts_param(ctx, values, grads, TS_SHAPE(3), "p");
    ts_tensor *loss = ts_sum_all(ctx, ts_square(ctx, p)), *g;
    ts_grad(ctx, 1, &loss, NULL, 1, &p, &g, false);
    assert_values(g, (ts_real[]){3, -4, 1}, 3);
    assert_memory_equal(grads, ((ts_real[]){7, 7, 7}), sizeof grads);
    /* And the scratch of one pass does not leak into the next. */
    ts_tensor *again;
    ts_grad(ctx, 1, &loss, NULL, 1, &p, &again, false);
    assert_values(again, (ts_real[]){3, -4, 1}, 3);
}

/* ---------------------------------------------------------------- cutting the graph */

static void test_detach_stops_gradient(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *d = ts_detach(ctx, x);
    assert_false(d->requires_grad);
    assert_null(d->node);
    assert_true(d->data == x->data); /* same numbers, no copy */
    /* x * detach(x): only the first factor carries a gradient, so d/dx = x, not 2x. */
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, x, d)), *g;
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &g, false);
    assert_values(g, X3, 3);
    /* Detaching an intermediate cuts everything behind it. */
    ts_tensor *y = ts_exp(ctx, x);
    ts_tensor *cut = ts_mul(ctx, ts_detach(ctx, y), ts_detach(ctx, x));
    assert_false(cut->requires_grad);
}

static void test_no_grad_mode_records_nothing(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *w = leaf(ctx, TS_SHAPE(3, 2), ((ts_real[]){1, 2, 3, 4, 5, 6}));
    long tape_before = ctx->tape_len;
    assert_true(ts_set_grad_enabled(ctx, false)); /* returns the previous setting */
    ts_tensor *y =
        ts_matmul(ctx, ts_reshape(ctx, ts_sigmoid(ctx, x), TS_SHAPE(1, 3)), w, false, false);
    ts_tensor *loss = ts_sum_all(ctx, ts_softmax(ctx, y, NULL));
    assert_int_equal(ctx->tape_len, tape_before);
    assert_false(y->requires_grad);
    assert_null(y->node);
    assert_false(loss->requires_grad);
    assert_false(ts_set_grad_enabled(ctx, true));
    /* Recording is back: the same op records again. */
    ts_tensor *z = ts_sigmoid(ctx, x);
    assert_true(z->requires_grad);
    assert_int_equal(ctx->tape_len, tape_before + 1);
}

/* A gradient pass restores the recording switch and the FLOP phase it found. */
static void test_grad_restores_mode_and_phase(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *loss = ts_sum_all(ctx, ts_exp(ctx, x)), *g;
    for (int create_graph = 0; create_graph < 2; create_graph++) {
        ts_grad(ctx, 1, &loss, NULL, 1, &x, &g, create_graph);
        assert_true(ctx->grad_enabled);
        assert_int_equal(ctx->phase, TS_FORWARD);
        /* Only create_graph makes the gradient part of the graph. */
        assert_int_equal(g->requires_grad, create_graph);
    }
    ts_set_grad_enabled(ctx, false);
    ts_backward(ctx, loss, NULL);
    assert_false(ctx->grad_enabled);
    ts_set_grad_enabled(ctx, true);
}

/* ---------------------------------------------------------------- what gradients reach */

static void test_grad_with_respect_to_intermediate(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *y = ts_exp(ctx, x);
    ts_tensor *loss = ts_sum_all(ctx, ts_square(ctx, y)); /* d/dy = 2y, d/dx = 2y^2 */
    ts_tensor *g[2];
    ts_grad(ctx, 1, &loss, NULL, 2, (ts_tensor *[]){y, x}, g, false);
    for (int i = 0; i < 3; i++) {
        double yi = exp((double)X3[i]);
        assert_true(fabs(g[0]->data[i] - 2 * yi) <= 1e-6 * 2 * yi);
        assert_true(fabs(g[1]->data[i] - 2 * yi * yi) <= 1e-6 * 2 * yi * yi);
    }
    /* The intermediate alone: the pass must not need x. */
    ts_tensor *gy;
    ts_grad(ctx, 1, &loss, NULL, 1, &y, &gy, false);
    assert_memory_equal(gy->data, g[0]->data, 3 * sizeof(ts_real));
}

static void test_grad_of_unused_input_is_zeros(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *unused = leaf(ctx, TS_SHAPE(2, 2), ((ts_real[]){1, 2, 3, 4}));
    ts_tensor *loss = ts_sum_all(ctx, ts_square(ctx, x));
    ts_tensor *g[2] = {NULL, NULL};
    ts_grad(ctx, 1, &loss, NULL, 2, (ts_tensor *[]){x, unused}, g, false);
    assert_non_null(g[1]);
    assert_true(ts_same_shape(g[1], unused));
    assert_values(g[1], (ts_real[]){0, 0, 0, 0}, 4);
    assert_values(g[0], (ts_real[]){3, -4, 1}, 3);
}

/* Several outputs, each with its own seed: the gradient of sum_i <seed_i, out_i>. */
static void test_grad_of_seeded_outputs(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_tensor *square = ts_square(ctx, x), *scaled = ts_scale(ctx, x, 3);
    ts_tensor *seed1 = ts_from_array(ctx, TS_SHAPE(3), (ts_real[]){1, 2, -1});
    ts_tensor *seed2 = ts_from_array(ctx, TS_SHAPE(3), (ts_real[]){0.5, 0, 2});
    ts_tensor *g;
    ts_grad(ctx, 2, (ts_tensor *[]){square, scaled}, (ts_tensor *[]){seed1, seed2}, 1, &x, &g,
            false);
    /* 2 x seed1 + 3 seed2 */
    assert_values(g, (ts_real[]){2 * 1.5 * 1 + 1.5, 2 * -2 * 2 + 0, 2 * 0.5 * -1 + 6}, 3);
    /* A NULL seed of a one-element output means 1. */
    ts_tensor *total = ts_sum_all(ctx, scaled), *g_null, *g_one;
    ts_grad(ctx, 1, &total, NULL, 1, &x, &g_null, false);
    ts_grad(ctx, 1, &total, (ts_tensor *[]){ts_full(ctx, TS_SHAPE(1), 1)}, 1, &x, &g_one, false);
    assert_values(g_null, (ts_real[]){3, 3, 3}, 3);
    assert_memory_equal(g_null->data, g_one->data, 3 * sizeof(ts_real));
}

/* ---------------------------------------------------------------- memory */

/* Halves in [-2, 2] from a pattern: every product and sum below is exact, so
 * any order of summation gives the same floats and a wrong sum cannot hide
 * behind a tolerance. */
static ts_tensor *halves(ts_ctx *ctx, int ndim, const int *shape, int pattern, bool grad) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    for (long i = 0; i < t->numel; i++) t->data[i] = (ts_real)(((i * 7 + pattern) % 9) - 4) / 2;
    if (grad) ts_set_requires_grad(ctx, t, true);
    return t;
}

enum { ACC_B = 2, ACC_M = 3, ACC_K = 4, ACC_N = 5, ACC_PRODUCTS = 6 };

/* x = 2 x0 and the weights w, wt feed six matmuls between them, in every
 * operand position and transpose the rule handles: x as left operand with a
 * shared right one (plain and transposed), transposed, as the batched right
 * operand and twice in one product; w as the shared right operand of two.
 * So in a gradient pass x and w receive several gradients, most of them while
 * an earlier sum is already held (the GEMM then adds into it). */
static void accumulation_products(ts_ctx *ctx, ts_tensor *x0, ts_tensor *w, ts_tensor *wt,
                                  ts_tensor **y) {
    ts_tensor *x = ts_scale(ctx, x0, 2);
    ts_tensor *c3 = halves(ctx, TS_SHAPE(ACC_B, ACC_M, 2), 1, false);
    ts_tensor *c4 = halves(ctx, TS_SHAPE(ACC_B, 3, ACC_M), 2, false);
    ts_tensor *z = halves(ctx, TS_SHAPE(ACC_B, 2, ACC_K), 5, false);
    y[0] = ts_matmul(ctx, x, w, false, false);  /* [B, M, N] */
    y[1] = ts_matmul(ctx, x, c3, true, false);  /* [B, K, 2] */
    y[2] = ts_matmul(ctx, x, x, false, true);   /* [B, M, M] */
    y[3] = ts_matmul(ctx, c4, x, false, false); /* [B, 3, K] */
    y[4] = ts_matmul(ctx, z, w, false, false);  /* [B, 2, N] */
    y[5] = ts_matmul(ctx, x, wt, false, true);  /* [B, M, N] */
}

static ts_tensor *seed_like(ts_ctx *ctx, const ts_tensor *y, int pattern) {
    return halves(ctx, y->ndim, y->shape, pattern, false);
}

/* <g[0], v[0]> + <g[1], v[1]> + <g[2], v[2]>: a scalar of first-order
 * gradients, to differentiate again. */
static ts_tensor *gradient_dot(ts_ctx *ctx, ts_tensor *const *g, ts_tensor *const *v) {
    ts_tensor *h = NULL;
    for (int j = 0; j < 3; j++) {
        ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, g[j], v[j]));
        h = h ? ts_add(ctx, h, term) : term;
    }
    return h;
}

static void expect_sums(ts_tensor *const *g, double (*expected)[ACC_B * ACC_M * ACC_K],
                        const char *what) {
    for (int j = 0; j < 3; j++)
        for (long e = 0; e < g[j]->numel; e++)
            if (g[j]->data[e] != expected[j][e])
                fail_msg("%s, input %d, element %ld: %g, expected %g", what, j, e,
                         (double)g[j]->data[e], expected[j][e]);
}

/* Calls and FLOPs of one op in one pass of a profile. */
static long profile_calls(const ts_profile *profile, enum ts_pass pass, const char *op) {
    for (int e = 0; e < profile->n_entries[pass]; e++)
        if (!strcmp(profile->entries[pass][e].op, op)) return profile->entries[pass][e].calls;
    return 0;
}

/* The gradients of x0, w and wt from all six products together equal the
 * sums of the gradients of each product alone (exactly: see halves): plain,
 * with create_graph, and the gradient of a dot product of the recorded ones
 * (second order, through the sums the recorded GEMMs added into); and into
 * leaf .grad buffers by ts_backward. Both first-order passes do it with no
 * add (every sum is a GEMM's beta = 1) and count the same FLOPs (a GEMM's
 * sum as the add it replaces). */
static void test_matmul_gradients_accumulate_into_one_sum(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x0 = halves(ctx, TS_SHAPE(ACC_B, ACC_M, ACC_K), 3, true);
    ts_tensor *w = halves(ctx, TS_SHAPE(ACC_K, ACC_N), 4, true);
    ts_tensor *wt = halves(ctx, TS_SHAPE(ACC_N, ACC_K), 6, true);
    ts_tensor *inputs[3] = {x0, w, wt}, *y[ACC_PRODUCTS], *seeds[ACC_PRODUCTS], *v[3];
    accumulation_products(ctx, x0, w, wt, y);
    for (int i = 0; i < ACC_PRODUCTS; i++) seeds[i] = seed_like(ctx, y[i], 8 + i);
    for (int j = 0; j < 3; j++) v[j] = seed_like(ctx, inputs[j], 15 + j);

    double expected[3][ACC_B * ACC_M * ACC_K] = {{0}}, second[3][ACC_B * ACC_M * ACC_K] = {{0}};
    for (int i = 0; i < ACC_PRODUCTS; i++) {
        ts_tensor *alone[3], *alone2[3];
        ts_grad(ctx, 1, &y[i], &seeds[i], 3, inputs, alone, true);
        for (int j = 0; j < 3; j++)
            for (long e = 0; e < alone[j]->numel; e++) expected[j][e] += alone[j]->data[e];
        ts_tensor *h = gradient_dot(ctx, alone, v);
        if (!h->requires_grad) continue; /* linear in the inputs: no second order */
        ts_grad(ctx, 1, &h, NULL, 3, inputs, alone2, false);
        for (int j = 0; j < 3; j++)
            for (long e = 0; e < alone2[j]->numel; e++) second[j][e] += alone2[j]->data[e];
    }

    double plain_flops = 0;
    for (int graph = 0; graph < 2; graph++) {
        ts_profile profile;
        ts_tensor *g[3];
        ts_reset_flops(ctx);
        ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
        ts_grad(ctx, ACC_PRODUCTS, y, seeds, 3, inputs, g, graph);
        ts_profile_stop(ctx);
        expect_sums(g, expected, graph ? "recorded pass" : "plain pass");
        enum ts_pass pass = graph ? TS_PASS_BACKWARD_GRAPH : TS_PASS_BACKWARD;
        /* x: 1 + 1 + 2 + 1 + 1 gradients, w: 1 + 1, wt: 1. */
        assert_int_equal(profile_calls(&profile, pass, "matmul"), 9);
        assert_int_equal(profile_calls(&profile, pass, "add"), 0);
        if (graph)
            assert_true(ctx->flops[TS_BACKWARD] == plain_flops);
        else
            plain_flops = ctx->flops[TS_BACKWARD];
        if (!graph) continue;
        ts_tensor *h = gradient_dot(ctx, g, v), *g2[3];
        ts_grad(ctx, 1, &h, NULL, 3, inputs, g2, false);
        expect_sums(g2, second, "second order");
    }

    /* ts_backward: the leaves' sums go into their .grad buffers (x's and the
     * intermediate's through a GEMM, the leaves' by the pass). */
    ts_tensor *loss = NULL;
    for (int i = 0; i < ACC_PRODUCTS; i++) {
        ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, y[i], seeds[i]));
        loss = loss ? ts_add(ctx, loss, term) : term;
    }
    ts_backward(ctx, loss, NULL);
    for (int j = 0; j < 3; j++)
        for (long e = 0; e < inputs[j]->numel; e++)
            assert_true(inputs[j]->grad->data[e] == expected[j][e]);
}

/* ts_backward hands a weight's .grad to its gradient GEMMs as the sum to add
 * into: the flat buffer ends as what it held plus every product's gradient
 * (exact: see halves), with no separate leaf accumulation, and the FLOPs
 * are those of the GEMMs and the adds they replace. A leaf whose rule cannot
 * add into a sum (ts_scale's) still goes through the accumulation. */
static void test_backward_adds_weight_gradients_into_grad(void **state) {
    ts_ctx *ctx = *state;
    enum { M = 3, K = 4, N = 5 };
    ts_real w_values[K * N], grads[K * N];
    for (int e = 0; e < K * N; e++) {
        w_values[e] = (ts_real)((e * 5 % 7) - 3) / 2;
        grads[e] = (ts_real)(e % 4) - 1; /* an earlier micro-batch's sum */
    }
    ts_tensor *w = ts_param(ctx, w_values, grads, TS_SHAPE(K, N), "w");
    ts_tensor *x = halves(ctx, TS_SHAPE(2, M, K), 1, false);
    ts_tensor *s = halves(ctx, TS_SHAPE(N), 2, true); /* a leaf of ts_scale's rule */
    ts_tensor *seed1 = halves(ctx, TS_SHAPE(2, M, N), 3, false);
    ts_tensor *seed2 = halves(ctx, TS_SHAPE(2, M, N), 4, false);
    ts_tensor *y1 = ts_matmul(ctx, x, w, false, false), *y2 = ts_matmul(ctx, x, w, false, false);
    ts_tensor *loss = ts_add(ctx, ts_sum_all(ctx, ts_mul(ctx, y1, seed1)),
                             ts_sum_all(ctx, ts_mul(ctx, y2, seed2)));
    loss = ts_add(ctx, loss, ts_sum_all(ctx, ts_scale(ctx, s, 3)));

    double expected[K * N];
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) {
            double sum = grads[k * N + n];
            for (int r = 0; r < 2 * M; r++)
                sum += x->data[r * K + k] * (seed1->data[r * N + n] + seed2->data[r * N + n]);
            expected[k * N + n] = sum;
        }
    ts_profile profile;
    ts_reset_flops(ctx);
    ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
    ts_backward(ctx, loss, NULL);
    ts_profile_stop(ctx);
    for (int e = 0; e < K * N; e++)
        if (grads[e] != expected[e])
            fail_msg("w's .grad element %d: %g, expected %g", e, (double)grads[e], expected[e]);
    assert_true(w->grad->data == grads);
    assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "matmul"), 2);
    /* s alone is accumulated by the pass */
    assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "accumulate leaf gradient"), 1);
    for (int e = 0; e < N; e++) assert_true(s->grad->data[e] == 3);
}

/* Two weights side by side in one buffer (ts_adjacent_rows), their .grad
 * buffers side by side in another, as a model's flat buffers lay them out:
 * ts_backward adds the stacked weight's gradient GEMM straight into both
 * .grad buffers at once (no slices of a fresh product, no leaf
 * accumulation). With the .grad buffers apart, the view's rule hands each
 * part its slice as before. Either way each buffer ends as what it held
 * plus its rows of x^T g (exact: see halves). */
static void test_backward_adds_stacked_gradients_into_grads(void **state) {
    ts_ctx *ctx = *state;
    enum { M = 3, K = 4, R0 = 2, R1 = 3, N = R0 + R1 };
    ts_real values[N * K], grads[N * K], apart[N * K + 1];
    for (int e = 0; e < N * K; e++) values[e] = (ts_real)((e * 5 % 7) - 3) / 2;
    for (int adjacent = 1; adjacent >= 0; adjacent--) {
        /* apart: the second part's .grad one element further on */
        ts_real *second = adjacent ? grads + R0 * K : apart + R0 * K + 1;
        for (int e = 0; e < N * K; e++) grads[e] = apart[e] = (ts_real)(e % 4) - 1;
        for (int e = 0; e < R1 * K; e++) second[e] = (ts_real)((R0 * K + e) % 4) - 1;
        ts_tensor *w0 = ts_param(ctx, values, grads, TS_SHAPE(R0, K), "w0");
        ts_tensor *w1 = ts_param(ctx, values + R0 * K, second, TS_SHAPE(R1, K), "w1");
        ts_tensor *stacked = ts_adjacent_rows(ctx, 2, (ts_tensor *[]){w0, w1});
        ts_tensor *x = halves(ctx, TS_SHAPE(2, M, K), 1, false);
        ts_tensor *seed = halves(ctx, TS_SHAPE(2, M, N), 3, false);
        ts_tensor *y = ts_matmul(ctx, x, stacked, false, true); /* [2, M, N] */
        ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, y, seed));
        double expected[N * K];
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                double sum = (ts_real)((n * K + k) % 4) - 1;
                for (int r = 0; r < 2 * M; r++) sum += x->data[r * K + k] * seed->data[r * N + n];
                expected[n * K + k] = sum;
            }
        ts_profile profile;
        ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
        ts_backward(ctx, loss, NULL);
        ts_profile_stop(ctx);
        for (int e = 0; e < N * K; e++) {
            ts_real got = e < R0 * K ? grads[e] : second[e - R0 * K];
            if (got != expected[e])
                fail_msg("%s .grad buffers, element %d: %g, expected %g",
                         adjacent ? "adjacent" : "separate", e, (double)got, expected[e]);
        }
        assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "accumulate leaf gradient"),
                         adjacent ? 0 : 2);
        assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "slice"), adjacent ? 0 : 2);
    }
}

/* ts_matmul_add(c, x, w) against ts_add(c, ts_matmul(x, w)), with x = 2 x0
 * and c = 3 c0 intermediates also read elsewhere (so their gradients are
 * sums): the same values (exact: see halves), c left as it was, the same
 * FLOPs, and the same gradients of c0, x0 and w, plain, recorded and second
 * order (the gradient of a dot product of the recorded ones). */
static ts_tensor *residual_loss(ts_ctx *ctx, ts_tensor *const *in, bool fused, ts_tensor **y_out) {
    ts_tensor *c = ts_scale(ctx, in[0], 3), *x = ts_scale(ctx, in[1], 2);
    double before = ctx->flops[TS_FORWARD];
    ts_tensor *y = fused ? ts_matmul_add(ctx, c, x, in[2], false, false)
                         : ts_add(ctx, c, ts_matmul(ctx, x, in[2], false, false));
    ctx->flops[TS_FORWARD] -= before; /* the flops of y alone */
    for (long e = 0; e < c->numel; e++) assert_true(c->data[e] == 3 * in[0]->data[e]);
    *y_out = y;
    /* y squared (so there is a second order); c and x also reach the loss */
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, y, y));
    loss = ts_add(ctx, loss, ts_sum_all(ctx, ts_mul(ctx, c, c)));
    return ts_add(ctx, loss, ts_sum_all(ctx, ts_matmul(ctx, x, in[2], false, false)));
}

static void expect_same_tensors(ts_tensor *const *got, ts_tensor *const *want, int n,
                                const char *what) {
    for (int j = 0; j < n; j++)
        for (long e = 0; e < want[j]->numel; e++)
            if (got[j]->data[e] != want[j]->data[e])
                fail_msg("%s, tensor %d, element %ld: %g, the composition's %g", what, j, e,
                         (double)got[j]->data[e], (double)want[j]->data[e]);
}

static void test_matmul_add_is_the_add_of_the_product(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *in[3] = {halves(ctx, TS_SHAPE(ACC_B, ACC_M, ACC_N), 3, true),
                        halves(ctx, TS_SHAPE(ACC_B, ACC_M, ACC_K), 4, true),
                        halves(ctx, TS_SHAPE(ACC_K, ACC_N), 5, true)};
    ts_tensor *v[3], *y[2], *g[2][3], *recorded[2][3], *g2[2][3];
    double flops[2];
    for (int j = 0; j < 3; j++) v[j] = seed_like(ctx, in[j], 9 + j);
    for (int fused = 0; fused < 2; fused++) {
        ts_reset_flops(ctx);
        ts_tensor *loss = residual_loss(ctx, in, fused, &y[fused]);
        flops[fused] = ctx->flops[TS_FORWARD];
        ts_grad(ctx, 1, &loss, NULL, 3, in, g[fused], false);
        ts_grad(ctx, 1, &loss, NULL, 3, in, recorded[fused], true);
        ts_tensor *h = gradient_dot(ctx, recorded[fused], v);
        ts_grad(ctx, 1, &h, NULL, 3, in, g2[fused], false);
    }
    assert_true(flops[1] == flops[0]);
    expect_same_tensors(&y[1], &y[0], 1, "values");
    expect_same_tensors(g[1], g[0], 3, "plain gradients");
    expect_same_tensors(recorded[1], recorded[0], 3, "recorded gradients");
    expect_same_tensors(g2[1], g2[0], 3, "second order");
}

/* A residual block's shape: x = 2 x0 is normalised (u = RMSNorm(x)), then
 * y = x + a w (ts_matmul_add), and the loss reads y and u. In the plain pass
 * the gradient y hands on to x unchanged stays owned, so RMSNorm's rule adds
 * into it: no add at all, and the same gradients as the recorded pass (which
 * adds). Asked for y's gradient as well (a target), the pass must leave
 * that one as it was: the loss's seed s_y. */
static void test_passed_on_gradient_is_added_into(void **state) {
    ts_ctx *ctx = *state;
    enum { N = ACC_N };
    ts_tensor *x0 = halves(ctx, TS_SHAPE(ACC_B, ACC_M, N), 3, true);
    ts_tensor *a = halves(ctx, TS_SHAPE(ACC_B, ACC_M, ACC_K), 4, true);
    ts_tensor *w = halves(ctx, TS_SHAPE(ACC_K, N), 5, true);
    ts_tensor *norm_w = halves(ctx, TS_SHAPE(N), 6, true);
    ts_tensor *s_y = halves(ctx, TS_SHAPE(ACC_B, ACC_M, N), 7, false);
    ts_tensor *s_u = halves(ctx, TS_SHAPE(ACC_B, ACC_M, N), 8, false);
    ts_tensor *x = ts_scale(ctx, x0, 2);
    ts_tensor *u = ts_rmsnorm(ctx, x, norm_w, 1e-5);
    ts_tensor *y = ts_matmul_add(ctx, x, a, w, false, false);
    ts_tensor *loss =
        ts_add(ctx, ts_sum_all(ctx, ts_mul(ctx, y, s_y)), ts_sum_all(ctx, ts_mul(ctx, u, s_u)));
    ts_tensor *in[4] = {x0, a, w, norm_w}, *plain[4], *recorded[4];
    ts_profile profile;
    ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
    ts_grad(ctx, 1, &loss, NULL, 4, in, plain, false);
    ts_profile_stop(ctx);
    assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "add"), 0);
    ts_grad(ctx, 1, &loss, NULL, 4, in, recorded, true);
    expect_same_tensors(plain, recorded, 4, "plain against recorded");

    ts_tensor *targets[2] = {x0, y}, *g[2];
    ts_grad(ctx, 1, &loss, NULL, 2, targets, g, false);
    expect_same_tensors(&g[1], &s_y, 1, "y's own gradient");
    expect_same_tensors(&g[0], &plain[0], 1, "x0's gradient beside y's");
}

/* x = 2 x0 read by an RMSNorm and a matmul, in either order on the tape:
 * x's gradient is the sum of the two alone. RMSNorm's rule adds its
 * gradient into the matmul's (plain pass) with the very float operations of
 * a gradient of its own and an add, so that order gives the same floats as
 * the sum of the two (a + b is b + a); the other order adds a GEMM into
 * RMSNorm's gradient (the same up to rounding). Neither plain pass books an
 * add; the recorded pass gives the same values. */
static void test_rmsnorm_gradient_adds_into_the_sum(void **state) {
    ts_ctx *ctx = *state;
    enum { D = 8 };
    ts_tensor *x0 = halves(ctx, TS_SHAPE(ACC_B, ACC_M, D), 3, true);
    ts_tensor *w = halves(ctx, TS_SHAPE(D), 4, true),
              *wm = halves(ctx, TS_SHAPE(D, ACC_N), 5, true);
    for (int rms_recorded_first = 0; rms_recorded_first < 2; rms_recorded_first++) {
        /* The reverse walk runs the rule of the op recorded last first. */
        ts_tensor *x = ts_scale(ctx, x0, 2), *y[2];
        if (rms_recorded_first) {
            y[0] = ts_rmsnorm(ctx, x, w, 1e-5);
            y[1] = ts_matmul(ctx, x, wm, false, false);
        } else {
            y[0] = ts_matmul(ctx, x, wm, false, false);
            y[1] = ts_rmsnorm(ctx, x, w, 1e-5);
        }
        ts_tensor *seeds[2] = {seed_like(ctx, y[0], 7), seed_like(ctx, y[1], 1)};
        ts_tensor *alone[2];
        for (int i = 0; i < 2; i++) ts_grad(ctx, 1, &y[i], &seeds[i], 1, &x, &alone[i], false);
        for (int graph = 0; graph < 2; graph++) {
            ts_profile profile;
            ts_tensor *g;
            ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
            ts_grad(ctx, 2, y, seeds, 1, &x, &g, graph);
            ts_profile_stop(ctx);
            if (!graph) assert_int_equal(profile_calls(&profile, TS_PASS_BACKWARD, "add"), 0);
            for (long e = 0; e < g->numel; e++) {
                ts_real sum = alone[0]->data[e] + alone[1]->data[e];
                bool exact = rms_recorded_first || graph; /* RMSNorm's rule added */
                if (exact ? g->data[e] != sum : fabs(g->data[e] - sum) > 1e-6 * (1 + fabs(sum)))
                    fail_msg("%s, %s pass, element %ld: %.9g, expected %.9g",
                             rms_recorded_first ? "RMSNorm recorded first" : "matmul first",
                             graph ? "recorded" : "plain", e, (double)g->data[e], (double)sum);
            }
        }
    }
}

/* Bit for bit, or fails naming the element. */
static void expect_same_floats(const ts_tensor *got, const ts_tensor *want, const char *what,
                               int j) {
    assert_int_equal(got->numel, want->numel);
    for (long e = 0; e < got->numel; e++)
        if (got->data[e] != want->data[e])
            fail_msg("%s, input %d, element %ld: %.9g, expected %.9g", what, j, e,
                     (double)got->data[e], (double)want->data[e]);
}

/* Three context attentions share their five inputs in other roles (a
 * query's rows as another's own keys, keys as values, one input given three
 * times to one attention), over 70 queries and 71 context keys (two strips,
 * the second partial), so in a plain gradient pass every context rule meets
 * sums its inputs already hold: the first order adds rows, context rows and
 * self columns into them (context_mix, context_mix_t, context_self_scale),
 * the second order also the layout's sums of the softmax probabilities
 * (context_product, context_self_column). Each adds its result to the sum
 * with the float operations of the add it replaces, so the plain passes give
 * the recorded passes' values (which sum with add ops) bit for bit, book no
 * add in the first order and fewer in the second, and count the same FLOPs.
 * The sums also match the sum of each attention's gradient alone. Rows
 * [B, H, L, dh], then token-major [B, L, H, dh] (EBT's layout). */
static void check_context_sums(ts_ctx *ctx, bool token_major) {
    enum { L = 70, C = 71, DH = 2, N_IN = 5, N_OUT = 3 };
    ts_tensor *(*attention)(ts_ctx *, ts_tensor *, ts_tensor *, ts_tensor *, ts_tensor *,
                            ts_tensor *, double) =
        token_major ? ts_context_attention_tokens : ts_context_attention;
    const int *rows = token_major ? (const int[]){1, L, 2, DH} : (const int[]){1, 2, L, DH};
    ts_tensor *q = halves(ctx, 4, rows, 1, true);
    ts_tensor *k = halves(ctx, TS_SHAPE(1, 2, C, DH), 2, true);
    ts_tensor *v = halves(ctx, TS_SHAPE(1, 2, C, DH), 3, true);
    ts_tensor *ks = halves(ctx, 4, rows, 4, true);
    ts_tensor *vs = halves(ctx, 4, rows, 5, true);
    ts_tensor *inputs[N_IN] = {q, k, v, ks, vs}, *y[N_OUT], *seeds[N_OUT], *dir[N_IN];
    y[0] = attention(ctx, q, k, v, ks, vs, 0.7);
    y[1] = attention(ctx, vs, v, k, q, ks, 0.7);
    y[2] = attention(ctx, q, k, k, q, q, 0.7);
    for (int i = 0; i < N_OUT; i++) seeds[i] = seed_like(ctx, y[i], 6 + i);
    for (int j = 0; j < N_IN; j++) dir[j] = seed_like(ctx, inputs[j], 11 + j);

    ts_tensor *g[2][N_IN], *g2[2][N_IN];
    ts_profile profile[2], profile2[2];
    double flops[2], flops2[2];
    for (int graph = 1; graph >= 0; graph--) { /* recorded first: the reference */
        ts_reset_flops(ctx);
        ts_profile_start(ctx, &profile[graph], TS_PROFILE_CPU);
        ts_grad(ctx, N_OUT, y, seeds, N_IN, inputs, g[graph], graph);
        ts_profile_stop(ctx);
        flops[graph] = ctx->flops[TS_BACKWARD];
    }
    /* the second order: of <g, dir> through the recorded first order */
    ts_tensor *h = NULL;
    for (int j = 0; j < N_IN; j++) {
        ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, g[1][j], dir[j]));
        h = h ? ts_add(ctx, h, term) : term;
    }
    for (int graph = 1; graph >= 0; graph--) {
        ts_reset_flops(ctx);
        ts_profile_start(ctx, &profile2[graph], TS_PROFILE_CPU);
        ts_grad(ctx, 1, &h, NULL, N_IN, inputs, g2[graph], graph);
        ts_profile_stop(ctx);
        flops2[graph] = ctx->flops[TS_BACKWARD];
    }
    for (int j = 0; j < N_IN; j++) {
        expect_same_floats(g[0][j], g[1][j], "first order, plain against recorded", j);
        expect_same_floats(g2[0][j], g2[1][j], "second order, plain against recorded", j);
    }
    assert_true(profile_calls(&profile[1], TS_PASS_BACKWARD_GRAPH, "add") > 0);
    assert_int_equal(profile_calls(&profile[0], TS_PASS_BACKWARD, "add"), 0);
    assert_true(profile_calls(&profile2[0], TS_PASS_SECOND_ORDER, "add") <
                profile_calls(&profile2[1], TS_PASS_SECOND_ORDER, "add"));
    assert_true(flops[0] == flops[1]);
    assert_true(flops2[0] == flops2[1]);

    /* Against the sum of each attention's gradients alone (its own order). */
    for (int j = 0; j < N_IN; j++) {
        ts_tensor *total = ts_zeros(ctx, inputs[j]->ndim, inputs[j]->shape);
        for (int i = 0; i < N_OUT; i++) {
            ts_tensor *alone[N_IN];
            ts_grad(ctx, 1, &y[i], &seeds[i], N_IN, inputs, alone, false);
            for (long e = 0; e < total->numel; e++) total->data[e] += alone[j]->data[e];
        }
        for (long e = 0; e < total->numel; e++) {
            double want = total->data[e], got = g[0][j]->data[e];
            if (fabs(got - want) > 1e-5 * (1 + fabs(want)))
                fail_msg("input %d, element %ld: %.9g, the attentions alone %.9g", j, e, got, want);
        }
    }
}

static void test_context_gradients_add_into_the_sum(void **state) {
    check_context_sums(*state, false);
    check_context_sums(*state, true);
}

/* ---------------------------------------------------------------- recycled gradient buffers */

/* A chain of 16 layers h = (h s) / 2 over [64, 64]: a plain pass hands
 * each dead gradient's buffer to the next layer's (engine/recycler.h), so
 * the arena grows by a few buffers where 32 gradients are formed, and the
 * values are those of the recorded pass, which recycles nothing. */
static void test_plain_pass_recycles_dead_gradients(void **state) {
    ts_ctx *ctx = *state;
    enum { LAYERS = 16, ROWS = 64, COLS = 64 };
    const size_t buffer = (size_t)ROWS * COLS * sizeof(ts_real);
    ts_tensor *x = halves(ctx, TS_SHAPE(ROWS, COLS), 11, true);
    ts_tensor *s = halves(ctx, TS_SHAPE(ROWS, COLS), 13, false), *h = x;
    for (int i = 0; i < LAYERS; i++) h = ts_scale(ctx, ts_mul(ctx, h, s), 0.5);
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, h, h));
    ts_tensor *plain, *recorded;
    size_t before = ctx->arena.in_use;
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &plain, false);
    size_t grown = ctx->arena.in_use - before;
    assert_false(ctx->recycler.active); /* the pass is over: nothing more is handed out */
    assert_int_equal(ctx->recycler.n_free, 0);
    if (grown > 6 * buffer)
        fail_msg("the plain pass grew the arena by %zu bytes: %.1f buffers of %zu for %d "
                 "gradients",
                 grown, (double)grown / (double)buffer, buffer, 2 * LAYERS + 2);
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &recorded, true);
    expect_same_tensors(&plain, &recorded, 1, "plain (recycled) against recorded");
}

/* A gradient passed on as a view stays out of the recycler while the view
 * is an input's gradient: y = reshape(transpose(2 x)) squared, so
 * reshape's rule hands transpose's output a view of its own incoming
 * gradient; had that buffer been recycled, transpose's rule would write its
 * result into the very buffer it reads (the same size), and x's gradient
 * would differ from the recorded pass's. */
static void test_passed_on_view_is_not_recycled(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = halves(ctx, TS_SHAPE(4, 8), 12, true);
    ts_tensor *t = ts_transpose(ctx, ts_scale(ctx, x, 2), 0, 1);
    ts_tensor *y = ts_reshape(ctx, t, TS_SHAPE(4, 8));
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, y, y));
    ts_tensor *plain, *recorded;
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &plain, false);
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &recorded, true);
    expect_same_tensors(&plain, &recorded, 1, "plain against recorded");
    /* d/dx sum (2 x)^2 = 8 x, whatever the layout in between */
    for (long i = 0; i < x->numel; i++)
        if (plain->data[i] != 8 * x->data[i])
            fail_msg("x's gradient [%ld] = %g, want %g", i, (double)plain->data[i],
                     8.0 * x->data[i]);
}

/* ts_backward into leaves without .grad buffers: y = c + a b (all leaves
 * of one size) hands c its own incoming gradient, which is dead after c's
 * .grad has it added; a's .grad, created next, may take that buffer. The
 * output's gradient (the same buffer) must then not be given back again,
 * or x0's gradient, formed last, would be written over a's .grad. */
static void test_buffer_passed_on_to_a_leaf_is_given_once(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x0 = halves(ctx, TS_SHAPE(4, 4), 14, true);
    ts_tensor *a = halves(ctx, TS_SHAPE(4, 4), 15, true);
    ts_tensor *b = halves(ctx, TS_SHAPE(4, 4), 16, true);
    ts_tensor *c = halves(ctx, TS_SHAPE(4, 4), 17, true);
    ts_tensor *d = ts_scale(ctx, x0, 2);
    ts_tensor *y = ts_matmul_add(ctx, c, a, b, false, false);
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, y, d));
    ts_tensor *in[4] = {x0, a, b, c}, *want[4];
    ts_grad(ctx, 1, &loss, NULL, 4, in, want, true);
    ts_backward(ctx, loss, NULL);
    for (int i = 0; i < 4; i++) assert_non_null(in[i]->grad);
    ts_tensor *got[4] = {x0->grad, a->grad, b->grad, c->grad};
    expect_same_tensors(got, want, 4, "leaf .grad against the recorded pass");
}

static void test_release_frees_the_graph(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3);
    ts_mark mark = ts_get_mark(ctx);
    size_t in_use = ctx->arena.in_use;
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, ts_exp(ctx, x), ts_sigmoid(ctx, x))), *g;
    ts_grad(ctx, 1, &loss, NULL, 1, &x, &g, true);
    assert_true(ctx->tape_len > mark.tape_len);
    assert_true(ctx->arena.in_use > in_use);
    ts_release(ctx, mark);
    assert_int_equal(ctx->tape_len, mark.tape_len);
    assert_int_equal(ctx->arena.in_use, in_use);
    /* Leaves made before the mark survive and keep working. */
    ts_tensor *again = ts_sum_all(ctx, ts_square(ctx, x));
    ts_grad(ctx, 1, &again, NULL, 1, &x, &g, false);
    assert_values(g, (ts_real[]){3, -4, 1}, 3);
}

/* Views share their input's data (docs/engine.md, "Memory"). */
static void test_views_share_data(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(4, 3), ((ts_real[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}));
    assert_true(ts_reshape(ctx, x, TS_SHAPE(3, 4))->data == x->data);
    ts_tensor *rows = ts_slice(ctx, x, 0, 1, 2);
    assert_true(rows->data == x->data + 3);
    ts_tensor *cols = ts_slice(ctx, x, 1, 1, 2); /* not contiguous: a copy */
    assert_values(cols, (ts_real[]){1, 2, 4, 5, 7, 8, 10, 11}, 8);
}

/* One training step of tiny_net: forward, backward into the flat gradient
 * buffer, then release. Returns the loss. */
static double training_step(ts_ctx *ctx, tiny_net *net, ts_real *grads, ts_tensor *const *params) {
    ts_mark mark = ts_get_mark(ctx);
    memset(grads, 0, (size_t)net->n_values * sizeof *grads);
    ts_tensor *loss = tiny_net_loss(ctx, net, params);
    ts_backward(ctx, loss, NULL);
    double value = ts_item(ctx, loss);
    ts_release(ctx, mark);
    return value;
}

static void check_arena_reuse(size_t chunk_bytes) {
    ts_ctx ctx;
    tiny_net net;
    assert_true(ts_ctx_init(&ctx, chunk_bytes));
    ts_ctx_set_error_handler(&ctx, fail_test_on_engine_error, NULL);
    assert_true(tiny_net_init(&net, 99));
    ts_real *grads = calloc((size_t)net.n_values, sizeof *grads);
    ts_real *first_grads = calloc((size_t)net.n_values, sizeof *first_grads);
    assert_non_null(grads && first_grads);
    ts_tensor *params[TINY_NET_N_PARAMS];
    tiny_net_leaves(&ctx, &net, grads, params);

    long mallocs[3];
    double losses[3];
    for (int step = 0; step < 3; step++) {
        losses[step] = training_step(&ctx, &net, grads, params);
        mallocs[step] = ctx.arena.n_mallocs;
        if (step == 0) memcpy(first_grads, grads, (size_t)net.n_values * sizeof *grads);
        /* Identical steps compute identical numbers: nothing stale is reused. */
        assert_memory_equal(grads, first_grads, (size_t)net.n_values * sizeof *grads);
        assert_true(losses[step] == losses[0]);
    }
    print_message("chunk %zu bytes: %ld chunk(s) after step 1, %ld after step 3, high water %zu\n",
                  chunk_bytes, mallocs[0], mallocs[2], ctx.arena.high_water);
    assert_true(mallocs[0] >= 1);
    assert_int_equal(mallocs[1], mallocs[0]);
    assert_int_equal(mallocs[2], mallocs[0]);
    free(grads);
    free(first_grads);
    tiny_net_free(&net);
    ts_ctx_free(&ctx);
}

static void test_arena_stops_mallocing_after_first_step(void **state) {
    (void)state;
    check_arena_reuse(0); /* the default 64 MiB chunk: one chunk holds a step */
    /* Small chunks make a step span many chunks, including oversized ones
     * for tensors larger than a chunk: they must all be reused. */
    check_arena_reuse(512);
}

/* Chunks of a huge page (2 MiB) or more start on a huge page, so the
 * kernel can back them with huge pages (arena.c); smaller ones on 64 bytes.
 * Every byte handed out is usable (the sanitizer build checks the writes). */
static void test_arena_chunks_start_on_huge_pages(void **state) {
    (void)state;
    const size_t huge = (size_t)2 << 20;
    size_t sizes[3] = {(size_t)1 << 20, huge, 3 * huge + 4096};
    for (int i = 0; i < 3; i++) {
        ts_arena arena;
        ts_arena_init(&arena, sizes[i]);
        unsigned char *first = ts_arena_alloc(&arena, sizes[i]);
        unsigned char *second = ts_arena_alloc(&arena, 100); /* a new chunk */
        assert_non_null(first);
        assert_non_null(second);
        size_t align = sizes[i] >= huge ? huge : 64;
        assert_int_equal((uintptr_t)first % align, 0);
        assert_int_equal((uintptr_t)second % align, 0);
        memset(first, 1, sizes[i]);
        memset(second, 2, 100);
        assert_int_equal(arena.n_mallocs, 2);
        ts_arena_free(&arena);
    }
}

/* ---------------------------------------------------------------- FLOPs */

static void test_matmul_flops(void **state) {
    ts_ctx *ctx = *state;
    enum { M = 3, K = 5, N = 4, B = 2 };
    ts_tensor *a = ts_zeros(ctx, TS_SHAPE(M, K)), *b = ts_zeros(ctx, TS_SHAPE(K, N));
    ts_set_requires_grad(ctx, a, true);
    ts_set_requires_grad(ctx, b, true);
    ts_tensor *seed = ts_full(ctx, TS_SHAPE(M, N), 1);

    ts_reset_flops(ctx);
    ts_tensor *c = ts_matmul(ctx, a, b, false, false);
    assert_true(ctx->flops[TS_FORWARD] == 2.0 * M * N * K);
    assert_true(ctx->flops[TS_BACKWARD] == 0);

    /* The gradient pass: two GEMMs of the same size, booked as backward. */
    ts_tensor *g[2];
    ts_grad(ctx, 1, &c, &seed, 2, (ts_tensor *[]){a, b}, g, false);
    assert_true(ctx->flops[TS_FORWARD] == 2.0 * M * N * K);
    assert_true(ctx->flops[TS_BACKWARD] == 4.0 * M * N * K);

    /* Only one input wanted: only one GEMM runs. */
    ts_reset_flops(ctx);
    ts_grad(ctx, 1, &c, &seed, 1, &a, g, false);
    assert_true(ctx->flops[TS_BACKWARD] == 2.0 * M * N * K);

    /* ts_backward adds the accumulation into each leaf's .grad, one add per
     * element, on top of the two GEMMs. */
    ts_reset_flops(ctx);
    ts_backward(ctx, c, seed);
    assert_true(ctx->flops[TS_FORWARD] == 0);
    assert_true(ctx->flops[TS_BACKWARD] == 4.0 * M * N * K + M * K + K * N);
    assert_true(ts_flops_total(ctx) == ctx->flops[TS_BACKWARD]);

    /* Batched: every batch counts. */
    ts_reset_flops(ctx);
    ts_tensor *a3 = ts_zeros(ctx, TS_SHAPE(B, M, K)), *b3 = ts_zeros(ctx, TS_SHAPE(B, K, N));
    ts_matmul(ctx, a3, b3, false, false);
    ts_matmul(ctx, a3, b, false, false); /* shared right operand */
    ts_matmul(ctx, b3, a3, true, true);  /* [N, K] @ [K, M] per batch */
    assert_true(ctx->flops[TS_FORWARD] == 3 * 2.0 * B * M * N * K);
}

/* The GEMM of a profile's table with this pass and shape (NULL: none). */
static const ts_profile_gemm *profile_gemm(const ts_profile *profile, ts_profile_gemm want) {
    for (int i = 0; i < profile->n_gemms; i++) {
        const ts_profile_gemm *g = &profile->gemms[i];
        if (g->pass == want.pass && g->m == want.m && g->n == want.n && g->k == want.k &&
            g->batch == want.batch && g->trans_a == want.trans_a && g->trans_b == want.trans_b &&
            g->accumulate == want.accumulate && g->small_gemm == want.small_gemm)
            return g;
    }
    return NULL;
}

/* A profile books every GEMM of ts_matmul by pass, shape and kernel: a
 * shared right operand as one GEMM over all rows (on ts_small_gemm, a
 * product into a fresh output), a batch as its products, a gradient GEMM
 * into a sum as beta 1; calls counted, time inside the call (not negative,
 * and within the pass's total). Without a profile nothing is booked. */
static void test_profile_books_gemms_by_shape(void **state) {
    ts_ctx *ctx = *state;
    enum { M = 3, K = 5, N = 4, B = 2 };
    ts_real w_values[K * N], w_grads[K * N] = {0};
    for (int e = 0; e < K * N; e++) w_values[e] = (ts_real)0.25;
    ts_tensor *w = ts_param(ctx, w_values, w_grads, TS_SHAPE(K, N), "w");
    ts_tensor *x = ts_full(ctx, TS_SHAPE(B, M, K), 0.5), *y3 = ts_full(ctx, TS_SHAPE(B, K, N), 2);
    ts_profile profile;
    ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
    ts_tensor *shared = ts_matmul(ctx, x, w, false, false);
    ts_matmul(ctx, x, w, false, false);
    ts_matmul(ctx, x, y3, false, false);
    ts_tensor *dw;
    ts_grad(ctx, 1, &shared, (ts_tensor *[]){ts_full(ctx, TS_SHAPE(B, M, N), 1)}, 1, &w, &dw,
            false);
    ts_profile_stop(ctx);

    const ts_profile_gemm *rows = profile_gemm(
        &profile,
        (ts_profile_gemm){
            .pass = TS_PASS_FORWARD, .m = B * M, .n = N, .k = K, .batch = 1, .small_gemm = true});
    const ts_profile_gemm *batched = profile_gemm(
        &profile, (ts_profile_gemm){.pass = TS_PASS_FORWARD, .m = M, .n = N, .k = K, .batch = B});
    /* dW = x^T g over all B M rows of the shared operand */
    const ts_profile_gemm *grad = profile_gemm(
        &profile,
        (ts_profile_gemm){
            .pass = TS_PASS_BACKWARD, .m = K, .n = N, .k = B * M, .batch = 1, .trans_a = true});
    assert_non_null(rows);
    assert_non_null(batched);
    assert_non_null(grad);
    assert_int_equal(rows->calls, 2);
    assert_int_equal(batched->calls, 1);
    assert_int_equal(grad->calls, 1);
    assert_int_equal(profile.n_gemms, 3);
    assert_int_equal(profile.gemm_calls_unlisted, 0);
    for (int i = 0; i < profile.n_gemms; i++) {
        double pass_seconds, pass_flops;
        ts_profile_pass_totals(&profile, profile.gemms[i].pass, &pass_seconds, &pass_flops);
        assert_true(profile.gemms[i].seconds >= 0 && profile.gemms[i].seconds <= pass_seconds);
    }

    /* into a sum: the leaf's .grad offered by ts_backward, beta 1 */
    ts_profile_gemm into = *grad; /* the restart below clears the table */
    into.accumulate = true;
    ts_profile_start(ctx, &profile, TS_PROFILE_CPU);
    ts_backward(ctx, shared, ts_full(ctx, TS_SHAPE(B, M, N), 1));
    ts_profile_stop(ctx);
    assert_non_null(profile_gemm(&profile, into));
    assert_int_equal(profile.n_gemms, 1);

    ts_matmul(ctx, x, w, false, false); /* no profile: nothing booked */
    assert_int_equal(profile.n_gemms, 1);
    assert_int_equal(profile_gemm(&profile, into)->calls, 1);
}

/* Books the FLOPs of one call and compares them with per_element * 10. */
#define EXPECT_FLOPS(ctx, name, per_element, call)                                                 \
    do {                                                                                           \
        ts_reset_flops(ctx);                                                                       \
        (void)(call);                                                                              \
        if ((ctx)->flops[TS_FORWARD] != (per_element)*10.0)                                        \
            fail_msg("%s booked %g FLOPs for 10 elements, expected %g", name,                      \
                     (ctx)->flops[TS_FORWARD], (per_element)*10.0);                                \
    } while (0)

/* Other conventions of docs/engine.md, on [2, 5] inputs. */
static void test_elementwise_flops(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = ts_full(ctx, TS_SHAPE(2, 5), 0.5);
    ts_tensor *row = ts_full(ctx, TS_SHAPE(5), 2);
    EXPECT_FLOPS(ctx, "add (broadcast, per output element)", 1, ts_add(ctx, x, row));
    EXPECT_FLOPS(ctx, "exp", 1, ts_exp(ctx, x));
    EXPECT_FLOPS(ctx, "rsqrt", 2, ts_rsqrt(ctx, x));
    EXPECT_FLOPS(ctx, "sigmoid", 3, ts_sigmoid(ctx, x));
    EXPECT_FLOPS(ctx, "silu", 4, ts_silu(ctx, x));
    EXPECT_FLOPS(ctx, "softmax", 5, ts_softmax(ctx, x, NULL));
    EXPECT_FLOPS(ctx, "sum (a reduction: per input element)", 1, ts_sum(ctx, x, 0, false));
    EXPECT_FLOPS(ctx, "reshape (a view)", 0, ts_reshape(ctx, x, TS_SHAPE(5, 2)));
    EXPECT_FLOPS(ctx, "transpose (a copy)", 0, ts_transpose(ctx, x, 0, 1));
}

/* What a unit hook heard, in order. */
typedef struct unit_log {
    int n;
    int unit[16];
    ts_unit_event event[16];
    bool into_leaf_grads[16];
} unit_log;

static void log_unit_event(void *user, int unit, ts_unit_event event, bool into_leaf_grads) {
    unit_log *log = user;
    assert_true(log->n < 16);
    log->unit[log->n] = unit;
    log->event[log->n] = event;
    log->into_leaf_grads[log->n++] = into_leaf_grads;
}

/* Two marked units y = (x * a) * b: the markers change no value nor
 * gradient; the hook hears the forward's begin/end of 1 then 2, then from
 * ts_backward the begin/end of 2 then 1 (end only once every node of the
 * unit has run: a's gradient is complete); ts_grad says it is not filling
 * leaf gradients. Without a hook the marker is x itself. */
static void test_unit_markers_tell_the_hook(void **state) {
    ts_ctx *ctx = *state;
    ts_tensor *x = leaf(ctx, TS_SHAPE(3), X3); /* a block's input depends on parameters */
    assert_ptr_equal(ts_unit_boundary(ctx, x, 1, true), x);
    unit_log log = {0};
    ts_ctx_set_unit_hook(ctx, log_unit_event, &log);
    assert_ptr_equal(ts_unit_boundary(ctx, x, 0, true), x); /* unit 0 is never marked */
    ts_tensor *a = leaf(ctx, TS_SHAPE(3), (ts_real[]){2, 3, 4});
    ts_tensor *b = leaf(ctx, TS_SHAPE(3), (ts_real[]){-1, 0.5, 2});
    ts_tensor *h = ts_unit_boundary(ctx, x, 1, true);
    h = ts_unit_boundary(ctx, ts_mul(ctx, h, a), 1, false);
    h = ts_unit_boundary(ctx, h, 2, true);
    h = ts_unit_boundary(ctx, ts_mul(ctx, h, b), 2, false);
    ts_tensor *loss = ts_sum_all(ctx, h);
    assert_int_equal(log.n, 4);
    ts_backward(ctx, loss, NULL);
    const int units[8] = {1, 1, 2, 2, 2, 2, 1, 1};
    const ts_unit_event events[8] = {
        TS_UNIT_FORWARD_BEGIN,  TS_UNIT_FORWARD_END,  TS_UNIT_FORWARD_BEGIN,  TS_UNIT_FORWARD_END,
        TS_UNIT_BACKWARD_BEGIN, TS_UNIT_BACKWARD_END, TS_UNIT_BACKWARD_BEGIN, TS_UNIT_BACKWARD_END};
    assert_int_equal(log.n, 8);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(log.unit[i], units[i]);
        assert_int_equal(log.event[i], events[i]);
        assert_true(log.into_leaf_grads[i] == (i >= 4));
    }
    for (int i = 0; i < 3; i++) { /* d/da = x * b, d/db = x * a */
        assert_true(a->grad->data[i] == X3[i] * b->data[i]);
        assert_true(b->grad->data[i] == X3[i] * a->data[i]);
    }
    ts_tensor *g;
    ts_grad(ctx, 1, &loss, NULL, 1, &a, &g, false);
    /* Only the nodes on the way to a run: unit 1's begin marker is not. */
    assert_int_equal(log.n, 11);
    for (int i = 8; i < 11; i++) assert_false(log.into_leaf_grads[i]);
    assert_int_equal(log.event[10], TS_UNIT_BACKWARD_BEGIN);
    assert_true(g->data[1] == X3[1] * b->data[1]);
    ts_ctx_set_unit_hook(ctx, NULL, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_backward_accumulates_into_grad),
        T(test_backward_accumulates_into_param_buffer),
        T(test_backward_of_a_leaf_seeds_its_grad),
        T(test_grad_does_not_touch_grad_buffers),
        T(test_detach_stops_gradient),
        T(test_no_grad_mode_records_nothing),
        T(test_grad_restores_mode_and_phase),
        T(test_grad_with_respect_to_intermediate),
        T(test_grad_of_unused_input_is_zeros),
        T(test_grad_of_seeded_outputs),
        T(test_matmul_gradients_accumulate_into_one_sum),
        T(test_backward_adds_weight_gradients_into_grad),
        T(test_backward_adds_stacked_gradients_into_grads),
        T(test_matmul_add_is_the_add_of_the_product),
        T(test_passed_on_gradient_is_added_into),
        T(test_rmsnorm_gradient_adds_into_the_sum),
        T(test_context_gradients_add_into_the_sum),
        T(test_plain_pass_recycles_dead_gradients),
        T(test_passed_on_view_is_not_recycled),
        T(test_buffer_passed_on_to_a_leaf_is_given_once),
        T(test_release_frees_the_graph),
        T(test_views_share_data),
        T(test_arena_stops_mallocing_after_first_step),
        T(test_arena_chunks_start_on_huge_pages),
        T(test_matmul_flops),
        T(test_profile_books_gemms_by_shape),
        T(test_elementwise_flops),
        T(test_unit_markers_tell_the_hook),
#undef T
    };
    return cmocka_run_group_tests_name("engine autodiff semantics (" TS_REAL_NAME ")", tests, NULL,
                                       NULL);
}
