#include "models/linear.h"

ts_tensor *ts_linear(ts_ctx *ctx, const ts_linear_hook *hook, ts_tensor *x, ts_tensor *w) {
    if (hook && hook->apply) return hook->apply(hook->user, ctx, x, w);
    return ts_matmul(ctx, x, w, false, true);
}

ts_tensor *ts_linear_residual(ts_ctx *ctx, const ts_linear_hook *hook, ts_tensor *residual,
                              ts_tensor *x, ts_tensor *w) {
    if (hook && hook->apply) return ts_add(ctx, residual, hook->apply(hook->user, ctx, x, w));
    return ts_matmul_add(ctx, residual, x, w, false, true);
}
