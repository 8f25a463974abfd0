/* The work one rank does for one micro-batch of a training step: the model's
 * loss, then its gradient, scaled to the micro-batch's share of the global
 * mean, accumulated into the model's flat gradient buffer. The trainer and
 * the step-cost counter (step_cost.h) both call this, so the FLOPs a plan
 * counts are those of the very code a run executes. */
#ifndef TS_MICRO_BATCH_H
#define TS_MICRO_BATCH_H

#include "engine/engine.h"
#include "models/model.h"

/* weight: the micro-batch's share of the global mean (its sequences over the
 * step's). Everything the pass creates in ctx is released before returning.
 * Returns the (unweighted) loss; stats as ts_model_ops.loss fills them. In a
 * counting context (ts_is_counting) nothing is computed and the loss is NaN. */
double ts_train_micro_batch(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double weight,
                            double *stats);

#endif
