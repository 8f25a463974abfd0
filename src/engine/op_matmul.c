#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/profile.h"
#include "engine/small_gemm.h"

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

/* op(a) op(b) for a of ndim >= 2 and b of the same batch dims or a shared
 * 2-D b, checked; shape (a's batch dims, m, n) into shape. */
static void check_matmul(ts_ctx *ctx, const ts_tensor *a, const ts_tensor *b, bool ta, bool tb,
                         int *shape) {
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
    int k = ta ? ar : ac, kb = tb ? bc : br;
    if (k != kb)
        ts_fail(ctx, "matmul", "inner dims differ: %s%s @ %s%s", ts_shape_str(a, sa, sizeof sa),
                ta ? "^T" : "", ts_shape_str(b, sb, sizeof sb), tb ? "^T" : "");
    for (int i = 0; i < a->ndim - 2; i++) shape[i] = a->shape[i];
    shape[a->ndim - 2] = ta ? ac : ar;
    shape[a->ndim - 1] = tb ? br : bc;
}

/* Products into a fresh output (beta 0) of an untransposed left operand
 * with at most SMALL_GEMM_MAX_N columns and SMALL_GEMM_MAX_K depth: the
 * weight products of the forward (x W^T) and of the backward's input
 * gradients (g W) at the widths this suite trains. OpenBLAS zeroes such an
 * output in a pass of its own, then packs A and B and adds into it;
 * ts_small_gemm reads both in place and writes each element once. Replayed
 * as in a Transformer++ step (every operand in fresh memory), these
 * products ran at 159-176 GFLOP/s on OpenBLAS and 176-205 on
 * ts_small_gemm, sgemm 768^3 at 169-189 (docs/performance.md, twelfth
 * round; bench_weight_gemm measures both on any machine). Wider outputs
 * (from 1024 columns) and deeper products (4096) ran faster on OpenBLAS;
 * the weight gradients (A^T) and the sums added into (beta 1) were no
 * faster on ts_small_gemm, and stay on OpenBLAS. */
enum { SMALL_GEMM_MAX_N = 768, SMALL_GEMM_MAX_K = 2048 };

static bool small_gemm_serves(bool ta, int n, int k, ts_real beta) {
    return !ta && beta == 0 && n <= SMALL_GEMM_MAX_N && k <= SMALL_GEMM_MAX_K;
}

/* out [rows, n] = a [rows, k] op(b) on ts_small_gemm, which needs B as
 * [k, n] rows: a transposed b ([n, k], the weight of x W^T) is laid out so
 * first, in rows of the kernel's stride (ts_small_gemm_b_stride), in
 * scratch released before returning. */
static void small_gemm_rows(ts_ctx *ctx, int rows, int n, int k, const ts_real *a, const ts_real *b,
                            bool tb, ts_real *out) {
    ts_mark mark = ts_get_mark(ctx);
    const ts_real *b_rows = b;
    int ldb = n;
    if (tb) {
        ldb = ts_small_gemm_b_stride(n);
        ts_real *bt = ts_alloc(ctx, (size_t)k * ldb * sizeof *bt);
        ts_transpose_rows(b, n, k, k, bt, ldb);
        b_rows = bt;
    }
    ts_small_gemm(false, rows, n, k, 1, a, k, b_rows, ldb, 0, out, n);
    ts_release(ctx, mark);
}

/* out = op(a) op(b) + beta out, shapes checked by check_matmul; counts the
 * FLOPs of the product and, with beta, of the sum (the add it replaces). */
static void gemm(ts_ctx *ctx, const ts_tensor *a, const ts_tensor *b, bool ta, bool tb,
                 ts_real beta, ts_tensor *out) {
    bool shared_b = b->ndim == 2 && a->ndim > 2;
    int ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    int m = ta ? ac : ar, k = ta ? ar : ac, n = tb ? br : bc;
    long batches = batch_count(a);
    enum CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE opb = tb ? CblasTrans : CblasNoTrans;
    bool timed = ctx->profile && !ctx->counting;
    double t0 = timed ? ts_profile_now(ctx->profile) : 0;
    bool one_product = shared_b || batches == 1;
    bool small = one_product && small_gemm_serves(ta, n, k, beta);
    if (ctx->counting) {
        /* shapes and FLOPs only */
    } else if (small) {
        small_gemm_rows(ctx, (int)(batches * m), n, k, a->data, b->data, tb, out->data);
    } else if (shared_b) { /* one GEMM over all rows of a */
        ts_cblas_gemm(CblasRowMajor, opa, opb, (int)(batches * m), n, k, 1, a->data, ac, b->data,
                      bc, beta, out->data, n);
    } else {
        for (long i = 0; i < batches; i++)
            ts_cblas_gemm(CblasRowMajor, opa, opb, m, n, k, 1, a->data + i * ar * ac, ac,
                          b->data + i * br * bc, bc, beta, out->data + i * (long)m * n, n);
    }
    if (timed)
        ts_profile_book_gemm(ctx,
                             (ts_profile_gemm){.m = shared_b ? (int)(batches * m) : m,
                                               .n = n,
                                               .k = k,
                                               .batch = shared_b ? 1 : batches,
                                               .trans_a = ta,
                                               .trans_b = tb,
                                               .accumulate = beta != 0,
                                               .small_gemm = small},
                             ts_profile_now(ctx->profile) - t0);
    ts_count_flops(ctx, 2.0 * batches * m * n * k + (beta != 0 ? (double)batches * m * n : 0));
}

/* The operands of one gradient product: gin = op(x) op(y). */
typedef struct grad_product {
    ts_tensor *x, *y;
    bool tx, ty;
} grad_product;

/* A matmul's node holds a and b, an accumulating one (iattr[2]) c, a and b:
 * out = c + op(a) op(b). */
static int first_operand(const ts_node *node) {
    return node->iattr[2];
}

/* d(a) and d(b) of op(a) op(b), each as a product of g with the other
 * operand (a shared 2-D b sees a and g as rows); j counts from a. */
static grad_product grad_of(ts_ctx *ctx, const ts_node *node, ts_tensor *g, int j) {
    int first = first_operand(node);
    ts_tensor *a = node->in[first], *b = node->in[first + 1];
    bool ta = node->iattr[0], tb = node->iattr[1];
    if (j == 0) {
        if (!ta) return (grad_product){g, b, false, !tb};
        return tb ? (grad_product){b, g, true, true} : (grad_product){b, g, false, true};
    }
    if (b->ndim == 2 && a->ndim > 2) {
        ts_tensor *a2 = as_rows(ctx, a), *g2 = as_rows(ctx, g);
        return tb ? (grad_product){g2, a2, true, false} : (grad_product){a2, g2, true, false};
    }
    if (!tb) return ta ? (grad_product){a, g, false, false} : (grad_product){a, g, true, false};
    return ta ? (grad_product){g, a, true, true} : (grad_product){g, a, true, false};
}

static void matmul_backward_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                 ts_tensor *const *sums, ts_tensor **gin);

static void matmul_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    matmul_backward_into(ctx, node, g, needs, (ts_tensor *[TS_NODE_MAX_INPUTS]){NULL}, gin);
}

/* Records a matmul's node: out = op(a) op(b), or with an addend c (the
 * accumulating node, iattr[2]) out = c + op(a) op(b), whose rule hands the
 * gradient to c unchanged. */
static void record_matmul(ts_ctx *ctx, ts_tensor *out, ts_tensor *c, ts_tensor *a, ts_tensor *b,
                          bool ta, bool tb) {
    ts_node *node = c ? ts_record(ctx, "matmul", matmul_backward, out, 3, (ts_tensor *[]){c, a, b})
                      : ts_record(ctx, "matmul", matmul_backward, out, 2, (ts_tensor *[]){a, b});
    if (!node) return;
    node->backward_into = matmul_backward_into;
    node->iattr[0] = ta;
    node->iattr[1] = tb;
    node->iattr[2] = c != NULL;
}

/* sum + op(a) op(b) in sum's buffer, the GEMM with beta = 1 in place of a
 * product of its own and an add; booked as the matmul it is. Recording, an
 * op of the graph whose rule passes the gradient through to sum (and never
 * reads it: the buffer now holds the sum). */
static ts_tensor *matmul_into(ts_ctx *ctx, ts_tensor *sum, grad_product p) {
    gemm(ctx, p.x, p.y, p.tx, p.ty, 1, sum);
    ts_tensor *out = ctx->grad_enabled ? ts_wrap(ctx, sum->data, sum->ndim, sum->shape) : sum;
    record_matmul(ctx, out, sum, p.x, p.y, p.tx, p.ty);
    return out;
}

/* Whether a recording pass may overwrite sum with a sum of its own: a
 * constant (no rule reads it) or a matmul's output (its rule reads its
 * operands, never its output). A plain pass records no rules. */
static bool may_add_into(const ts_ctx *ctx, const ts_tensor *sum) {
    return sum && (!ctx->grad_enabled || !sum->node || sum->node->backward == matmul_backward);
}

/* The rule, adding a gradient into sums[j] where the pass offers one (see
 * ts_backward_into_fn). An accumulating node passes the gradient through to
 * its c. */
static void matmul_backward_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                 ts_tensor *const *sums, ts_tensor **gin) {
    int first = first_operand(node);
    if (first && needs[0]) gin[0] = g;
    for (int j = 0; j < 2; j++) {
        if (!needs[first + j]) continue;
        grad_product p = grad_of(ctx, node, g, j);
        ts_tensor *sum = sums[first + j];
        if (j == 1 && sum && sum == sums[first] && gin[first]->data == sum->data)
            sum = gin[first]; /* a @ a: the sum a's first gradient went into */
        gin[first + j] = may_add_into(ctx, sum) ? matmul_into(ctx, sum, p)
                                                : ts_matmul(ctx, p.x, p.y, p.tx, p.ty);
    }
}

ts_tensor *ts_matmul_add(ts_ctx *ctx, ts_tensor *c, ts_tensor *a, ts_tensor *b, bool ta, bool tb) {
    int shape[TS_MAX_DIMS];
    check_matmul(ctx, a, b, ta, tb, shape);
    ts_tensor *out = ts_new(ctx, a->ndim, shape);
    if (!ts_same_shape(c, out)) {
        char sc[64], so[64];
        ts_fail(ctx, "matmul_add", "addend %s does not match the product %s",
                ts_shape_str(c, sc, sizeof sc), ts_shape_str(out, so, sizeof so));
    }
    if (!ctx->counting) memcpy(out->data, c->data, (size_t)out->numel * sizeof *out->data);
    gemm(ctx, a, b, ta, tb, 1, out);
    record_matmul(ctx, out, c, a, b, ta, tb);
    return out;
}

ts_tensor *ts_matmul(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, bool ta, bool tb) {
    int shape[TS_MAX_DIMS];
    check_matmul(ctx, a, b, ta, tb, shape);
    ts_tensor *out = ts_new(ctx, a->ndim, shape);
    gemm(ctx, a, b, ta, tb, 0, out);
    record_matmul(ctx, out, NULL, a, b, ta, tb);
    return out;
}
