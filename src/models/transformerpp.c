#include "models/transformerpp.h"

#include <math.h>
#include <stdio.h>

int tpp_ffn_hidden(const ts_model_config *config) {
    int hidden = (int)lround(config->ffn_mult * config->width);
    return hidden > 0 ? hidden : 1;
}

/* Names follow the reference's module paths so checkpoints map one to one. */
bool tpp_add_params(ts_param_table *table, const ts_model_config *c) {
    int d = c->width, f = tpp_ffn_hidden(c), v = c->vocab_size;
    bool ok = ts_param_table_add(table, "embed", TS_SHAPE(v, d), TS_ROLE_EMBEDDING) >= 0;
    char name[TS_PARAM_NAME_MAX];
    static const char *const square[] = {"wq", "wk", "wv", "wo"};
    for (int l = 0; ok && l < c->depth; l++) {
        snprintf(name, sizeof name, "layers.%d.attn_norm", l);
        ok &= ts_param_table_add(table, name, TS_SHAPE(d), TS_ROLE_NORM) >= 0;
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "layers.%d.attention.%s", l, square[i]);
            ok &= ts_param_table_add(table, name, TS_SHAPE(d, d), TS_ROLE_MATRIX) >= 0;
        }
        snprintf(name, sizeof name, "layers.%d.mlp_norm", l);
        ok &= ts_param_table_add(table, name, TS_SHAPE(d), TS_ROLE_NORM) >= 0;
        snprintf(name, sizeof name, "layers.%d.mlp.w1", l);
        ok &= ts_param_table_add(table, name, TS_SHAPE(f, d), TS_ROLE_MATRIX) >= 0;
        snprintf(name, sizeof name, "layers.%d.mlp.w3", l);
        ok &= ts_param_table_add(table, name, TS_SHAPE(f, d), TS_ROLE_MATRIX) >= 0;
        snprintf(name, sizeof name, "layers.%d.mlp.w2", l);
        ok &= ts_param_table_add(table, name, TS_SHAPE(d, f), TS_ROLE_MATRIX) >= 0;
    }
    ok &= ts_param_table_add(table, "final_norm", TS_SHAPE(d), TS_ROLE_NORM) >= 0;
    ok &= ts_param_table_add(table, "head", TS_SHAPE(v, d), TS_ROLE_VOCAB_MATRIX) >= 0;
    return ok;
}

tpp_block_params tpp_block(const ts_model *model, int i) {
    char name[TS_PARAM_NAME_MAX];
#define BLOCK_PARAM(FMT) (snprintf(name, sizeof name, FMT, i), ts_model_param(model, name))
    tpp_block_params p = {
        .attn_norm = BLOCK_PARAM("layers.%d.attn_norm"),
        .wq = BLOCK_PARAM("layers.%d.attention.wq"),
        .wk = BLOCK_PARAM("layers.%d.attention.wk"),
        .wv = BLOCK_PARAM("layers.%d.attention.wv"),
        .wo = BLOCK_PARAM("layers.%d.attention.wo"),
        .mlp_norm = BLOCK_PARAM("layers.%d.mlp_norm"),
        .w1 = BLOCK_PARAM("layers.%d.mlp.w1"),
        .w3 = BLOCK_PARAM("layers.%d.mlp.w3"),
        .w2 = BLOCK_PARAM("layers.%d.mlp.w2"),
        .linear = &model->linear,
        .activations = &model->activations,
        .unit = i + 1,
    };
#undef BLOCK_PARAM
    return p;
}

ts_tensor *tpp_logits_from_embeddings(ts_model *model, ts_ctx *ctx, ts_tensor *x,
                                      const tpp_attention_input *attention) {
    tpp_attention_input in = *attention;
    for (int l = 0; l < model->config.depth; l++) {
        tpp_block_params block = tpp_block(model, l);
        in.layer = l;
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    x = ts_act_rmsnorm(ctx, &model->activations, x, ts_model_param(model, "final_norm"),
                       model->config.norm_eps);
    return ts_linear(ctx, &model->linear, x, ts_model_param(model, "head"));
}

void tpp_split_batch(ts_ctx *ctx, const ts_batch *batch, int32_t **inputs, int32_t **targets) {
    long n = (long)batch->batch * batch->seq;
    *inputs = ts_alloc(ctx, (size_t)n * sizeof **inputs);
    *targets = ts_alloc(ctx, (size_t)n * sizeof **targets);
    for (int b = 0; b < batch->batch; b++)
        for (int t = 0; t < batch->seq; t++) {
            const int32_t *row = batch->tokens + (long)b * (batch->seq + 1);
            (*inputs)[(long)b * batch->seq + t] = row[t];
            const uint8_t *scored =
                batch->target_mask ? batch->target_mask + (long)b * (batch->seq + 1) : NULL;
            (*targets)[(long)b * batch->seq + t] = !scored || scored[t + 1] ? row[t + 1] : -1;
        }
}

static ts_tensor *tpp_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats) {
    (void)stats;
    const ts_model_config *c = &model->config;
    if (batch->seq > c->context)
        ts_fail(ctx, "transformerpp", "sequence of %d tokens exceeds the context of %d", batch->seq,
                c->context);
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, batch, &inputs, &targets);
    int32_t *positions = ts_alloc(ctx, (size_t)batch->seq * sizeof *positions);
    for (int t = 0; t < batch->seq; t++) positions[t] = t;
    tpp_attention_input attention = {.causal = true,
                                     .positions = positions,
                                     .rope_theta = c->rope_theta,
                                     .n_heads = c->heads,
                                     .norm_eps = c->norm_eps};
    ts_tensor *x = ts_act_embed(ctx, &model->activations, ts_model_param(model, "embed"), inputs,
                                batch->batch, batch->seq);
    ts_tensor *logits = tpp_logits_from_embeddings(model, ctx, x, &attention);
    return ts_act_cross_entropy(ctx, &model->activations, logits, targets, -1);
}

static const ts_model_ops tpp_ops = {
    .loss = tpp_loss, .destroy = NULL, .distributable_activations = true};

bool tpp_model_setup(ts_model *model, char *err, size_t errlen) {
    model->ops = &tpp_ops;
    if (!tpp_add_params(&model->table, &model->config)) {
        snprintf(err, errlen, "out of memory building the Transformer++ parameter table");
        return false;
    }
    return true;
}
