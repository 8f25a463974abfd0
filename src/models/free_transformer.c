#include "models/free_transformer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/transformerpp.h"

/* ts_sequence_rng purposes: the encoder's bit draws and the prior's states. */
enum { PURPOSE_POSTERIOR_BITS = 0x46726565, PURPOSE_PRIOR_STATES = 0x5072696f };

typedef struct free_arch {
    long encoder_runs;
    bool latent_after_norm; /* free.injection = after_norm */
} free_arch;

static const ts_model_stat free_stats[FREE_N_STATS] = {
    [FREE_STAT_POSTERIOR_LOSS] = {"posterior_loss", "nats/token",
                                  "cross-entropy with Z drawn from the encoder's posterior: in "
                                  "training the loss's cross-entropy term; in evaluation it LEAKS "
                                  "the targets into Z and is not comparable with other models (NaN "
                                  "unless free.eval_posterior = 1)"},
    [FREE_STAT_KL] = {"kl", "nats/token",
                      "KL(Q(Z_t | x) || uniform prior) per token, summed over the H bits"},
    [FREE_STAT_KL_PENALTY] = {"kl_penalty", "nats/token",
                              "free-bits term mean_t max(0, KL_t - kappa) of the training loss"},
};

int free_injection_layer(const ts_model_config *config) {
    return config->depth / 2;
}

long free_encoder_runs(const ts_model *model) {
    return ((const free_arch *)model->arch)->encoder_runs;
}

/* ---------------------------------------------------------------- parameters */

tpp_block_params free_encoder_block(const ts_model *m) {
    return (tpp_block_params){
        .attn_norm = ts_model_param(m, "encoder.attn_norm"),
        .wq = ts_model_param(m, "encoder.attention.wq"),
        .wk = ts_model_param(m, "encoder.attention.wk"),
        .wv = ts_model_param(m, "encoder.attention.wv"),
        .wo = ts_model_param(m, "encoder.attention.wo"),
        .mlp_norm = ts_model_param(m, "encoder.mlp_norm"),
        .w1 = ts_model_param(m, "encoder.mlp.w1"),
        .w3 = ts_model_param(m, "encoder.mlp.w3"),
        .w2 = ts_model_param(m, "encoder.mlp.w2"),
        .linear = &m->linear,
    };
}

/* The backbone's parameters, then the encoder block (laid out as a decoder
 * block), its learned query zeta, readout norm and H-logit readout, and the
 * 2^H x D post-sampler table. */
static bool add_free_params(ts_param_table *t, const ts_model_config *c) {
    int d = c->width, f = tpp_ffn_hidden(c), bits = c->free.latent_bits;
    bool ok = tpp_add_params(t, c);
    /* zeta is drawn N(0, 1) after every other tensor: its place in the stream
     * since the model was first written, kept so a seed gives the same model. */
    ok &= ts_param_table_add(t, "encoder.zeta", TS_SHAPE(d),
                             (ts_param_role){TS_INIT_NORMAL, TS_DRAW_AFTER, false, false, false}) >=
          0;
    ok &= ts_param_table_add(t, "encoder.attn_norm", TS_SHAPE(d), TS_ROLE_NORM) >= 0;
    static const char *const square[] = {"encoder.attention.wq", "encoder.attention.wk",
                                         "encoder.attention.wv", "encoder.attention.wo"};
    for (int i = 0; i < 4; i++)
        ok &= ts_param_table_add(t, square[i], TS_SHAPE(d, d), TS_ROLE_MATRIX) >= 0;
    ok &= ts_param_table_add(t, "encoder.mlp_norm", TS_SHAPE(d), TS_ROLE_NORM) >= 0;
    ok &= ts_param_table_add(t, "encoder.mlp.w1", TS_SHAPE(f, d), TS_ROLE_MATRIX) >= 0;
    ok &= ts_param_table_add(t, "encoder.mlp.w3", TS_SHAPE(f, d), TS_ROLE_MATRIX) >= 0;
    ok &= ts_param_table_add(t, "encoder.mlp.w2", TS_SHAPE(d, f), TS_ROLE_MATRIX) >= 0;
    ok &= ts_param_table_add(t, "encoder.out_norm", TS_SHAPE(d), TS_ROLE_NORM) >= 0;
    ok &= ts_param_table_add(t, "encoder.readout", TS_SHAPE(bits, d), TS_ROLE_MATRIX) >= 0;
    /* read by ts_matmul(z, post_sampler), not as a linear layer: held whole */
    ok &= ts_param_table_add(t, "post_sampler", TS_SHAPE(1 << bits, d), TS_ROLE_TABLE_MATRIX) >= 0;
    return ok;
}

/* ---------------------------------------------------------------- forward */

static tpp_attention_input attention_input(ts_model *m, ts_ctx *ctx, int seq, bool causal) {
    int32_t *positions = ts_alloc(ctx, (size_t)seq * sizeof *positions);
    for (int t = 0; t < seq; t++) positions[t] = t;
    return (tpp_attention_input){.causal = causal,
                                 .positions = positions,
                                 .rope_theta = m->config.rope_theta,
                                 .n_heads = m->config.heads,
                                 .norm_eps = m->config.norm_eps};
}

ts_tensor *free_first_half(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch,
                           int seq) {
    const ts_model_config *c = &model->config;
    ts_tensor *x = ts_embedding(ctx, ts_model_param(model, "embed"), inputs, (long)batch * seq);
    x = ts_reshape(ctx, x, TS_SHAPE(batch, seq, c->width));
    tpp_attention_input in = attention_input(model, ctx, seq, true);
    for (int l = 0; l < free_injection_layer(c); l++) {
        tpp_block_params block = tpp_block(model, l);
        in.layer = l;
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    return x;
}

/* The encoder's attention. Every query is zeta, so its projection is one
 * row, RMSNorm(zeta) Wq^T, broadcast to every position before RoPE: the
 * function of projecting the T copies the block normalises (q_in, unused
 * here), at 1/T of that GEMM and of its backward's two. */
static ts_tensor *encoder_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                                    ts_tensor *kv_in, const tpp_attention_input *in) {
    ts_tensor *zeta = in->attention_user; /* [1, 1, D] */
    ts_tensor *row = ts_act_rmsnorm(ctx, p->activations, zeta, p->attn_norm, in->norm_eps);
    ts_tensor *q = ts_broadcast_to(ctx, tpp_linear(ctx, p, row, p->wq),
                                   TS_SHAPE(q_in->shape[0], q_in->shape[1], q_in->shape[2]));
    return tpp_attention_of_queries(ctx, p, q, kv_in, in);
}

ts_tensor *free_encoder_logits(ts_model *model, ts_ctx *ctx, ts_tensor *x) {
    const ts_model_config *c = &model->config;
    ((free_arch *)model->arch)->encoder_runs++;
    int batch = x->shape[0], seq = x->shape[1];
    /* Every query is the same learned zeta; RoPE on queries and keys is what
     * makes the T encoder outputs differ by position. No mask: Z_t may
     * depend on the whole sequence. */
    ts_tensor *zeta =
        ts_reshape(ctx, ts_model_param(model, "encoder.zeta"), TS_SHAPE(1, 1, c->width));
    ts_tensor *queries = ts_broadcast_to(ctx, zeta, TS_SHAPE(batch, seq, c->width));
    tpp_attention_input in = attention_input(model, ctx, seq, false);
    in.layer = c->depth; /* the block after the decoder's, for hooks that look */
    in.kv_source = x;
    in.attention = encoder_attention;
    in.attention_user = zeta;
    tpp_block_params block = free_encoder_block(model);
    ts_tensor *y = tpp_block_forward(ctx, &block, queries, &in);
    y = ts_rmsnorm(ctx, y, ts_model_param(model, "encoder.out_norm"), c->norm_eps);
    ts_tensor *logits = ts_linear(ctx, &model->linear, y, ts_model_param(model, "encoder.readout"));
    return ts_reshape(ctx, logits, TS_SHAPE(batch * seq, c->free.latent_bits));
}

/* free.injection = after_norm: keys and values from RMSNorm(X) + R. */
static ts_tensor *attention_with_latent_after_norm(ts_ctx *ctx, const tpp_block_params *p,
                                                   ts_tensor *q_in, ts_tensor *kv_in,
                                                   const tpp_attention_input *in) {
    return tpp_multihead_attention(ctx, p, q_in, ts_add(ctx, kv_in, in->attention_user), in);
}

ts_tensor *free_second_half(ts_model *model, ts_ctx *ctx, ts_tensor *x, ts_tensor *z) {
    const ts_model_config *c = &model->config;
    int batch = x->shape[0], seq = x->shape[1];
    if (z->ndim != 2 || z->shape[0] != batch * seq || z->shape[1] != 1 << c->free.latent_bits) {
        char sx[64], sz[64];
        ts_fail(ctx, "free_second_half", "latent %s does not match %s and %d bits",
                ts_shape_str(z, sz, sizeof sz), ts_shape_str(x, sx, sizeof sx),
                c->free.latent_bits);
    }
    /* A one-hot row times the table: the forward value is a row lookup. */
    ts_tensor *r = ts_matmul(ctx, z, ts_model_param(model, "post_sampler"), false, false);
    r = ts_reshape(ctx, r, TS_SHAPE(batch, seq, c->width));
    tpp_attention_input in = attention_input(model, ctx, seq, true);
    int injection = free_injection_layer(c);
    for (int l = injection; l < c->depth; l++) {
        tpp_block_params block = tpp_block(model, l);
        in.layer = l;
        in.kv_source = NULL;
        in.attention = NULL;
        in.attention_user = NULL;
        if (l == injection) { /* Z reaches keys and values here only, never the residual */
            if (((const free_arch *)model->arch)->latent_after_norm) {
                in.attention = attention_with_latent_after_norm;
                in.attention_user = r;
            } else {
                in.kv_source = ts_add(ctx, x, r);
            }
        }
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    x = ts_rmsnorm(ctx, x, ts_model_param(model, "final_norm"), c->norm_eps);
    return ts_linear(ctx, &model->linear, x, ts_model_param(model, "head"));
}

/* ---------------------------------------------------------------- losses */

static void check_batch(ts_model *model, ts_ctx *ctx, const ts_batch *batch) {
    if (batch->seq > model->config.context)
        ts_fail(ctx, "free", "sequence of %d tokens exceeds the context of %d", batch->seq,
                model->config.context);
}

ts_tensor *free_training_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats,
                              free_frozen_latent *capture, const free_frozen_latent *replay) {
    const ts_model_config *c = &model->config;
    check_batch(model, ctx, batch);
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, batch, &inputs, &targets);
    int bits = c->free.latent_bits, seq = batch->seq;
    long n = (long)batch->batch * seq;
    ts_tensor *x = free_first_half(model, ctx, inputs, batch->batch, seq);
    ts_tensor *o = free_encoder_logits(model, ctx, x);
    ts_real *uniforms = NULL;
    if (!replay) {
        uniforms = ts_alloc(ctx, (size_t)(n * bits) * sizeof *uniforms);
        for (int b = 0; b < batch->batch; b++) {
            ts_rng rng;
            ts_sequence_rng(batch, b, PURPOSE_POSTERIOR_BITS, &rng);
            for (long j = 0; j < (long)seq * bits; j++)
                uniforms[(long)b * seq * bits + j] = (ts_real)ts_rng_uniform(&rng);
        }
    }
    free_latent latent = free_binary_mapper(ctx, o, uniforms, replay);
    if (capture) {
        memcpy(capture->states, latent.states, (size_t)n * sizeof *latent.states);
        memcpy(capture->g, latent.g->data, (size_t)latent.g->numel * sizeof(ts_real));
    }
    ts_tensor *logits = free_second_half(model, ctx, x, latent.z);
    ts_tensor *ce = ts_cross_entropy(ctx, logits, targets, -1);
    ts_tensor *kl = free_kl_per_token(ctx, o);
    ts_tensor *penalty = free_bits_penalty(ctx, kl, c->free.kappa);
    if (stats && ts_is_counting(ctx)) {
        for (int s = 0; s < FREE_N_STATS; s++) stats[s] = NAN; /* no values to report */
    } else if (stats) {
        double kl_sum = 0;
        for (long i = 0; i < n; i++) kl_sum += kl->data[i];
        stats[FREE_STAT_POSTERIOR_LOSS] = ce->data[0];
        stats[FREE_STAT_KL] = kl_sum / (double)n;
        stats[FREE_STAT_KL_PENALTY] = penalty->data[0];
    }
    return ts_add(ctx, ce, penalty);
}

void free_prior_states(const ts_batch *batch, int i, int samples, int bits, int32_t *states) {
    ts_rng rng;
    ts_sequence_rng(batch, i, PURPOSE_PRIOR_STATES, &rng);
    for (long j = 0; j < (long)samples * batch->seq; j++)
        states[j] = (int32_t)ts_rng_below(&rng, (uint64_t)1 << bits);
}

/* log p(target) summed over each sequence's scored rows into ll[b];
 * returns the number of scored rows. Booked as a log-softmax. */
static long sequence_log_likelihoods(ts_ctx *ctx, const ts_tensor *logits, const int32_t *targets,
                                     int batch, int seq, double *ll) {
    int v = logits->shape[2];
    long scored = 0;
    for (int b = 0; b < batch; b++) {
        ll[b] = 0;
        for (int t = 0; t < seq; t++) {
            long row = (long)b * seq + t;
            if (targets[row] < 0) continue;
            const ts_real *x = logits->data + row * v;
            double max = x[0], sum = 0;
            for (int j = 1; j < v; j++) max = x[j] > max ? x[j] : max;
            for (int j = 0; j < v; j++) sum += exp(x[j] - max);
            ll[b] += x[targets[row]] - max - log(sum);
            scored++;
        }
    }
    ts_count_flops(ctx, 5.0 * (double)logits->numel);
    return scored;
}

/* The honest number: Z from the uniform prior, K samples per sequence,
 * combined by log-mean-exp of the sequence likelihood (docs/free-transformer.md
 * says why per sequence). The encoder-posterior number goes to the stats. */
static ts_tensor *free_eval_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch,
                                 double *stats) {
    const ts_model_config *c = &model->config;
    const ts_free_config *f = &c->free;
    check_batch(model, ctx, batch);
    if (f->eval_samples < 1)
        ts_fail(ctx, "free", "free.eval_samples must be at least 1, got %d", f->eval_samples);
    int bits = f->latent_bits, seq = batch->seq, nb = batch->batch, k_samples = f->eval_samples;
    long n = (long)nb * seq;
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, batch, &inputs, &targets);
    /* Blocks 1..L/2 do not see Z: run them once for all samples. */
    ts_tensor *x = free_first_half(model, ctx, inputs, nb, seq);
    int32_t *prior = ts_alloc(ctx, (size_t)(n * k_samples) * sizeof *prior);
    for (int b = 0; b < nb; b++)
        free_prior_states(batch, b, k_samples, bits, prior + (long)b * k_samples * seq);
    int32_t *states = ts_alloc(ctx, (size_t)n * sizeof *states);
    double *ll = ts_alloc(ctx, (size_t)k_samples * nb * sizeof *ll);
    long scored = 0;
    for (int k = 0; k < k_samples; k++) {
        ts_mark mark = ts_get_mark(ctx);
        for (int b = 0; b < nb; b++)
            memcpy(states + (long)b * seq, prior + ((long)b * k_samples + k) * seq,
                   (size_t)seq * sizeof *states);
        ts_tensor *logits =
            free_second_half(model, ctx, x, free_one_hot_states(ctx, states, n, bits));
        scored = sequence_log_likelihoods(ctx, logits, targets, nb, seq, ll + (long)k * nb);
        ts_release(ctx, mark);
    }
    double total = 0;
    for (int b = 0; b < nb; b++) {
        double max = -INFINITY, sum = 0;
        for (int k = 0; k < k_samples; k++) max = fmax(max, ll[(long)k * nb + b]);
        for (int k = 0; k < k_samples; k++) sum += exp(ll[(long)k * nb + b] - max);
        total += max + log(sum) - log((double)k_samples);
    }
    double loss = scored ? -total / (double)scored : NAN;
    if (stats) {
        for (int s = 0; s < FREE_N_STATS; s++) stats[s] = NAN;
        if (f->eval_posterior) {
            ts_mark mark = ts_get_mark(ctx);
            ts_real *uniforms = ts_alloc(ctx, (size_t)(n * bits) * sizeof *uniforms);
            for (int b = 0; b < nb; b++) {
                ts_rng rng;
                ts_sequence_rng(batch, b, PURPOSE_POSTERIOR_BITS, &rng);
                for (long j = 0; j < (long)seq * bits; j++)
                    uniforms[(long)b * seq * bits + j] = (ts_real)ts_rng_uniform(&rng);
            }
            ts_tensor *o = free_encoder_logits(model, ctx, x);
            free_latent latent = free_binary_mapper(ctx, o, uniforms, NULL);
            ts_tensor *logits = free_second_half(model, ctx, x, latent.z);
            double *posterior_ll = ts_alloc(ctx, (size_t)nb * sizeof *posterior_ll);
            long rows = sequence_log_likelihoods(ctx, logits, targets, nb, seq, posterior_ll);
            double sum = 0, kl_sum = 0;
            for (int b = 0; b < nb; b++) sum += posterior_ll[b];
            ts_tensor *kl = free_kl_per_token(ctx, o);
            for (long i = 0; i < n; i++) kl_sum += kl->data[i];
            stats[FREE_STAT_POSTERIOR_LOSS] = rows ? -sum / (double)rows : NAN;
            stats[FREE_STAT_KL] = kl_sum / (double)n;
            stats[FREE_STAT_KL_PENALTY] = free_bits_penalty(ctx, kl, f->kappa)->data[0];
            ts_release(ctx, mark);
        }
    }
    return ts_full(ctx, TS_SHAPE(1), (ts_real)loss);
}

static ts_tensor *free_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats) {
    return batch->mode == TS_MODE_TRAIN ? free_training_loss(model, ctx, batch, stats, NULL, NULL)
                                        : free_eval_loss(model, ctx, batch, stats);
}

static void free_destroy(ts_model *model) {
    free(model->arch);
    model->arch = NULL;
}

static const ts_model_ops free_ops = {
    .loss = free_loss, .n_stats = FREE_N_STATS, .stats = free_stats, .destroy = free_destroy};

bool free_model_setup(ts_model *model, char *err, size_t errlen) {
    const ts_model_config *c = &model->config;
    const ts_free_config *f = &c->free;
    model->ops = &free_ops;
    if (c->depth < 2) {
        snprintf(err, errlen,
                 "free: model.depth must be at least 2 (blocks 1..L/2, then the "
                 "block that receives the latent), got %d",
                 c->depth);
        return false;
    }
    if (f->latent_bits < 1 || f->latent_bits > 16) {
        snprintf(err, errlen, "free.latent_bits must be in [1, 16] (Z has 2^H states), got %d",
                 f->latent_bits);
        return false;
    }
    if (!(f->kappa >= 0) || !isfinite(f->kappa)) {
        snprintf(err, errlen, "free.kappa must be a finite number of nats >= 0, got %g", f->kappa);
        return false;
    }
    if (f->eval_samples < 1 || (f->eval_posterior != 0 && f->eval_posterior != 1)) {
        snprintf(err, errlen,
                 "free.eval_samples must be >= 1 (got %d) and free.eval_posterior "
                 "0 or 1 (got %d)",
                 f->eval_samples, f->eval_posterior);
        return false;
    }
    bool after_norm = !strcmp(f->injection, "after_norm");
    if (!after_norm && strcmp(f->injection, "before_norm")) {
        snprintf(err, errlen,
                 "free.injection must be before_norm (keys and values from "
                 "RMSNorm(X + R)) or after_norm (RMSNorm(X) + R), got '%s'",
                 f->injection);
        return false;
    }
    free_arch *arch = calloc(1, sizeof *arch);
    if (!arch) {
        snprintf(err, errlen, "out of memory creating the Free Transformer");
        return false;
    }
    arch->latent_after_norm = after_norm;
    model->arch = arch;
    if (!add_free_params(&model->table, c)) {
        snprintf(err, errlen, "out of memory building the Free Transformer parameter table");
        return false;
    }
    return true;
}
