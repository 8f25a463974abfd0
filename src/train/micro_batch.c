#include "train/micro_batch.h"

double ts_train_micro_batch(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double weight,
                            double *stats) {
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *loss = model->ops->loss(model, ctx, batch, stats);
    double value = (double)ts_item(ctx, loss);
    ts_backward(ctx, ts_scale(ctx, loss, weight), NULL);
    ts_release(ctx, mark);
    return value;
}
