#include "models/nexus.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/transformerpp.h"

enum nexus_variant { NEXUS_SHARED, NEXUS_UNSHARED, NEXUS_SELFREFINE };

static const char *const variant_names[] = {"shared", "unshared", "selfrefine"};

/* Fixed at setup: the variant is not an inference key, so evaluation (which
 * only swaps inference keys into model->config) cannot change it. */
typedef struct nexus_state {
    enum nexus_variant variant;
    int trained_order;
    /* Unshared only: table indices of the projections of level j >= 2 of
     * layer l at [(l * trained_order + j - 1) * 2 + {0: wq, 1: wk}]. */
    int *level_index;
} nexus_state;

static const ts_model_ops nexus_ops; /* defined below, with the functions it names */

static const ts_model_stat nexus_stats[] = {
    {"attention_order", "levels",
     "attention order m the batch ran at (nexus.infer_order in evaluation when set)"},
};

int nexus_order_for_mode(const ts_nexus_config *config, ts_mode mode, char *err, size_t errlen) {
    if (mode == TS_MODE_TRAIN || config->infer_order == 0) return config->order;
    if (config->infer_order < 0 || config->infer_order > NEXUS_MAX_ORDER) {
        snprintf(err, errlen, "nexus.infer_order must be between 0 (as trained) and %d, got %d",
                 NEXUS_MAX_ORDER, config->infer_order);
        return 0;
    }
    return config->infer_order;
}

/* W_Q and W_K that turn H_{level-1} into Q_level and K_level. */
static void level_projections(const nexus_attention_user *user, const tpp_block_params *p,
                              int layer, int level, ts_tensor **wq, ts_tensor **wk) {
    const nexus_state *state = user->model->arch;
    *wq = p->wq;
    *wk = p->wk;
    if (state->variant != NEXUS_UNSHARED || state->trained_order < 2) return;
    /* Deeper than trained: the deepest trained level's projections. */
    int source = level <= state->trained_order ? level : state->trained_order;
    const int *index = state->level_index + ((long)layer * state->trained_order + source - 1) * 2;
    *wq = user->model->tensors[index[0]];
    *wk = user->model->tensors[index[1]];
}

/* The self-refine reading: softmax(rope(X) rope(X)^T * scale + mask) X per
 * head, X [B, T, D] -> [B, T, D]. */
static ts_tensor *self_refine(ts_ctx *ctx, ts_tensor *x, const tpp_attention_input *in,
                              double scale) {
    ts_tensor *rotated = tpp_split_heads(ctx, x, in->n_heads, in->positions, in->rope_theta);
    ts_tensor *plain = tpp_split_heads(ctx, x, in->n_heads, NULL, 0);
    return tpp_merge_heads(ctx, tpp_attend(ctx, rotated, rotated, plain, in, scale));
}

/* The causal levels on Transformer++'s packed layout: each level's Q, K and
 * the one V side by side in [B, T, 3 D], where the attention reads the heads
 * in place and rotates Q and K itself, so no level permutes heads or runs a
 * RoPE pass (those were 6% of an order-2 step; docs/performance.md, ninth
 * round). Level 1 is Transformer++'s Q|K|V projection; a deeper level's Q|K
 * come from H_{level-1} (one GEMM where its two weights lie side by side)
 * and are joined by V, a slice of level 1's. */
static ts_tensor *causal_levels(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *x,
                                const tpp_attention_input *in, int order) {
    const nexus_attention_user *user = in->attention_user;
    int d = x->shape[2];
    ts_tensor *qkv = tpp_linear_side_by_side(ctx, p, x, 3, (ts_tensor *[]){p->wq, p->wk, p->wv});
    ts_tensor *v = ts_slice(ctx, qkv, 2, 2 * d, d);
    for (int level = 1; level < order; level++) {
        ts_tensor *h = tpp_causal_attention_packed(ctx, qkv, in);
        ts_tensor *w[2];
        level_projections(user, p, in->layer, level + 1, &w[0], &w[1]);
        ts_tensor *qk = tpp_linear_side_by_side(ctx, p, h, 2, w);
        qkv = ts_concat(ctx, 2, (ts_tensor *[]){qk, v}, 2);
    }
    return tpp_causal_attention_packed(ctx, qkv, in);
}

ts_tensor *nexus_attention(ts_ctx *ctx, const tpp_block_params *p, ts_tensor *q_in,
                           ts_tensor *kv_in, const tpp_attention_input *in) {
    const nexus_attention_user *user = in->attention_user;
    if (!user || !user->model || user->model->ops != &nexus_ops || user->order < 1)
        ts_fail(ctx, "nexus_attention",
                "needs a nexus_attention_user with a Nexus model and an "
                "order >= 1");
    const nexus_state *state = user->model->arch;
    int d = q_in->shape[2];
    if (d % in->n_heads)
        ts_fail(ctx, "nexus_attention", "width %d is not a multiple of %d heads", d, in->n_heads);
    /* Inner levels attend within one sequence; a second stream for keys and
     * values has no defined inner attention. */
    if (user->order > 1 && q_in != kv_in)
        ts_fail(ctx, "nexus_attention", "order %d needs self-attention (no kv_source)",
                user->order);
    /* Order 1 is Transformer++'s attention: the same call, so the two train
     * alike bit for bit (on its fused Q|K|V path). */
    if (user->order == 1) return tpp_multihead_attention(ctx, p, q_in, kv_in, in);
    if (in->causal && state->variant != NEXUS_SELFREFINE &&
        !ts_activations_distributed(p->activations))
        return causal_levels(ctx, p, q_in, in, user->order);
    double scale = 1.0 / sqrt((double)(d / in->n_heads));
    /* Q_j and K_j stay in [B, T, D] unrotated between levels; RoPE is applied
     * where they meet a score matrix. V is computed once and never changes. */
    ts_tensor *q_level = tpp_linear(ctx, p, q_in, p->wq);
    ts_tensor *k_level = tpp_linear(ctx, p, kv_in, p->wk);
    ts_tensor *v = tpp_split_heads(ctx, tpp_linear(ctx, p, kv_in, p->wv), in->n_heads, NULL, 0);
    for (int level = 1; level < user->order; level++) {
        if (state->variant == NEXUS_SELFREFINE) {
            q_level = self_refine(ctx, q_level, in, scale);
            k_level = self_refine(ctx, k_level, in, scale);
            continue;
        }
        ts_tensor *q = tpp_split_heads(ctx, q_level, in->n_heads, in->positions, in->rope_theta);
        ts_tensor *k = tpp_split_heads(ctx, k_level, in->n_heads, in->positions, in->rope_theta);
        ts_tensor *h = tpp_merge_heads(ctx, tpp_attend(ctx, q, k, v, in, scale));
        ts_tensor *wq, *wk;
        level_projections(user, p, in->layer, level + 1, &wq, &wk);
        q_level = tpp_linear(ctx, p, h, wq);
        k_level = tpp_linear(ctx, p, h, wk);
    }
    /* The outer attention: multi-head attention of the last level's Q and K. */
    ts_tensor *q = tpp_split_heads(ctx, q_level, in->n_heads, in->positions, in->rope_theta);
    ts_tensor *k = tpp_split_heads(ctx, k_level, in->n_heads, in->positions, in->rope_theta);
    return tpp_merge_heads(ctx, tpp_attend(ctx, q, k, v, in, scale));
}

ts_tensor *nexus_logits(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int batch, int seq,
                        int order) {
    const ts_model_config *c = &model->config;
    if (seq > c->context)
        ts_fail(ctx, "nexus", "sequence of %d tokens exceeds the context of %d", seq, c->context);
    int32_t *positions = ts_alloc(ctx, (size_t)seq * sizeof *positions);
    for (int t = 0; t < seq; t++) positions[t] = t;
    nexus_attention_user user = {.model = model, .order = order};
    tpp_attention_input attention = {.causal = true,
                                     .positions = positions,
                                     .rope_theta = c->rope_theta,
                                     .n_heads = c->heads,
                                     .norm_eps = c->norm_eps,
                                     .attention = nexus_attention,
                                     .attention_user = &user};
    ts_tensor *x = ts_embedding(ctx, ts_model_param(model, "embed"), inputs, (long)batch * seq);
    x = ts_reshape(ctx, x, TS_SHAPE(batch, seq, c->width));
    return tpp_logits_from_embeddings(model, ctx, x, &attention);
}

static ts_tensor *nexus_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats) {
    char err[128];
    int order = nexus_order_for_mode(&model->config.nexus, batch->mode, err, sizeof err);
    if (order < 1) ts_fail(ctx, "nexus", "%s", err);
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, batch, &inputs, &targets);
    ts_tensor *logits = nexus_logits(model, ctx, inputs, batch->batch, batch->seq, order);
    if (stats) stats[0] = order;
    return ts_cross_entropy(ctx, logits, targets, -1);
}

static void nexus_destroy(ts_model *model) {
    nexus_state *state = model->arch;
    if (state) free(state->level_index);
    free(state);
    model->arch = NULL;
}

static const ts_model_ops nexus_ops = {
    .loss = nexus_loss,
    .n_stats = (int)(sizeof nexus_stats / sizeof nexus_stats[0]),
    .stats = nexus_stats,
    .destroy = nexus_destroy,
};

/* layers.L.attention.levelJ.{wq,wk} for J = 2 .. order, after the backbone's
 * entries so that the shared part of the table (and its initial values for a
 * given seed) is exactly Transformer++'s. */
static bool add_level_projections(ts_model *model, nexus_state *state) {
    const ts_model_config *c = &model->config;
    int order = state->trained_order, d = c->width;
    state->level_index = calloc((size_t)c->depth * (size_t)order * 2, sizeof *state->level_index);
    if (!state->level_index) return false;
    char name[TS_PARAM_NAME_MAX];
    static const char *const which[] = {"wq", "wk"};
    for (int l = 0; l < c->depth; l++)
        for (int level = 2; level <= order; level++)
            for (int w = 0; w < 2; w++) {
                snprintf(name, sizeof name, "layers.%d.attention.level%d.%s", l, level, which[w]);
                int index = ts_param_table_add(&model->table, name, TS_SHAPE(d, d), TS_ROLE_MATRIX);
                if (index < 0) return false;
                state->level_index[((long)l * order + level - 1) * 2 + w] = index;
            }
    return true;
}

bool nexus_model_setup(ts_model *model, char *err, size_t errlen) {
    model->ops = &nexus_ops;
    const ts_nexus_config *c = &model->config.nexus;
    if (c->order < 1 || c->order > NEXUS_MAX_ORDER) {
        snprintf(err, errlen, "nexus.order must be between 1 and %d, got %d", NEXUS_MAX_ORDER,
                 c->order);
        return false;
    }
    if (c->infer_order != 0 && nexus_order_for_mode(c, TS_MODE_EVAL, err, errlen) < 1) return false;
    int variant = -1;
    for (int i = 0; i < (int)(sizeof variant_names / sizeof variant_names[0]); i++)
        if (!strcmp(c->variant, variant_names[i])) variant = i;
    if (variant < 0) {
        snprintf(err, errlen, "nexus.variant must be shared, unshared or selfrefine, not '%s'",
                 c->variant);
        return false;
    }
    nexus_state *state = calloc(1, sizeof *state);
    if (!state) {
        snprintf(err, errlen, "out of memory creating the Nexus model");
        return false;
    }
    model->arch = state;
    state->variant = (enum nexus_variant)variant;
    state->trained_order = c->order;
    bool ok = tpp_add_params(&model->table, &model->config);
    if (ok && state->variant == NEXUS_UNSHARED) ok = add_level_projections(model, state);
    if (!ok) {
        snprintf(err, errlen, "out of memory building the Nexus parameter table");
        return false;
    }
    return true;
}
