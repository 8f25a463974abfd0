#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

int32_t *ts_copy_index(ts_ctx *ctx, const int32_t *idx, long n) {
    int32_t *copy = ts_alloc(ctx, (size_t)n * sizeof *copy);
    memcpy(copy, idx, (size_t)n * sizeof *copy);
    return copy;
}

static ts_node *record_indexed(ts_ctx *ctx, const char *op, ts_backward_fn backward, ts_tensor *out,
                               ts_tensor *in, const int32_t *idx, long n, int v) {
    ts_node *node = ts_record(ctx, op, backward, out, 1, &in);
    if (node) {
        node->index = ts_copy_index(ctx, idx, n);
        node->index_len = n;
        node->iattr[0] = v;
    }
    return node;
}

static void embedding_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                               ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_scatter_rows(ctx, g, node->index, node->iattr[0]);
}

static void scatter_rows_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_embedding(ctx, g, node->index, node->index_len);
}

ts_tensor *ts_embedding(ts_ctx *ctx, ts_tensor *table, const int32_t *ids, long n) {
    if (table->ndim != 2)
        ts_fail(ctx, "embedding", "table must be [V, D], has %d dims", table->ndim);
    int v = table->shape[0], d = table->shape[1];
    ts_tensor *out = ts_new(ctx, TS_SHAPE((int)n, d));
    for (long r = 0; r < n; r++) {
        if (ids[r] < 0 || ids[r] >= v)
            ts_fail(ctx, "embedding", "id %d at row %ld outside vocabulary of %d", ids[r], r, v);
        if (!ctx->counting)
            memcpy(out->data + r * d, table->data + (long)ids[r] * d, (size_t)d * sizeof(ts_real));
    }
    record_indexed(ctx, "embedding", embedding_backward, out, table, ids, n, v);
    return out;
}

ts_tensor *ts_scatter_rows(ts_ctx *ctx, ts_tensor *g, const int32_t *ids, int v) {
    if (g->ndim != 2) ts_fail(ctx, "scatter_rows", "gradient must be [n, D], has %d dims", g->ndim);
    long n = g->shape[0];
    int d = g->shape[1];
    ts_tensor *out = ts_zeros(ctx, TS_SHAPE(v, d));
    for (long r = 0; r < n; r++) {
        if (ids[r] < 0 || ids[r] >= v)
            ts_fail(ctx, "scatter_rows", "id %d at row %ld outside %d rows", ids[r], r, v);
        if (ctx->counting) continue;
        ts_real *dst = out->data + (long)ids[r] * d;
        const ts_real *src = g->data + r * d;
        for (int i = 0; i < d; i++) dst[i] += src[i];
    }
    ts_count_flops(ctx, (double)g->numel);
    record_indexed(ctx, "scatter_rows", scatter_rows_backward, out, g, ids, n, v);
    return out;
}

static void gather_last_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                 ts_tensor **gin) {
    ts_tensor *x = node->in[0];
    if (!needs[0]) return;
    ts_tensor *s = ts_scatter_last(ctx, g, node->index, node->iattr[0]);
    gin[0] = ts_reshape(ctx, s, x->ndim, x->shape);
}

static void scatter_last_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor **gin) {
    ts_tensor *in = node->in[0];
    if (needs[0])
        gin[0] = ts_reshape(ctx, ts_gather_last(ctx, g, node->index), in->ndim, in->shape);
}

ts_tensor *ts_gather_last(ts_ctx *ctx, ts_tensor *x, const int32_t *idx) {
    int v = x->shape[x->ndim - 1];
    long rows = x->numel / v;
    ts_tensor *out = ts_new(ctx, TS_SHAPE((int)rows));
    for (long r = 0; r < rows; r++) {
        if (idx[r] >= v)
            ts_fail(ctx, "gather_last", "index %d at row %ld outside %d columns", idx[r], r, v);
        if (!ctx->counting) out->data[r] = idx[r] < 0 ? 0 : x->data[r * v + idx[r]];
    }
    record_indexed(ctx, "gather_last", gather_last_backward, out, x, idx, rows, v);
    return out;
}

ts_tensor *ts_scatter_last(ts_ctx *ctx, ts_tensor *g, const int32_t *idx, int v) {
    long rows = g->numel;
    ts_tensor *out = ts_zeros(ctx, TS_SHAPE((int)rows, v));
    for (long r = 0; r < rows; r++) {
        if (idx[r] >= v)
            ts_fail(ctx, "scatter_last", "index %d at row %ld outside %d columns", idx[r], r, v);
        if (idx[r] >= 0 && !ctx->counting) out->data[r * v + idx[r]] = g->data[r];
    }
    record_indexed(ctx, "scatter_last", scatter_last_backward, out, g, idx, rows, v);
    return out;
}

ts_tensor *ts_one_hot(ts_ctx *ctx, const int32_t *idx, long n, int v) {
    ts_tensor *out = ts_zeros(ctx, TS_SHAPE((int)n, v));
    for (long r = 0; r < n; r++) {
        if (idx[r] < 0 || idx[r] >= v)
            ts_fail(ctx, "one_hot", "index %d at row %ld outside %d classes", idx[r], r, v);
        if (!ctx->counting) out->data[r * v + idx[r]] = 1;
    }
    return out;
}
