#include "train/optimizer.h"

#include <math.h>
#include <stdlib.h>

bool ts_optimizer_init(ts_optimizer *opt, const ts_optimizer_config *config,
                       const ts_param_interval *ranges, int n_ranges, bool sharded) {
    *opt = (ts_optimizer){.config = *config, .n_ranges = n_ranges, .sharded = sharded};
    opt->ranges = malloc((size_t)(n_ranges > 0 ? n_ranges : 1) * sizeof *opt->ranges);
    if (!opt->ranges) return false;
    long n = 0;
    for (int k = 0; k < n_ranges; k++) {
        opt->ranges[k] = ranges[k];
        n += ranges[k].count;
    }
    opt->n = n;
    if (config->kind == TS_SGD) return true;
    /* An empty shard (more ranks than elements) still gets a valid buffer. */
    opt->m = calloc((size_t)(n > 0 ? n : 1), sizeof *opt->m);
    opt->v = calloc((size_t)(n > 0 ? n : 1), sizeof *opt->v);
    if (!opt->m || !opt->v) {
        ts_optimizer_free(opt);
        return false;
    }
    return true;
}

void ts_optimizer_free(ts_optimizer *opt) {
    free(opt->ranges);
    free(opt->m);
    free(opt->v);
    opt->ranges = NULL;
    opt->m = opt->v = NULL;
}

double ts_learning_rate(const ts_optimizer_config *c, long step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps)
        return c->lr * (double)(step + 1) / (double)c->warmup_steps;
    long decay_steps = c->total_steps - c->warmup_steps;
    if (decay_steps <= 0) return c->lr;
    double progress = (double)(step - c->warmup_steps) / (double)decay_steps;
    if (progress > 1) progress = 1;
    double floor_lr = c->lr * c->min_lr_ratio;
    return floor_lr + 0.5 * (c->lr - floor_lr) * (1 + cos(3.141592653589793 * progress));
}

/* One update of params[lo, hi), whose gradient and moments start at grads,
 * m and v (m, v NULL for SGD). */
static void step_range(const ts_optimizer_config *c, const ts_param_table *table, ts_real *params,
                       const ts_real *grads, ts_real *m_range, ts_real *v_range, long lo, long hi,
                       double lr, double bias1, double bias2) {
    for (int e = 0; e < table->count; e++) {
        const ts_param_entry *entry = &table->entries[e];
        /* The part of this tensor inside the range. */
        long from = entry->offset > lo ? entry->offset : lo;
        long to = entry->offset + entry->numel < hi ? entry->offset + entry->numel : hi;
        if (from >= to) continue;
        long count = to - from;
        double step_lr = lr * entry->lr_scale;
        double decay = entry->decay ? c->weight_decay : 0;
        ts_real *p = params + from;
        const ts_real *g = grads + (from - lo);
        if (c->kind == TS_SGD) {
            for (long i = 0; i < count; i++) p[i] -= (ts_real)(step_lr * (g[i] + decay * p[i]));
            continue;
        }
        ts_real *m = m_range + (from - lo), *v = v_range + (from - lo);
        ts_real b1 = (ts_real)c->beta1, b2 = (ts_real)c->beta2;
        /* lr (m / bias1) / (sqrt(v / bias2) + eps) with the corrections and
         * the rate folded into constants, in ts_real: the loop vectorises
         * (a double division, sqrt and division per element cost 13 ms per
         * update of 2M parameters, 1% of a benchmark step). */
        ts_real m_scale = (ts_real)(step_lr / bias1), v_scale = (ts_real)(1 / sqrt(bias2));
        ts_real eps = (ts_real)c->eps, lr_decay = (ts_real)(step_lr * decay);
        for (long i = 0; i < count; i++) {
            ts_real mi = b1 * m[i] + (1 - b1) * g[i];
            ts_real vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
            m[i] = mi;
            v[i] = vi;
            p[i] -= m_scale * mi / (TS_SQRT(vi) * v_scale + eps) + lr_decay * p[i];
        }
    }
}

void ts_optimizer_step(ts_optimizer *opt, const ts_param_table *table, ts_real *params,
                       const ts_real *grads, double lr) {
    const ts_optimizer_config *c = &opt->config;
    opt->t++;
    double bias1 = 1 - pow(c->beta1, (double)opt->t), bias2 = 1 - pow(c->beta2, (double)opt->t);
    long at = 0; /* the range's place in the owned order */
    for (int k = 0; k < opt->n_ranges; k++) {
        long lo = opt->ranges[k].first, hi = lo + opt->ranges[k].count;
        if (hi > lo)
            step_range(c, table, params, grads + at, opt->m ? opt->m + at : NULL,
                       opt->v ? opt->v + at : NULL, lo, hi, lr, bias1, bias2);
        at += hi - lo;
    }
}
