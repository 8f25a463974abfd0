#include "engine/autodiff.h"
#include "engine/ops.h"

/* Flattens everything before the last two dims into a batch count. */
static long batch_count(const ts_tensor *t) {
    long n = 1;
    for (int i = 0; i < t->ndim - 2; i++) n *= t->shape[i];
    return n;
}

static ts_tensor *as_rows(ts_ctx *ctx, ts_tensor *t) {
    int cols = t->shape[t->ndim - 1];
    return ts_reshape(ctx, t, TS_SHAPE((int)(t->numel / cols), cols));
}

static void matmul_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    ts_tensor *a = node->in[0], *b = node->in[1];
    bool ta = node->iattr[0], tb = node->iattr[1];
    bool shared_b = b->ndim == 2 && a->ndim > 2;
    if (needs[0]) {
        if (!ta)
            gin[0] = ts_matmul(ctx, g, b, false, !tb);
        else
            gin[0] = tb ? ts_matmul(ctx, b, g, true, true) : ts_matmul(ctx, b, g, false, true);
    }
    if (needs[1]) {
        if (shared_b) {
            ts_tensor *a2 = as_rows(ctx, a), *g2 = as_rows(ctx, g);
            gin[1] = tb ? ts_matmul(ctx, g2, a2, true, false) : ts_matmul(ctx, a2, g2, true, false);
        } else if (!tb) {
            gin[1] = ta ? ts_matmul(ctx, a, g, false, false) : ts_matmul(ctx, a, g, true, false);
        } else {
            gin[1] = ta ? ts_matmul(ctx, g, a, true, true) : ts_matmul(ctx, g, a, true, false);
        }
    }
}

ts_tensor *ts_matmul(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, bool ta, bool tb) {
    char sa[64], sb[64];
    if (a->ndim < 2 || b->ndim < 2)
        ts_fail(ctx, "matmul", "operands need at least 2 dims, got %s and %s",
                ts_shape_str(a, sa, sizeof sa), ts_shape_str(b, sb, sizeof sb));
    bool shared_b = b->ndim == 2 && a->ndim > 2;
    if (shared_b && ta)
        ts_fail(ctx, "matmul", "a shared 2-D right operand needs an untransposed left operand");
    if (!shared_b && a->ndim != b->ndim)
        ts_fail(ctx, "matmul", "batch dims differ: %s and %s", ts_shape_str(a, sa, sizeof sa),
                ts_shape_str(b, sb, sizeof sb));
    for (int i = 0; !shared_b && i < a->ndim - 2; i++)
        if (a->shape[i] != b->shape[i])
            ts_fail(ctx, "matmul", "batch dims differ: %s and %s", ts_shape_str(a, sa, sizeof sa),
                    ts_shape_str(b, sb, sizeof sb));
    int ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    int m = ta ? ac : ar, k = ta ? ar : ac;
    int kb = tb ? bc : br, n = tb ? br : bc;
    if (k != kb)
        ts_fail(ctx, "matmul", "inner dims differ: %s%s @ %s%s", ts_shape_str(a, sa, sizeof sa),
                ta ? "^T" : "", ts_shape_str(b, sb, sizeof sb), tb ? "^T" : "");

    int shape[TS_MAX_DIMS];
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = m;
    shape[a->ndim - 1] = n;
    ts_tensor *out = ts_new(ctx, a->ndim, shape);

    long batches = batch_count(a);
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
    if (ctx->counting) {
        /* shapes and FLOPs only */
    } else if (shared_b) { /* one GEMM over all rows of a */
        ts_cblas_gemm(CblasRowMajor, opa, opb, (int)(batches * m), n, k, 1, a->data, ac, b->data,
                      bc, 0, out->data, n);
    } else {
        for (long i = 0; i < batches; i++)
            ts_cblas_gemm(CblasRowMajor, opa, opb, m, n, k, 1, a->data + i * ar * ac, ac,
                          b->data + i * br * bc, bc, 0, out->data + i * (long)m * n, n);
    }
    ts_count_flops(ctx, 2.0 * batches * m * n * k);

    ts_node *node = ts_record(ctx, "matmul", matmul_backward, out, 2, (ts_tensor *[]){a, b});
    if (node) {
        node->iattr[0] = ta;
        node->iattr[1] = tb;
    }
    return out;
}
