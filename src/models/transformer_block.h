/* The Transformer++ block of ../shared/specs/transformerpp.md, shared by every
 * architecture in the suite:
 *     h = x + Attn(RMSNorm(x))         causal multi-head attention, RoPE on q and k
 *     y = h + W2(silu(W1 u) * W3 u)    u = RMSNorm(h)
 * Linear weights are stored [out, in] (y = x W^T), as PyTorch stores them, so
 * checkpoints compare directly with reference implementations. No biases. */
#ifndef TS_TRANSFORMER_BLOCK_H
#define TS_TRANSFORMER_BLOCK_H

#include "engine/engine.h"
#include "models/activation_hook.h"
#include "models/linear.h"

typedef struct tpp_block_params {
    ts_tensor *attn_norm;                  /* [D] */
    ts_tensor *wq, *wk, *wv, *wo;          /* [D, D] */
    ts_tensor *mlp_norm;                   /* [D] */
    ts_tensor *w1, *w3;                    /* [F, D] */
    ts_tensor *w2;                         /* [D, F] */
    const ts_linear_hook *linear;          /* how the linear layers run (NULL: locally) */
    const ts_activation_hook *activations; /* the ops between them (NULL: whole, locally) */
    int unit;                              /* the parameter unit of its leaves, marked around the
                                            * block (ts_unit_boundary; ts_model_param_unit): layer + 1
                                            * for tpp_block, 0 (unmarked) for any other */
} tpp_block_params;

typedef struct tpp_attention_input tpp_attention_input;

/* The attention sublayer without its output projection and residual: q_in
 * feeds the queries and kv_in the keys and values (both already normalised,
 * [B, T, D]); it returns the heads' mixture [B, T, D], which the block
 * projects by wo into the residual stream (ts_linear_residual). The
 * default is multi-head attention (tpp_multihead_attention); an architecture
 * replaces it through tpp_attention_input.attention (e.g. Nexus). */
typedef ts_tensor *(*tpp_attention_fn)(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                       ts_tensor *kv_in, const tpp_attention_input *in);

struct tpp_attention_input {
    /* Causal self-attention (row i sees keys 0..i): the engine's fused
     * ts_causal_attention, and mask is unused (NULL). Otherwise mask, an
     * additive [T, T] with the composition ts_attention, or NULL (every
     * row sees every key) with the fused ts_full_attention. */
    bool causal;
    const ts_tensor *mask;
    const int32_t *positions; /* RoPE position of each of the T rows */
    double rope_theta;
    int n_heads;
    double norm_eps;
    int layer; /* index of the block being run (set by the caller's loop) */
    /* Optional: the residual stream keys and values are computed from,
     * through the block's attention norm, instead of the block input (the
     * Free Transformer injects its latent this way into one block). */
    ts_tensor *kv_source;
    tpp_attention_fn attention; /* NULL: tpp_multihead_attention */
    void *attention_user;       /* for the replacement's own state */
};

/* x: [B, T, D] -> [B, T, D] */
ts_tensor *tpp_block_forward(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x,
                             const tpp_attention_input *in);

/* Multi-head self-attention under in->mask: queries from q_in, keys and
 * values from kv_in, RoPE on queries and keys; the heads' mixture [B, T, D]
 * before the output projection. */
ts_tensor *tpp_multihead_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                   ts_tensor *kv_in, const tpp_attention_input *in);
/* Its non-causal path from projected queries q [B, T, D] (q_in Wq^T, or a
 * caller's own, e.g. one row broadcast): keys and values from one K|V
 * product of kv_in, read as heads in place (ts_packed_heads, RoPE on the
 * keys); the heads' mixture [B, T, D]. */
ts_tensor *tpp_attention_of_queries(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q,
                                    ts_tensor *kv_in, const tpp_attention_input *in);
/* softmax(q k^T * scale + mask) v over heads [B, H, T, dh], under in->causal
 * or in->mask: every attention of the suite's blocks goes through here. */
ts_tensor *tpp_attend(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                      const tpp_attention_input *in, double scale);
/* [B, T, D] -> [B, H, T, dh], RoPE applied when positions are given. */
ts_tensor *tpp_split_heads(ts_ctx *ctx, ts_tensor *x, int n_heads, const int32_t *positions,
                           double theta);
/* [B, H, T, dh] -> [B, T, D] */
ts_tensor *tpp_merge_heads(ts_ctx *ctx, ts_tensor *x);

/* The block's linear layer x W^T, through p->linear. */
ts_tensor *tpp_linear(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x, ts_tensor *w);
/* The products x w[i]^T of x [B, T, D] side by side, [B, T, sum of w[i]'s
 * rows]: one GEMM over the stacked weight where the w[i] lie one after
 * another in memory and the linear layers run locally; otherwise the n
 * products through p->linear, concatenated. */
ts_tensor *tpp_linear_side_by_side(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x, int n,
                                   ts_tensor *const *w);
/* The Q|K|V projections side by side, [B, T, 3 D]: one GEMM over the
 * stacked weight when there is one and queries and keys come from one
 * input (q_in == kv_in); otherwise the three products, side by side. */
ts_tensor *tpp_qkv_projection(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                              ts_tensor *kv_in);
/* Causal attention of q, k, v side by side in qkv [B, T, 3 D], heads read
 * in place, RoPE (in->positions) applied inside, scale 1 / sqrt(dh):
 * [B, T, D], no head permutes. */
ts_tensor *tpp_causal_attention_packed(ts_ctx *ctx, ts_tensor *qkv, const tpp_attention_input *in);

/* The SwiGLU feed-forward sublayer's hidden layer silu(h W1^T) (h W3^T) of
 * normalised input h, before W2 (which the block applies into the residual
 * stream). */
ts_tensor *tpp_swiglu(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *h);

#endif
