/* Transformer++ (../shared/specs/transformerpp.md): token embedding, L
 * pre-norm blocks, final RMSNorm, untied linear head. */
#ifndef TS_TRANSFORMERPP_H
#define TS_TRANSFORMERPP_H

#include <stdbool.h>
#include <stddef.h>

#include "models/model.h"
#include "models/transformer_block.h"

/* Fills the table and ops of a model whose config is set. */
bool tpp_model_setup(ts_model *model, char *err, size_t errlen);
int tpp_ffn_hidden(const ts_model_config *config);
/* Registers the backbone's parameters (embed, layers.*, final_norm, head). */
bool tpp_add_params(ts_param_table *table, const ts_model_config *config);
/* The bound tensors of block i (after ts_model_bind). */
tpp_block_params tpp_block(const ts_model *model, int i);
/* Blocks, final norm and head over embedded input x [B, T, D] -> logits [B, T, V]. */
ts_tensor *tpp_logits_from_embeddings(ts_model *model, ts_ctx *ctx, ts_tensor *x,
                                      const tpp_attention_input *attention);
/* Splits a batch into input ids and targets (arena copies); a target that
 * batch->target_mask leaves unscored is -1, the ignore index. */
void tpp_split_batch(ts_ctx *ctx, const ts_batch *batch, int32_t **inputs, int32_t **targets);

#endif
