#include "models/activation_hook.h"

bool ts_activations_distributed(const ts_activation_hook *hook) {
    return hook && hook->rmsnorm;
}

const ts_activation_hook *ts_act_begin_step(const ts_activation_hook *hook, long tokens, int width,
                                            bool whole) {
    if (!ts_activations_distributed(hook) || !hook->begin_step) return NULL;
    return hook->begin_step(hook->user, tokens, width, whole) ? hook : NULL;
}

ts_tensor *ts_act_embed(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *table,
                        const int32_t *ids, int batch, int seq) {
    if (ts_activations_distributed(hook))
        return hook->embed(hook->user, ctx, table, ids, batch, seq);
    ts_tensor *x = ts_embedding(ctx, table, ids, (long)batch * seq);
    return ts_reshape(ctx, x, TS_SHAPE(batch, seq, table->shape[1]));
}

ts_tensor *ts_act_rmsnorm(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *x,
                          ts_tensor *weight, double eps) {
    if (ts_activations_distributed(hook)) return hook->rmsnorm(hook->user, ctx, x, weight, eps);
    return ts_rmsnorm(ctx, x, weight, eps);
}

ts_tensor *ts_act_cross_entropy(ts_ctx *ctx, const ts_activation_hook *hook, ts_tensor *logits,
                                const int32_t *targets, int32_t ignore_index) {
    if (ts_activations_distributed(hook))
        return hook->cross_entropy(hook->user, ctx, logits, targets, ignore_index);
    return ts_cross_entropy(ctx, logits, targets, ignore_index);
}
