/* The Free Transformer's latent: the H-bit binary mapper with its full
 * 2^H-way gradient pass-through, and the KL to the uniform prior with free
 * bits. Everything differentiable is written with engine ops, so gradients
 * of any order come from the ops' own rules. */
#include <math.h>
#include <string.h>

#include "models/free_transformer.h"

static int latent_bits_of(ts_ctx *ctx, const char *op, const ts_tensor *logits) {
    if (logits->ndim != 2 || logits->shape[1] < 1 || logits->shape[1] > 30) {
        char s[64];
        ts_fail(ctx, op, "logits must be [N, H] with 1 <= H <= 30, got %s",
                ts_shape_str(logits, s, sizeof s));
    }
    return logits->shape[1];
}

ts_tensor *free_state_probabilities(ts_ctx *ctx, ts_tensor *logits) {
    int n = logits->shape[0], bits = latent_bits_of(ctx, "free_state_probabilities", logits);
    /* [N, H, 2]: P(bit h = 0), P(bit h = 1). sigmoid(-o) rather than
     * 1 - sigmoid(o) keeps the small probability accurate on both tails. */
    ts_tensor *p1 = ts_reshape(ctx, ts_sigmoid(ctx, logits), TS_SHAPE(n, bits, 1));
    ts_tensor *p0 =
        ts_reshape(ctx, ts_sigmoid(ctx, ts_scale(ctx, logits, -1)), TS_SHAPE(n, bits, 1));
    ts_tensor *per_bit = ts_concat(ctx, 2, (ts_tensor *[]){p0, p1}, 2);
    /* Kronecker products bit by bit: after bit k, column d of [N, 2^(k+1)]
     * is d's probability over bits 0..k, bit k being the outer index. That
     * costs ~2^(H+1) products per row instead of H * 2^H. */
    ts_tensor *g = ts_reshape(ctx, ts_slice(ctx, per_bit, 1, 0, 1), TS_SHAPE(n, 2));
    for (int k = 1; k < bits; k++) {
        int width = 1 << k;
        ts_tensor *bit = ts_reshape(ctx, ts_slice(ctx, per_bit, 1, k, 1), TS_SHAPE(n, 2, 1));
        ts_tensor *lower = ts_reshape(ctx, g, TS_SHAPE(n, 1, width));
        g = ts_reshape(ctx, ts_mul(ctx, bit, lower), TS_SHAPE(n, 2 * width));
    }
    return g;
}

free_latent free_binary_mapper(ts_ctx *ctx, ts_tensor *logits, const ts_real *uniforms,
                               const free_frozen_latent *replay) {
    int n = logits->shape[0], bits = latent_bits_of(ctx, "free_binary_mapper", logits);
    int states = 1 << bits;
    free_latent out = {.states = ts_alloc(ctx, (size_t)n * sizeof(int32_t))};
    if (replay) {
        memcpy(out.states, replay->states, (size_t)n * sizeof(int32_t));
    } else if (ts_is_counting(ctx)) { /* no logits to sample from; any state costs the same */
        memset(out.states, 0, (size_t)n * sizeof(int32_t));
    } else {
        if (!uniforms) ts_fail(ctx, "free_binary_mapper", "no uniforms to sample the bits with");
        for (int r = 0; r < n; r++) {
            int32_t state = 0;
            for (int h = 0; h < bits; h++) {
                double o = logits->data[(long)r * bits + h];
                double p = o >= 0 ? 1 / (1 + exp(-o)) : exp(o) / (1 + exp(o));
                if (uniforms[(long)r * bits + h] < p) state |= (int32_t)1 << h;
            }
            out.states[r] = state;
        }
    }
    out.g = free_state_probabilities(ctx, logits);
    ts_tensor *y = ts_one_hot(ctx, out.states, n, states);
    ts_tensor *g_value = ts_detach(ctx, out.g);
    if (replay) g_value = ts_from_array(ctx, TS_SHAPE(n, states), replay->g);
    /* Forward: exactly Y (G - G is 0 in floating point). Backward: G's gradient. */
    out.z = ts_add(ctx, y, ts_sub(ctx, out.g, g_value));
    return out;
}

ts_tensor *free_kl_per_token(ts_ctx *ctx, ts_tensor *logits) {
    int bits = latent_bits_of(ctx, "free_kl_per_token", logits);
    /* The entropy of a bit, with a = |o|, is log(1 + e^-a) + a sigmoid(-a):
     * e^-a <= 1 cannot overflow, unlike log(1 + e^o) or log(sigmoid(o)) for
     * large logits. |o| = o * sign(o), the sign a constant: the kink at 0 has
     * entropy's zero slope on both sides, so the gradient is exact. */
    ts_tensor *sign = ts_new_like(ctx, logits);
    for (long i = 0; i < (ts_is_counting(ctx) ? 0 : logits->numel); i++)
        sign->data[i] = logits->data[i] < 0 ? -1 : 1;
    ts_tensor *a = ts_mul(ctx, logits, sign);
    ts_tensor *softplus_neg = ts_log(ctx, ts_add_scalar(ctx, ts_exp(ctx, ts_scale(ctx, a, -1)), 1));
    ts_tensor *entropy =
        ts_add(ctx, softplus_neg, ts_mul(ctx, a, ts_sigmoid(ctx, ts_scale(ctx, a, -1))));
    ts_tensor *total = ts_sum(ctx, entropy, 1, false);
    return ts_add_scalar(ctx, ts_scale(ctx, total, -1), bits * log(2.0));
}

ts_tensor *free_bits_penalty(ts_ctx *ctx, ts_tensor *kl, double kappa) {
    if (kl->ndim != 1) {
        char s[64];
        ts_fail(ctx, "free_bits_penalty", "kl must be [N], got %s", ts_shape_str(kl, s, sizeof s));
    }
    /* max(0, x) = x * [x > 0] with the indicator a constant: the same value
     * and the same (sub)gradient, from ops the engine has. */
    ts_tensor *excess = ts_add_scalar(ctx, kl, -kappa);
    ts_tensor *active = ts_new_like(ctx, kl);
    for (long i = 0; i < (ts_is_counting(ctx) ? 0 : kl->numel); i++)
        active->data[i] = excess->data[i] > 0 ? 1 : 0;
    return ts_mean_all(ctx, ts_mul(ctx, excess, active));
}

ts_tensor *free_one_hot_states(ts_ctx *ctx, const int32_t *states, long n, int bits) {
    return ts_one_hot(ctx, states, n, 1 << bits);
}
