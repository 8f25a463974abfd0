/* Misuse fails through the context's error handler with a message that names
 * the op and the shapes or the problem (docs/engine.md, "Errors"). The
 * handler installed here (ts_error_catch_jump, engine/context.h) records the
 * message and longjmps back. Every case gets a fresh context, so nothing a
 * failed call left half-done can leak into the next case. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

typedef void (*misuse_fn)(ts_ctx *ctx);

/* Runs misuse on ctx; true if it reached the handler. Nothing local to this
 * function changes between setjmp and longjmp (the context lives in the
 * caller), so nothing here is left indeterminate by the jump. */
static bool reaches_handler(ts_ctx *ctx, misuse_fn misuse, ts_error_catch *c) {
    ts_ctx_set_error_handler(ctx, ts_error_catch_jump, c);
    c->calls = 0;
    c->message[0] = '\0';
    if (setjmp(c->back) != 0) return true;
    misuse(ctx);
    return false;
}

/* Asserts that misuse, in a fresh context, fails once with a message
 * containing every string in the NULL-terminated list. */
static void expect_failure(misuse_fn misuse, const char *const *expected) {
    ts_error_catch c;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 16));
    bool failed = reaches_handler(&ctx, misuse, &c);
    ts_ctx_free(&ctx);
    if (!failed) fail_msg("the misuse was accepted without an error");
    assert_int_equal(c.calls, 1);
    print_message("    message: %s\n", c.message);
    for (const char *const *s = expected; *s; s++)
        if (!strstr(c.message, *s)) fail_msg("message \"%s\" lacks \"%s\"", c.message, *s);
}

#define EXPECT_FAILURE(misuse, ...) expect_failure(misuse, (const char *const[]){__VA_ARGS__, NULL})

static ts_tensor *leaf_of(ts_ctx *ctx, int ndim, const int *shape) {
    ts_tensor *t = ts_full(ctx, ndim, shape, 0.5);
    ts_set_requires_grad(ctx, t, true);
    return t;
}

/* ---------------------------------------------------------------- shape rules */

static void matmul_inner_mismatch(ts_ctx *ctx) {
    ts_matmul(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), ts_zeros(ctx, TS_SHAPE(4, 5)), false, false);
}
static void matmul_transposed_mismatch(ts_ctx *ctx) {
    /* [2, 3]^T is [3, 2]: inner 2 against 3 */
    ts_matmul(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), ts_zeros(ctx, TS_SHAPE(3, 5)), true, false);
}
static void matmul_batch_mismatch(ts_ctx *ctx) {
    ts_matmul(ctx, ts_zeros(ctx, TS_SHAPE(2, 3, 4)), ts_zeros(ctx, TS_SHAPE(3, 4, 5)), false,
              false);
}
static void matmul_one_dim(ts_ctx *ctx) {
    ts_matmul(ctx, ts_zeros(ctx, TS_SHAPE(3)), ts_zeros(ctx, TS_SHAPE(3, 2)), false, false);
}

static void matmul_add_addend_mismatch(ts_ctx *ctx) {
    ts_matmul_add(ctx, ts_zeros(ctx, TS_SHAPE(2, 4)), ts_zeros(ctx, TS_SHAPE(2, 3)),
                  ts_zeros(ctx, TS_SHAPE(3, 5)), false, false);
}

static void test_matmul_shape_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(matmul_inner_mismatch, "matmul", "[2, 3]", "[4, 5]", "inner");
    EXPECT_FAILURE(matmul_transposed_mismatch, "matmul", "[2, 3]^T", "[3, 5]");
    EXPECT_FAILURE(matmul_batch_mismatch, "matmul", "batch", "[2, 3, 4]", "[3, 4, 5]");
    EXPECT_FAILURE(matmul_one_dim, "matmul", "[3]", "2 dims");
    EXPECT_FAILURE(matmul_add_addend_mismatch, "matmul_add", "[2, 4]", "[2, 5]");
}

static void add_not_broadcastable(ts_ctx *ctx) {
    ts_add(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), ts_zeros(ctx, TS_SHAPE(4)));
}
static void mul_not_broadcastable(ts_ctx *ctx) {
    ts_mul(ctx, ts_zeros(ctx, TS_SHAPE(2, 3, 4)), ts_zeros(ctx, TS_SHAPE(3, 3, 4)));
}

static void test_elementwise_shape_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(add_not_broadcastable, "add", "[2, 3]", "[4]", "broadcast");
    EXPECT_FAILURE(mul_not_broadcastable, "mul", "[2, 3, 4]", "[3, 3, 4]", "broadcast");
}

static void reshape_wrong_count(ts_ctx *ctx) {
    ts_reshape(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), TS_SHAPE(4, 2));
}
static void slice_out_of_range(ts_ctx *ctx) {
    ts_slice(ctx, ts_zeros(ctx, TS_SHAPE(4, 3)), 0, 3, 2);
}
static void concat_mismatch(ts_ctx *ctx) {
    ts_concat(ctx, 2, (ts_tensor *[]){ts_zeros(ctx, TS_SHAPE(2, 3)), ts_zeros(ctx, TS_SHAPE(3, 2))},
              0);
}
static void permute_repeated_axis(ts_ctx *ctx) {
    ts_permute(ctx, ts_zeros(ctx, TS_SHAPE(2, 3, 4)), (const int[]){0, 1, 1});
}
static void sum_to_not_broadcastable(ts_ctx *ctx) {
    ts_sum_to(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), TS_SHAPE(2));
}

static void test_shape_op_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(reshape_wrong_count, "reshape", "[2, 3]", "6", "8");
    EXPECT_FAILURE(slice_out_of_range, "slice", "[3, 5)", "size 4");
    EXPECT_FAILURE(concat_mismatch, "concat", "[3, 2]", "[2, 3]");
    EXPECT_FAILURE(permute_repeated_axis, "permute", "permutation");
    EXPECT_FAILURE(sum_to_not_broadcastable, "sum_to", "[2, 3]");
}

static void softmax_mask_wrong_shape(ts_ctx *ctx) {
    ts_softmax(ctx, ts_zeros(ctx, TS_SHAPE(2, 4, 4)), ts_causal_mask(ctx, 3));
}
static void rmsnorm_weight_wrong_size(ts_ctx *ctx) {
    ts_rmsnorm(ctx, ts_zeros(ctx, TS_SHAPE(2, 6)), ts_zeros(ctx, TS_SHAPE(5)), 1e-6);
}
static void rope_odd_head_dim(ts_ctx *ctx) {
    static const int32_t positions[2] = {0, 1};
    ts_rope(ctx, ts_zeros(ctx, TS_SHAPE(2, 1, 3)), positions, 10000);
}

static void packed_heads_part_not_in_heads(ts_ctx *ctx) {
    /* parts of 6 columns over 4 heads */
    ts_packed_heads(ctx, ts_zeros(ctx, TS_SHAPE(2, 4, 18)), 1, 3, 4, NULL, 0);
}
static void packed_heads_part_out_of_range(ts_ctx *ctx) {
    ts_packed_heads(ctx, ts_zeros(ctx, TS_SHAPE(2, 4, 18)), 3, 3, 3, NULL, 0);
}
static void packed_heads_odd_head_with_rope(ts_ctx *ctx) {
    static const int32_t positions[4] = {0, 1, 2, 3};
    ts_packed_heads(ctx, ts_zeros(ctx, TS_SHAPE(2, 4, 18)), 0, 3, 2, positions, 10000);
}

static void test_layer_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(softmax_mask_wrong_shape, "softmax", "mask", "[3, 3]", "[2, 4, 4]");
    EXPECT_FAILURE(rmsnorm_weight_wrong_size, "rmsnorm", "[5]", "[2, 6]");
    EXPECT_FAILURE(rope_odd_head_dim, "rope", "[2, 1, 3]", "even");
    EXPECT_FAILURE(packed_heads_part_not_in_heads, "packed_heads", "[2, 4, 18]", "4 heads");
    EXPECT_FAILURE(packed_heads_part_out_of_range, "packed_heads", "part 3 of 3");
    EXPECT_FAILURE(packed_heads_odd_head_with_rope, "packed_heads", "[2, 4, 18]", "even");
}

/* ---------------------------------------------------------------- indices */

static void embedding_id_out_of_range(ts_ctx *ctx) {
    static const int32_t ids[3] = {0, 4, 7};
    ts_embedding(ctx, ts_zeros(ctx, TS_SHAPE(5, 2)), ids, 3);
}
static void embedding_negative_id(ts_ctx *ctx) {
    static const int32_t ids[2] = {1, -1};
    ts_embedding(ctx, ts_zeros(ctx, TS_SHAPE(5, 2)), ids, 2);
}
static void cross_entropy_target_out_of_range(ts_ctx *ctx) {
    static const int32_t targets[2] = {1, 6};
    ts_cross_entropy(ctx, ts_zeros(ctx, TS_SHAPE(2, 6)), targets, -100);
}
static void gather_index_out_of_range(ts_ctx *ctx) {
    static const int32_t idx[2] = {0, 3};
    ts_gather_last(ctx, ts_zeros(ctx, TS_SHAPE(2, 3)), idx);
}

static void test_index_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(embedding_id_out_of_range, "embedding", "id 7", "row 2", "vocabulary of 5");
    EXPECT_FAILURE(embedding_negative_id, "embedding", "id -1", "row 1");
    EXPECT_FAILURE(cross_entropy_target_out_of_range, "cross_entropy", "target 6", "row 1",
                   "vocabulary of 6");
    EXPECT_FAILURE(gather_index_out_of_range, "gather_last", "index 3", "3 columns");
}

/* ---------------------------------------------------------------- gradient passes */

static void grad_of_non_scalar_without_seed(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(2, 3));
    ts_tensor *y = ts_exp(ctx, x), *g;
    ts_grad(ctx, 1, &y, NULL, 1, &x, &g, false);
}
static void backward_of_non_scalar_without_seed(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(2, 3));
    ts_backward(ctx, ts_exp(ctx, x), NULL);
}
static void grad_with_wrong_seed_shape(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(2, 3));
    ts_tensor *y = ts_exp(ctx, x), *g;
    ts_tensor *seed = ts_zeros(ctx, TS_SHAPE(3, 2));
    ts_grad(ctx, 1, &y, &seed, 1, &x, &g, false);
}
static void grad_wrt_constant(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(3));
    ts_tensor *c = ts_zeros(ctx, TS_SHAPE(3));
    c->name = "bias";
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, x, c)), *g[2];
    ts_grad(ctx, 1, &loss, NULL, 2, (ts_tensor *[]){x, c}, g, false);
}
static void grad_of_constant_output(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(3));
    ts_tensor *c = ts_sum_all(ctx, ts_zeros(ctx, TS_SHAPE(3))), *g;
    ts_grad(ctx, 1, &c, NULL, 1, &x, &g, false);
}
static void requires_grad_on_op_output(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(3));
    ts_set_requires_grad(ctx, ts_exp(ctx, x), false);
}
static void item_of_non_scalar(ts_ctx *ctx) {
    ts_item(ctx, ts_zeros(ctx, TS_SHAPE(2, 2)));
}

static void test_gradient_pass_errors(void **state) {
    (void)state;
    EXPECT_FAILURE(grad_of_non_scalar_without_seed, "grad", "[2, 3]", "seed");
    EXPECT_FAILURE(backward_of_non_scalar_without_seed, "backward", "[2, 3]", "seed");
    EXPECT_FAILURE(grad_with_wrong_seed_shape, "grad", "seed", "[3, 2]", "[2, 3]");
    EXPECT_FAILURE(grad_wrt_constant, "grad", "input 1", "bias", "does not require a gradient");
    EXPECT_FAILURE(grad_of_constant_output, "grad", "output 0", "does not depend");
    EXPECT_FAILURE(requires_grad_on_op_output, "set_requires_grad", "detach");
    EXPECT_FAILURE(item_of_non_scalar, "item", "[2, 2]");
}

/* A caught error in a gradient pass leaves the context as it was: still
 * recording, phase forward. */
static void test_caught_seed_error_leaves_recording_on(void **state) {
    (void)state;
    ts_error_catch c;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 16));
    assert_true(reaches_handler(&ctx, grad_of_non_scalar_without_seed, &c));
    assert_true(ctx.grad_enabled);
    assert_int_equal(ctx.phase, TS_FORWARD);
    ts_tensor *x = leaf_of(&ctx, TS_SHAPE(2));
    assert_true(ts_exp(&ctx, x)->requires_grad);
    ts_ctx_free(&ctx);
}

/* The gradient of an output whose graph was released is an error even when
 * nothing was recorded since (the stale node pointer is still in the tape). */
static ts_tensor *released_output;
static void grad_of_released_output(ts_ctx *ctx) {
    ts_tensor *x = leaf_of(ctx, TS_SHAPE(3)), *g;
    ts_mark mark = ts_get_mark(ctx);
    released_output = ts_sum_all(ctx, ts_exp(ctx, x));
    ts_release(ctx, mark);
    ts_grad(ctx, 1, &released_output, NULL, 1, &x, &g, false);
}

static void test_released_graph_is_an_error(void **state) {
    (void)state;
    EXPECT_FAILURE(grad_of_released_output, "grad", "released");
}

/* Without a handler the default one reports and exits; it must never be
 * reached in a test, and a handler that returns is not allowed (the engine
 * aborts). Here: installing NULL restores the default rather than crashing. */
static void test_null_handler_restores_default(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    ts_error_handler original = ctx.on_error;
    assert_non_null(original);
    ts_ctx_set_error_handler(&ctx, ts_error_catch_jump, NULL);
    ts_ctx_set_error_handler(&ctx, NULL, NULL);
    assert_true(ctx.on_error == original);
    ts_ctx_free(&ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_shape_errors),
        cmocka_unit_test(test_elementwise_shape_errors),
        cmocka_unit_test(test_shape_op_errors),
        cmocka_unit_test(test_layer_errors),
        cmocka_unit_test(test_index_errors),
        cmocka_unit_test(test_gradient_pass_errors),
        cmocka_unit_test(test_null_handler_restores_default),
        cmocka_unit_test(test_caught_seed_error_leaves_recording_on),
        cmocka_unit_test(test_released_graph_is_an_error),
    };
    return cmocka_run_group_tests_name("engine misuse (" TS_REAL_NAME ")", tests, NULL, NULL);
}
