/* How a model computes the ops between its linear layers when activations
 * are distributed over a process grid (parallel.tensor_activations =
 * distributed, parallel/tensor_activation_ops.h). By default (a hook without
 * functions) activations are whole tensors on this rank and the engine's ops
 * run: ts_embedding, ts_rmsnorm, ts_causal_attention, ts_cross_entropy.
 * Installed, every activation between the embedding and the loss is this
 * rank's part of a 2-D [tokens, features] matrix, whose layout only the hook
 * knows (it lives in a higher layer); the linear layers then go through
 * models/linear.h's hook, installed alongside, in the same layout. The hook
 * may run a step whole after all (its embedding then returns [batch, seq,
 * D] and every op takes whole tensors, as without the hook): model code
 * handles both by never reading the activations' shapes between the
 * embedding and the loss. */
#ifndef TS_ACTIVATION_HOOK_H
#define TS_ACTIVATION_HOOK_H

#include "engine/engine.h"

typedef struct ts_activation_hook {
    /* Rows of table [V, D] at ids (batch sequences of seq tokens) -> this
     * rank's part of the [batch * seq, D] activations. */
    ts_tensor *(*embed)(void *user, ts_ctx *ctx, ts_tensor *table, const int32_t *ids, int batch,
                        int seq);
    /* x * rsqrt(mean(x^2 over the features) + eps) * weight (weight [D], whole). */
    ts_tensor *(*rmsnorm)(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps);
    /* Causal multi-head attention within each sequence of q, k, v (this
     * rank's parts of [tokens, D]), scores scaled by 1/sqrt(D / n_heads),
     * RoPE of positions[t] (t < seq) applied to q and k first; the result in
     * q's layout. */
    ts_tensor *(*causal_attention)(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                   ts_tensor *v, int n_heads, const int32_t *positions,
                                   double rope_theta);
    /* Mean over tokens whose target is not ignore_index of -log
     * softmax(logits)[target]; targets one per token (all of them, whole).
     * Returns shape [1], the same on every rank of the group. */
    ts_tensor *(*cross_entropy)(void *user, ts_ctx *ctx, ts_tensor *logits, const int32_t *targets,
                                int32_t ignore_index);

    /* EBT's energy (models/ebt_energy.c) runs two streams of different
     * lengths and a prediction over the vocabulary; these ops serve it.
     * Starts a step whose streams have at least `tokens` tokens of width
     * features; false if it runs whole (whole requested, or too few tokens),
     * and then the model uses the engine's ops and none of these. */
    bool (*begin_step)(void *user, long tokens, int width, bool whole);
    /* Whole x [batch, seq, F] -> this rank's part of [batch * seq, F]; the
     * ops that follow work on streams of batch sequences of seq tokens. */
    ts_tensor *(*to_local)(void *user, ts_ctx *ctx, ts_tensor *x);
    /* The ops that follow work on streams of batch sequences of seq tokens. */
    void (*stream)(void *user, int batch, int seq);
    /* A constant per token, whole [tokens, k] -> this rank's part. */
    ts_tensor *(*token_values)(void *user, ts_ctx *ctx, ts_tensor *x);
    /* A whole value (a parameter) used with this rank's part. */
    ts_tensor *(*share)(void *user, ts_ctx *ctx, ts_tensor *x);
    /* This rank's part of [tokens, features] -> whole [tokens, features]. */
    ts_tensor *(*whole)(void *user, ts_ctx *ctx, ts_tensor *x, int features);
    /* Softmax over the features. */
    ts_tensor *(*softmax)(void *user, ts_ctx *ctx, ts_tensor *x);
    /* causal_attention that also returns the stream's keys (RoPE applied)
     * and values, in the form context_attention takes; q may be NULL (keys
     * and values only, the result NULL). */
    ts_tensor *(*causal_attention_keep)(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                        ts_tensor *v, int n_heads, const int32_t *positions,
                                        double rope_theta, ts_tensor **keys, ts_tensor **values);
    /* ts_context_attention per sequence: q and its own k, v (RoPE of
     * positions applied to q and k inside) against kept keys and values of a
     * longer stream, aligned at the end; the result in q's layout. */
    ts_tensor *(*context_attention)(void *user, ts_ctx *ctx, ts_tensor *q, ts_tensor *k,
                                    ts_tensor *v, ts_tensor *keys, ts_tensor *values, int n_heads,
                                    const int32_t *positions, double rope_theta);
    /* x w^T for w [1, features] (whole): one value per token. */
    ts_tensor *(*feature_dot)(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);
    /* The sum of per-token values over all tokens: [1], the same on every
     * rank. */
    ts_tensor *(*sum_tokens)(void *user, ts_ctx *ctx, ts_tensor *x);
    void *user;
} ts_activation_hook;

/* Whether hook is installed (non-NULL with functions). */
bool ts_activations_distributed(const ts_activation_hook *hook);

/* Starts a step of at least `tokens` tokens per stream (EBT): hook if its
 * activations are distributed this step, else NULL (whole: engine ops). */
const ts_activation_hook *ts_act_begin_step(const ts_activation_hook *hook, long tokens, int width,
                                            bool whole);

/* The ops through hook, or the engine's on whole tensors. embed returns
 * [batch, seq, D] whole without the hook. */
ts_tensor *ts_act_embed(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *table,
                        const int32_t *ids, int batch, int seq);
ts_tensor *ts_act_rmsnorm(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *x,
                          ts_tensor *weight, double eps);
ts_tensor *ts_act_cross_entropy(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *logits,
                                const int32_t *targets, int32_t ignore_index);

#endif
