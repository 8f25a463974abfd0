#include "parallel/tensor_activation_ops.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/transformer_block.h"
#include "models/transformerpp.h"
#include "parallel/data_parallel.h"

static MPI_Comm comm_of(const ts_tensor_grid *g, ts_grid_axis axis) {
    return axis == TS_AXIS_FEATURES ? g->same_col : axis == TS_AXIS_TOKENS ? g->same_row : g->group;
}

static int ranks_of(const ts_tensor_grid *g, ts_grid_axis axis) {
    return axis == TS_AXIS_FEATURES ? g->rows
           : axis == TS_AXIS_TOKENS ? g->cols
                                    : g->rows * g->cols;
}

static const char *axis_name(ts_grid_axis axis) {
    return axis == TS_AXIS_FEATURES ? "process column"
           : axis == TS_AXIS_TOKENS ? "process row"
                                    : "group";
}

static ts_block_cyclic layout_of(const ts_tensor_grid *g) {
    return ts_tensor_grid_layout(g);
}

/* This rank's count of an n-long token side (over the columns) or feature
 * side (over the rows). */
static int local_tokens(const ts_tensor_grid *g, int n) {
    return ts_block_cyclic_extent(n, layout_of(g).block, g->my_col, g->cols);
}
static int local_features(const ts_tensor_grid *g, int f) {
    return ts_block_cyclic_extent(f, layout_of(g).block, g->my_row, g->rows);
}

/* Records op with rule on out, keeping the grid and the ints the rule
 * needs. */
static void record(ts_ctx *ctx, ts_tensor_grid *g, const char *op, ts_backward_fn rule,
                   ts_tensor *out, ts_tensor *in, int a0, int a1) {
    ts_node *node = ts_record(ctx, op, rule, out, 1, &in);
    if (!node) return;
    node->user = g;
    node->iattr[0] = a0;
    node->iattr[1] = a1;
}

/* --- reduce / fanout --------------------------------------------------- */

/* sum over the ranks of axis, in rank order, of n values: the same bits on
 * every one of them. */
static void ordered_sum(ts_ctx *ctx, ts_tensor_grid *g, ts_grid_axis axis, const ts_real *x,
                        ts_real *sum, long n) {
    int m = ranks_of(g, axis);
    if (m == 1) {
        memcpy(sum, x, (size_t)n * sizeof *sum);
        return;
    }
    if (n * m > INT_MAX)
        ts_fail(ctx, "tensor_reduce", "%ld values over %d ranks exceed one all-gather", n, m);
    ts_real *all = ts_alloc(ctx, (size_t)(n * m) * sizeof *all);
    if (MPI_Allgather(x, (int)n, TS_MPI_REAL, all, (int)n, TS_MPI_REAL, comm_of(g, axis)) !=
        MPI_SUCCESS)
        ts_fail(ctx, "tensor_reduce", "all-gathering %ld values over the %s failed", n,
                axis_name(axis));
    for (long i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < m; r++) s += all[(long)r * n + i];
        sum[i] = (ts_real)s;
    }
    g->bytes_sent += (double)n * sizeof(ts_real) * (m - 1);
}

static void reduce_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_fanout(ctx, node->user, g, (ts_grid_axis)node->iattr[0]);
}

static void fanout_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_reduce(ctx, node->user, g, (ts_grid_axis)node->iattr[0]);
}

ts_tensor *ts_tp_reduce(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, ts_grid_axis axis) {
    ts_tensor *out = ts_new_like(ctx, x);
    if (!ctx->counting) ordered_sum(ctx, g, axis, x->data, out->data, x->numel);
    record(ctx, g, "tensor_reduce", reduce_backward, out, x, axis, 0);
    return out;
}

ts_tensor *ts_tp_fanout(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, ts_grid_axis axis) {
    ts_tensor *out = ts_new_like(ctx, x);
    if (!ctx->counting) memcpy(out->data, x->data, (size_t)x->numel * sizeof *x->data);
    record(ctx, g, "tensor_fanout", fanout_backward, out, x, axis, 0);
    return out;
}

/* --- to_blocks / to_whole ---------------------------------------------- */

static void to_blocks_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                               ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_to_whole(ctx, node->user, g, node->iattr[0], node->iattr[1]);
}

static void to_whole_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                              ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_to_blocks(ctx, node->user, g);
}

ts_tensor *ts_tp_to_blocks(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x) {
    char s[64];
    if (x->ndim != 2)
        ts_fail(ctx, "tensor_to_blocks", "%s is not [tokens, features]",
                ts_shape_str(x, s, sizeof s));
    int n = x->shape[0], f = x->shape[1];
    ts_block_cyclic d = layout_of(g);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(local_tokens(g, n), local_features(g, f)));
    if (!ctx->counting)
        ts_block_cyclic_copy(&d, g->my_row, g->my_col, n, f, out->data, x->data, sizeof(ts_real),
                             true);
    record(ctx, g, "tensor_to_blocks", to_blocks_backward, out, x, n, f);
    return out;
}

ts_tensor *ts_tp_to_whole(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int n, int f) {
    char s[64];
    if (x->ndim != 2 || x->shape[0] != local_tokens(g, n) || x->shape[1] != local_features(g, f))
        ts_fail(ctx, "tensor_to_whole", "%s is not this rank's blocks of [%d, %d]",
                ts_shape_str(x, s, sizeof s), n, f);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(n, f));
    if (!ctx->counting) ts_tensor_allgather_blocks(ctx, g, x->data, n, f, out->data);
    record(ctx, g, "tensor_to_whole", to_whole_backward, out, x, n, f);
    return out;
}

/* --- gather_tokens / reduce_scatter_tokens ----------------------------- */

/* Column c's local tokens and where they start in a column-ordered array
 * (counts and displacements in rows). */
static void token_counts(const ts_tensor_grid *g, int n, int *counts, int *displs) {
    int total = 0;
    for (int c = 0; c < g->cols; c++) {
        counts[c] = ts_block_cyclic_extent(n, layout_of(g).block, c, g->cols);
        displs[c] = total;
        total += counts[c];
    }
}

/* Rows of f values between the column-ordered array (column 0's local
 * tokens, then column 1's, ...) and the token-ordered [n, f] one. */
static void reorder_tokens(const ts_tensor_grid *g, int f, const int *counts, const int *displs,
                           ts_real *by_column, ts_real *by_token, bool to_token) {
    int nb = layout_of(g).block;
    for (int c = 0; c < g->cols; c++)
        for (long i = 0; i < counts[c]; i++) {
            ts_real *col = by_column + (displs[c] + i) * f;
            ts_real *tok = by_token + ts_block_cyclic_global(i, nb, c, g->cols) * f;
            if (to_token)
                memcpy(tok, col, (size_t)f * sizeof *tok);
            else
                memcpy(col, tok, (size_t)f * sizeof *tok);
        }
}

static void gather_tokens_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                   ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_reduce_scatter_tokens(ctx, node->user, g);
}

static void reduce_scatter_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                    ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_gather_tokens(ctx, node->user, g, node->iattr[0]);
}

ts_tensor *ts_tp_gather_tokens(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int n) {
    char s[64];
    if (x->ndim != 2 || x->shape[0] != local_tokens(g, n))
        ts_fail(ctx, "tensor_gather_tokens", "%s is not this rank's token blocks of %d tokens",
                ts_shape_str(x, s, sizeof s), n);
    int f = x->shape[1];
    if ((long)n * f > INT_MAX)
        ts_fail(ctx, "tensor_gather_tokens", "%d x %d values exceed one all-gather", n, f);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(n, f));
    if (!ctx->counting) {
        int *counts = ts_alloc(ctx, 2 * (size_t)g->cols * sizeof *counts),
            *displs = counts + g->cols;
        token_counts(g, n, counts, displs);
        ts_real *by_column = ts_alloc(ctx, ((size_t)n * f + 1) * sizeof *by_column);
        int *values = ts_alloc(ctx, 2 * (size_t)g->cols * sizeof *values), *at = values + g->cols;
        for (int c = 0; c < g->cols; c++) {
            values[c] = counts[c] * f;
            at[c] = displs[c] * f;
        }
        if (MPI_Allgatherv(x->data, values[g->my_col], TS_MPI_REAL, by_column, values, at,
                           TS_MPI_REAL, g->same_row) != MPI_SUCCESS)
            ts_fail(ctx, "tensor_gather_tokens",
                    "all-gathering %d tokens over the process row failed", n);
        reorder_tokens(g, f, counts, displs, by_column, out->data, true);
        g->bytes_sent += (double)n * f * sizeof(ts_real) * (g->cols - 1) / g->cols;
    }
    record(ctx, g, "tensor_gather_tokens", gather_tokens_backward, out, x, n, 0);
    return out;
}

ts_tensor *ts_tp_reduce_scatter_tokens(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x) {
    char s[64];
    if (x->ndim != 2)
        ts_fail(ctx, "tensor_reduce_scatter_tokens", "%s is not [tokens, features]",
                ts_shape_str(x, s, sizeof s));
    int n = x->shape[0], f = x->shape[1];
    if ((long)n * f > INT_MAX)
        ts_fail(ctx, "tensor_reduce_scatter_tokens", "%d x %d values exceed one reduce-scatter", n,
                f);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(local_tokens(g, n), f));
    if (!ctx->counting) {
        int *counts = ts_alloc(ctx, 2 * (size_t)g->cols * sizeof *counts),
            *displs = counts + g->cols;
        token_counts(g, n, counts, displs);
        ts_real *by_column = ts_alloc(ctx, ((size_t)n * f + 1) * sizeof *by_column);
        reorder_tokens(g, f, counts, displs, by_column, x->data, false);
        int *values = ts_alloc(ctx, (size_t)g->cols * sizeof *values);
        for (int c = 0; c < g->cols; c++) values[c] = counts[c] * f;
        if (MPI_Reduce_scatter(by_column, out->data, values, TS_MPI_REAL, MPI_SUM, g->same_row) !=
            MPI_SUCCESS)
            ts_fail(ctx, "tensor_reduce_scatter_tokens",
                    "reduce-scattering %d tokens over the process row failed", n);
        g->bytes_sent += (double)n * f * sizeof(ts_real) * (g->cols - 1) / g->cols;
    }
    record(ctx, g, "tensor_reduce_scatter_tokens", reduce_scatter_backward, out, x, n, 0);
    return out;
}

/* --- local_features / sum_features ------------------------------------- */

static void local_features_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                    ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_sum_features(ctx, node->user, g, node->iattr[0]);
}

static void sum_features_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_tp_local_features(ctx, node->user, g);
}

ts_tensor *ts_tp_local_features(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *w) {
    char s[64];
    if (w->ndim != 1)
        ts_fail(ctx, "tensor_local_features", "%s is not a vector of features",
                ts_shape_str(w, s, sizeof s));
    int f = w->shape[0], mine = local_features(g, f), nb = layout_of(g).block;
    ts_tensor *out = ts_new(ctx, TS_SHAPE(mine));
    for (long i = 0; !ctx->counting && i < mine; i++)
        out->data[i] = w->data[ts_block_cyclic_global(i, nb, g->my_row, g->rows)];
    record(ctx, g, "tensor_local_features", local_features_backward, out, w, f, 0);
    return out;
}

ts_tensor *ts_tp_sum_features(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int f) {
    char s[64];
    int mine = local_features(g, f), nb = layout_of(g).block;
    if (x->ndim != 1 || x->shape[0] != mine)
        ts_fail(ctx, "tensor_sum_features", "%s is not this rank's features of %d",
                ts_shape_str(x, s, sizeof s), f);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(f));
    if (!ctx->counting) {
        ts_real *padded = ts_alloc(ctx, (size_t)f * sizeof *padded);
        memset(padded, 0, (size_t)f * sizeof *padded);
        for (long i = 0; i < mine; i++)
            padded[ts_block_cyclic_global(i, nb, g->my_row, g->rows)] = x->data[i];
        ordered_sum(ctx, g, TS_AXIS_GROUP, padded, out->data, f);
    }
    record(ctx, g, "tensor_sum_features", sum_features_backward, out, x, f, 0);
    return out;
}

/* --- layer ops --------------------------------------------------------- */

bool ts_tp_too_few_tokens(const ts_tensor_grid *g, long tokens) {
    return tokens <= (long)layout_of(g).block * (g->cols - 1);
}

ts_tensor *ts_tp_embed(void *user, ts_ctx *ctx, ts_tensor *table, const int32_t *ids, int batch,
                       int seq) {
    ts_tensor_parallel *tp = user;
    ts_tensor_grid *g = tp->grid;
    long n = (long)batch * seq;
    if (n < 1 || n > INT_MAX)
        ts_fail(ctx, "tensor_embed", "%ld tokens per group step do not fit one all-gather", n);
    tp->tokens = (int)n;
    tp->seq = seq;
    tp->width = table->shape[1];
    tp->whole_step = ts_tp_too_few_tokens(g, n);
    ts_tensor *x = ts_embedding(ctx, table, ids, n);
    if (tp->whole_step) return ts_reshape(ctx, x, TS_SHAPE(batch, seq, tp->width));
    return ts_tp_to_blocks(ctx, g, x);
}

ts_tensor *ts_tp_rmsnorm(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps) {
    const ts_tensor_parallel *tp = user;
    if (tp->whole_step) return ts_rmsnorm(ctx, x, weight, eps);
    ts_tensor_grid *g = tp->grid;
    int f = weight->shape[0];
    ts_tensor *squares = ts_sum(ctx, ts_square(ctx, x), 1, true); /* [tokens, 1] */
    /* every feature block of a token uses the same total */
    ts_tensor *total =
        ts_tp_fanout(ctx, g, ts_tp_reduce(ctx, g, squares, TS_AXIS_FEATURES), TS_AXIS_FEATURES);
    ts_tensor *inverse = ts_rsqrt(ctx, ts_add_scalar(ctx, ts_scale(ctx, total, 1.0 / f), eps));
    return ts_mul(ctx, ts_mul(ctx, x, inverse), ts_tp_local_features(ctx, g, weight));
}

/* The global index of each of this rank's tokens. */
static long *my_token_indices(ts_ctx *ctx, const ts_tensor_grid *g, int n) {
    int mine = local_tokens(g, n), nb = layout_of(g).block;
    long *global = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *global);
    for (long i = 0; i < mine; i++) global[i] = ts_block_cyclic_global(i, nb, g->my_col, g->cols);
    return global;
}

/* [tokens, heads * dh] -> [tokens, heads, dh] rotated at the tokens'
 * positions in their sequences. */
static ts_tensor *rotate(ts_ctx *ctx, ts_tensor *x, int dh, const int32_t *positions,
                         double theta) {
    return ts_rope(ctx, ts_reshape(ctx, x, TS_SHAPE(x->shape[0], x->shape[1] / dh, dh)), positions,
                   theta);
}

/* [tokens, heads, dh] -> [heads, tokens, dh] */
static ts_tensor *heads_first(ts_ctx *ctx, ts_tensor *x, int dh) {
    ts_tensor *h =
        ts_reshape(ctx, x, TS_SHAPE(x->shape[0], (int)(x->numel / x->shape[0] / dh), dh));
    return ts_permute(ctx, h, (const int[]){1, 0, 2});
}

/* The causal attention of this rank's queries (q may be NULL: keys and
 * values only) for its heads; *keys and *values, if given, receive every
 * token's rotated keys and values of those heads, [n, local features]. */
static ts_tensor *attend_causal(const ts_tensor_parallel *tp, ts_ctx *ctx, ts_tensor *q,
                                ts_tensor *k, ts_tensor *v, int n_heads, const int32_t *positions,
                                double rope_theta, ts_tensor **keys_out, ts_tensor **values_out) {
    ts_tensor_grid *g = tp->grid;
    int n = tp->tokens, seq = tp->seq, dh = tp->width / n_heads;
    int mine = k->shape[0], features = k->shape[1];
    if (features % dh)
        ts_fail(ctx, "tensor_attention", "%d local features are not whole heads of %d", features,
                dh);
    long *global = my_token_indices(ctx, g, n);
    int32_t *my_positions = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *my_positions);
    for (long i = 0; i < mine; i++) my_positions[i] = positions[global[i] % seq];
    ts_tensor *kr =
        ts_reshape(ctx, rotate(ctx, k, dh, my_positions, rope_theta), TS_SHAPE(mine, features));
    /* every token's keys and values of this rank's heads, [n, features] */
    ts_tensor *keys = ts_tp_gather_tokens(ctx, g, kr, n);
    ts_tensor *values = ts_tp_gather_tokens(ctx, g, v, n);
    if (keys_out) *keys_out = keys;
    if (values_out) *values_out = values;
    if (!q) return NULL;
    ts_tensor *qr = rotate(ctx, q, dh, my_positions, rope_theta);
    /* This rank's tokens ascend, so those of one sequence are a run of
     * rows; each run attends the keys of its sequence up to its last token
     * ([heads, run, visible], as one rank would per sequence). Slicing rows
     * first takes views, so only the visible keys are copied per head. */
    int runs = 0;
    ts_tensor **parts = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *parts);
    for (int i0 = 0; i0 < mine;) {
        long start = global[i0] / seq * seq;
        int i1 = i0;
        while (i1 < mine && global[i1] / seq * seq == start) i1++;
        int visible = (int)(global[i1 - 1] - start + 1);
        ts_tensor *mask = ts_new(ctx, TS_SHAPE(i1 - i0, visible));
        for (long i = i0; !ctx->counting && i < i1; i++)
            for (long j = 0; j < visible; j++)
                mask->data[(i - i0) * visible + j] = start + j <= global[i] ? 0 : -INFINITY;
        ts_tensor *scores = ts_matmul(
            ctx, heads_first(ctx, ts_slice(ctx, qr, 0, i0, i1 - i0), dh),
            heads_first(ctx, ts_slice(ctx, keys, 0, (int)start, visible), dh), false, true);
        scores = ts_scale(ctx, scores, 1.0 / sqrt((double)dh));
        ts_tensor *mixed =
            ts_matmul(ctx, ts_softmax(ctx, scores, mask),
                      heads_first(ctx, ts_slice(ctx, values, 0, (int)start, visible), dh), false,
                      false); /* [heads, run, dh] */
        parts[runs++] = ts_reshape(ctx, ts_permute(ctx, mixed, (const int[]){1, 0, 2}),
                                   TS_SHAPE(i1 - i0, features));
        i0 = i1;
    }
    return runs == 1 ? parts[0] : ts_concat(ctx, runs, parts, 0);
}

ts_tensor *ts_tp_causal_attention(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                  int n_heads, const int32_t *positions, double rope_theta) {
    const ts_tensor_parallel *tp = user;
    if (tp->whole_step) {
        int dh = tp->width / n_heads;
        ts_tensor *a =
            ts_causal_attention(ctx, tpp_split_heads(ctx, q, n_heads, positions, rope_theta),
                                tpp_split_heads(ctx, k, n_heads, positions, rope_theta),
                                tpp_split_heads(ctx, v, n_heads, NULL, 0), 1.0 / sqrt((double)dh));
        return tpp_merge_heads(ctx, a);
    }
    return attend_causal(tp, ctx, q, k, v, n_heads, positions, rope_theta, NULL, NULL);
}

ts_tensor *ts_tp_causal_attention_keep(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                       ts_tensor *v, int n_heads, const int32_t *positions,
                                       double rope_theta, ts_tensor **keys, ts_tensor **values) {
    const ts_tensor_parallel *tp = user;
    if (tp->whole_step)
        ts_fail(ctx, "tensor_attention", "a step run whole has no distributed keys to keep");
    return attend_causal(tp, ctx, q, k, v, n_heads, positions, rope_theta, keys, values);
}

ts_tensor *ts_tp_context_attention(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                   ts_tensor *v, ts_tensor *keys, ts_tensor *values, int n_heads,
                                   const int32_t *positions, double rope_theta) {
    const ts_tensor_parallel *tp = user;
    ts_tensor_grid *g = tp->grid;
    int n = tp->tokens, seq = tp->seq, dh = tp->width / n_heads;
    int mine = q->shape[0], features = q->shape[1], batch = n / seq;
    char s[64];
    if (features % dh || keys->ndim != 2 || keys->shape[0] % batch ||
        keys->shape[0] / batch < seq || keys->shape[1] != features)
        ts_fail(ctx, "tensor_context_attention",
                "context keys %s do not hold %d sequences of at least %d tokens of %d features",
                ts_shape_str(keys, s, sizeof s), batch, seq, features);
    int context = keys->shape[0] / batch, ahead = context - seq;
    long *global = my_token_indices(ctx, g, n);
    int32_t *my_positions = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *my_positions);
    for (long i = 0; i < mine; i++) my_positions[i] = positions[global[i] % seq];
    ts_tensor *qr =
        ts_reshape(ctx, rotate(ctx, q, dh, my_positions, rope_theta), TS_SHAPE(mine, features));
    ts_tensor *kr =
        ts_reshape(ctx, rotate(ctx, k, dh, my_positions, rope_theta), TS_SHAPE(mine, features));
    /* A run of consecutive tokens r0.. r0+m-1 of one sequence sees that
     * sequence's context keys 0 .. r0+m-1+ahead, aligned at the end as the
     * engine op wants (row j sees 0 .. j + visible - m): exactly the rows
     * one rank computes, on this rank's heads. */
    int runs = 0;
    ts_tensor **parts = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *parts);
    for (int i0 = 0; i0 < mine;) {
        int i1 = i0 + 1;
        while (i1 < mine && global[i1] == global[i1 - 1] + 1 && global[i1] % seq != 0) i1++;
        int m = i1 - i0, b = (int)(global[i0] / seq), r0 = (int)(global[i0] % seq);
        int visible = r0 + m + ahead;
        ts_tensor *mixed = ts_context_attention(
            ctx, heads_first(ctx, ts_slice(ctx, qr, 0, i0, m), dh),
            heads_first(ctx, ts_slice(ctx, keys, 0, b * context, visible), dh),
            heads_first(ctx, ts_slice(ctx, values, 0, b * context, visible), dh),
            heads_first(ctx, ts_slice(ctx, kr, 0, i0, m), dh),
            heads_first(ctx, ts_slice(ctx, v, 0, i0, m), dh),
            1.0 / sqrt((double)dh)); /* [heads, m, dh] */
        parts[runs++] =
            ts_reshape(ctx, ts_permute(ctx, mixed, (const int[]){1, 0, 2}), TS_SHAPE(m, features));
        i0 = i1;
    }
    return runs == 1 ? parts[0] : ts_concat(ctx, runs, parts, 0);
}

/* Each token's largest value over the features of the whole grid row of
 * processes: a constant shift (softmax and log-sum-exp do not depend on it),
 * so no gradient flows through it. */
static ts_tensor *feature_max(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, const char *op) {
    int mine = x->shape[0], here = x->shape[1];
    ts_tensor *shift = ts_new(ctx, TS_SHAPE(mine, 1));
    if (ctx->counting) return shift;
    for (long i = 0; i < mine; i++) {
        ts_real m = -INFINITY;
        for (long j = 0; j < here; j++) m = fmax(m, x->data[i * here + j]);
        shift->data[i] = m;
    }
    if (g->rows > 1) {
        if (MPI_Allreduce(MPI_IN_PLACE, shift->data, mine, TS_MPI_REAL, MPI_MAX, g->same_col) !=
            MPI_SUCCESS)
            ts_fail(ctx, op, "the maximum over the %s failed", axis_name(TS_AXIS_FEATURES));
        g->bytes_sent += (double)mine * sizeof(ts_real) * (g->rows - 1);
    }
    return shift;
}

ts_tensor *ts_tp_softmax(void *user, ts_ctx *ctx, ts_tensor *x) {
    const ts_tensor_parallel *tp = user;
    ts_tensor_grid *g = tp->grid;
    ts_tensor *exps = ts_exp(ctx, ts_sub(ctx, x, feature_max(ctx, g, x, "tensor_softmax")));
    /* every feature block of a token divides by the same total */
    ts_tensor *sums =
        ts_tp_fanout(ctx, g, ts_tp_reduce(ctx, g, ts_sum(ctx, exps, 1, true), TS_AXIS_FEATURES),
                     TS_AXIS_FEATURES);
    return ts_div(ctx, exps, sums);
}

ts_tensor *ts_tp_feature_dot(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w) {
    const ts_tensor_parallel *tp = user;
    ts_tensor_grid *g = tp->grid;
    int f = tp->width;
    /* A weight [1, f] is held as blocks on a grid of one process column
     * (ts_model_distribute), and its block is then exactly this rank's
     * features, its gradient complete (every token is on this column). */
    bool blocks = w->numel != f;
    if (blocks && (g->cols != 1 || w->numel != local_features(g, f)))
        ts_fail(ctx, "tensor_feature_dot",
                "a weight of %ld values is neither [1, %d] nor its block", w->numel, f);
    ts_tensor *row = ts_reshape(ctx, w, TS_SHAPE((int)w->numel));
    ts_tensor *mine = blocks ? row : ts_tp_local_features(ctx, g, row);
    /* the total is then used whole on every process row (the same energy) */
    return ts_tp_reduce(ctx, g, ts_sum(ctx, ts_mul(ctx, x, mine), 1, true), TS_AXIS_FEATURES);
}

ts_tensor *ts_tp_sum_tokens(void *user, ts_ctx *ctx, ts_tensor *x) {
    const ts_tensor_parallel *tp = user;
    return ts_tp_reduce(ctx, tp->grid, ts_sum_all(ctx, x), TS_AXIS_TOKENS);
}

ts_tensor *ts_tp_share(void *user, ts_ctx *ctx, ts_tensor *x) {
    const ts_tensor_parallel *tp = user;
    return ts_tp_fanout(ctx, tp->grid, x, TS_AXIS_GROUP);
}

bool ts_tp_begin_step(void *user, long tokens, int width, bool whole) {
    ts_tensor_parallel *tp = user;
    tp->width = width;
    tp->whole_step = whole || ts_tp_too_few_tokens(tp->grid, tokens);
    return !tp->whole_step;
}

ts_tensor *ts_tp_to_local(void *user, ts_ctx *ctx, ts_tensor *x) {
    ts_tensor_parallel *tp = user;
    char s[64];
    if (x->ndim != 3 || (long)x->shape[0] * x->shape[1] > INT_MAX)
        ts_fail(ctx, "tensor_to_local", "%s is not [sequences, tokens, features]",
                ts_shape_str(x, s, sizeof s));
    tp->tokens = x->shape[0] * x->shape[1];
    tp->seq = x->shape[1];
    return ts_tp_to_blocks(ctx, tp->grid, ts_reshape(ctx, x, TS_SHAPE(tp->tokens, x->shape[2])));
}

void ts_tp_stream(void *user, int batch, int seq) {
    ts_tensor_parallel *tp = user;
    tp->tokens = batch * seq;
    tp->seq = seq;
}

ts_tensor *ts_tp_token_values(void *user, ts_ctx *ctx, ts_tensor *x) {
    const ts_tensor_parallel *tp = user;
    char s[64];
    int k = x->shape[x->ndim - 1];
    if (x->requires_grad || x->numel != (long)tp->tokens * k)
        ts_fail(ctx, "tensor_token_values", "%s is not a constant of %d tokens",
                ts_shape_str(x, s, sizeof s), tp->tokens);
    int mine = local_tokens(tp->grid, tp->tokens);
    long *global = my_token_indices(ctx, tp->grid, tp->tokens);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(mine, k));
    for (long i = 0; !ctx->counting && i < mine; i++)
        memcpy(out->data + i * k, x->data + global[i] * k, (size_t)k * sizeof *out->data);
    return out;
}

ts_tensor *ts_tp_whole(void *user, ts_ctx *ctx, ts_tensor *x, int features) {
    const ts_tensor_parallel *tp = user;
    return ts_tp_to_whole(ctx, tp->grid, x, tp->tokens, features);
}

ts_tensor *ts_tp_cross_entropy(void *user, ts_ctx *ctx, ts_tensor *logits, const int32_t *targets,
                               int32_t ignore_index) {
    const ts_tensor_parallel *tp = user;
    if (tp->whole_step) return ts_cross_entropy(ctx, logits, targets, ignore_index);
    ts_tensor_grid *g = tp->grid;
    int n = tp->tokens, mine = logits->shape[0];
    int nb = layout_of(g).block;
    long *global = my_token_indices(ctx, g, n);
    ts_tensor *shift = feature_max(ctx, g, logits, "tensor_cross_entropy");
    ts_tensor *exps = ts_exp(ctx, ts_sub(ctx, logits, shift));
    ts_tensor *sums = ts_tp_reduce(ctx, g, ts_sum(ctx, exps, 1, true), TS_AXIS_FEATURES);
    ts_tensor *lse = ts_reshape(ctx, ts_add(ctx, ts_log(ctx, sums), shift), TS_SHAPE(mine));
    /* the target's logit, on the process row holding it */
    int32_t *here = ts_alloc(ctx, ((size_t)mine + 1) * sizeof *here);
    ts_tensor *scored = ts_new(ctx, TS_SHAPE(mine));
    for (long i = 0; i < mine; i++) {
        int32_t t = targets[global[i]];
        bool valid = t != ignore_index && t >= 0;
        here[i] =
            valid && t / nb % g->rows == g->my_row ? (int32_t)(t / nb / g->rows * nb + t % nb) : -1;
        if (!ctx->counting) scored->data[i] = valid;
    }
    long count = 0;
    for (long i = 0; i < n; i++) count += targets[i] != ignore_index && targets[i] >= 0;
    ts_tensor *target_logit =
        ts_tp_reduce(ctx, g, ts_gather_last(ctx, logits, here), TS_AXIS_FEATURES);
    ts_tensor *losses = ts_mul(ctx, ts_sub(ctx, lse, target_logit), scored);
    ts_tensor *total = ts_tp_reduce(ctx, g, ts_sum_all(ctx, losses), TS_AXIS_TOKENS);
    return ts_scale(ctx, total, count > 0 ? 1.0 / count : 0.0);
}

bool ts_tensor_activations_attach(ts_model *model, ts_tensor_parallel *tp, char *err,
                                  size_t errlen) {
    const ts_model_config *c = &model->config;
    const ts_tensor_grid *g = tp->grid;
    int nb = layout_of(g).block;
    if (!model->ops->distributable_activations) {
        snprintf(err, errlen,
                 "parallel.tensor_activations distributed is not supported by model.arch %s "
                 "(Transformer++ and EBT only; use replicated)",
                 c->arch);
        return false;
    }
    int dh = c->heads > 0 ? c->width / c->heads : 0;
    if (dh < 1 || nb % dh) {
        snprintf(err, errlen,
                 "parallel.tensor_activations distributed needs each attention head on one "
                 "process row: the head width %d (model.width / model.heads) must divide the "
                 "block of %d",
                 dh, nb);
        return false;
    }
    /* every process row holds features of every activation */
    long least = (long)nb * (g->rows - 1);
    int hidden = tpp_ffn_hidden(c);
    if (c->width <= least || hidden <= least || c->vocab_size <= least) {
        snprintf(err, errlen,
                 "parallel.tensor_activations distributed on a %dx%d grid needs model.width (%d), "
                 "the feed-forward width (%d) and the vocabulary (%d) above %ld, so that every "
                 "process row holds features",
                 g->rows, g->cols, c->width, hidden, c->vocab_size, least);
        return false;
    }
    model->activations = (ts_activation_hook){.embed = ts_tp_embed,
                                              .rmsnorm = ts_tp_rmsnorm,
                                              .causal_attention = ts_tp_causal_attention,
                                              .cross_entropy = ts_tp_cross_entropy,
                                              .begin_step = ts_tp_begin_step,
                                              .to_local = ts_tp_to_local,
                                              .stream = ts_tp_stream,
                                              .token_values = ts_tp_token_values,
                                              .share = ts_tp_share,
                                              .whole = ts_tp_whole,
                                              .softmax = ts_tp_softmax,
                                              .causal_attention_keep = ts_tp_causal_attention_keep,
                                              .context_attention = ts_tp_context_attention,
                                              .feature_dot = ts_tp_feature_dot,
                                              .sum_tokens = ts_tp_sum_tokens,
                                              .user = tp};
    return true;
}
