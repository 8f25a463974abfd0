#include "models/transformer_block.h"

#include <math.h>

ts_tensor *tpp_linear(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x, ts_tensor *w) {
    return ts_linear(ctx, p->linear, x, w);
}

/* [B, T, D] -> [B, H, T, dh], with RoPE applied when positions are given. */
ts_tensor *tpp_split_heads(ts_ctx *ctx, ts_tensor *x, int n_heads, const int32_t *positions,
                           double theta) {
    int b = x->shape[0], t = x->shape[1], d = x->shape[2];
    ts_tensor *heads = ts_reshape(ctx, x, TS_SHAPE(b, t, n_heads, d / n_heads));
    if (positions) heads = ts_rope(ctx, heads, positions, theta);
    return ts_permute(ctx, heads, (const int[]){0, 2, 1, 3});
}

ts_tensor *tpp_merge_heads(ts_ctx *ctx, ts_tensor *x) {
    int b = x->shape[0], h = x->shape[1], t = x->shape[2], dh = x->shape[3];
    ts_tensor *merged = ts_permute(ctx, x, (const int[]){0, 2, 1, 3});
    return ts_reshape(ctx, merged, TS_SHAPE(b, t, h * dh));
}

ts_tensor *tpp_attend(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                      const tpp_attention_input *in, double scale) {
    if (in->causal) return ts_causal_attention(ctx, q, k, v, scale);
    if (!in->mask) return ts_full_attention(ctx, q, k, v, scale);
    return ts_attention(ctx, q, k, v, in->mask, scale);
}

/* Distributed activations: the hook's attention on this rank's parts of
 * q, k and v (causal only; RoPE inside). */
static ts_tensor *distributed_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                        ts_tensor *kv_in, const tpp_attention_input *in) {
    if (!in->causal)
        ts_fail(ctx, "attention", "distributed activations support causal attention only");
    ts_tensor *q = tpp_linear(ctx, p, q_in, p->wq), *k = tpp_linear(ctx, p, kv_in, p->wk);
    ts_tensor *v = tpp_linear(ctx, p, kv_in, p->wv);
    const ts_activation_hook *h = p->activations;
    ts_tensor *a =
        h->causal_attention(h->user, ctx, q, k, v, in->n_heads, in->positions, in->rope_theta);
    return a;
}

/* Weights w[0..n) as one stacked [sum of rows, D] weight, for one GEMM in
 * place of n: where they lie one after another in memory (the model's flat
 * buffer registers them so) and the linear layers run locally on whole
 * activations (ts_adjacent_rows: no copy, gradients into the same places).
 * NULL otherwise (a linear hook, e.g. tensor parallelism; distributed
 * activations; parameters elsewhere): the caller runs the n products. */
static ts_tensor *stacked_weight(ts_ctx *ctx, const tpp_block_params *p, int n,
                                 ts_tensor *const *w) {
    bool local = (!p->linear || !p->linear->apply) && !ts_activations_distributed(p->activations);
    return local && ts_rows_adjacent(ctx, n, w) ? ts_adjacent_rows(ctx, n, w) : NULL;
}

ts_tensor *tpp_linear_side_by_side(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x, int n,
                                   ts_tensor *const *w) {
    ts_tensor *stacked = stacked_weight(ctx, p, n, w);
    if (stacked) return ts_matmul(ctx, x, stacked, false, true);
    ts_tensor *parts[TS_NODE_MAX_INPUTS];
    if (n > TS_NODE_MAX_INPUTS) ts_fail(ctx, "linear", "%d products side by side", n);
    for (int i = 0; i < n; i++) parts[i] = tpp_linear(ctx, p, x, w[i]);
    return ts_concat(ctx, n, parts, 2);
}

ts_tensor *tpp_qkv_projection(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                              ts_tensor *kv_in) {
    ts_tensor *w[3] = {p->wq, p->wk, p->wv};
    if (q_in == kv_in) return tpp_linear_side_by_side(ctx, p, q_in, 3, w);
    ts_tensor *parts[3] = {tpp_linear(ctx, p, q_in, p->wq), tpp_linear(ctx, p, kv_in, p->wk),
                           tpp_linear(ctx, p, kv_in, p->wv)};
    return ts_concat(ctx, 3, parts, 2);
}

ts_tensor *tpp_causal_attention_packed(ts_ctx *ctx, ts_tensor *qkv, const tpp_attention_input *in) {
    int dh = qkv->shape[2] / 3 / in->n_heads;
    return ts_causal_attention_packed(ctx, qkv, in->n_heads, in->positions, in->rope_theta,
                                      1.0 / sqrt((double)dh));
}

/* Causal attention on the token-major layout: q, k, v side by side
 * ([B, T, 3 D]); the attention reads the heads where they lie, applies RoPE
 * to q and k itself and writes [B, T, D]: no head permutes, no RoPE pass. */
static ts_tensor *causal_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                   ts_tensor *kv_in, const tpp_attention_input *in) {
    return tpp_causal_attention_packed(ctx, tpp_qkv_projection(ctx, p, q_in, kv_in), in);
}

ts_tensor *tpp_multihead_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                   ts_tensor *kv_in, const tpp_attention_input *in) {
    if (ts_activations_distributed(p->activations))
        return distributed_attention(ctx, p, q_in, kv_in, in);
    int d = q_in->shape[2];
    if (d % in->n_heads)
        ts_fail(ctx, "attention", "width %d is not a multiple of %d heads", d, in->n_heads);
    if (in->causal) return causal_attention(ctx, p, q_in, kv_in, in);
    return tpp_attention_of_queries(ctx, p, tpp_linear(ctx, p, q_in, p->wq), kv_in, in);
}

ts_tensor *tpp_attention_of_queries(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q,
                                    ts_tensor *kv_in, const tpp_attention_input *in) {
    int d = q->shape[2];
    ts_tensor *kv = tpp_linear_side_by_side(ctx, p, kv_in, 2, (ts_tensor *[]){p->wk, p->wv});
    ts_tensor *k = ts_packed_heads(ctx, kv, 0, 2, in->n_heads, in->positions, in->rope_theta);
    ts_tensor *v = ts_packed_heads(ctx, kv, 1, 2, in->n_heads, NULL, 0);
    ts_tensor *heads = tpp_split_heads(ctx, q, in->n_heads, in->positions, in->rope_theta);
    ts_tensor *a = tpp_attend(ctx, heads, k, v, in, 1.0 / sqrt((double)(d / in->n_heads)));
    return tpp_merge_heads(ctx, a);
}

/* With a stacked [w1; w3] weight, gate and up are one GEMM and
 * ts_swiglu_packed reads its two halves in place; otherwise the two
 * products. */
ts_tensor *tpp_swiglu(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *h) {
    ts_tensor *w[2] = {p->w1, p->w3};
    ts_tensor *stacked = stacked_weight(ctx, p, 2, w);
    if (stacked) {
        return ts_swiglu_packed(ctx, ts_matmul(ctx, h, stacked, false, true));
    }
    ts_tensor *gate = tpp_linear(ctx, p, h, p->w1);
    return ts_swiglu(ctx, gate, tpp_linear(ctx, p, h, p->w3));
}

ts_tensor *tpp_block_forward(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x,
                             const tpp_attention_input *in) {
    x = ts_unit_boundary(ctx, x, p->unit, true);
    ts_tensor *q_in = ts_act_rmsnorm(ctx, p->activations, x, p->attn_norm, in->norm_eps);
    ts_tensor *kv_in = in->kv_source ? ts_act_rmsnorm(ctx, p->activations, in->kv_source,
                                                      p->attn_norm, in->norm_eps)
                                     : q_in;
    tpp_attention_fn attention = in->attention ? in->attention : tpp_multihead_attention;
    /* each sublayer's output projection adds into the residual stream */
    ts_tensor *h = ts_linear_residual(ctx, p->linear, x, attention(ctx, p, q_in, kv_in, in), p->wo);
    ts_tensor *u = ts_act_rmsnorm(ctx, p->activations, h, p->mlp_norm, in->norm_eps);
    ts_tensor *y = ts_linear_residual(ctx, p->linear, h, tpp_swiglu(ctx, p, u), p->w2);
    return ts_unit_boundary(ctx, y, p->unit, false);
}
