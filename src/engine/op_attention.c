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

/* x[c] = exp(x[c] - shift) for x[c] <= shift, in place (ts_exp_nonpositive
 * vectorises where libm's expf is a call per element: fused fwd + bwd at the
 * benchmark shapes 55 -> 50 ms, docs/performance.md). */
static void exp_shifted(ts_real *x, int n, ts_real shift) {
    for (int c = 0; c < n; c++) x[c] = ts_exp_nonpositive(x[c] - shift);
}

/* Softmax of each strip row in place over its visible keys (row i0 + r sees
 * 0..i0 + r), as ts_softmax computes it (its row reductions and
 * exponential); the masked tail is 0. Keeps the row's max and 1 / sum in
 * stats[2 r], stats[2 r + 1]. */
static void strip_softmax(ts_real *s, int i0, int rows, int keys, ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *row = s + (long)r * keys;
        int visible = i0 + r + 1;
        ts_real max = ts_row_max(row, visible);
        exp_shifted(row, visible, max);
        ts_real inv = 1 / ts_row_sum(row, visible);
        for (int c = 0; c < visible; c++) row[c] = ts_flush_subnormal(row[c] * inv);
        for (int c = visible; c < keys; c++) row[c] = 0;
        stats[2 * r] = max;
        stats[2 * r + 1] = inv;
    }
}

/* P from the scores and the forward's stats, the same arithmetic. */
static void strip_probabilities(ts_real *s, int i0, int rows, int keys, const ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *row = s + (long)r * keys;
        int visible = i0 + r + 1;
        ts_real max = stats[2 * r], inv = stats[2 * r + 1];
        exp_shifted(row, visible, max);
        for (int c = 0; c < visible; c++) row[c] = ts_flush_subnormal(row[c] * inv);
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

/* ---------------------------------------------------------------- context attention
 *
 * ts_context_attention: L queries attend to C >= L context keys aligned at the
 * end (row r sees context keys 0..r + C - L, the causal mask of the last L of C
 * positions) and to one key of their own (k_self[r], v_self[r]); EBT's
 * prediction stream (C = L + 1). The composition of primitives: scores [L, C]
 * against the context concatenated with the self score [L, 1], a softmax
 * under the [L, C + 1] mask, two slices of P and two mixes.
 *
 * Fused as two ops that keep P [L, C + 1] (as the composition does):
 *   - context_softmax(q, k, k_self) = P: per head, strips of ATTN_STRIP rows,
 *     each strip's scores only against the context keys its last row sees
 *     (one GEMM written into P's rows), the self score a row dot product, an
 *     exact softmax over both per row; the masked entries are 0;
 *   - context_mix(P, v, v_self) = P_context v + p_self v_self, over the
 *     strips' visible keys only (the masked entries of P are 0 by
 *     construction, so the mix reads only the visible ones).
 * No concatenation, slices or masked half computed. P being a node of its own,
 * the gradient that a second-order pass sends to P meets the first-order one
 * there and runs context_softmax's rule once, as with the composition (a
 * single fused op would have to recompute P inside its recorded backward and
 * then differentiate that copy too).
 *
 * Each rule: a plain gradient pass runs the fused strip backward; a recorded
 * pass (create_graph) runs the composition's rules as primitives (from P,
 * softmax_backward, slices, matmul), differentiable to any order. The plain
 * and the recorded gradients of ts_context_attention agree to rounding. FLOPs
 * are the executed ones, booked with the conventions of the primitives they
 * replace (docs/engine.md). */

typedef struct context_shape {
    long heads;
    int rows, keys, dh; /* L, C, dh */
} context_shape;

/* Rows of the strip starting at i0 (the last one may be partial). */
static int strip_rows(int rows, int i0) {
    return rows - i0 < ATTN_STRIP ? rows - i0 : ATTN_STRIP;
}

/* Row r of the composition's [L, C + 1] mask sees context columns
 * 0..r + C - L and the last column (its own key). */
static ts_tensor *context_mask(ts_ctx *ctx, int rows, int keys) {
    ts_tensor *mask = ts_new(ctx, TS_SHAPE(rows, keys + 1));
    for (int r = 0; r < (ctx->counting ? 0 : rows); r++)
        for (int j = 0; j <= keys; j++)
            mask->data[(long)r * (keys + 1) + j] =
                (j <= r + keys - rows || j == keys) ? 0 : -INFINITY;
    return mask;
}

/* Context elements the strips execute in one head: rows * the strip's keys. */
static double context_strip_elements(int rows, int keys) {
    double n = 0;
    for (int i0 = 0; i0 < rows; i0 += ATTN_STRIP) {
        int strip = strip_rows(rows, i0);
        n += (double)strip * (i0 + strip + keys - rows);
    }
    return n;
}

/* q, k_self [..., L, dh] and k [..., C, dh], C >= L, the same leading dims;
 * names are the caller's. */
static context_shape context_shape_of(ts_ctx *ctx, const char *op, const ts_tensor *q,
                                      const ts_tensor *k, const ts_tensor *k_self) {
    char sq[64], sk[64], ss[64];
    bool ok = q->ndim >= 2 && k->ndim == q->ndim && ts_same_shape(q, k_self);
    for (int i = 0; ok && i < q->ndim; i++)
        ok = i == q->ndim - 2 ? k->shape[i] >= q->shape[i] : k->shape[i] == q->shape[i];
    if (!ok)
        ts_fail(ctx, op,
                "queries %s and their own keys or values %s must share one shape [..., L, dh], "
                "the context %s be [..., C, dh] with C >= L",
                ts_shape_str(q, sq, sizeof sq), ts_shape_str(k_self, ss, sizeof ss),
                ts_shape_str(k, sk, sizeof sk));
    int rows = q->shape[q->ndim - 2], dh = q->shape[q->ndim - 1];
    return (context_shape){q->numel / ((long)rows * dh), rows, k->shape[k->ndim - 2], dh};
}

/* P [..., L, C + 1] of the composition, from the scaled queries. */
static ts_tensor *composed_probabilities(ts_ctx *ctx, ts_tensor *qs, ts_tensor *k,
                                         ts_tensor *k_self) {
    int last = qs->ndim - 1;
    ts_tensor *context = ts_matmul(ctx, qs, k, false, true);
    ts_tensor *self = ts_sum(ctx, ts_mul(ctx, qs, k_self), -1, true);
    ts_tensor *scores = ts_concat(ctx, 2, (ts_tensor *[]){context, self}, last);
    return ts_softmax(ctx, scores, context_mask(ctx, qs->shape[last - 1], k->shape[last - 1]));
}

ts_tensor *ts_context_attention_composed(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                         ts_tensor *k_self, ts_tensor *v_self, double scale) {
    context_shape a = context_shape_of(ctx, "context_attention", q, k, k_self);
    context_shape_of(ctx, "context_attention", v_self, v, q);
    int last = q->ndim - 1;
    ts_tensor *p = composed_probabilities(ctx, ts_scale(ctx, q, scale), k, k_self);
    return ts_add(ctx, ts_matmul(ctx, ts_slice(ctx, p, last, 0, a.keys), v, false, false),
                  ts_mul(ctx, ts_slice(ctx, p, last, a.keys, 1), v_self));
}

/* ---- context_softmax: P from q, k, k_self */

/* The rules of the composition's scale, matmul, mul, sum, concat and softmax,
 * as recorded ops: ds = softmax_backward(P, g), then through the scores. */
static void context_softmax_primitive_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g,
                                               double scale, const bool *needs, ts_tensor **gin) {
    ts_tensor *q = node->in[0], *k = node->in[1], *k_self = node->in[2], *p = node->out;
    int last = q->ndim - 1, keys = k->shape[last - 1];
    ts_tensor *ds = ts_softmax_backward(ctx, p, g);
    ts_tensor *ds_context = ts_slice(ctx, ds, last, 0, keys);
    ts_tensor *ds_self = ts_slice(ctx, ds, last, keys, 1);
    if (needs[0])
        gin[0] = ts_scale(
            ctx,
            ts_add(ctx, ts_matmul(ctx, ds_context, k, false, false), ts_mul(ctx, ds_self, k_self)),
            scale);
    if (needs[1]) gin[1] = ts_scale(ctx, ts_matmul(ctx, ds_context, q, true, false), scale);
    if (needs[2]) gin[2] = ts_scale(ctx, ts_mul(ctx, ds_self, q), scale);
}

/* The fused first-order backward (recording off): per strip dS = P (g -
 * rowsum(P g)) over the visible entries and the self one, then dQ, dK in
 * GEMMs and the self terms per row. */
static void context_softmax_fused_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, double scale,
                                           const bool *needs, ts_tensor **gin) {
    ts_tensor *q = node->in[0], *k = node->in[1], *k_self = node->in[2], *p = node->out;
    context_shape a = context_shape_of(ctx, "context_softmax_backward", q, k, k_self);
    ts_tensor *dq = needs[0] ? ts_new_like(ctx, q) : NULL;
    ts_tensor *dk = needs[1] ? ts_zeros(ctx, k->ndim, k->shape) : NULL;
    ts_tensor *dks = needs[2] ? ts_new_like(ctx, k_self) : NULL;
    int width = a.keys + 1, offset = a.keys - a.rows;
    ts_real sc = (ts_real)scale;
    if (!ctx->counting) {
        ts_real *ds = ts_alloc(ctx, (size_t)ATTN_STRIP * a.keys * sizeof *ds);
        ts_real *ds_self = ts_alloc(ctx, (size_t)ATTN_STRIP * sizeof *ds_self);
        long q_size = (long)a.rows * a.dh, k_size = (long)a.keys * a.dh;
        long p_size = (long)a.rows * width;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *qh = q->data + h * q_size, *kh = k->data + h * k_size;
            const ts_real *ksh = k_self->data + h * q_size;
            const ts_real *ph = p->data + h * p_size, *gh = g->data + h * p_size;
            for (int i0 = 0; i0 < a.rows; i0 += ATTN_STRIP) {
                int rows = strip_rows(a.rows, i0), strip_keys = i0 + rows + offset;
                long at = (long)i0 * a.dh;
                for (int r = 0; r < rows; r++) {
                    const ts_real *pr = ph + (long)(i0 + r) * width;
                    const ts_real *gr = gh + (long)(i0 + r) * width;
                    ts_real *dr = ds + (long)r * strip_keys;
                    int visible = i0 + r + offset + 1; /* P is 0 after */
                    ts_real dot = ts_row_dot(gr, pr, visible) + gr[a.keys] * pr[a.keys];
                    for (int c = 0; c < visible; c++)
                        dr[c] = ts_flush_subnormal(pr[c] * (gr[c] - dot));
                    for (int c = visible; c < strip_keys; c++) dr[c] = 0;
                    ds_self[r] = ts_flush_subnormal(pr[a.keys] * (gr[a.keys] - dot));
                }
                if (dq) {
                    ts_real *dq_strip = dq->data + h * q_size + at;
                    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a.dh, strip_keys,
                                  sc, ds, strip_keys, kh, a.dh, 0, dq_strip, a.dh);
                    for (int r = 0; r < rows; r++)
                        for (int c = 0; c < a.dh; c++)
                            dq_strip[(long)r * a.dh + c] +=
                                sc * ds_self[r] * ksh[at + (long)r * a.dh + c];
                }
                if (dk)
                    ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, strip_keys, a.dh, rows,
                                  sc, ds, strip_keys, qh + at, a.dh, 1, dk->data + h * k_size,
                                  a.dh);
                if (dks)
                    for (int r = 0; r < rows; r++)
                        for (int c = 0; c < a.dh; c++)
                            dks->data[h * q_size + at + (long)r * a.dh + c] =
                                sc * ds_self[r] * qh[at + (long)r * a.dh + c];
            }
        }
    }
    /* softmax_backward 4 per executed element (context and self); dQ 2 dh
     * per context element and 3 per q element (the self product, the add,
     * the scale); dK 2 dh per context element and 1 per k element (its
     * scale); dk_self 2 per element (product, scale). */
    double elements = (double)a.heads * context_strip_elements(a.rows, a.keys);
    double self_elements = (double)a.heads * a.rows, q_elements = (double)q->numel;
    ts_count_flops(
        ctx, 4.0 * (elements + self_elements) + (dq ? 2.0 * a.dh * elements + 3 * q_elements : 0) +
                 (dk ? 2.0 * a.dh * elements + (double)k->numel : 0) + (dks ? 2 * q_elements : 0));
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, "context_softmax_backward", NULL, dq ? dq : dk ? dk : dks, 0, NULL);
    gin[0] = dq;
    gin[1] = dk;
    gin[2] = dks;
}

static void context_softmax_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                 ts_tensor **gin) {
    if (ctx->grad_enabled)
        context_softmax_primitive_backward(ctx, node, g, node->fattr[0], needs, gin);
    else
        context_softmax_fused_backward(ctx, node, g, node->fattr[0], needs, gin);
}

static ts_tensor *context_softmax(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *k_self,
                                  double scale) {
    context_shape a = context_shape_of(ctx, "context_softmax", q, k, k_self);
    int width = a.keys + 1, offset = a.keys - a.rows, shape[TS_MAX_DIMS];
    for (int i = 0; i < q->ndim; i++) shape[i] = q->shape[i];
    shape[q->ndim - 1] = width;
    ts_tensor *p = ts_new(ctx, q->ndim, shape);
    ts_real sc = (ts_real)scale;
    if (!ctx->counting) {
        long q_size = (long)a.rows * a.dh, k_size = (long)a.keys * a.dh;
        long p_size = (long)a.rows * width;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *qh = q->data + h * q_size, *kh = k->data + h * k_size;
            const ts_real *ksh = k_self->data + h * q_size;
            ts_real *ph = p->data + h * p_size;
            for (int i0 = 0; i0 < a.rows; i0 += ATTN_STRIP) {
                int rows = strip_rows(a.rows, i0), strip_keys = i0 + rows + offset;
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, strip_keys, a.dh, sc,
                              qh + (long)i0 * a.dh, a.dh, kh, a.dh, 0, ph + (long)i0 * width,
                              width);
                for (int r = 0; r < rows; r++) {
                    ts_real *row = ph + (long)(i0 + r) * width;
                    long at = (long)(i0 + r) * a.dh;
                    int visible = i0 + r + offset + 1;
                    ts_real self = sc * ts_row_dot(qh + at, ksh + at, a.dh);
                    ts_real max = ts_row_max(row, visible);
                    if (self > max) max = self;
                    exp_shifted(row, visible, max);
                    self = ts_exp_nonpositive(self - max);
                    ts_real inv = 1 / (ts_row_sum(row, visible) + self);
                    for (int c = 0; c < visible; c++) row[c] = ts_flush_subnormal(row[c] * inv);
                    for (int c = visible; c < a.keys; c++) row[c] = 0;
                    row[a.keys] = ts_flush_subnormal(self * inv);
                }
            }
        }
    }
    /* As the composition: q scaled 1 and its self score 2 (mul, sum) per q
     * element, S 2 dh per executed context element, softmax 5 per executed
     * element (context and self). */
    double elements = (double)a.heads * context_strip_elements(a.rows, a.keys);
    double self_elements = (double)a.heads * a.rows;
    ts_count_flops(ctx, 3.0 * (double)q->numel + elements * (2.0 * a.dh + 5) + 5.0 * self_elements);
    ts_node *node = ts_record(ctx, "context_softmax", context_softmax_rule, p, 3,
                              (ts_tensor *[]){q, k, k_self});
    if (node) node->fattr[0] = scale;
    return p;
}

/* ---- context_mix: P_context v + p_self v_self */

static void context_mix_primitive_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g,
                                           const bool *needs, ts_tensor **gin) {
    ts_tensor *p = node->in[0], *v = node->in[1], *v_self = node->in[2];
    int last = p->ndim - 1, keys = v->shape[last - 1];
    if (needs[0])
        gin[0] = ts_concat(ctx, 2,
                           (ts_tensor *[]){ts_matmul(ctx, g, v, false, true),
                                           ts_sum(ctx, ts_mul(ctx, g, v_self), -1, true)},
                           last);
    if (needs[1]) gin[1] = ts_matmul(ctx, ts_slice(ctx, p, last, 0, keys), g, true, false);
    if (needs[2]) gin[2] = ts_mul(ctx, ts_slice(ctx, p, last, keys, 1), g);
}

/* The fused first-order backward (recording off). The gradient for P is
 * written for its visible entries (the mix reads no others; masked ones get
 * 0, where the composition's matmul would give g v_j: context_softmax's rule
 * multiplies them by P = 0 either way). */
static void context_mix_fused_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                       ts_tensor **gin) {
    ts_tensor *p = node->in[0], *v = node->in[1], *v_self = node->in[2];
    context_shape a = context_shape_of(ctx, "context_mix_backward", v_self, v, g);
    ts_tensor *dp = needs[0] ? ts_new_like(ctx, p) : NULL;
    ts_tensor *dv = needs[1] ? ts_zeros(ctx, v->ndim, v->shape) : NULL;
    ts_tensor *dvs = needs[2] ? ts_new_like(ctx, v_self) : NULL;
    int width = a.keys + 1, offset = a.keys - a.rows;
    if (!ctx->counting) {
        long q_size = (long)a.rows * a.dh, k_size = (long)a.keys * a.dh;
        long p_size = (long)a.rows * width;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *vh = v->data + h * k_size, *vsh = v_self->data + h * q_size;
            const ts_real *ph = p->data + h * p_size, *gh = g->data + h * q_size;
            for (int i0 = 0; i0 < a.rows; i0 += ATTN_STRIP) {
                int rows = strip_rows(a.rows, i0), strip_keys = i0 + rows + offset;
                long at = (long)i0 * a.dh;
                if (dp) {
                    ts_real *dps = dp->data + h * p_size + (long)i0 * width;
                    ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, strip_keys, a.dh,
                                  1, gh + at, a.dh, vh, a.dh, 0, dps, width);
                    for (int r = 0; r < rows; r++) {
                        ts_real *row = dps + (long)r * width;
                        long rat = at + (long)r * a.dh;
                        for (int c = i0 + r + offset + 1; c < a.keys; c++) row[c] = 0;
                        row[a.keys] = ts_row_dot(gh + rat, vsh + rat, a.dh);
                    }
                }
                if (dv)
                    ts_cblas_gemm(CblasRowMajor, CblasTrans, CblasNoTrans, strip_keys, a.dh, rows,
                                  1, ph + (long)i0 * width, width, gh + at, a.dh, 1,
                                  dv->data + h * k_size, a.dh);
                if (dvs)
                    for (int r = 0; r < rows; r++) {
                        ts_real p_self = ph[(long)(i0 + r) * width + a.keys];
                        for (int c = 0; c < a.dh; c++) {
                            long e = h * q_size + at + (long)r * a.dh + c;
                            dvs->data[e] = p_self * g->data[e];
                        }
                    }
            }
        }
    }
    /* dP 2 dh per executed context element and 2 per g element (the self
     * product and sum); dV 2 dh per context element; dv_self 1 per element. */
    double elements = (double)a.heads * context_strip_elements(a.rows, a.keys);
    double g_elements = (double)g->numel;
    ts_count_flops(ctx, (dp ? 2.0 * a.dh * elements + 2 * g_elements : 0) +
                            (dv ? 2.0 * a.dh * elements : 0) + (dvs ? g_elements : 0));
    ts_record(ctx, "context_mix_backward", NULL, dp ? dp : dv ? dv : dvs, 0, NULL);
    gin[0] = dp;
    gin[1] = dv;
    gin[2] = dvs;
}

static void context_mix_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    if (ctx->grad_enabled)
        context_mix_primitive_backward(ctx, node, g, needs, gin);
    else
        context_mix_fused_backward(ctx, node, g, needs, gin);
}

static ts_tensor *context_mix(ts_ctx *ctx, ts_tensor *p, ts_tensor *v, ts_tensor *v_self) {
    context_shape a = context_shape_of(ctx, "context_mix", v_self, v, v_self);
    int width = a.keys + 1, offset = a.keys - a.rows;
    ts_tensor *out = ts_new_like(ctx, v_self);
    if (!ctx->counting) {
        long q_size = (long)a.rows * a.dh, k_size = (long)a.keys * a.dh;
        long p_size = (long)a.rows * width;
        for (long h = 0; h < a.heads; h++) {
            const ts_real *vh = v->data + h * k_size, *vsh = v_self->data + h * q_size;
            const ts_real *ph = p->data + h * p_size;
            for (int i0 = 0; i0 < a.rows; i0 += ATTN_STRIP) {
                int rows = strip_rows(a.rows, i0), strip_keys = i0 + rows + offset;
                long at = (long)i0 * a.dh;
                ts_real *o = out->data + h * q_size + at;
                ts_cblas_gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, a.dh, strip_keys, 1,
                              ph + (long)i0 * width, width, vh, a.dh, 0, o, a.dh);
                for (int r = 0; r < rows; r++) {
                    ts_real p_self = ph[(long)(i0 + r) * width + a.keys];
                    for (int c = 0; c < a.dh; c++)
                        o[(long)r * a.dh + c] += p_self * vsh[at + (long)r * a.dh + c];
                }
            }
        }
    }
    /* As the composition: P v 2 dh per executed context element, the self
     * mix 2 per output element (mul, add). */
    double elements = (double)a.heads * context_strip_elements(a.rows, a.keys);
    ts_count_flops(ctx, 2.0 * a.dh * elements + 2.0 * (double)out->numel);
    ts_record(ctx, "context_mix", context_mix_rule, out, 3, (ts_tensor *[]){p, v, v_self});
    return out;
}

ts_tensor *ts_context_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                ts_tensor *k_self, ts_tensor *v_self, double scale) {
    context_shape_of(ctx, "context_attention", q, k, k_self);
    context_shape_of(ctx, "context_attention", v_self, v, q);
    return context_mix(ctx, context_softmax(ctx, q, k, k_self, scale), v, v_self);
}

ts_tensor *ts_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                        const ts_tensor *mask, double scale) {
    /* Scaling q instead of the scores touches T*dh instead of T*T elements. */
    ts_tensor *scores = ts_matmul(ctx, ts_scale(ctx, q, scale), k, false, true);
    ts_tensor *probs = ts_softmax(ctx, scores, mask);
    return ts_matmul(ctx, probs, v, false, false);
}
