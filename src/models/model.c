#include "models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/transformerpp.h"

ts_model *ts_model_create(const ts_model_config *config, char *err, size_t errlen) {
    const ts_model_config *c = config;
    if (c->vocab_size < 2 || c->context < 1 || c->depth < 1 || c->width < 2 || c->heads < 1 ||
        c->width % c->heads || (c->width / c->heads) % 2 || c->ffn_mult <= 0) {
        snprintf(err, errlen,
                 "invalid model sizes: vocab %d, context %d, depth %d, width %d, heads %d, "
                 "ffn_mult %g (width must be a multiple of heads with an even head dim)",
                 c->vocab_size, c->context, c->depth, c->width, c->heads, c->ffn_mult);
        return NULL;
    }
    ts_model *model = calloc(1, sizeof *model);
    if (!model) {
        snprintf(err, errlen, "out of memory creating the model");
        return NULL;
    }
    model->config = *config;
    bool ok;
    if (!strcmp(c->arch, "transformerpp")) {
        ok = tpp_model_setup(model, err, errlen);
    } else {
        snprintf(err, errlen, "unknown architecture '%s' (known: transformerpp)", c->arch);
        ok = false;
    }
    if (ok) {
        model->params = calloc((size_t)model->table.total, sizeof(ts_real));
        model->grads = calloc((size_t)model->table.total, sizeof(ts_real));
        model->tensors = calloc((size_t)model->table.count, sizeof(ts_tensor *));
        if (!model->params || !model->grads || !model->tensors) {
            snprintf(err, errlen, "out of memory for %ld parameters", model->table.total);
            ok = false;
        }
    }
    if (!ok) {
        ts_model_destroy(model);
        return NULL;
    }
    return model;
}

void ts_model_destroy(ts_model *model) {
    if (!model) return;
    if (model->ops && model->ops->destroy) model->ops->destroy(model);
    ts_param_table_free(&model->table);
    free(model->params);
    free(model->grads);
    free(model->tensors);
    free(model);
}

void ts_model_init_params(ts_model *model, uint64_t seed) {
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        ts_real *p = model->params + e->offset;
        if (e->ndim == 1) { /* norm scales */
            for (long j = 0; j < e->numel; j++) p[j] = 1;
        } else if (strstr(e->name, "embed")) {
            ts_rng_fill_normal(&rng, p, e->numel, 0, 1);
        } else { /* Xavier normal over [out, in] */
            double std = sqrt(2.0 / (e->shape[0] + e->shape[1]));
            ts_rng_fill_normal(&rng, p, e->numel, 0, std);
        }
    }
}

void ts_model_bind(ts_model *model, ts_ctx *ctx) {
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        model->tensors[i] = ts_param(ctx, model->params + e->offset, model->grads + e->offset,
                                     e->ndim, e->shape, e->name);
    }
}

ts_tensor *ts_model_param(const ts_model *model, const char *name) {
    int i = ts_param_table_find(&model->table, name);
    return i >= 0 ? model->tensors[i] : NULL;
}

long ts_model_non_embedding_params(const ts_model *model) {
    long n = 0;
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        if (!strstr(e->name, "embed") && strcmp(e->name, "head")) n += e->numel;
    }
    return n;
}
