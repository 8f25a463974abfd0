/* AdamW and plain SGD over the flat parameter buffer, or over one range of
 * it (the shard a rank owns under ZeRO, parallel/strategy.h), and the
 * learning-rate schedule of the reference (linear warm-up, cosine decay to
 * lr * min_ratio). Gradient clipping is global, so it lives with the
 * communication (ts_parallel_clip). */
#ifndef TS_OPTIMIZER_H
#define TS_OPTIMIZER_H

#include <stdbool.h>

#include "core/optimizer_config.h"
#include "engine/real.h"
#include "core/param_table.h"

typedef struct ts_optimizer {
    ts_optimizer_config config;
    long first, n;        /* the range [first, first + n) of the flat buffers it updates */
    bool sharded;         /* the range is one rank's shard (checkpointed as such) */
    ts_real *m, *v;       /* AdamW moments of the range (NULL for SGD), n each */
    long t;               /* updates applied */
} ts_optimizer;

/* An optimiser for elements [first, first + n) of the flat buffers; sharded
 * says that other ranks own the rest. */
bool ts_optimizer_init(ts_optimizer *opt, const ts_optimizer_config *config, long first, long n,
                       bool sharded);
void ts_optimizer_free(ts_optimizer *opt);
double ts_learning_rate(const ts_optimizer_config *config, long step);
/* Updates params[first .. first + n) from grads, the gradient of that range
 * (grads[0] belongs to params[first]). Each table entry's decay and learning
 * rate scale apply to its elements inside the range, so a range boundary
 * may cut through a tensor. */
void ts_optimizer_step(ts_optimizer *opt, const ts_param_table *table, ts_real *params,
                       const ts_real *grads, double lr);

#endif
