#include "models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/ebt.h"
#include "models/free_transformer.h"
#include "models/nexus.h"
#include "models/transformerpp.h"

/* Every architecture registers here: its config.arch name and the function
 * that fills the model's parameter table and ops (and validates its config). */
typedef bool (*arch_setup_fn)(ts_model *model, char *err, size_t errlen);
static const struct {
    const char *name;
    arch_setup_fn setup;
} architectures[] = {
    {"transformerpp", tpp_model_setup},
    {"ebt", ebt_model_setup},
    {"nexus", nexus_model_setup},
    {"free", free_model_setup},
};
static const int n_architectures = (int)(sizeof architectures / sizeof architectures[0]);

static ts_model *create(const ts_model_config *config, bool counting_only, char *err,
                        size_t errlen) {
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
    model->counting_only = counting_only;
    bool ok = false, known = false;
    for (int i = 0; i < n_architectures && !known; i++)
        if (!strcmp(c->arch, architectures[i].name)) {
            known = true;
            ok = architectures[i].setup(model, err, errlen);
        }
    if (!known) {
        int n = snprintf(err, errlen, "unknown architecture '%s' (known:", c->arch);
        for (int i = 0; i < n_architectures && n > 0 && (size_t)n < errlen; i++)
            n += snprintf(err + n, errlen - (size_t)n, " %s", architectures[i].name);
        if (n > 0 && (size_t)n < errlen) snprintf(err + n, errlen - (size_t)n, ")");
    }
    if (ok) {
        if (!counting_only) {
            model->params = calloc((size_t)model->table.total, sizeof(ts_real));
            model->grads = calloc((size_t)model->table.total, sizeof(ts_real));
        }
        model->tensors = calloc((size_t)model->table.count, sizeof(ts_tensor *));
        if ((!counting_only && (!model->params || !model->grads)) || !model->tensors) {
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

ts_model *ts_model_create(const ts_model_config *config, char *err, size_t errlen) {
    return create(config, false, err, errlen);
}

ts_model *ts_model_create_counting(const ts_model_config *config, char *err, size_t errlen) {
    return create(config, true, err, errlen);
}

void ts_model_destroy(ts_model *model) {
    if (!model) return;
    if (model->ops && model->ops->destroy) model->ops->destroy(model);
    ts_param_table_free(&model->table);
    if (model->layout) {
        ts_param_table_free(&model->layout->global);
        free(model->layout->blocked);
        free(model->layout);
    }
    free(model->params);
    free(model->grads);
    free(model->tensors);
    free(model);
}

/* Draws or sets one tensor's initial values as its role declares. */
static void init_tensor(const ts_param_entry *e, ts_real *p, ts_rng *rng) {
    switch (e->role.init) {
    case TS_INIT_ONES:
        for (long j = 0; j < e->numel; j++) p[j] = 1;
        break;
    case TS_INIT_ZEROS:
        for (long j = 0; j < e->numel; j++) p[j] = 0;
        break;
    case TS_INIT_NORMAL:
        ts_rng_fill_normal(rng, p, e->numel, 0, 1);
        break;
    case TS_INIT_XAVIER_NORMAL: /* over [out, in] */
        ts_rng_fill_normal(rng, p, e->numel, 0, sqrt(2.0 / (e->shape[0] + e->shape[1])));
        break;
    case TS_INIT_ARCHITECTURE:
        break;
    }
}

void ts_model_init_params(ts_model *model, uint64_t seed) {
    if (model->counting_only) return; /* no values to initialise */
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    const ts_param_table *t = &model->table;
    for (int i = 0; i < t->count; i++) {
        const ts_param_entry *e = &t->entries[i];
        ts_real *p = model->params + e->offset;
        if (e->role.draw == TS_DRAW_IN_ORDER)
            init_tensor(e, p, &rng);
        else if (e->role.draw == TS_DRAW_AFTER_RESERVING)
            ts_rng_fill_normal(&rng, p, e->numel, 0, 1); /* overwritten below */
    }
    for (int i = 0; i < t->count; i++)
        if (t->entries[i].role.draw != TS_DRAW_IN_ORDER)
            init_tensor(&t->entries[i], model->params + t->entries[i].offset, &rng);
    if (model->ops->init_params) model->ops->init_params(model, &rng);
}

void ts_model_bind(ts_model *model, ts_ctx *ctx) {
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        bool buffers = !model->counting_only;
        model->tensors[i] =
            ts_param(ctx, buffers ? model->params + e->offset : NULL,
                     buffers ? model->grads + e->offset : NULL, e->ndim, e->shape, e->name);
    }
}

void ts_model_set_buffers(ts_model *model, ts_real *params, ts_real *grads) {
    model->params = params;
    model->grads = grads;
    for (int i = 0; i < model->table.count; i++) {
        ts_tensor *leaf = model->tensors[i];
        if (!leaf) continue; /* not bound yet */
        long offset = model->table.entries[i].offset;
        leaf->data = params ? params + offset : NULL;
        if (leaf->grad) leaf->grad->data = grads ? grads + offset : NULL;
    }
}

ts_tensor *ts_model_param(const ts_model *model, const char *name) {
    int i = ts_param_table_find(&model->table, name);
    return i >= 0 ? model->tensors[i] : NULL;
}

int ts_model_param_unit(const ts_model *model, int i) {
    int layer, used = 0;
    if (sscanf(model->table.entries[i].name, "layers.%d.%n", &layer, &used) == 1 && used > 0 &&
        layer >= 0)
        return layer + 1;
    return 0;
}

void ts_sequence_rng(const ts_batch *batch, int i, uint64_t purpose, ts_rng *rng) {
    uint64_t step = (uint64_t)(batch->step + 1); /* evaluation (-1) gets a stream of its own */
    uint64_t sequence = (uint64_t)(batch->first_index + i);
    ts_rng_seed_stream(rng, batch->seed ^ (purpose * 0x9E3779B97F4A7C15ull),
                       (step << 32) ^ sequence ^ ((uint64_t)batch->mode << 62));
}

long ts_model_non_embedding_params(const ts_model *model) {
    return ts_param_table_non_embedding(ts_model_global_table(model));
}

const ts_param_table *ts_model_global_table(const ts_model *model) {
    return model->layout ? &model->layout->global : &model->table;
}

int ts_model_param_index(const ts_model *model, const ts_tensor *leaf) {
    if (!model->tensors) return -1;
    for (int i = 0; i < model->table.count; i++)
        if (model->tensors[i] == leaf) return i;
    return -1;
}

bool ts_model_param_blocked(const ts_model *model, int i) {
    return model->layout && i >= 0 && i < model->table.count && model->layout->blocked[i];
}

/* The local table of d's process for global, and which entries are blocked. */
static bool local_table(const ts_param_table *global, const ts_block_cyclic *d,
                        ts_param_table *local, bool *blocked) {
    for (int i = 0; i < global->count; i++) {
        const ts_param_entry *e = &global->entries[i];
        blocked[i] =
            e->role.linear && e->ndim == 2 && ts_block_cyclic_fits(d, e->shape[0], e->shape[1]);
        int shape[4];
        memcpy(shape, e->shape, sizeof shape);
        if (blocked[i])
            ts_block_cyclic_local_shape(d, d->my_row, d->my_col, e->shape[0], e->shape[1], shape);
        int k = ts_param_table_add(local, e->name, e->ndim, shape, e->role);
        if (k != i) return false;
        local->entries[k].decay = e->decay;
        local->entries[k].lr_scale = e->lr_scale;
    }
    return true;
}

bool ts_model_distribute(ts_model *model, const ts_block_cyclic *d, char *err, size_t errlen) {
    if (model->layout) {
        snprintf(err, errlen, "the model is already distributed");
        return false;
    }
    for (int i = 0; model->tensors && i < model->table.count; i++)
        if (model->tensors[i]) {
            snprintf(err, errlen, "distribute the model before binding its leaves");
            return false;
        }
    ts_param_layout *layout = calloc(1, sizeof *layout);
    bool *blocked =
        calloc((size_t)(model->table.count > 0 ? model->table.count : 1), sizeof *blocked);
    ts_param_table local = {0};
    ts_real *params = NULL, *grads = NULL;
    bool ok = layout && blocked && local_table(&model->table, d, &local, blocked);
    if (ok && !model->counting_only) {
        size_t n = (size_t)(local.total > 0 ? local.total : 1);
        params = malloc(n * sizeof *params);
        grads = calloc(n, sizeof *grads);
        ok = params && grads;
    }
    if (!ok) {
        snprintf(err, errlen, "out of memory distributing the model's %d tensors",
                 model->table.count);
        free(layout);
        free(blocked);
        ts_param_table_free(&local);
        free(params);
        free(grads);
        return false;
    }
    const ts_param_table *global = &model->table;
    for (int i = 0; params && i < global->count; i++) {
        const ts_param_entry *e = &global->entries[i];
        ts_real *mine = params + local.entries[i].offset, *whole = model->params + e->offset;
        if (blocked[i])
            ts_block_cyclic_copy(d, d->my_row, d->my_col, e->shape[0], e->shape[1], mine, whole,
                                 sizeof(ts_real), true);
        else
            memcpy(mine, whole, (size_t)e->numel * sizeof *mine);
    }
    layout->grid = *d;
    layout->global = model->table;
    layout->blocked = blocked;
    model->table = local;
    model->layout = layout;
    if (params) {
        free(model->params);
        free(model->grads);
        model->params = params;
        model->grads = grads;
    }
    return true;
}
