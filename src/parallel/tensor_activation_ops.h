/* Distributed activations for tensor parallelism
 * (parallel.tensor_activations = distributed; docs/parallelism.md
 * "Distributed activations").
 *
 * Layout: an activation is a row-major [N tokens, F features] matrix held as
 * this rank's 2D block-cyclic blocks (core/block_cyclic.h with the grid's
 * block size): tokens in blocks over the Q process columns, features in
 * blocks over the P process rows, the local array [extent(N, my_col, Q),
 * extent(F, my_row, P)]. It is the layout p?gemm reads a row-major x [N, in]
 * in (parallel/tensor_ops.h), so a linear layer takes x and gives y in it
 * with no conversion. A block size that is a multiple of the head width
 * keeps every attention head on one process row.
 *
 * Every op here is collective over (a part of) the group, records itself
 * for differentiation, and has a backward rule built from ops again (these
 * or the engine's), so gradients of any order stay distributed. The
 * primitives move data; the layer ops compose them with engine ops:
 *
 *   reduce / fanout over an axis of the grid (the ranks of this rank's
 *     process column: FEATURES; of its process row: TOKENS; the group):
 *     reduce sums x over those ranks (every one then holds the total and
 *     uses it whole: its gradient arrives whole and passes through); fanout
 *     is the identity on a value the same on all of them that each uses for
 *     its own part (its gradient is the sum of the parts'). Each is the
 *     other's backward rule.
 *   to_blocks / to_whole: a whole [N, F] to this rank's blocks (no
 *     communication) and back (one all-gather); each other's rule.
 *   gather_tokens / reduce_scatter_tokens: this rank's token blocks to every
 *     token of its feature blocks (all-gather over the process row) and the
 *     adjoint (reduce-scatter); each other's rule.
 *   local_features / sum_features: this rank's entries of a whole feature
 *     vector [F] (no communication) and the group sum of every rank's
 *     entries put back into [F]; each other's rule.
 *
 * Reductions of small vectors sum the ranks' values in rank order after an
 * all-gather, so every rank of the reducing set holds bit-identical totals
 * (replicated parameters' gradients must not drift apart). In a counting
 * context the ops only shape their results and count nothing as sent. */
#ifndef TS_TENSOR_ACTIVATION_OPS_H
#define TS_TENSOR_ACTIVATION_OPS_H

#include "parallel/tensor_ops.h"

typedef enum ts_grid_axis {
    TS_AXIS_FEATURES, /* the ranks of this rank's process column (they split the features) */
    TS_AXIS_TOKENS,   /* the ranks of this rank's process row (they split the tokens) */
    TS_AXIS_GROUP,    /* every rank of the group */
} ts_grid_axis;

ts_tensor *ts_tp_reduce(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, ts_grid_axis axis);
ts_tensor *ts_tp_fanout(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, ts_grid_axis axis);
/* x whole [n, f] -> this rank's blocks; blocks of [n, f] -> whole. */
ts_tensor *ts_tp_to_blocks(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x);
ts_tensor *ts_tp_to_whole(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int n, int f);
/* x: this rank's blocks of [n, f] -> [n, local features]; and back. */
ts_tensor *ts_tp_gather_tokens(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int n);
ts_tensor *ts_tp_reduce_scatter_tokens(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x);
/* w whole [f] -> this rank's features [local f]; and the group sum back. */
ts_tensor *ts_tp_local_features(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *w);
ts_tensor *ts_tp_sum_features(ts_ctx *ctx, ts_tensor_grid *g, ts_tensor *x, int f);

/* The layer ops, each the distributed form of the engine op named and with
 * the signature of models/activation_hook.h's hook (user: a
 * ts_tensor_parallel, whose tokens, seq and width the embedding sets).
 * A step of at most NB (Q - 1) tokens would leave a process column without
 * tokens, which the engine cannot hold (no empty tensors): the embedding
 * then marks the step whole (ts_tensor_parallel.whole_step) and every op,
 * the linear layers included, runs on whole activations as in the
 * replicated mode (an evaluation's last, short micro-batch, say). */
bool ts_tp_too_few_tokens(const ts_tensor_grid *g, long tokens);
/* ts_embedding: whole rows of table at ids, then this rank's blocks. */
ts_tensor *ts_tp_embed(void *tp, ts_ctx *ctx, ts_tensor *table, const int32_t *ids, int batch,
                       int seq);
/* ts_rmsnorm: the sum of squares reduced over the feature axis. */
ts_tensor *ts_tp_rmsnorm(void *tp, ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps);
/* ts_rope + causal attention per sequence: keys and values gathered over
 * the token axis, each rank attending its queries for its heads. */
ts_tensor *ts_tp_causal_attention(void *tp, ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                  int n_heads, const int32_t *positions, double rope_theta);
/* ts_cross_entropy over logits [N, V] blocks: max and sum of exponentials
 * reduced over the feature (vocabulary) axis, the tokens' sum over the
 * token axis; the loss the same on every rank of the group. */
ts_tensor *ts_tp_cross_entropy(void *tp, ts_ctx *ctx, ts_tensor *logits, const int32_t *targets,
                               int32_t ignore_index);

/* EBT's ops (models/activation_hook.h says what each computes). The
 * energy's two streams have different token counts (the observed one has
 * one more token per sequence: the time embedding), so the hook's state
 * holds the current stream: ts_tp_to_local sets it from its input's shape,
 * ts_tp_stream directly; the ops read it when they run (their backward
 * rules keep what they need). */
bool ts_tp_begin_step(void *tp, long tokens, int width, bool whole);
ts_tensor *ts_tp_to_local(void *tp, ts_ctx *ctx, ts_tensor *x);
void ts_tp_stream(void *tp, int batch, int seq);
/* A constant per token [tokens, k] -> this rank's tokens [local tokens, k]
 * (no communication; held alike on every process row). */
ts_tensor *ts_tp_token_values(void *tp, ts_ctx *ctx, ts_tensor *x);
/* fanout over the group: a whole value used by this rank's part. */
ts_tensor *ts_tp_share(void *tp, ts_ctx *ctx, ts_tensor *x);
/* This rank's blocks of [tokens, features] -> whole (all-gather). */
ts_tensor *ts_tp_whole(void *tp, ts_ctx *ctx, ts_tensor *x, int features);
/* Softmax over the features: each token's maximum over the process column
 * (MPI_MAX, a constant shift) and its sum of exponentials reduced over it. */
ts_tensor *ts_tp_softmax(void *tp, ts_ctx *ctx, ts_tensor *x);
/* ts_tp_causal_attention that also hands back every token's rotated keys
 * and values of this rank's heads ([tokens, local features], gathered over
 * the process row); q may be NULL (keys and values only). */
ts_tensor *ts_tp_causal_attention_keep(void *tp, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                       ts_tensor *v, int n_heads, const int32_t *positions,
                                       double rope_theta, ts_tensor **keys, ts_tensor **values);
/* ts_context_attention per sequence: this rank's queries (and their own
 * keys k and values v, RoPE at positions inside) attend to the kept keys and
 * values of a context stream of `ahead` more tokens per sequence (aligned at
 * the end) and to themselves; no communication (the context's keys are
 * already every token's). */
ts_tensor *ts_tp_context_attention(void *tp, ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                   ts_tensor *keys, ts_tensor *values, int n_heads,
                                   const int32_t *positions, double rope_theta);
/* x w^T for a weight of one output [1, F] (whole): the features' partial
 * dots reduced over the process column, [local tokens, 1], the same on every
 * process row. */
ts_tensor *ts_tp_feature_dot(void *tp, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);
/* The sum over every token of per-token values [local tokens, k]: [1], the
 * same on every rank of a process row (and of the group if x is held alike
 * on every process row). */
ts_tensor *ts_tp_sum_tokens(void *tp, ts_ctx *ctx, ts_tensor *x);

/* Installs the layer ops as model's activation hook with *tp as state:
 * false with a message if model's architecture does not route its
 * activations through the hook or its shapes do not fit the grid (a head
 * split over process rows, a side with no block for some process). */
bool ts_tensor_activations_attach(ts_model *model, ts_tensor_parallel *tp, char *err,
                                  size_t errlen);

#endif
