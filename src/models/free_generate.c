/* Autoregressive sampling from the Free Transformer. Every new token re-runs
 * the forward pass on the growing prefix: there is no KV cache, which is
 * fine at the sizes the letter task uses and keeps one code path for
 * training, evaluation and generation. The latent of every position is
 * given by the caller (drawn from the uniform prior); the encoder runs only
 * for an optional prompt prefill. */
#include <math.h>
#include <string.h>

#include "models/free_transformer.h"

/* A draw from softmax(logits) at temperature 1. */
static int32_t sample_token(const ts_real *logits, int v, ts_rng *rng) {
    double max = logits[0], sum = 0;
    for (int j = 1; j < v; j++) max = logits[j] > max ? logits[j] : max;
    for (int j = 0; j < v; j++) sum += exp(logits[j] - max);
    double u = ts_rng_uniform(rng) * sum, acc = 0;
    for (int j = 0; j < v; j++) {
        acc += exp(logits[j] - max);
        if (u < acc) return j;
    }
    return v - 1; /* u within rounding of the total */
}

void free_generate(ts_model *model, ts_ctx *ctx, const free_generate_request *rq, int32_t *out) {
    const ts_model_config *c = &model->config;
    int n = rq->n_seqs, len = rq->length, plen = rq->prompt_len, bits = c->free.latent_bits;
    if (n < 1 || plen < 1 || len < plen || len > c->context)
        ts_fail(ctx, "free_generate",
                "need n_seqs >= 1 and 1 <= prompt (%d) <= length (%d) <= context (%d), n_seqs %d",
                plen, len, c->context, n);
    if (rq->prompt_from_encoder && !rq->prompt_uniforms)
        ts_fail(ctx, "free_generate", "prompt prefill through the encoder needs prompt_uniforms");
    bool recording = ts_set_grad_enabled(ctx, false);
    ts_mark mark = ts_get_mark(ctx);
    for (int s = 0; s < n; s++)
        memcpy(out + (long)s * len, rq->prompt + (long)s * plen, (size_t)plen * sizeof *out);
    if (rq->prompt_from_encoder) {
        /* Prefill: the prompt's latents come from the encoder's posterior. */
        ts_tensor *x = free_first_half(model, ctx, rq->prompt, n, plen);
        free_latent prompt_latent =
            free_binary_mapper(ctx, free_encoder_logits(model, ctx, x), rq->prompt_uniforms, NULL);
        for (int s = 0; s < n; s++)
            memcpy(rq->states + (long)s * len, prompt_latent.states + (long)s * plen,
                   (size_t)plen * sizeof *rq->states);
        ts_release(ctx, mark);
    }
    int32_t *prefix = ts_alloc(ctx, (size_t)n * len * sizeof *prefix);
    int32_t *prefix_states = ts_alloc(ctx, (size_t)n * len * sizeof *prefix_states);
    for (int t = plen; t < len; t++) {
        ts_mark step = ts_get_mark(ctx);
        for (int s = 0; s < n; s++) {
            memcpy(prefix + (long)s * t, out + (long)s * len, (size_t)t * sizeof *prefix);
            memcpy(prefix_states + (long)s * t, rq->states + (long)s * len,
                   (size_t)t * sizeof *prefix_states);
        }
        ts_tensor *x = free_first_half(model, ctx, prefix, n, t);
        ts_tensor *z = free_one_hot_states(ctx, prefix_states, (long)n * t, bits);
        ts_tensor *logits = free_second_half(model, ctx, x, z);
        int v = logits->shape[2];
        for (int s = 0; s < n; s++)
            out[(long)s * len + t] =
                sample_token(logits->data + ((long)s * t + t - 1) * v, v, &rq->token_rngs[s]);
        ts_release(ctx, step);
    }
    ts_release(ctx, mark);
    ts_set_grad_enabled(ctx, recording);
}
