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
    void *user;
} ts_activation_hook;

/* Whether hook is installed (non-NULL with functions). */
bool ts_activations_distributed(const ts_activation_hook *hook);

/* The ops through hook, or the engine's on whole tensors. embed returns
 * [batch, seq, D] whole without the hook. */
ts_tensor *ts_act_embed(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *table,
                        const int32_t *ids, int batch, int seq);
ts_tensor *ts_act_rmsnorm(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *x,
                          ts_tensor *weight, double eps);
ts_tensor *ts_act_cross_entropy(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *logits,
                                const int32_t *targets, int32_t ignore_index);

#endif
