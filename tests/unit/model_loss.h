/* A model's loss on a batch as a plain number, for the finite differences
 * of the model-level gradient checks: no graph recorded, the evaluation's
 * scratch given back to the arena. */
#ifndef TS_TEST_MODEL_LOSS_H
#define TS_TEST_MODEL_LOSS_H

#include <stdbool.h>

#include "models/model.h"

static inline double model_loss_value(ts_model *model, ts_ctx *ctx, const ts_batch *batch) {
    ts_mark mark = ts_get_mark(ctx);
    bool recording = ts_set_grad_enabled(ctx, false);
    double loss = model->ops->loss(model, ctx, batch, NULL)->data[0];
    ts_set_grad_enabled(ctx, recording);
    ts_release(ctx, mark);
    return loss;
}

#endif
