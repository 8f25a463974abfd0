#include "engine/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "engine/context.h"
#include "engine/recycler.h"

static ts_tensor *new_header(ts_ctx *ctx, int ndim, const int *shape) {
    if (ndim < 0 || ndim > TS_MAX_DIMS)
        ts_fail(ctx, "tensor", "%d dimensions requested, at most %d supported", ndim, TS_MAX_DIMS);
    ts_tensor *t = ts_alloc(ctx, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) ts_fail(ctx, "tensor", "dimension %d has size %d", i, shape[i]);
        t->shape[i] = shape[i];
        t->numel *= shape[i];
    }
    return t;
}

ts_tensor *ts_new(ts_ctx *ctx, int ndim, const int *shape) {
    ts_tensor *t = new_header(ctx, ndim, shape);
    if (ctx->counting) return t;
    size_t bytes = (size_t)t->numel * sizeof(ts_real);
    t->data = ts_recycler_take(ctx, bytes);
    if (!t->data) t->data = ts_alloc(ctx, bytes);
    t->own_buffer = true;
    return t;
}

ts_tensor *ts_zeros(ts_ctx *ctx, int ndim, const int *shape) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    if (t->data) memset(t->data, 0, (size_t)t->numel * sizeof(ts_real));
    return t;
}

ts_tensor *ts_full(ts_ctx *ctx, int ndim, const int *shape, ts_real value) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    for (long i = 0; t->data && i < t->numel; i++) t->data[i] = value;
    return t;
}

ts_tensor *ts_from_array(ts_ctx *ctx, int ndim, const int *shape, const ts_real *values) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    if (t->data) memcpy(t->data, values, (size_t)t->numel * sizeof(ts_real));
    return t;
}

ts_tensor *ts_new_like(ts_ctx *ctx, const ts_tensor *t) {
    return ts_new(ctx, t->ndim, t->shape);
}

ts_tensor *ts_wrap(ts_ctx *ctx, ts_real *data, int ndim, const int *shape) {
    ts_tensor *t = new_header(ctx, ndim, shape);
    t->data = data;
    return t;
}

ts_tensor *ts_param(ts_ctx *ctx, ts_real *data, ts_real *grad, int ndim, const int *shape,
                    const char *name) {
    ts_tensor *t = ts_wrap(ctx, data, ndim, shape);
    t->requires_grad = true;
    t->name = name;
    if (grad) t->grad = ts_wrap(ctx, grad, ndim, shape);
    return t;
}

ts_tensor *ts_detach(ts_ctx *ctx, ts_tensor *t) {
    ts_tensor *d = new_header(ctx, t->ndim, t->shape);
    d->data = t->data;
    d->name = t->name;
    return d;
}

void ts_set_requires_grad(ts_ctx *ctx, ts_tensor *t, bool requires_grad) {
    if (t->node)
        ts_fail(ctx, "set_requires_grad",
                "tensor is the output of an op; detach it first to make a leaf");
    t->requires_grad = requires_grad;
}

void ts_copy_rows(const ts_real *src, long ld_src, ts_real *dst, long ld_dst, long rows,
                  long width) {
    for (long r = 0; r < rows; r++)
        memcpy(dst + r * ld_dst, src + r * ld_src, (size_t)width * sizeof *dst);
}

bool ts_same_shape(const ts_tensor *a, const ts_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *ts_shape_str(const ts_tensor *t, char *buf, int size) {
    int n = snprintf(buf, (size_t)size, "[");
    for (int i = 0; i < t->ndim && n < size; i++)
        n += snprintf(buf + n, (size_t)(size - n), i ? ", %d" : "%d", t->shape[i]);
    if (n < size) snprintf(buf + n, (size_t)(size - n), "]");
    return buf;
}

int ts_dim(const ts_tensor *t, int axis) {
    if (axis < 0) axis += t->ndim;
    return t->shape[axis];
}

ts_real ts_item(ts_ctx *ctx, const ts_tensor *t) {
    if (t->numel != 1) {
        char s[64];
        ts_fail(ctx, "item", "tensor of shape %s is not a single value",
                ts_shape_str(t, s, sizeof s));
    }
    return t->data ? t->data[0] : (ts_real)NAN;
}
