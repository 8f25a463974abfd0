#include <math.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

/* ---------------------------------------------------------------- attention
 *
 * ts_attention is the composition of primitives (scale, matmul, softmax,
 * matmul): any mask, every order of derivative through the primitives'
 * rules.
 *
 * ts_causal_attention computes the same function under the causal mask
 * without the [T, T] scores of a head. Queries go in strips of ATTN_STRIP
 * rows; the strip of rows i0..i1-1 sees keys 0..i1-1 only, so its scores are
 * [rows, i1] (the keys after i1 are masked for every row of the strip and
 * are skipped: about half the products and softmax work at T >> ATTN_STRIP)
 * and each strip needs two GEMMs, S = (scale q) k^T and O = P v, with an
 * exact softmax in between (the whole visible row is in the strip, so no
 * online rescaling is needed). The forward keeps only each row's max and
 * 1 / sum, from which the backward recomputes P bit for bit.
 *
 * Its rule depends on the pass:
 *   - a plain gradient pass (recording off) runs the fused strip backward:
 *     S and P recomputed per strip, dV += P^T G, dP = G V^T,
 *     dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK += dS^T (scale q);
 *   - a recorded pass (create_graph: a gradient that is differentiated
 *     again, through this attention) falls back
 *     to the primitive composition (P recomputed with ts_matmul and
 *     ts_softmax under ts_causal_mask, then the rules the unfused
 *     ts_attention's ops would run), so the gradient is a graph of
 *     primitives and differentiable to any order. It computes what
 *     ts_attention's backward computes, op for op; the plain pass agrees
 *     with it to rounding (sums split by strip), not bit for bit.
 * FLOPs are the strips' own (executed) counts, booked with the conventions
 * of the primitives they replace (docs/engine.md). */

enum { ATTN_STRIP = 64 };

typedef struct attn_shape {
    long heads; /* every leading dim flattened */
    int t, dh;
} attn_shape;

static attn_shape shape_of(const ts_tensor *q) {
    int t = q->shape[q->ndim - 2], dh = q->shape[q->ndim - 1];
    return (attn_shape){q->numel / ((long)t * dh), t, dh};
}

/* Elements of the strips' score blocks of one head: sum over strips of
 * rows * visible keys. */
static double strip_elements(int t) {
    double n = 0;
    for (int i0 = 0; i0 < t; i0 += ATTN_STRIP) {
        int rows = t - i0 < ATTN_STRIP ? t - i0 : ATTN_STRIP;
        n += (double)rows * (i0 + rows);
    }
    return n;
}

/* S = scale q K^T for the strip rows [i0, i0 + rows) against keys
 * [0, keys): the scale is the GEMM's alpha, no scaled copy of q. */
static void strip_scores(const ts_real *q, const ts_real *k, int i0, int rows, int keys, int dh,
                         ts_real scale, ts_real *s) {
    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, dh, scale, q + (long)i0 * dh,
                  dh, k, dh, 0, s, keys);
}

/* Softmax of each strip row in place over its visible keys (row i0 + r sees
 * 0..i0 + r), as ts_softmax computes it (its row reductions and
 * exponential); the masked tail is 0. Keeps the row's max and 1 / sum in
 * stats[2 r], stats[2 r + 1]. */
static void strip_softmax(ts_real *s, int i0, int rows, int keys, ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *restrict row = s + (long)r * keys;
        int visible = i0 + r + 1;
        ts_real max = ts_row_max(row, visible);
        ts_real inv = 1 / ts_exp_shifted_sum(row, visible, max);
        for (int c = 0; c < visible; c++) row[c] = ts_flush_subnormal(row[c] * inv);
        for (int c = visible; c < keys; c++) row[c] = 0;
        stats[2 * r] = max;
        stats[2 * r + 1] = inv;
    }
}

/* P from the scores and the forward's stats, the same arithmetic, in one
 * pass per row. */
static void strip_probabilities(ts_real *s, int i0, int rows, int keys, const ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *restrict row = s + (long)r * keys;
        int visible = i0 + r + 1;
        ts_real max = stats[2 * r], inv = stats[2 * r + 1];
        for (int c = 0; c < visible; c++)
            row[c] = ts_flush_subnormal(ts_exp_nonpositive(row[c] - max) * inv);
        for (int c = visible; c < keys; c++) row[c] = 0;
    }
}

static void check_operands(ts_ctx *ctx, const ts_tensor *q, const ts_tensor *k,
                           const ts_tensor *v) {
    char sq[64], sk[64], sv[64];
    if (q->ndim < 2 || !ts_same_shape(q, k) || !ts_same_shape(q, v))
        ts_fail(ctx, "causal_attention", "q %s, k %s and v %s must share one shape [..., T, dh]",
                ts_shape_str(q, sq, sizeof sq), ts_shape_str(k, sk, sizeof sk),
                ts_shape_str(v, sv, sizeof sv));
}

/* The fused first-order backward (recording off). */
static void fused_backward(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                           const ts_tensor *stats, ts_tensor *g, double scale, const bool *needs,
                           ts_tensor **gin) {
    attn_shape a = shape_of(q);
    bool need_scores_grad = needs[0] || needs[1];
    ts_tensor *dq = needs[0] ? ts_new_like(ctx, q) : NULL;
    ts_tensor *dk = needs[1] ? ts_zeros(ctx, k->ndim, k->shape) : NULL;
    ts_tensor *dv = needs[2] ? ts_zeros(ctx, v->ndim, v->shape) : NULL;
    if (!ctx->counting) {
        ts_real *p = ts_alloc(ctx, (size_t)ATTN_STRIP * a.t * sizeof *p);
        ts_real *dp = ts_alloc(ctx, (size_t)ATTN_STRIP * a.t * sizeof *dp);
        long head_size = (long)a.t * a.dh;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *qh = q->data + h * head_size, *kh = k->data + h * head_size;
            const ts_real *vh = v->data + h * head_size, *gh = g->data + h * head_size;
            const ts_real *st = stats->data + h * 2L * a.t;
            for (int i0 = 0; i0 < a.t; i0 += ATTN_STRIP) {
                int rows = a.t - i0 < ATTN_STRIP ? a.t - i0 : ATTN_STRIP, keys = i0 + rows;
                const ts_real *g_strip = gh + (long)i0 * a.dh;
                strip_scores(qh, kh, i0, rows, keys, a.dh, (ts_real)scale, p);
                strip_probabilities(p, i0, rows, keys, st + 2L * i0);
                if (dv)
                    ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, a.dh, rows, 1, p,
                                  keys, g_strip, a.dh, 1, dv->data + h * head_size, a.dh);
                if (!need_scores_grad) continue;
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, a.dh, 1, g_strip,
                              a.dh, vh, a.dh, 0, dp, keys);
                for (int r = 0; r < rows; r++) { /* dS = P (dP - rowsum(P dP)) into dp */
                    const ts_real *pr = p + (long)r * keys;
                    ts_real *dr = dp + (long)r * keys;
                    int visible = i0 + r + 1; /* P is 0 after */
                    ts_real dot = ts_row_dot(dr, pr, visible);
                    for (int c = 0; c < visible; c++)
                        dr[c] = ts_flush_subnormal(pr[c] * (dr[c] - dot));
                    for (int c = visible; c < keys; c++) dr[c] = 0;
                }
                if (dq)
                    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a.dh, keys,
                                  (ts_real)scale, dp, keys, kh, a.dh, 0,
                                  dq->data + h * head_size + (long)i0 * a.dh, a.dh);
                if (dk)
                    ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, keys, a.dh, rows,
                                  (ts_real)scale, dp, keys, qh + (long)i0 * a.dh, a.dh, 1,
                                  dk->data + h * head_size, a.dh);
            }
        }
    }
    /* Per score element: S 2 dh, P recomputed 3 (subtract, exp, scale),
     * dV 2 dh; with dq or dk: dP 2 dh and dS 4 (softmax_backward's), then
     * 2 dh for each of dQ and dK. Per q element: its scaling, and dQ's. */
    double elements = (double)a.heads * strip_elements(a.t), q_elements = (double)q->numel;
    double per_element = 2.0 * a.dh + 3 + (needs[2] ? 2.0 * a.dh : 0) +
                         (need_scores_grad ? 2.0 * a.dh + 4 : 0) + (needs[0] ? 2.0 * a.dh : 0) +
                         (needs[1] ? 2.0 * a.dh : 0);
    ts_count_flops(ctx, elements * per_element + q_elements * (1 + (needs[0] ? 1 : 0)));
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, "causal_attention_backward", NULL, dq ? dq : dk ? dk : dv, 0, NULL);
    gin[0] = dq;
    gin[1] = dk;
    gin[2] = dv;
}

/* The rules of ts_attention's ops under the causal mask, as recorded ops. */
static void primitive_backward(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v, ts_tensor *g,
                               double scale, const bool *needs, ts_tensor **gin) {
    ts_tensor *qs = ts_scale(ctx, q, scale);
    ts_tensor *p = ts_softmax(ctx, ts_matmul(ctx, qs, k, false, true),
                              ts_causal_mask(ctx, q->shape[q->ndim - 2]));
    if (needs[2]) gin[2] = ts_matmul(ctx, p, g, true, false);
    if (!needs[0] && !needs[1]) return;
    ts_tensor *ds = ts_softmax_backward(ctx, p, ts_matmul(ctx, g, v, false, true));
    if (needs[0]) gin[0] = ts_scale(ctx, ts_matmul(ctx, ds, k, false, false), scale);
    if (needs[1]) gin[1] = ts_matmul(ctx, ds, qs, true, false);
}

static void causal_attention_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor **gin) {
    ts_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2], *stats = node->in[3];
    double scale = node->fattr[0];
    if (ctx->grad_enabled)
        primitive_backward(ctx, q, k, v, g, scale, needs, gin);
    else
        fused_backward(ctx, q, k, v, stats, g, scale, needs, gin);
}

ts_tensor *ts_causal_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                               double scale) {
    check_operands(ctx, q, k, v);
    attn_shape a = shape_of(q);
    ts_tensor *out = ts_new_like(ctx, q);
    /* Per row: its max and 1 / sum, for the backward (a constant input). */
    ts_tensor *stats = ts_new(ctx, TS_SHAPE((int)(a.heads * a.t), 2));
    if (!ctx->counting) {
        ts_real *p = ts_alloc(ctx, (size_t)ATTN_STRIP * a.t * sizeof *p);
        long head_size = (long)a.t * a.dh;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *qh = q->data + h * head_size, *kh = k->data + h * head_size;
            const ts_real *vh = v->data + h * head_size;
            ts_real *st = stats->data + h * 2L * a.t;
            for (int i0 = 0; i0 < a.t; i0 += ATTN_STRIP) {
                int rows = a.t - i0 < ATTN_STRIP ? a.t - i0 : ATTN_STRIP, keys = i0 + rows;
                strip_scores(qh, kh, i0, rows, keys, a.dh, (ts_real)scale, p);
                strip_softmax(p, i0, rows, keys, st + 2L * i0);
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a.dh, keys, 1, p,
                              keys, vh, a.dh, 0, out->data + h * head_size + (long)i0 * a.dh, a.dh);
            }
        }
    }
    /* As the composition: q scaled 1 per element, S and P v 2 dh per score
     * element, softmax 5; over the strips' score elements only. */
    double elements = (double)a.heads * strip_elements(a.t);
    ts_count_flops(ctx, (double)q->numel + elements * (4.0 * a.dh + 5));
    ts_node *node = ts_record(ctx, "causal_attention", causal_attention_rule, out, 4,
                              (ts_tensor *[]){q, k, v, stats});
    if (node) node->fattr[0] = scale;
    return out;
}

ts_tensor *ts_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                        const ts_tensor *mask, double scale) {
    /* Scaling q instead of the scores touches T*dh instead of T*T elements. */
    ts_tensor *scores = ts_matmul(ctx, ts_scale(ctx, q, scale), k, false, true);
    ts_tensor *probs = ts_softmax(ctx, scores, mask);
    return ts_matmul(ctx, probs, v, false, false);
}
