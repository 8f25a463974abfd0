/* AdamW and plain SGD over the flat parameter buffer, or over a set of
 * ranges of it (what a rank owns under ZeRO: one range under zero1, a slice
 * of every unit under zero2 and zero3, parallel/strategy.h), and the
 * learning-rate schedule of the reference (linear warm-up, cosine decay to
 * lr * min_ratio). Gradient clipping is global, so it lives with the
 * communication (ts_parallel_clip). */
#ifndef TS_OPTIMIZER_H
#define TS_OPTIMIZER_H

#include <stdbool.h>

#include "core/optimizer_config.h"
#include "engine/real.h"
#include "core/param_table.h"
#include "parallel/param_units.h"

typedef struct ts_optimizer {
    ts_optimizer_config config;
    ts_param_interval *ranges; /* the ranges of the flat buffers it updates, ascending */
    int n_ranges;
    long n;         /* their elements, the length of the owned order */
    bool sharded;   /* the ranges are one rank's shard (checkpointed as such) */
    ts_real *m, *v; /* AdamW moments of the ranges concatenated (NULL for SGD), n each */
    long t;         /* updates applied */
} ts_optimizer;

/* An optimiser for the n_ranges ranges of the flat buffers (copied);
 * sharded says that other ranks own the rest. False if out of memory. */
bool ts_optimizer_init(ts_optimizer *opt, const ts_optimizer_config *config,
                       const ts_param_interval *ranges, int n_ranges, bool sharded);
void ts_optimizer_free(ts_optimizer *opt);
double ts_learning_rate(const ts_optimizer_config *config, long step);
/* Updates params inside the ranges from grads, the gradient of the ranges
 * concatenated in order (grads[0] belongs to params[ranges[0].first]). Each
 * table entry's decay and learning rate scale apply to its elements inside
 * each range, so a range boundary may cut through a tensor. */
void ts_optimizer_step(ts_optimizer *opt, const ts_param_table *table, ts_real *params,
                       const ts_real *grads, double lr);

#endif
