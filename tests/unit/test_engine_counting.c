/* The counting-only context (ts_ctx_init_counting): every op, forward and
 * backward to second order, books exactly the FLOPs and gives exactly the
 * shapes it does when it executes, while no tensor gets data. One graph
 * that uses every op of ops.h runs twice, executed and counted, and the two
 * are compared op by op (the FLOP counters after every op) and at the end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_fixture.h"
#include "splitmix.h"

enum { B = 2, T = 3, H = 2, DH = 4, D = H * DH, V = 5, MAX_TRACE = 256 };

/* The FLOP counters and shape after every op, to compare the two runs. */
typedef struct trace {
    int n;
    double flops[MAX_TRACE][2];
    int ndim[MAX_TRACE], shape[MAX_TRACE][TS_MAX_DIMS];
} trace;

static ts_tensor *note(ts_ctx *ctx, trace *tr, ts_tensor *t) {
    assert_true(tr->n < MAX_TRACE);
    tr->flops[tr->n][0] = ctx->flops[TS_FORWARD];
    tr->flops[tr->n][1] = ctx->flops[TS_BACKWARD];
    tr->ndim[tr->n] = t->ndim;
    memcpy(tr->shape[tr->n], t->shape, sizeof t->shape);
    tr->n++;
    assert_true(ts_is_counting(ctx) ? t->data == NULL : t->data != NULL);
    return t;
}

/* A leaf with values in [0.5, 1.5) (positive, for log and sqrt) when executing. */
static ts_tensor *leaf(ts_ctx *ctx, test_rng *rng, int ndim, const int *shape) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    if (!ts_is_counting(ctx)) test_rng_fill_uniform(rng, t->data, t->numel, 0.5, 1.5);
    ts_set_requires_grad(ctx, t, true);
    return t;
}

#define N(expr) note(ctx, tr, (expr))

/* Every op of ops.h on small shapes, returning a scalar. */
static ts_tensor *every_op(ts_ctx *ctx, trace *tr, ts_tensor *x, ts_tensor *w, ts_tensor *table,
                           ts_tensor *norm) {
    static const int32_t ids[B * T] = {0, 1, 4, 2, 3, 3};
    static const int32_t targets[B * T] = {1, -1, 0, 4, 2, 2};
    static const int32_t positions[T] = {0, 1, 2};
    ts_tensor *e = N(ts_reshape(ctx, N(ts_embedding(ctx, table, ids, B * T)), TS_SHAPE(B, T, D)));
    ts_tensor *h = N(ts_add(ctx, x, e));
    h = N(ts_rmsnorm(ctx, h, norm, 1e-5));
    ts_tensor *q = N(ts_matmul(ctx, h, w, false, true)); /* shared 2-D weight */
    ts_tensor *heads =
        N(ts_rope(ctx, N(ts_reshape(ctx, q, TS_SHAPE(B, T, H, DH))), positions, 1e4));
    ts_tensor *qh = N(ts_permute(ctx, heads, (const int[]){0, 2, 1, 3}));
    ts_tensor *kh = N(ts_transpose(ctx, N(ts_reshape(ctx, h, TS_SHAPE(B, T, H, DH))), 1, 2));
    ts_tensor *mask = ts_causal_mask(ctx, T);
    ts_tensor *att = N(ts_attention(ctx, qh, kh, kh, mask, 0.5));
    ts_tensor *scores = N(ts_matmul(ctx, qh, kh, false, true)); /* batched */
    ts_tensor *lsm = N(ts_log_softmax(ctx, scores, mask));
    ts_tensor *tm = N(ts_matmul(ctx, att, kh, true, false)); /* transposed left */
    ts_tensor *tmt = N(ts_matmul(ctx, att, N(ts_transpose(ctx, kh, 2, 3)), true, true));
    ts_tensor *mixed = N(ts_add(ctx, N(ts_sum_all(ctx, tm)), N(ts_mean_all(ctx, tmt))));
    ts_tensor *merged =
        N(ts_reshape(ctx, N(ts_permute(ctx, att, (const int[]){0, 2, 1, 3})), TS_SHAPE(B, T, D)));
    ts_tensor *u = N(ts_silu(ctx, merged));
    u = N(ts_mul(ctx, u, N(ts_sigmoid(ctx, merged))));
    u = N(ts_div(ctx, u, N(ts_add_scalar(ctx, N(ts_exp(ctx, N(ts_scale(ctx, merged, -0.5)))), 1))));
    u = N(ts_sub(ctx, u, N(ts_sqrt(ctx, N(ts_add_scalar(ctx, N(ts_square(ctx, merged)), 1))))));
    u = N(ts_mul(
        ctx, u,
        N(ts_rsqrt(ctx,
                   N(ts_add_scalar(
                       ctx, N(ts_log(ctx, N(ts_add_scalar(ctx, N(ts_square(ctx, u)), 2)))), 1))))));
    /* slices: a view (leading axis) and a copy; pad and a concat of six parts */
    ts_tensor *first = N(ts_slice(ctx, u, 0, 1, 1));
    ts_tensor *middle = N(ts_slice(ctx, u, 1, 1, 2));
    ts_tensor *padded = N(ts_pad(ctx, middle, 1, 1, T));
    ts_tensor *parts[6] = {
        first, first, N(ts_slice(ctx, padded, 0, 0, 1)), first, N(ts_slice(ctx, u, 0, 0, 1)),
        first};
    ts_tensor *cat = N(ts_concat(ctx, 6, parts, 0));
    ts_tensor *sums = N(ts_sum(ctx, cat, 2, false));
    ts_tensor *means = N(ts_mean(ctx, cat, 1, true));
    ts_tensor *bc = N(ts_broadcast_to(ctx, means, TS_SHAPE(6, T, D)));
    ts_tensor *st = N(ts_sum_to(ctx, N(ts_mul(ctx, bc, cat)), TS_SHAPE(T, 1)));
    /* the vocabulary side: logits, cross-entropy, gathers and one-hots */
    ts_tensor *logits = N(ts_matmul(ctx, u, table, false, true));
    ts_tensor *ce = N(ts_cross_entropy(ctx, logits, targets, -1));
    ts_tensor *flat = N(ts_reshape(ctx, logits, TS_SHAPE(B * T, V)));
    ts_tensor *picked = N(ts_gather_last(ctx, N(ts_softmax(ctx, flat, NULL)), targets));
    ts_tensor *spread = N(ts_scatter_last(ctx, picked, targets, V));
    ts_tensor *hot = ts_one_hot(ctx, ids, B * T, V);
    ts_tensor *rows = N(ts_scatter_rows(ctx, N(ts_mul(ctx, spread, hot)), ids, V));
    ts_tensor *total = N(ts_add(ctx, ce, N(ts_sum_all(ctx, rows))));
    total = N(ts_add(ctx, total, N(ts_add(ctx, mixed, N(ts_mean_all(ctx, lsm))))));
    total = N(ts_add(ctx, total, N(ts_add(ctx, N(ts_sum_all(ctx, sums)), N(ts_sum_all(ctx, st))))));
    return total;
}

/* The graph, then its gradient with a graph, a second-order gradient, and a
 * backward pass into the leaves. */
static void run(ts_ctx *ctx, trace *tr) {
    test_rng rng = test_rng_seeded(11);
    ts_tensor *x = leaf(ctx, &rng, TS_SHAPE(B, T, D));
    ts_tensor *w = leaf(ctx, &rng, TS_SHAPE(D, D));
    ts_tensor *table = leaf(ctx, &rng, TS_SHAPE(V, D));
    ts_tensor *norm = leaf(ctx, &rng, TS_SHAPE(D));
    ts_tensor *loss = every_op(ctx, tr, x, w, table, norm);
    ts_tensor *inputs[2] = {x, w}, *grads[2];
    ts_grad(ctx, 1, &loss, NULL, 2, inputs, grads, true);
    note(ctx, tr, grads[0]);
    note(ctx, tr, grads[1]);
    ts_tensor *inner = N(
        ts_add(ctx, N(ts_sum_all(ctx, N(ts_square(ctx, grads[0])))), N(ts_sum_all(ctx, grads[1]))));
    ts_tensor *second;
    ts_grad(ctx, 1, &inner, NULL, 1, &table, &second, false);
    note(ctx, tr, second);
    ts_backward(ctx, N(ts_add(ctx, loss, inner)), NULL);
    note(ctx, tr, loss);
}

static void test_every_op_counts_as_it_executes(void **state) {
    (void)state;
    static trace executed, counted;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_ctx_set_error_handler(&ctx, fail_test_on_engine_error, NULL);
    run(&ctx, &executed);
    ts_ctx_free(&ctx);

    assert_true(ts_ctx_init_counting(&ctx, 1 << 20));
    ts_ctx_set_error_handler(&ctx, fail_test_on_engine_error, NULL);
    run(&ctx, &counted);
    ts_ctx_free(&ctx);

    assert_int_equal(counted.n, executed.n);
    for (int i = 0; i < executed.n; i++) {
        if (counted.flops[i][0] != executed.flops[i][0] ||
            counted.flops[i][1] != executed.flops[i][1])
            fail_msg("after op %d: counted %.0f + %.0f FLOPs, executed %.0f + %.0f", i,
                     counted.flops[i][0], counted.flops[i][1], executed.flops[i][0],
                     executed.flops[i][1]);
        assert_int_equal(counted.ndim[i], executed.ndim[i]);
        for (int d = 0; d < executed.ndim[i]; d++)
            assert_int_equal(counted.shape[i][d], executed.shape[i][d]);
    }
    /* The second-order pass and the backward pass did book work. */
    int last = executed.n - 1;
    assert_true(executed.flops[last][1] > executed.flops[last - 3][1]);
    assert_true(executed.flops[last][0] > 0);
}

/* A counting context gives no data, only headers, however large the tensors. */
static void test_counting_allocates_no_data(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init_counting(&ctx, 1 << 16));
    ts_ctx_set_error_handler(&ctx, fail_test_on_engine_error, NULL);
    assert_true(ts_is_counting(&ctx));
    ts_tensor *a = ts_zeros(&ctx, TS_SHAPE(64, 4096, 4096));
    ts_tensor *w = ts_full(&ctx, TS_SHAPE(4096, 4096), 1);
    ts_set_requires_grad(&ctx, w, true);
    ts_tensor *y = ts_matmul(&ctx, a, w, false, true);
    assert_null(a->data);
    assert_null(w->data);
    assert_null(y->data);
    assert_null(ts_slice(&ctx, y, 0, 1, 2)->data);
    assert_true(ctx.flops[TS_FORWARD] == 2.0 * 64 * 4096 * 4096 * 4096);
    ts_tensor *loss = ts_mean_all(&ctx, ts_softmax(&ctx, y, NULL));
    assert_true(isnan(ts_item(&ctx, loss)));
    ts_backward(&ctx, loss, NULL);
    assert_null(w->grad); /* nothing to accumulate into, nothing created */
    assert_true(ctx.flops[TS_BACKWARD] >= 2.0 * 64 * 4096 * 4096 * 4096);
    /* 4 GiB of activations were never written: a few headers were. */
    assert_true(ctx.arena.high_water < 1 << 16);
    ts_ctx_free(&ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_counts_as_it_executes),
        cmocka_unit_test(test_counting_allocates_no_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
