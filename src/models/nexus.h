/* Nexus: higher-order attention (../shared/specs/nexus.md, docs/nexus.md).
 * The Transformer++ backbone with its attention core replaced: the queries
 * and keys of the outer attention are themselves outputs of m - 1 nested
 * causal attentions over the same sequence. Order 1 is Transformer++.
 *
 * Variants (nexus.variant):
 *   shared      the spec's reading and the default: Q_{j+1} = H_j W_Q,
 *               K_{j+1} = H_j W_K with H_j = softmax(Q_j K_j^T / sqrt(dh)) V;
 *               every level reuses the block's W_Q, W_K, W_V (no extra
 *               parameters: the table equals Transformer++'s).
 *   unshared    the same with W_Q, W_K of their own at every level j >= 2
 *               ("Nexus-QK"); level j beyond the trained order reuses the
 *               projections of the deepest trained level.
 *   selfrefine  Q_{j+1} = softmax(Q_j Q_j^T / sqrt(dh)) Q_j, K likewise
 *               (no extra parameters).
 * Every score matrix is causal and every Q and K is rotated by RoPE where
 * it meets a score; the values aggregated are unrotated. */
#ifndef TS_NEXUS_H
#define TS_NEXUS_H

#include <stdbool.h>
#include <stddef.h>

#include "models/model.h"
#include "models/transformer_block.h"

/* Orders above this are rejected as configuration mistakes: each level adds
 * a full attention core per layer. */
#define NEXUS_MAX_ORDER 16

/* Validates config->nexus, fills the table (Transformer++'s, then the
 * unshared variant's per-level projections) and the ops. */
bool nexus_model_setup(ts_model *model, char *err, size_t errlen);

/* The order a batch in `mode` runs at: nexus.order in training, and
 * nexus.infer_order (when non-zero) in evaluation. Returns 0 and a message
 * in err when the inference order is out of range. */
int nexus_order_for_mode(const ts_nexus_config *config, ts_mode mode, char *err, size_t errlen);

/* What nexus_attention needs besides the block: the model (whose table holds
 * the unshared projections) and the order to run. */
typedef struct nexus_attention_user {
    const ts_model *model;
    int order;
} nexus_attention_user;

/* A tpp_attention_fn: in->attention_user must point to a nexus_attention_user.
 * Orders above 1 need q_in == kv_in (self-attention). */
ts_tensor *nexus_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                           ts_tensor *kv_in, const tpp_attention_input *in);

/* Logits [B, T, V] of input ids [B * T] at the given order, causal. */
ts_tensor *nexus_logits(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch, int seq,
                        int order);

#endif
