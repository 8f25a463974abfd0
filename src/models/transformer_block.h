/* The Transformer++ block of ../shared/specs/transformerpp.md, shared by every
 * architecture in the suite:
 *     h = x + Attn(RMSNorm(x))         causal multi-head attention, RoPE on q and k
 *     y = h + W2(silu(W1 u) * W3 u)    u = RMSNorm(h)
 * Linear weights are stored [out, in] (y = x W^T), as PyTorch stores them, so
 * checkpoints compare directly with reference implementations. No biases. */
#ifndef TS_TRANSFORMER_BLOCK_H
#define TS_TRANSFORMER_BLOCK_H

#include "engine/engine.h"

typedef struct tpp_block_params {
    ts_tensor *attn_norm;          /* [D] */
    ts_tensor *wq, *wk, *wv, *wo;  /* [D, D] */
    ts_tensor *mlp_norm;           /* [D] */
    ts_tensor *w1, *w3;            /* [F, D] */
    ts_tensor *w2;                 /* [D, F] */
} tpp_block_params;

typedef struct tpp_attention_input {
    const ts_tensor *mask;     /* additive [T, T] */
    const int32_t *positions;  /* RoPE position of each of the T rows */
    double rope_theta;
    int n_heads;
    double norm_eps;
} tpp_attention_input;

/* x: [B, T, D] -> [B, T, D] */
ts_tensor *tpp_block_forward(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x,
                             const tpp_attention_input *in);

/* Multi-head causal self-attention sublayer (without the residual) of normalised input h. */
ts_tensor *tpp_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *h,
                         const tpp_attention_input *in);

/* SwiGLU feed-forward sublayer (without the residual) of normalised input h. */
ts_tensor *tpp_swiglu(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *h);

#endif
