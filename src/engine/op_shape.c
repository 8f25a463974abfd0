#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

static int normalise_axis(ts_ctx *ctx, const char *op, const ts_tensor *a, int axis) {
    int ax = axis < 0 ? axis + a->ndim : axis;
    if (ax < 0 || ax >= a->ndim)
        ts_fail(ctx, op, "axis %d out of range for %d dims", axis, a->ndim);
    return ax;
}

/* Elements before / after `axis` in row-major order. */
static long outer_size(const ts_tensor *a, int axis) {
    long n = 1;
    for (int i = 0; i < axis; i++) n *= a->shape[i];
    return n;
}
static long inner_size(const ts_tensor *a, int axis) {
    long n = 1;
    for (int i = axis + 1; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

/* ---------------------------------------------------------------- reshape (a view) */

static void reshape_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    ts_tensor *a = node->in[0];
    if (needs[0]) gin[0] = ts_reshape(ctx, g, a->ndim, a->shape);
}

ts_tensor *ts_reshape(ts_ctx *ctx, ts_tensor *a, int ndim, const int *shape) {
    int resolved[TS_MAX_DIMS];
    long known = 1;
    int infer = -1;
    if (ndim < 1 || ndim > TS_MAX_DIMS) ts_fail(ctx, "reshape", "%d dims requested", ndim);
    for (int i = 0; i < ndim; i++) {
        resolved[i] = shape[i];
        if (shape[i] == -1 && infer < 0)
            infer = i;
        else
            known *= shape[i];
    }
    if (infer >= 0 && known > 0 && a->numel % known == 0) resolved[infer] = (int)(a->numel / known);
    long numel = 1;
    for (int i = 0; i < ndim; i++) numel *= resolved[i];
    if (numel != a->numel || (infer >= 0 && resolved[infer] <= 0)) {
        char s[64];
        ts_fail(ctx, "reshape", "cannot view %s (%ld elements) with %d dims of %ld elements",
                ts_shape_str(a, s, sizeof s), a->numel, ndim, numel);
    }
    ts_tensor *out = ts_wrap(ctx, a->data, ndim, resolved);
    out->name = a->name;
    ts_record(ctx, "reshape", reshape_backward, out, 1, &a);
    return out;
}

/* ---------------------------------------------------------------- permute (a copy) */

static void permute_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    int inverse[TS_MAX_DIMS];
    for (int i = 0; i < node->out->ndim; i++) inverse[node->iattr[i]] = i;
    if (needs[0]) gin[0] = ts_permute(ctx, g, inverse);
}

ts_tensor *ts_permute(ts_ctx *ctx, ts_tensor *a, const int *perm) {
    int nd = a->ndim, seen = 0, shape[TS_MAX_DIMS] = {0};
    for (int i = 0; i < nd; i++) {
        if (perm[i] < 0 || perm[i] >= nd || (seen & (1 << perm[i])))
            ts_fail(ctx, "permute", "entry %d (%d) is not a permutation of %d dims", i, perm[i],
                    nd);
        seen |= 1 << perm[i];
        shape[i] = a->shape[perm[i]];
    }
    ts_tensor *out = ts_new(ctx, nd, shape);
    /* Pad to 4 dims in front so one loop nest serves every rank. */
    long in_stride[TS_MAX_DIMS], s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        in_stride[i] = s;
        s *= a->shape[i];
    }
    int oshape[TS_MAX_DIMS];
    long step[TS_MAX_DIMS];
    int pad = TS_MAX_DIMS - nd;
    for (int i = 0; i < TS_MAX_DIMS; i++) {
        oshape[i] = i < pad ? 1 : shape[i - pad];
        step[i] = i < pad ? 0 : in_stride[perm[i - pad]];
    }
    ts_real *restrict po = out->data;
    int run = oshape[3];
    for (int i0 = 0; i0 < (ctx->counting ? 0 : oshape[0]); i0++)
        for (int i1 = 0; i1 < oshape[1]; i1++)
            for (int i2 = 0; i2 < oshape[2]; i2++, po += run) {
                const ts_real *restrict pa = a->data + i0 * step[0] + i1 * step[1] + i2 * step[2];
                long st = step[3];
                /* Runs are short (a head's dh = 64 elements when heads are
                 * split or merged): an inline copy, not a memcpy call per run
                 * (fifth round, docs/performance.md). */
                if (st == 1)
                    for (int i3 = 0; i3 < run; i3++) po[i3] = pa[i3];
                else
                    for (int i3 = 0; i3 < run; i3++) po[i3] = pa[i3 * st];
            }
    ts_node *node = ts_record(ctx, "permute", permute_backward, out, 1, &a);
    if (node)
        for (int i = 0; i < nd; i++) node->iattr[i] = perm[i];
    return out;
}

ts_tensor *ts_transpose(ts_ctx *ctx, ts_tensor *a, int axis0, int axis1) {
    axis0 = normalise_axis(ctx, "transpose", a, axis0);
    axis1 = normalise_axis(ctx, "transpose", a, axis1);
    int perm[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) perm[i] = i;
    perm[axis0] = axis1;
    perm[axis1] = axis0;
    return ts_permute(ctx, a, perm);
}

/* ---------------------------------------------------------------- slice and pad */

static void slice_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                           ts_tensor **gin) {
    int axis = node->iattr[0], start = node->iattr[1];
    if (needs[0]) gin[0] = ts_pad(ctx, g, axis, start, node->in[0]->shape[axis]);
}

static void pad_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    int axis = node->iattr[0], start = node->iattr[1];
    if (needs[0]) gin[0] = ts_slice(ctx, g, axis, start, node->in[0]->shape[axis]);
}

ts_tensor *ts_slice(ts_ctx *ctx, ts_tensor *a, int axis, int start, int len) {
    axis = normalise_axis(ctx, "slice", a, axis);
    int dim = a->shape[axis];
    if (start < 0 || len <= 0 || start + len > dim)
        ts_fail(ctx, "slice", "range [%d, %d) outside axis %d of size %d", start, start + len, axis,
                dim);
    int shape[TS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = len;
    long outer = outer_size(a, axis), inner = inner_size(a, axis);
    ts_tensor *out;
    if (outer == 1) {
        out = ts_wrap(ctx, a->data ? a->data + (long)start * inner : NULL, a->ndim, shape);
    } else {
        out = ts_new(ctx, a->ndim, shape);
        if (!ctx->counting)
            ts_copy_rows(a->data + (long)start * inner, dim * inner, out->data, len * inner, outer,
                         len * inner);
    }
    ts_node *node = ts_record(ctx, "slice", slice_backward, out, 1, &a);
    if (node) {
        node->iattr[0] = axis;
        node->iattr[1] = start;
    }
    return out;
}

ts_tensor *ts_pad(ts_ctx *ctx, ts_tensor *a, int axis, int start, int total) {
    axis = normalise_axis(ctx, "pad", a, axis);
    int len = a->shape[axis];
    if (start < 0 || start + len > total)
        ts_fail(ctx, "pad", "%d elements at %d do not fit in %d", len, start, total);
    int shape[TS_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[axis] = total;
    ts_tensor *out = ts_zeros(ctx, a->ndim, shape);
    long outer = outer_size(a, axis), inner = inner_size(a, axis);
    if (!ctx->counting)
        ts_copy_rows(a->data, len * inner, out->data + (long)start * inner, total * inner, outer,
                     len * inner);
    ts_node *node = ts_record(ctx, "pad", pad_backward, out, 1, &a);
    if (node) {
        node->iattr[0] = axis;
        node->iattr[1] = start;
    }
    return out;
}

/* ---------------------------------------------------------------- concat */

static void concat_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    int axis = node->iattr[0], start = 0;
    for (int i = 0; i < node->n_in; i++) {
        int len = node->in[i]->shape[axis];
        if (needs[i]) gin[i] = ts_slice(ctx, g, axis, start, len);
        start += len;
    }
}

ts_tensor *ts_concat(ts_ctx *ctx, int n, ts_tensor *const *parts, int axis) {
    if (n < 1) ts_fail(ctx, "concat", "no parts");
    if (n == 1) return parts[0];
    if (n > TS_NODE_MAX_INPUTS) { /* one node holds at most TS_NODE_MAX_INPUTS parts */
        ts_tensor *rest =
            ts_concat(ctx, n - (TS_NODE_MAX_INPUTS - 1), parts + TS_NODE_MAX_INPUTS - 1, axis);
        ts_tensor *head[TS_NODE_MAX_INPUTS];
        for (int i = 0; i < TS_NODE_MAX_INPUTS - 1; i++) head[i] = parts[i];
        head[TS_NODE_MAX_INPUTS - 1] = rest;
        return ts_concat(ctx, TS_NODE_MAX_INPUTS, head, axis);
    }
    const ts_tensor *first = parts[0];
    axis = normalise_axis(ctx, "concat", first, axis);
    int shape[TS_MAX_DIMS];
    memcpy(shape, first->shape, sizeof shape);
    shape[axis] = 0;
    for (int i = 0; i < n; i++) {
        const ts_tensor *p = parts[i];
        bool ok = p->ndim == first->ndim;
        for (int d = 0; ok && d < p->ndim; d++) ok = d == axis || p->shape[d] == first->shape[d];
        if (!ok) {
            char s0[64], s1[64];
            ts_fail(ctx, "concat", "part %d of shape %s does not match %s along axis %d", i,
                    ts_shape_str(p, s1, sizeof s1), ts_shape_str(first, s0, sizeof s0), axis);
        }
        shape[axis] += p->shape[axis];
    }
    ts_tensor *out = ts_new(ctx, first->ndim, shape);
    long outer = outer_size(first, axis), inner = inner_size(first, axis);
    long start = 0;
    for (int i = 0; i < (ctx->counting ? 0 : n); i++) {
        long len = parts[i]->shape[axis];
        ts_copy_rows(parts[i]->data, len * inner, out->data + start * inner, shape[axis] * inner,
                     outer, len * inner);
        start += len;
    }
    ts_node *node = ts_record(ctx, "concat", concat_backward, out, n, parts);
    if (node) node->iattr[0] = axis;
    return out;
}
