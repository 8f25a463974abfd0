#include "models/linear.h"

ts_tensor *ts_linear(ts_ctx *ctx, const ts_linear_hook *hook, ts_tensor *x, ts_tensor *w) {
    if (hook && hook->apply) return hook->apply(hook->user, ctx, x, w);
    return ts_matmul(ctx, x, w, false, true);
}
