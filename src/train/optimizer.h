/* AdamW and plain SGD over the flat parameter buffer, the learning-rate
 * schedule of the reference (linear warm-up, cosine decay to lr * min_ratio)
 * and global gradient-norm clipping. */
#ifndef TS_OPTIMIZER_H
#define TS_OPTIMIZER_H

#include <stdbool.h>

#include "core/optimizer_config.h"
#include "engine/real.h"
#include "models/param_table.h"

typedef struct ts_optimizer {
    ts_optimizer_config config;
    long n;
    ts_real *m, *v;       /* AdamW moments (NULL for SGD), n each */
    long t;               /* updates applied */
} ts_optimizer;

bool ts_optimizer_init(ts_optimizer *opt, const ts_optimizer_config *config, long n);
void ts_optimizer_free(ts_optimizer *opt);
double ts_learning_rate(const ts_optimizer_config *config, long step);
double ts_grad_norm(const ts_real *grads, long n);
/* Scales grads so their norm is at most `clip`; returns the norm before. */
double ts_clip_grad_norm(ts_real *grads, long n, double clip);
void ts_optimizer_step(ts_optimizer *opt, const ts_param_table *table, ts_real *params,
                       const ts_real *grads, double lr);

#endif
