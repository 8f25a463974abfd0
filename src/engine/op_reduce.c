#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

/* Right-aligns shape to 4 dims, padding with 1. */
static void pad4(int ndim, const int *shape, int *out) {
    for (int i = 0; i < TS_MAX_DIMS; i++) {
        int j = i - (TS_MAX_DIMS - ndim);
        out[i] = j >= 0 ? shape[j] : 1;
    }
}

/* Strides of a contiguous tensor of padded shape `small` seen inside `big`,
 * 0 along broadcast dims. */
static void broadcast_strides(const int *small, const int *big, long *stride) {
    long s = 1;
    for (int i = TS_MAX_DIMS - 1; i >= 0; i--) {
        stride[i] = (small[i] == 1 && big[i] != 1) ? 0 : s;
        s *= small[i];
    }
}

static void check_broadcastable(ts_ctx *ctx, const char *op, const int *small, const int *big,
                                const ts_tensor *t, int ndim) {
    for (int i = 0; i < TS_MAX_DIMS; i++)
        if (small[i] != big[i] && small[i] != 1) {
            char s[64];
            ts_fail(ctx, op,
                    "tensor %s and a target of %d dims (dim %d: %d vs %d) do not broadcast",
                    ts_shape_str(t, s, sizeof s), ndim, i - (TS_MAX_DIMS - ndim), small[i], big[i]);
        }
}

static bool same_as(const ts_tensor *t, int ndim, const int *shape) {
    if (t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

static void sum_to_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    ts_tensor *a = node->in[0];
    if (needs[0]) gin[0] = ts_broadcast_to(ctx, g, a->ndim, a->shape);
}

static void broadcast_to_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor **gin) {
    ts_tensor *a = node->in[0];
    if (needs[0]) gin[0] = ts_sum_to(ctx, g, a->ndim, a->shape);
}

ts_tensor *ts_sum_to(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape) {
    if (same_as(a, ndim, shape)) return a;
    if (ndim > a->ndim)
        ts_fail(ctx, "sum_to", "target has more dims (%d) than input (%d)", ndim, a->ndim);
    int big[TS_MAX_DIMS], small[TS_MAX_DIMS];
    pad4(a->ndim, a->shape, big);
    pad4(ndim, shape, small);
    check_broadcastable(ctx, "sum_to", small, big, a, ndim);
    ts_tensor *out = ts_zeros(ctx, ndim, shape);
    long so[TS_MAX_DIMS];
    broadcast_strides(small, big, so);
    const ts_real *pa = a->data;
    long n = big[3];
    for (int i0 = 0; i0 < (ctx->counting ? 0 : big[0]); i0++)
        for (int i1 = 0; i1 < big[1]; i1++)
            for (int i2 = 0; i2 < big[2]; i2++, pa += n) {
                ts_real *po = out->data + i0 * so[0] + i1 * so[1] + i2 * so[2];
                if (so[3]) {
                    for (long i = 0; i < n; i++) po[i] += pa[i];
                } else {
                    /* In double: a loss is often a mean of many nearly equal
                     * terms, and a float running sum of 4096 of them is off
                     * by ~1e-6 relative. In lanes, which vectorise. */
                    po[0] += (ts_real)ts_row_sum_wide(pa, n);
                }
            }
    ts_count_flops(ctx, (double)a->numel);
    ts_record(ctx, "sum_to", sum_to_backward, out, 1, &a);
    return out;
}

ts_tensor *ts_broadcast_to(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape) {
    if (same_as(a, ndim, shape)) return a;
    if (ndim < a->ndim)
        ts_fail(ctx, "broadcast_to", "target has fewer dims (%d) than input (%d)", ndim, a->ndim);
    int big[TS_MAX_DIMS], small[TS_MAX_DIMS];
    pad4(ndim, shape, big);
    pad4(a->ndim, a->shape, small);
    check_broadcastable(ctx, "broadcast_to", small, big, a, ndim);
    ts_tensor *out = ts_new(ctx, ndim, shape);
    long sa[TS_MAX_DIMS];
    broadcast_strides(small, big, sa);
    ts_real *po = out->data;
    long n = big[3];
    for (int i0 = 0; i0 < (ctx->counting ? 0 : big[0]); i0++)
        for (int i1 = 0; i1 < big[1]; i1++)
            for (int i2 = 0; i2 < big[2]; i2++, po += n) {
                const ts_real *pa = a->data + i0 * sa[0] + i1 * sa[1] + i2 * sa[2];
                if (sa[3])
                    memcpy(po, pa, (size_t)n * sizeof *po);
                else
                    for (long i = 0; i < n; i++) po[i] = pa[0];
            }
    ts_record(ctx, "broadcast_to", broadcast_to_backward, out, 1, &a);
    return out;
}

ts_tensor *ts_sum(ts_ctx *ctx, ts_tensor *a, int axis, bool keepdim) {
    if (axis < 0) axis += a->ndim;
    if (axis < 0 || axis >= a->ndim)
        ts_fail(ctx, "sum", "axis %d out of range for %d dims", axis, a->ndim);
    int shape[TS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = 1;
    ts_tensor *out = ts_sum_to(ctx, a, a->ndim, shape);
    if (keepdim || a->ndim == 1) return out;
    for (int i = axis; i < a->ndim - 1; i++) shape[i] = a->shape[i + 1];
    return ts_reshape(ctx, out, a->ndim - 1, shape);
}

ts_tensor *ts_mean(ts_ctx *ctx, ts_tensor *a, int axis, bool keepdim) {
    return ts_scale(ctx, ts_sum(ctx, a, axis, keepdim), 1.0 / ts_dim(a, axis));
}

ts_tensor *ts_sum_all(ts_ctx *ctx, ts_tensor *a) {
    ts_tensor *flat = ts_reshape(ctx, a, TS_SHAPE((int)a->numel));
    return ts_sum_to(ctx, flat, TS_SHAPE(1));
}

ts_tensor *ts_mean_all(ts_ctx *ctx, ts_tensor *a) {
    return ts_scale(ctx, ts_sum_all(ctx, a), 1.0 / (double)a->numel);
}
