/* Distributed activations (parallel/tensor_activation_ops.h) on every grid
 * that fits the ranks (1x1, 1x2, 2x1; 2x2 on 4 ranks), with blocks of 4
 * (many partial blocks, token blocks straddling sequences) and 8: RMSNorm,
 * causal attention with RoPE, the cross-entropy and the embedding, each
 * entered from whole tensors through to_blocks and left through to_whole,
 * give the local engine op's value, first-order gradients and a
 * second-order gradient (the gradient of a function of a gradient, EBT's
 * path), and the whole results are bit-identical on every rank of a group;
 * so do EBT's ops: the softmax over the features, the prediction stream's
 * context attention against kept keys and values of a longer stream, the
 * energy head's feature dot with the sum over tokens, and a shared
 * parameter times per-token constants;
 * a linear layer with x, W and y all held as blocks is the local GEMM and
 * sends nothing besides p?gemm's own traffic; the primitives' pairs are
 * each other's adjoints; the attach refuses what it does not support. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "engine/engine.h"
#include "mpi_cmocka.h"
#include "tensor_checks.h"
#include "parallel/tensor_activation_ops.h"
#include "parallel/tensor_grid.h"

#ifdef TS_DOUBLE
#define TOLERANCE 1e-11
#else
#define TOLERANCE 5e-5
#endif

static int rank, size;

/* 3 sequences of 7 tokens, 6 heads of 4, a vocabulary of 37 */
enum { HEADS = 6, DH = 4, WIDTH = HEADS * DH, VOCAB = 37, MAX_TOKENS = 64 };
/* BATCH sequences of SEQ tokens: 3 of 7 (token blocks straddle sequences),
 * or 1 of 3 (fewer than a block: a second process column holds none). */
static int batch_n = 3, seq_n = 7;
#define BATCH batch_n
#define SEQ seq_n
#define TOKENS (batch_n * seq_n)

static ts_tensor *random_tensor(ts_ctx *ctx, int rows, int cols, uint64_t seed, bool leaf) {
    ts_tensor *t = random_matrix(ctx, rows, cols, seed);
    if (leaf) ts_set_requires_grad(ctx, t, true);
    return t;
}

static ts_tensor *random_vector(ts_ctx *ctx, int n, uint64_t seed) {
    ts_tensor *t = ts_reshape(ctx, random_matrix(ctx, 1, n, seed), TS_SHAPE(n));
    ts_set_requires_grad(ctx, t, true);
    return t;
}

/* What one op gives: its whole value, the gradients of sum(value * R) with
 * respect to each input, and of sum(first gradient ^ 2) with respect to
 * each input (second order). */
enum { MAX_INPUTS = 5 };
typedef struct outcome {
    int n_in;
    ts_tensor *value, *grad[MAX_INPUTS], *second[MAX_INPUTS];
} outcome;

typedef ts_tensor *(*op_fn)(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in);

static const int32_t *positions(void) {
    static int32_t p[MAX_TOKENS];
    for (int t = 0; t < SEQ; t++) p[t] = t;
    return p;
}

/* Every n-th target ignored (-1). */
static const int32_t *targets(void) {
    static int32_t t[MAX_TOKENS];
    for (int i = 0; i < TOKENS; i++) t[i] = i % 5 == 3 ? -1 : (i * 11 + 3) % VOCAB;
    return t;
}

/* x [TOKENS, F] as the ops take it: this rank's blocks, or [BATCH, SEQ, F]
 * whole in a step too short for the grid (as the embedding decides). */
static ts_tensor *blocks_in(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *x) {
    tp->tokens = x->shape[0];
    tp->seq = SEQ;
    tp->width = WIDTH;
    tp->whole_step = ts_tp_too_few_tokens(tp->grid, tp->tokens);
    if (tp->whole_step) return ts_reshape(ctx, x, TS_SHAPE(BATCH, SEQ, x->shape[1]));
    return ts_tp_to_blocks(ctx, tp->grid, x);
}

static ts_tensor *whole_out(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *y, int cols) {
    if (tp->whole_step) return ts_reshape(ctx, y, TS_SHAPE(tp->tokens, cols));
    return ts_tp_to_whole(ctx, tp->grid, y, tp->tokens, cols);
}

/* RMSNorm of x [TOKENS, WIDTH] with weight [WIDTH] */
static ts_tensor *rmsnorm_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) return ts_rmsnorm(ctx, in[0], in[1], 1e-5);
    return whole_out(ctx, tp, ts_tp_rmsnorm(tp, ctx, blocks_in(ctx, tp, in[0]), in[1], 1e-5),
                     WIDTH);
}

static ts_tensor *heads_of(ts_ctx *ctx, ts_tensor *x, bool rope) {
    ts_tensor *h = ts_reshape(ctx, x, TS_SHAPE(BATCH, SEQ, HEADS, DH));
    if (rope) h = ts_rope(ctx, h, positions(), 10000.0);
    return ts_permute(ctx, h, (const int[]){0, 2, 1, 3});
}

/* RoPE on q and k, causal attention per sequence */
static ts_tensor *attention_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) {
        ts_tensor *a =
            ts_causal_attention(ctx, heads_of(ctx, in[0], true), heads_of(ctx, in[1], true),
                                heads_of(ctx, in[2], false), 1.0 / sqrt((double)DH));
        a = ts_permute(ctx, a, (const int[]){0, 2, 1, 3});
        return ts_reshape(ctx, a, TS_SHAPE(TOKENS, WIDTH));
    }
    ts_tensor *q = blocks_in(ctx, tp, in[0]), *k = blocks_in(ctx, tp, in[1]),
              *v = blocks_in(ctx, tp, in[2]);
    return whole_out(ctx, tp, ts_tp_causal_attention(tp, ctx, q, k, v, HEADS, positions(), 10000.0),
                     WIDTH);
}

static ts_tensor *cross_entropy_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) return ts_cross_entropy(ctx, in[0], targets(), -1);
    return ts_tp_cross_entropy(tp, ctx, blocks_in(ctx, tp, in[0]), targets(), -1);
}

static const int32_t *token_ids(void) {
    static int32_t ids[MAX_TOKENS];
    for (int i = 0; i < TOKENS; i++) ids[i] = (i * 7 + 2) % VOCAB;
    return ids;
}

/* the embedding table [VOCAB, WIDTH] at token_ids, then a square so that
 * a second-order gradient is not zero */
static ts_tensor *embed_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) return ts_square(ctx, ts_embedding(ctx, in[0], token_ids(), TOKENS));
    ts_tensor *x = ts_tp_embed(tp, ctx, in[0], token_ids(), BATCH, SEQ);
    return whole_out(ctx, tp, ts_square(ctx, x), WIDTH);
}

/* --- EBT's ops --- */

static ts_tensor *softmax_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) return ts_softmax(ctx, in[0], NULL);
    return whole_out(ctx, tp, ts_tp_softmax(tp, ctx, blocks_in(ctx, tp, in[0])), VOCAB);
}

/* positions 0..SEQ of the context stream, 2..SEQ+1 of the predictions */
static const int32_t *shifted_positions(int shift) {
    static int32_t p[2][MAX_TOKENS];
    for (int t = 0; t <= SEQ; t++) p[shift > 0][t] = t + shift;
    return p[shift > 0];
}

static ts_tensor *heads_at(ts_ctx *ctx, ts_tensor *x, int seq, const int32_t *pos) {
    ts_tensor *h = ts_reshape(ctx, x, TS_SHAPE(BATCH, seq, HEADS, DH));
    if (pos) h = ts_rope(ctx, h, pos, 10000.0);
    return ts_permute(ctx, h, (const int[]){0, 2, 1, 3});
}

/* EBT's prediction stream: q, k, v [TOKENS, WIDTH] attend to the keys and
 * values [BATCH * (SEQ + 1), WIDTH] of a context stream one token longer
 * per sequence (kept by its causal attention) and to themselves. */
static ts_tensor *context_attention_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    const int32_t *observed = shifted_positions(0), *predicted = shifted_positions(2);
    if (!tp) {
        ts_tensor *a = ts_context_attention(
            ctx, heads_at(ctx, in[0], SEQ, predicted), heads_at(ctx, in[3], SEQ + 1, observed),
            heads_at(ctx, in[4], SEQ + 1, NULL), heads_at(ctx, in[1], SEQ, predicted),
            heads_at(ctx, in[2], SEQ, NULL), 1.0 / sqrt((double)DH));
        a = ts_permute(ctx, a, (const int[]){0, 2, 1, 3});
        return ts_reshape(ctx, a, TS_SHAPE(TOKENS, WIDTH));
    }
    assert_true(ts_tp_begin_step(tp, TOKENS, WIDTH, false));
    ts_tensor *keys, *values;
    ts_tensor *kc =
        ts_tp_to_local(tp, ctx, ts_reshape(ctx, in[3], TS_SHAPE(BATCH, SEQ + 1, WIDTH)));
    ts_tensor *vc =
        ts_tp_to_local(tp, ctx, ts_reshape(ctx, in[4], TS_SHAPE(BATCH, SEQ + 1, WIDTH)));
    assert_null(ts_tp_causal_attention_keep(tp, ctx, NULL, kc, vc, HEADS, observed, 10000.0, &keys,
                                            &values));
    ts_tp_stream(tp, BATCH, SEQ);
    ts_tensor *q = ts_tp_to_blocks(ctx, tp->grid, in[0]),
              *k = ts_tp_to_blocks(ctx, tp->grid, in[1]),
              *v = ts_tp_to_blocks(ctx, tp->grid, in[2]);
    return ts_tp_whole(
        tp, ctx, ts_tp_context_attention(tp, ctx, q, k, v, keys, values, HEADS, predicted, 10000.0),
        WIDTH);
}

/* The energy head and its total: sum over tokens of (x w^T)^2, w [1, WIDTH]
 * whole, or held as blocks (this rank's features) on one process column. */
static ts_tensor *feature_dot_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    if (!tp) return ts_sum_all(ctx, ts_square(ctx, ts_matmul(ctx, in[0], in[1], false, true)));
    ts_tensor *x = blocks_in(ctx, tp, in[0]), *w = in[1];
    /* on one process column the model holds such a weight as blocks */
    if (tp->grid->cols == 1 && tp->grid->rows > 1) w = ts_tp_to_blocks(ctx, tp->grid, w);
    ts_tensor *energy = ts_tp_feature_dot(tp, ctx, x, w);
    return ts_tp_sum_tokens(tp, ctx, ts_square(ctx, energy));
}

/* EBT's step size: a parameter [1] times a constant factor per token, times
 * the predictions. */
static ts_tensor *shared_scale_op(ts_ctx *ctx, ts_tensor_parallel *tp, ts_tensor *const *in) {
    ts_tensor *factor = random_matrix(ctx, TOKENS, 1, 77);
    if (!tp) return ts_mul(ctx, in[0], ts_mul(ctx, in[1], factor));
    ts_tensor *x = blocks_in(ctx, tp, in[0]);
    ts_tensor *step = ts_mul(ctx, ts_tp_share(tp, ctx, in[1]), ts_tp_token_values(tp, ctx, factor));
    return whole_out(ctx, tp, ts_mul(ctx, x, step), VOCAB);
}

/* A rows x cols grid of blocks of block over the world, and a context. */
static void open_grid(ts_tensor_grid *g, ts_ctx *ctx, int rows, int cols, int block) {
    char err[256];
    if (!ts_tensor_grid_init(g, MPI_COMM_WORLD, rows, cols, err, sizeof err))
        fail_msg("%dx%d grid: %s", rows, cols, err);
    g->block = block;
    assert_true(ts_ctx_init(ctx, 0));
}

static void close_grid(ts_tensor_grid *g, ts_ctx *ctx) {
    ts_ctx_free(ctx);
    ts_tensor_grid_free(g);
}

static outcome run(ts_ctx *ctx, ts_tensor_parallel *tp, op_fn op, int n_in, ts_tensor **in) {
    outcome o = {.n_in = n_in};
    o.value = op(ctx, tp, in);
    ts_tensor *r = ts_new_like(ctx, o.value);
    ts_rng rng;
    ts_rng_seed(&rng, 99);
    ts_rng_fill_normal(&rng, r->data, r->numel, 0, 1);
    ts_tensor *f = ts_sum_all(ctx, ts_mul(ctx, o.value, r));
    ts_grad(ctx, 1, &f, NULL, n_in, in, o.grad, true);
    ts_tensor *h = ts_sum_all(ctx, ts_square(ctx, o.grad[0]));
    ts_grad(ctx, 1, &h, NULL, n_in, in, o.second, false);
    return o;
}

static void check_op(const char *name, op_fn op, int n_in, const int (*shapes)[2], int rows,
                     int cols, int block) {
    ts_tensor_grid g;
    ts_ctx ctx;
    open_grid(&g, &ctx, rows, cols, block);
    ts_tensor *in_local[MAX_INPUTS], *in_dist[MAX_INPUTS];
    for (int i = 0; i < n_in; i++) {
        if (shapes[i][0] == 0) {
            in_local[i] = random_vector(&ctx, shapes[i][1], 10 + i);
            in_dist[i] = random_vector(&ctx, shapes[i][1], 10 + i);
        } else {
            in_local[i] = random_tensor(&ctx, shapes[i][0], shapes[i][1], 10 + i, true);
            in_dist[i] = random_tensor(&ctx, shapes[i][0], shapes[i][1], 10 + i, true);
        }
    }
    ts_tensor_parallel tp = {.grid = &g};
    outcome local = run(&ctx, NULL, op, n_in, in_local);
    outcome dist = run(&ctx, &tp, op, n_in, in_dist);
    double d = max_rel_diff(dist.value, local.value);
    if (!(d < TOLERANCE))
        fail_msg("%s on %dx%d blocks of %d: the value differs by %g", name, rows, cols, block, d);
    assert_same_on_group(&g, dist.value);
    for (int i = 0; i < n_in; i++) {
        d = max_rel_diff(dist.grad[i], local.grad[i]);
        if (!(d < TOLERANCE))
            fail_msg("%s on %dx%d blocks of %d: gradient %d differs by %g", name, rows, cols, block,
                     i, d);
        d = max_rel_diff(dist.second[i], local.second[i]);
        if (!(d < TOLERANCE))
            fail_msg("%s on %dx%d blocks of %d: second-order gradient %d differs by %g", name, rows,
                     cols, block, i, d);
        assert_same_on_group(&g, dist.grad[i]);
        assert_same_on_group(&g, dist.second[i]);
    }
    close_grid(&g, &ctx);
}

static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}};

static void check_on_every_grid(const char *name, op_fn op, int n_in, const int (*shapes)[2]) {
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        if (size % (grids[i][0] * grids[i][1])) continue; /* grids that fit these ranks */
        check_op(name, op, n_in, shapes, grids[i][0], grids[i][1], 4);
        check_op(name, op, n_in, shapes, grids[i][0], grids[i][1], 8);
    }
}

static void test_rmsnorm(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, WIDTH}, {0, WIDTH}};
    check_on_every_grid("rmsnorm", rmsnorm_op, 2, shapes);
}

static void test_causal_attention(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, WIDTH}, {TOKENS, WIDTH}, {TOKENS, WIDTH}};
    check_on_every_grid("attention", attention_op, 3, shapes);
}

static void test_cross_entropy(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, VOCAB}};
    check_on_every_grid("cross_entropy", cross_entropy_op, 1, shapes);
}

static void test_embedding(void **state) {
    (void)state;
    const int shapes[][2] = {{VOCAB, WIDTH}};
    check_on_every_grid("embedding", embed_op, 1, shapes);
}

static void test_softmax(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, VOCAB}};
    check_on_every_grid("softmax", softmax_op, 1, shapes);
}

static void test_context_attention(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, WIDTH},
                             {TOKENS, WIDTH},
                             {TOKENS, WIDTH},
                             {BATCH * (SEQ + 1), WIDTH},
                             {BATCH * (SEQ + 1), WIDTH}};
    check_on_every_grid("context_attention", context_attention_op, 5, shapes);
}

static void test_feature_dot(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, WIDTH}, {1, WIDTH}};
    check_on_every_grid("feature_dot", feature_dot_op, 2, shapes);
}

static void test_shared_scale(void **state) {
    (void)state;
    const int shapes[][2] = {{TOKENS, VOCAB}, {0, 1}};
    check_on_every_grid("shared_scale", shared_scale_op, 2, shapes);
}

/* A step of fewer tokens than a block would leave a second process column
 * without tokens: the step runs whole (ts_tp_too_few_tokens) and every op
 * still matches the local one. */
static void test_a_step_too_short_for_the_grid(void **state) {
    (void)state;
    batch_n = 1;
    seq_n = 3;
    const int norm[][2] = {{TOKENS, WIDTH}, {0, WIDTH}};
    const int three[][2] = {{TOKENS, WIDTH}, {TOKENS, WIDTH}, {TOKENS, WIDTH}};
    const int logits[][2] = {{TOKENS, VOCAB}};
    const int table[][2] = {{VOCAB, WIDTH}};
    check_on_every_grid("rmsnorm", rmsnorm_op, 2, norm);
    check_on_every_grid("attention", attention_op, 3, three);
    check_on_every_grid("cross_entropy", cross_entropy_op, 1, logits);
    check_on_every_grid("embedding", embed_op, 1, table);
    batch_n = 3;
    seq_n = 7;
}

/* <A x, y> = <x, A^T y> for each pair of primitives (on this rank's parts,
 * summed over the group), with x and y random and different on every
 * rank where the primitive takes per-rank parts. */
static double group_sum(const ts_tensor_grid *g, double v) {
    double s = 0;
    assert_int_equal(MPI_Allreduce(&v, &s, 1, MPI_DOUBLE, MPI_SUM, g->group), MPI_SUCCESS);
    return s;
}

static double dot(const ts_tensor *a, const ts_tensor *b) {
    assert_int_equal(a->numel, b->numel);
    double s = 0;
    for (long i = 0; i < a->numel; i++) s += (double)a->data[i] * b->data[i];
    return s;
}

static void test_primitives_are_adjoint_pairs(void **state) {
    (void)state;
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
        if (size % (grids[gi][0] * grids[gi][1])) continue;
        ts_tensor_grid g;
        ts_ctx ctx;
        open_grid(&g, &ctx, grids[gi][0], grids[gi][1], 4);
        /* per-rank parts: [local tokens, local features] of [TOKENS, WIDTH] */
        ts_tensor *whole = random_tensor(&ctx, TOKENS, WIDTH, 1, false);
        ts_tensor *part = ts_tp_to_blocks(&ctx, &g, whole);
        ts_tensor *x =
            random_tensor(&ctx, part->shape[0], part->shape[1], 100 + g.group_rank, false);
        ts_tensor *y = random_tensor(&ctx, TOKENS, part->shape[1], 200 + g.group_rank, false);
        /* gather_tokens and reduce_scatter_tokens */
        double lhs = group_sum(&g, dot(ts_tp_gather_tokens(&ctx, &g, x, TOKENS), y));
        double rhs = group_sum(&g, dot(x, ts_tp_reduce_scatter_tokens(&ctx, &g, y)));
        assert_true(fabs(lhs - rhs) < 1e3 * TOLERANCE * fabs(lhs));
        /* local_features and sum_features: w whole (the same everywhere) */
        ts_tensor *w = random_vector(&ctx, WIDTH, 3);
        ts_tensor *u =
            ts_reshape(&ctx, random_tensor(&ctx, 1, part->shape[1], 300 + g.group_rank, false),
                       TS_SHAPE(part->shape[1]));
        lhs = group_sum(&g, dot(ts_tp_local_features(&ctx, &g, w), u));
        rhs = dot(w, ts_tp_sum_features(&ctx, &g, u, WIDTH));
        assert_true(fabs(lhs - rhs) < 1e3 * TOLERANCE * fabs(lhs));
        close_grid(&g, &ctx);
    }
}

/* y = x W^T with x, W and y all this rank's blocks: the local product's
 * blocks, with nothing booked as sent (no all-gather). */
static void test_linear_all_blocks(void **state) {
    (void)state;
    enum { IN = 45, OUT = 37 };
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
        if (size % (grids[gi][0] * grids[gi][1])) continue;
        ts_tensor_grid g;
        ts_ctx ctx;
        open_grid(&g, &ctx, grids[gi][0], grids[gi][1], 8);
        ts_tensor *x = random_tensor(&ctx, TOKENS, IN, 1, false);
        ts_tensor *w = random_tensor(&ctx, OUT, IN, 2, false);
        ts_tensor *xb = ts_tp_to_blocks(&ctx, &g, x), *wb = ts_tp_to_blocks(&ctx, &g, w);
        double sent = g.bytes_sent;
        ts_tensor *yb = ts_tensor_matmul_dist(&ctx, &g, xb, (ts_tensor_dist){true, TOKENS, IN}, wb,
                                              (ts_tensor_dist){true, OUT, IN}, false, true, true);
        assert_true(g.bytes_sent == sent);
        ts_tensor *expected = ts_tp_to_blocks(&ctx, &g, ts_matmul(&ctx, x, w, false, true));
        assert_true(max_rel_diff(yb, expected) < TOLERANCE);
        close_grid(&g, &ctx);
    }
}

/* Other architectures, and heads split over process rows, are refused. */
static void test_attach_refuses(void **state) {
    (void)state;
    ts_tensor_grid g;
    char err[256] = "";
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, 1, size, err, sizeof err));
    g.distributed_activations = true;
    ts_model_config c = {.arch = "transformerpp",
                         .vocab_size = 256,
                         .context = 16,
                         .depth = 1,
                         .width = 128,
                         .heads = 2,
                         .ffn_mult = 2,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000};
    ts_model *m = ts_model_create(&c, err, sizeof err);
    assert_non_null(m);
    ts_tensor_parallel tp;
    assert_false(ts_tensor_parallel_attach(m, &tp, &g, err, sizeof err));
    assert_non_null(strstr(err, "head width 64"));
    ts_model_destroy(m);
    c.heads = 4;
    m = ts_model_create(&c, err, sizeof err);
    assert_true(ts_tensor_parallel_attach(m, &tp, &g, err, sizeof err));
    assert_true(ts_activations_distributed(&m->activations));
    ts_model_destroy(m);
    snprintf(c.arch, sizeof c.arch, "nexus");
    c.nexus.order = 2;
    snprintf(c.nexus.variant, sizeof c.nexus.variant, "shared");
    m = ts_model_create(&c, err, sizeof err);
    if (!m) fail_msg("a nexus model: %s", err);
    assert_false(ts_tensor_parallel_attach(m, &tp, &g, err, sizeof err));
    assert_non_null(strstr(err, "not supported by model.arch nexus"));
    ts_model_destroy(m);
    ts_tensor_grid_free(&g);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_causal_attention),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_context_attention),
        cmocka_unit_test(test_feature_dot),
        cmocka_unit_test(test_shared_scale),
        cmocka_unit_test(test_a_step_too_short_for_the_grid),
        cmocka_unit_test(test_primitives_are_adjoint_pairs),
        cmocka_unit_test(test_linear_all_blocks),
        cmocka_unit_test(test_attach_refuses),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_tensor_activations", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
