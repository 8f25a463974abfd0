/* The energy function of the EBT: the doubled sequence of the spec, computed
 * as two streams that share every weight.
 *
 * Observed stream: [t_k; x_0..x_{L-1}] at RoPE positions 0..L, ordinary causal
 * attention. It never attends to predictions, so it depends only on the
 * tokens and the landscape k: it runs once per landscape and keeps each
 * layer's keys and values (the last layer needs nothing else).
 * Prediction stream: e_1..e_L at positions 2..L+1. Row r attends to the
 * observed keys 0..r+1 (t_k, x_0..x_r) and to its own key, never to another
 * prediction, so E.sum() gives every position its own gradient. The scores
 * are [L, L+1] against the cached keys plus one self score per row, about
 * the cost of a Transformer++ layer, instead of [2L+1, 2L+1] for the naive
 * masked doubled sequence. */
#include <math.h>

#include "models/ebt_internal.h"
#include "models/transformerpp.h"

typedef struct ebt_observed {
    ts_tensor **keys;   /* per layer [B, H, L+1, dh], RoPE applied (or the hook's form) */
    ts_tensor **values; /* per layer [B, H, L+1, dh] */
    bool ready;
    const ts_activation_hook *act; /* distributed activations, or NULL */
} ebt_observed;

struct ebt_context {
    ts_model *model;
    int batch, seq;
    ts_tensor *embedded;     /* [B, L, D] token embeddings */
    int32_t *positions_obs;  /* 0..L */
    int32_t *positions_pred; /* 2..L+1 */
    int n_landscapes;
    ebt_observed *observed;        /* one per landscape */
    const ts_activation_hook *act; /* distributed activations, or NULL */
};

int ebt_landscapes(const ts_model_config *c) {
    return c->ebt.landscapes > 0 ? c->ebt.landscapes : c->ebt.steps;
}

int ebt_landscape_of_step(const ts_model_config *c, int step) {
    int n = ebt_landscapes(c);
    return step < n ? step : n - 1;
}

ebt_context *ebt_context_new(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch,
                             int seq) {
    return ebt_context_new_on(model, ctx, inputs, batch, seq, false);
}

const ts_activation_hook *ebt_context_activations(const ebt_context *context) {
    return context->act;
}

ebt_context *ebt_context_new_on(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch,
                                int seq, bool distribute) {
    const ts_model_config *c = &model->config;
    ebt_context *e = ts_alloc(ctx, sizeof *e);
    /* begin_step gets the prediction stream's tokens: the shorter stream */
    *e = (ebt_context){
        .model = model,
        .batch = batch,
        .seq = seq,
        .n_landscapes = ebt_landscapes(c),
        .act = ts_act_begin_step(&model->activations, (long)batch * seq, c->width, !distribute)};
    ts_tensor *embedded =
        ts_embedding(ctx, ts_model_param(model, "embed"), inputs, (long)batch * seq);
    e->embedded = ts_reshape(ctx, embedded, TS_SHAPE(batch, seq, c->width));
    e->positions_obs = ts_alloc(ctx, (size_t)(seq + 1) * sizeof *e->positions_obs);
    e->positions_pred = ts_alloc(ctx, (size_t)seq * sizeof *e->positions_pred);
    for (int t = 0; t <= seq; t++) e->positions_obs[t] = t;
    for (int r = 0; r < seq; r++) e->positions_pred[r] = r + 2;
    e->observed = ts_alloc(ctx, (size_t)e->n_landscapes * sizeof *e->observed);
    for (int k = 0; k < e->n_landscapes; k++) {
        e->observed[k].keys = ts_alloc(ctx, (size_t)c->depth * sizeof(ts_tensor *));
        e->observed[k].values = ts_alloc(ctx, (size_t)c->depth * sizeof(ts_tensor *));
        e->observed[k].ready = false;
        e->observed[k].act = e->act;
    }
    return e;
}

/* The observed keys (with RoPE) and values as heads [B, H, L+1, dh], read
 * from parts key_part and key_part + 1 of projections side by side
 * (ts_packed_heads: no slice, rotation and permute passes of their own). */
static void keep_keys_values(ts_ctx *ctx, ts_tensor *packed, int key_part, int n_parts,
                             const tpp_attention_input *in, ebt_observed *obs) {
    obs->keys[in->layer] =
        ts_packed_heads(ctx, packed, key_part, n_parts, in->n_heads, in->positions, in->rope_theta);
    obs->values[in->layer] =
        ts_packed_heads(ctx, packed, key_part + 1, n_parts, in->n_heads, NULL, 0);
}

/* Causal self-attention of the observed stream, keeping keys and values: as
 * Transformer++'s (one Q|K|V product, the packed attention: no head
 * permutes), the keys and values read from the same product. They are taken
 * before the attention, so the plain backward reaches the attention first
 * and their gradients add into its d(qkv). */
static ts_tensor *observed_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                     ts_tensor *kv_in, const tpp_attention_input *in) {
    ebt_observed *obs = in->attention_user;
    const ts_activation_hook *act = obs->act;
    if (act) {
        ts_tensor *q = tpp_linear(ctx, p, q_in, p->wq), *k = tpp_linear(ctx, p, kv_in, p->wk);
        ts_tensor *a = act->causal_attention_keep(
            act->user, ctx, q, k, tpp_linear(ctx, p, kv_in, p->wv), in->n_heads, in->positions,
            in->rope_theta, &obs->keys[in->layer], &obs->values[in->layer]);
        return a;
    }
    ts_tensor *qkv = tpp_qkv_projection(ctx, p, q_in, kv_in);
    keep_keys_values(ctx, qkv, 1, 3, in, obs);
    return tpp_causal_attention_packed(ctx, qkv, in);
}

/* [B, L, D] -> token-major heads [B, L, H, dh] (a reshape, no permute), with
 * RoPE at the stream's positions when rotate. */
static ts_tensor *token_heads(ts_ctx *ctx, ts_tensor *x, const tpp_attention_input *in,
                              bool rotate) {
    int b = x->shape[0], l = x->shape[1], d = x->shape[2];
    ts_tensor *heads = ts_reshape(ctx, x, TS_SHAPE(b, l, in->n_heads, d / in->n_heads));
    return rotate ? ts_rope(ctx, heads, in->positions, in->rope_theta) : heads;
}

/* Row r: one softmax over [q_r k_obs_0 .. q_r k_obs_{r+1}, q_r k_r], then the
 * matching mix of observed values and its own (ts_context_attention_tokens:
 * the observed keys after r + 1 are skipped, not masked; the prediction's
 * q, k, v and the output stay token-major, so no head permutes). */
static ts_tensor *prediction_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                       ts_tensor *kv_in, const tpp_attention_input *in) {
    const ebt_observed *obs = in->attention_user;
    const ts_activation_hook *act = obs->act;
    if (act) {
        ts_tensor *q = tpp_linear(ctx, p, q_in, p->wq), *k = tpp_linear(ctx, p, kv_in, p->wk);
        return act->context_attention(act->user, ctx, q, k, tpp_linear(ctx, p, kv_in, p->wv),
                                      obs->keys[in->layer], obs->values[in->layer], in->n_heads,
                                      in->positions, in->rope_theta);
    }
    int b = q_in->shape[0], l = q_in->shape[1], d = q_in->shape[2], dh = d / in->n_heads;
    ts_tensor *q = token_heads(ctx, tpp_linear(ctx, p, q_in, p->wq), in, true);
    ts_tensor *k = token_heads(ctx, tpp_linear(ctx, p, kv_in, p->wk), in, true);
    ts_tensor *v = token_heads(ctx, tpp_linear(ctx, p, kv_in, p->wv), in, false);
    ts_tensor *mixed = ts_context_attention_tokens(
        ctx, q, obs->keys[in->layer], obs->values[in->layer], k, v, 1.0 / sqrt((double)dh));
    return ts_reshape(ctx, mixed, TS_SHAPE(b, l, d));
}

static tpp_attention_input attention_input(const ebt_context *e) {
    const ts_model_config *c = &e->model->config;
    return (tpp_attention_input){
        .rope_theta = c->rope_theta, .n_heads = c->heads, .norm_eps = c->norm_eps};
}

void ebt_context_observe(ts_ctx *ctx, ebt_context *e, int landscape) {
    if (landscape < 0 || landscape >= e->n_landscapes)
        ts_fail(ctx, "ebt", "landscape %d outside the %d time embeddings", landscape,
                e->n_landscapes);
    ebt_observed *obs = &e->observed[landscape];
    if (obs->ready) return;
    ts_model *model = e->model;
    const ts_model_config *c = &model->config;
    int32_t index = landscape;
    ts_tensor *time = ts_embedding(ctx, ts_model_param(model, "time_embed"), &index, 1);
    time = ts_broadcast_to(ctx, ts_reshape(ctx, time, TS_SHAPE(1, 1, c->width)),
                           TS_SHAPE(e->batch, 1, c->width));
    ts_tensor *x = ts_concat(ctx, 2, (ts_tensor *[]){time, e->embedded}, 1);
    if (e->act) x = e->act->to_local(e->act->user, ctx, x);
    tpp_attention_input in = attention_input(e);
    in.causal = true;
    in.positions = e->positions_obs;
    in.attention = observed_attention;
    in.attention_user = obs;
    int last = c->depth - 1;
    for (int l = 0; l < last; l++) {
        tpp_block_params block = tpp_block(model, l);
        in.layer = l;
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    /* Nothing reads the observed stream's output: its last layer only
     * supplies keys and values to the predictions. */
    tpp_block_params block = tpp_block(model, last);
    ts_tensor *u = ts_act_rmsnorm(ctx, &model->activations, x, block.attn_norm, c->norm_eps);
    if (e->act)
        e->act->causal_attention_keep(e->act->user, ctx, NULL, tpp_linear(ctx, &block, u, block.wk),
                                      tpp_linear(ctx, &block, u, block.wv), in.n_heads,
                                      in.positions, in.rope_theta, &obs->keys[last],
                                      &obs->values[last]);
    else {
        in.layer = last;
        ts_tensor *kv =
            tpp_linear_side_by_side(ctx, &block, u, 2, (ts_tensor *[]){block.wk, block.wv});
        keep_keys_values(ctx, kv, 0, 2, &in, obs);
    }
    obs->ready = true;
}

ts_tensor *ebt_energy(ts_ctx *ctx, ebt_context *e, ts_tensor *p, int landscape) {
    ts_model *model = e->model;
    const ts_model_config *c = &model->config;
    char shape[64];
    if (!e->act && (p->ndim != 3 || p->shape[0] != e->batch || p->shape[1] != e->seq ||
                    p->shape[2] != c->vocab_size))
        ts_fail(ctx, "ebt", "predictions %s are not [%d, %d, %d]", ts_shape_str(p, shape, 64),
                e->batch, e->seq, c->vocab_size);
    ebt_context_observe(ctx, e, landscape);
    if (e->act) e->act->stream(e->act->user, e->batch, e->seq);
    ts_tensor *x = ts_linear(ctx, &model->linear, p, ts_model_param(model, "vocab_to_embed"));
    tpp_attention_input in = attention_input(e);
    in.positions = e->positions_pred;
    in.attention = prediction_attention;
    in.attention_user = &e->observed[landscape];
    for (int l = 0; l < c->depth; l++) {
        tpp_block_params block = tpp_block(model, l);
        in.layer = l;
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    x = ts_act_rmsnorm(ctx, &model->activations, x, ts_model_param(model, "final_norm"),
                       c->norm_eps);
    if (e->act)
        return e->act->feature_dot(e->act->user, ctx, x, ts_model_param(model, "energy_head"));
    ts_tensor *energy = ts_linear(ctx, &model->linear, x, ts_model_param(model, "energy_head"));
    return ts_reshape(ctx, energy, TS_SHAPE(e->batch, e->seq));
}
