#include <math.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/rope_table.h"
#include "engine/small_gemm.h"

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
 * online rescaling is needed; the forward divides O's rows rather than P's
 * by the rows' sums). The forward keeps only each row's max and 1 / sum,
 * from which the backward recomputes P. The strips' GEMMs are
 * ts_small_gemm's (small_gemm.h), the keys (and values) transposed once
 * per head.
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
 * of the primitives they replace (docs/engine.md).
 *
 * ts_full_attention is the same kernel without a mask (the Free
 * Transformer's encoder: every query sees every key): each strip's scores
 * span all T keys, and its rules are the causal op's with no mask. */

enum { ATTN_STRIP = 64 };

/* Where the heads of one attention call live. A head is T rows of dh
 * elements; consecutive rows of q, k, v (and of their gradients) are
 * ld_in apart, of the output (and its gradient) ld_out apart. Head h of the
 * separate layout ([..., T, dh] each) starts at h T dh everywhere; head
 * (b, j) of the packed one (qkv [B, T, 3 H dh], output [B, T, H dh]) at
 * b T 3 H dh + j dh in qkv, with k and v H dh and 2 H dh after q. */
typedef struct attn_layout {
    long heads; /* every head of the call */
    int t, dh;
    int per_batch; /* packed: H, the heads of one sequence; separate: 0 */
    long ld_in, ld_out;
    bool causal; /* row i sees keys 0..i; otherwise every key */
} attn_layout;

static attn_layout separate_layout(const ts_tensor *q, bool causal) {
    int t = q->shape[q->ndim - 2], dh = q->shape[q->ndim - 1];
    return (attn_layout){q->numel / ((long)t * dh), t, dh, 0, dh, dh, causal};
}

static attn_layout packed_layout(const ts_tensor *qkv, int n_heads) {
    int t = qkv->shape[1], d = qkv->shape[2] / 3;
    return (attn_layout){(long)qkv->shape[0] * n_heads, t, d / n_heads, n_heads, 3L * d, d, true};
}

/* The keys row `row` sees, and those of the strip of rows [i0, i0 + rows):
 * its last row's. */
static int visible_keys(const attn_layout *a, int row) {
    return a->causal ? row + 1 : a->t;
}
static int strip_keys(const attn_layout *a, int i0, int rows) {
    return visible_keys(a, i0 + rows - 1);
}

/* The rows of the strip from row i0 (the last strip may be partial). */
static int strip_rows(const attn_layout *a, int i0) {
    return a->t - i0 < ATTN_STRIP ? a->t - i0 : ATTN_STRIP;
}

/* Offsets of head h's first q row (k and v follow at k_offset, v_offset
 * from it) and of its first output row. */
static long in_offset(const attn_layout *a, long h) {
    if (!a->per_batch) return h * a->t * a->dh;
    return h / a->per_batch * a->t * a->ld_in + h % a->per_batch * a->dh;
}
static long out_offset(const attn_layout *a, long h) {
    if (!a->per_batch) return h * a->t * a->dh;
    return h / a->per_batch * a->t * a->ld_out + h % a->per_batch * a->dh;
}

/* Elements of the strips' score blocks of one head: sum over strips of
 * rows * the strip's keys. */
static double strip_elements(const attn_layout *a) {
    double n = 0;
    for (int i0 = 0; i0 < a->t; i0 += ATTN_STRIP) {
        int rows = strip_rows(a, i0);
        n += (double)rows * strip_keys(a, i0, rows);
    }
    return n;
}

/* Where a strip row's vectorised loops stop: its visible entries rounded
 * up to whole vectors of TS_LANES, within the strip's keys, so no row ends
 * in a scalar tail (of exponentials, for the softmax). */
static int vector_span(int visible, int keys) {
    int span = (visible + TS_LANES - 1) / TS_LANES * TS_LANES;
    return span < keys ? span : keys;
}

/* A score row's masked entries before its exponentials: scores of -inf
 * up to its vector span (exp gives exact zeros of P there, and the sums
 * are those of the visible entries), 0 after it. Returns the span. */
static int mask_to_vector_span(ts_real *row, int visible, int keys) {
    int span = vector_span(visible, keys);
    for (int c = visible; c < span; c++) row[c] = -INFINITY;
    for (int c = span; c < keys; c++) row[c] = 0;
    return span;
}

/* The softmax of each strip row (row i0 + r sees its visible_keys) but for
 * its division: the exponentials E = exp(s - max) in place, with
 * ts_softmax's row reductions and exponential over the row's vector span
 * (the masked entries in it as -inf, so exp gives 0 and the sums are those
 * of the visible entries, added in lanes); the masked tail is 0. Keeps the
 * row's max and 1 / sum in stats[2 r], stats[2 r + 1]. The forward divides
 * E v's rows instead of E's (dh entries a row instead of the visible
 * keys); the backward recomputes P itself (strip_probabilities). */
static void strip_exponentials(const attn_layout *a, ts_real *s, int i0, int rows, int keys,
                               ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *restrict row = s + (long)r * keys;
        int span = mask_to_vector_span(row, visible_keys(a, i0 + r), keys);
        ts_real max = ts_row_max(row, span);
        ts_real inv = 1 / ts_exp_shifted_sum(row, span, max);
        stats[2 * r] = max;
        stats[2 * r + 1] = inv;
    }
}

/* Rows [0, rows) of o (ld apart, dh wide) times their 1 / sum from stats. */
static void divide_rows(ts_real *o, int ld, int rows, int dh, const ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *restrict row = o + (long)r * ld, inv = stats[2 * r + 1];
        for (int c = 0; c < dh; c++) row[c] *= inv;
    }
}

/* P from the scores and the forward's stats (its exponentials times
 * 1 / sum), in one pass per row over its vector span. */
static void strip_probabilities(const attn_layout *a, ts_real *s, int i0, int rows, int keys,
                                const ts_real *stats) {
    for (int r = 0; r < rows; r++) {
        ts_real *restrict row = s + (long)r * keys;
        int span = mask_to_vector_span(row, visible_keys(a, i0 + r), keys);
        ts_real max = stats[2 * r], inv = stats[2 * r + 1];
        for (int c = 0; c < span; c++)
            row[c] = ts_flush_subnormal(ts_exp_nonpositive(row[c] - max) * inv);
    }
}

static void check_operands(ts_ctx *ctx, const char *op, const ts_tensor *q, const ts_tensor *k,
                           const ts_tensor *v) {
    char sq[64], sk[64], sv[64];
    if (q->ndim < 2 || !ts_same_shape(q, k) || !ts_same_shape(q, v))
        ts_fail(ctx, op, "q %s, k %s and v %s must share one shape [..., T, dh]",
                ts_shape_str(q, sq, sizeof sq), ts_shape_str(k, sk, sizeof sk),
                ts_shape_str(v, sv, sizeof sv));
}

/* The operands of one call: q, k, v (in the packed layout k and v are q's
 * tensor at offsets k_at and v_at from q, and dk, dv dq's). With RoPE
 * (packed layout only), `rotated` holds each head's rotated q and k rows
 * ([heads, 2, T, dh]): the forward rotates them there by `rope`, the
 * backward reads them back (rope NULL); without, NULL. */
typedef struct attn_operands {
    const ts_real *q, *k, *v;
    long k_at, v_at;
    ts_real *rotated;
    const ts_rope_table *rope;
} attn_operands;

/* A head's q and k as its GEMMs read them: in place (row stride ld_in), or
 * rotated by RoPE (rows of dh, contiguous). */
typedef struct head_qk {
    const ts_real *q, *k;
    int ld;
} head_qk;

static head_qk head_operands(const attn_layout *a, const attn_operands *in, long h) {
    long at = in_offset(a, h);
    const ts_real *q = in->q + at, *k = in->k + at + in->k_at;
    if (!in->rotated) return (head_qk){q, k, (int)a->ld_in};
    ts_real *qr = in->rotated + h * 2L * a->t * a->dh, *kr = qr + (long)a->t * a->dh;
    if (in->rope) {
        ts_rope_rotate_rows(in->rope, q, a->ld_in, qr, a->dh, a->t);
        ts_rope_rotate_rows(in->rope, k, a->ld_in, kr, a->dh, a->t);
    }
    return (head_qk){qr, kr, a->dh};
}

/* A head's T rows of x (row stride ld) transposed into xt [dh, T], for the
 * strips' products with x^T (ts_small_gemm reads B by rows): once per head,
 * not once per strip. */
static void transpose_head(const attn_layout *a, const ts_real *x, int ld, ts_real *xt) {
    ts_transpose_rows(x, a->t, a->dh, ld, xt, a->t);
}

/* S = scale q K^T for the strip rows [i0, i0 + rows) against keys
 * [0, keys), from the head's transposed keys kt [dh, T]: the scale is the
 * product's alpha, no scaled copy of q. */
static void strip_scores(const head_qk *h, const ts_real *kt, int t, int dh, int i0, int rows,
                         int keys, ts_real scale, ts_real *s) {
    ts_small_gemm(false, rows, keys, dh, scale, h->q + (long)i0 * h->ld, h->ld, kt, t, 0, s, keys);
}

/* The forward over every head: strips of S, exponentials, E v divided by
 * the rows' sums. */
static void forward_heads(ts_ctx *ctx, const attn_layout *a, attn_operands in, ts_real *out,
                          ts_real *stats, ts_real scale) {
    ts_real *p = ts_alloc(ctx, (size_t)ATTN_STRIP * a->t * sizeof *p);
    ts_real *kt = ts_alloc(ctx, (size_t)a->dh * a->t * sizeof *kt);
    for (long h = 0; h < a->heads; h++) {
        long at = in_offset(a, h);
        head_qk qk = head_operands(a, &in, h);
        const ts_real *vh = in.v + at + in.v_at;
        ts_real *oh = out + out_offset(a, h), *st = stats + h * 2L * a->t;
        transpose_head(a, qk.k, qk.ld, kt);
        for (int i0 = 0; i0 < a->t; i0 += ATTN_STRIP) {
            int rows = strip_rows(a, i0), keys = strip_keys(a, i0, rows);
            strip_scores(&qk, kt, a->t, a->dh, i0, rows, keys, scale, p);
            strip_exponentials(a, p, i0, rows, keys, st + 2L * i0);
            ts_small_gemm(false, rows, a->dh, keys, 1, p, keys, vh, (int)a->ld_in, 0,
                          oh + (long)i0 * a->ld_out, (int)a->ld_out);
            divide_rows(oh + (long)i0 * a->ld_out, (int)a->ld_out, rows, a->dh, st + 2L * i0);
        }
    }
}

/* The fused first-order backward over every head (recording off). The
 * strips run from the last, which sees every key (unmasked: each does), so
 * dK and dV are written (beta 0) by the first GEMM that reaches them and
 * accumulated after: no zeroing pass. dq, dk, dv may be NULL (not wanted). With RoPE (the
 * forward's rotated q and k in in.rotated; rotate_back the table of
 * direction -1), dq and dk of a head are computed in scratch rows and
 * rotated back into place. */
static void backward_heads(ts_ctx *ctx, const attn_layout *a, attn_operands in,
                           const ts_real *stats, const ts_real *g, ts_real *dq, ts_real *dk,
                           ts_real *dv, ts_real scale, const ts_rope_table *rotate_back) {
    ts_real *p = ts_alloc(ctx, (size_t)ATTN_STRIP * a->t * sizeof *p);
    ts_real *dp = ts_alloc(ctx, (size_t)ATTN_STRIP * a->t * sizeof *dp);
    ts_real *kt = ts_alloc(ctx, 2 * (size_t)a->dh * a->t * sizeof *kt),
            *vt = kt + (long)a->dh * a->t;
    ts_real *dqs = NULL, *dks = NULL;
    if (rotate_back) {
        dqs = ts_alloc(ctx, 2 * (size_t)a->t * a->dh * sizeof *dqs);
        dks = dqs + (long)a->t * a->dh;
    }
    int ld = (int)a->ld_in, ldg = (int)a->ld_out, last = (a->t - 1) / ATTN_STRIP * ATTN_STRIP;
    for (long h = 0; h < a->heads; h++) {
        long at = in_offset(a, h);
        head_qk qk = head_operands(a, &in, h);
        const ts_real *vh = in.v + at + in.v_at;
        const ts_real *gh = g + out_offset(a, h), *st = stats + h * 2L * a->t;
        ts_real *dq_h = dq ? (rotate_back ? dqs : dq + at) : NULL;
        ts_real *dk_h = dk ? (rotate_back ? dks : dk + at + in.k_at) : NULL;
        transpose_head(a, qk.k, qk.ld, kt);
        if (dq || dk) transpose_head(a, vh, ld, vt);
        for (int i0 = last; i0 >= 0; i0 -= ATTN_STRIP) {
            int rows = strip_rows(a, i0), keys = strip_keys(a, i0, rows);
            ts_real beta = i0 == last ? 0 : 1;
            const ts_real *g_strip = gh + (long)i0 * ldg;
            strip_scores(&qk, kt, a->t, a->dh, i0, rows, keys, scale, p);
            strip_probabilities(a, p, i0, rows, keys, st + 2L * i0);
            if (dv)
                ts_small_gemm(true, keys, a->dh, rows, 1, p, keys, g_strip, ldg, beta,
                              dv + at + in.v_at, ld);
            if (!dq && !dk) continue;
            ts_small_gemm(false, rows, keys, a->dh, 1, g_strip, ldg, vt, a->t, 0, dp, keys);
            for (int r = 0; r < rows; r++) { /* dS = P (dP - rowsum(P dP)) into dp */
                const ts_real *pr = p + (long)r * keys;
                ts_real *dr = dp + (long)r * keys;
                /* P is 0 after the visible keys */
                int span = vector_span(visible_keys(a, i0 + r), keys);
                ts_real dot = ts_row_dot(dr, pr, span);
                for (int c = 0; c < span; c++) dr[c] = ts_flush_subnormal(pr[c] * (dr[c] - dot));
                for (int c = span; c < keys; c++) dr[c] = 0;
            }
            if (dq_h)
                ts_small_gemm(false, rows, a->dh, keys, scale, dp, keys, qk.k, qk.ld, 0,
                              dq_h + (long)i0 * qk.ld, qk.ld);
            if (dk_h)
                ts_small_gemm(true, keys, a->dh, rows, scale, dp, keys, qk.q + (long)i0 * qk.ld,
                              qk.ld, beta, dk_h, qk.ld);
        }
        if (rotate_back && dq) ts_rope_rotate_rows(rotate_back, dqs, a->dh, dq + at, ld, a->t);
        if (rotate_back && dk)
            ts_rope_rotate_rows(rotate_back, dks, a->dh, dk + at + in.k_at, ld, a->t);
    }
}

/* FLOPs of the forward: as the composition, q scaled 1 per element, S and
 * P v 2 dh per score element, softmax 5; over the strips' score elements
 * only. */
static double forward_flops(const attn_layout *a) {
    double elements = (double)a->heads * strip_elements(a);
    return (double)a->heads * a->t * a->dh + elements * (4.0 * a->dh + 5);
}

/* FLOPs of the fused backward. Per score element: S 2 dh, P recomputed 3
 * (subtract, exp, scale), dV 2 dh; with dq or dk: dP 2 dh and dS 4
 * (softmax_backward's), then 2 dh for each of dQ and dK. Per q element: its
 * scaling, and dQ's. */
static double backward_flops(const attn_layout *a, const bool needs[3]) {
    bool need_scores_grad = needs[0] || needs[1];
    double elements = (double)a->heads * strip_elements(a);
    double q_elements = (double)a->heads * a->t * a->dh;
    double per_element = 2.0 * a->dh + 3 + (needs[2] ? 2.0 * a->dh : 0) +
                         (need_scores_grad ? 2.0 * a->dh + 4 : 0) + (needs[0] ? 2.0 * a->dh : 0) +
                         (needs[1] ? 2.0 * a->dh : 0);
    return elements * per_element + q_elements * (1 + (needs[0] ? 1 : 0));
}

/* The profile's rows of the two ops on the separate layout. */
static const char *forward_op(bool causal) {
    return causal ? "causal_attention" : "full_attention";
}
static const char *backward_op(bool causal) {
    return causal ? "causal_attention_backward" : "full_attention_backward";
}

/* The fused first-order backward of ts_causal_attention or ts_full_attention
 * (recording off). */
static void fused_backward(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                           const ts_tensor *stats, ts_tensor *g, double scale, bool causal,
                           const bool *needs, ts_tensor **gin) {
    attn_layout a = separate_layout(q, causal);
    ts_tensor *dq = needs[0] ? ts_new_like(ctx, q) : NULL;
    ts_tensor *dk = needs[1] ? ts_new_like(ctx, k) : NULL;
    ts_tensor *dv = needs[2] ? ts_new_like(ctx, v) : NULL;
    if (!ctx->counting)
        backward_heads(ctx, &a, (attn_operands){q->data, k->data, v->data, 0, 0, NULL, NULL},
                       stats->data, g->data, dq ? dq->data : NULL, dk ? dk->data : NULL,
                       dv ? dv->data : NULL, (ts_real)scale, NULL);
    ts_count_flops(ctx, backward_flops(&a, needs));
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, backward_op(causal), NULL, dq ? dq : dk ? dk : dv, 0, NULL);
    gin[0] = dq;
    gin[1] = dk;
    gin[2] = dv;
}

/* The rules of ts_attention's ops under the causal mask (or none), as
 * recorded ops. */
static void primitive_backward(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v, ts_tensor *g,
                               double scale, bool causal, const bool *needs, ts_tensor **gin) {
    ts_tensor *qs = ts_scale(ctx, q, scale);
    ts_tensor *p = ts_softmax(ctx, ts_matmul(ctx, qs, k, false, true),
                              causal ? ts_causal_mask(ctx, q->shape[q->ndim - 2]) : NULL);
    if (needs[2]) gin[2] = ts_matmul(ctx, p, g, true, false);
    if (!needs[0] && !needs[1]) return;
    ts_tensor *ds = ts_softmax_backward(ctx, p, ts_matmul(ctx, g, v, false, true));
    if (needs[0]) gin[0] = ts_scale(ctx, ts_matmul(ctx, ds, k, false, false), scale);
    if (needs[1]) gin[1] = ts_matmul(ctx, ds, qs, true, false);
}

static void attention_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                           ts_tensor **gin) {
    ts_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2], *stats = node->in[3];
    double scale = node->fattr[0];
    bool causal = node->iattr[0];
    if (ctx->grad_enabled)
        primitive_backward(ctx, q, k, v, g, scale, causal, needs, gin);
    else
        fused_backward(ctx, q, k, v, stats, g, scale, causal, needs, gin);
}

static ts_tensor *fused_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                  double scale, bool causal) {
    check_operands(ctx, forward_op(causal), q, k, v);
    attn_layout a = separate_layout(q, causal);
    ts_tensor *out = ts_new_like(ctx, q);
    /* Per row: its max and 1 / sum, for the backward (a constant input). */
    ts_tensor *stats = ts_new(ctx, TS_SHAPE((int)(a.heads * a.t), 2));
    if (!ctx->counting)
        forward_heads(ctx, &a, (attn_operands){q->data, k->data, v->data, 0, 0, NULL, NULL},
                      out->data, stats->data, (ts_real)scale);
    ts_count_flops(ctx, forward_flops(&a));
    ts_node *node =
        ts_record(ctx, forward_op(causal), attention_rule, out, 4, (ts_tensor *[]){q, k, v, stats});
    if (node) {
        node->fattr[0] = scale;
        node->iattr[0] = causal;
    }
    return out;
}

ts_tensor *ts_causal_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                               double scale) {
    return fused_attention(ctx, q, k, v, scale, true);
}

ts_tensor *ts_full_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v, double scale) {
    return fused_attention(ctx, q, k, v, scale, false);
}

/* ------------------------------------------- attention on the packed layout
 *
 * ts_causal_attention_packed is ts_causal_attention on the layout of a
 * fused Q|K|V projection: the strip GEMMs read each head where it lies in
 * qkv [B, T, 3 D] (row stride 3 D) and write the output [B, T, D] (row
 * stride D), so the heads are never permuted to [B, H, T, dh] and back.
 * With positions it applies RoPE to q and k itself, head by head, into a
 * saved [heads, 2, T, dh] that its GEMMs then read contiguously (no RoPE op
 * over [B, T, 3 D] copying v along; the backward reads them back and
 * rotates dq, dk back). Its plain backward
 * writes dq, dk, dv into one d(qkv) the same way; a recorded backward is the
 * primitive composition on views of the heads (slices, reshapes, ts_rope,
 * permutes), differentiable to any order. */

/* Part 0, 1 or 2 (q, k, v) of qkv [B, T, 3 D] as [B, H, T, dh], q and k
 * rotated when positions are given; and the inverse layout change. */
static ts_tensor *packed_part(ts_ctx *ctx, ts_tensor *qkv, int part, int n_heads,
                              const int32_t *positions, double theta) {
    int b = qkv->shape[0], t = qkv->shape[1], d = qkv->shape[2] / 3;
    ts_tensor *x = ts_slice(ctx, qkv, 2, part * d, d);
    x = ts_reshape(ctx, x, TS_SHAPE(b, t, n_heads, d / n_heads));
    if (positions && part < 2) x = ts_rope(ctx, x, positions, theta);
    return ts_permute(ctx, x, (const int[]){0, 2, 1, 3});
}
static ts_tensor *split_heads(ts_ctx *ctx, ts_tensor *x, int n_heads) {
    int b = x->shape[0], t = x->shape[1], d = x->shape[2];
    ts_tensor *heads = ts_reshape(ctx, x, TS_SHAPE(b, t, n_heads, d / n_heads));
    return ts_permute(ctx, heads, (const int[]){0, 2, 1, 3});
}

/* RoPE's FLOPs (3 per rotated element, as the rope op) over q and k: the
 * forward's rotation, or the backward's rotating dq and dk back. */
static double packed_rope_flops(const attn_layout *a) {
    return 3.0 * 2.0 * a->heads * a->t * a->dh;
}

static void packed_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                        ts_tensor **gin) {
    if (!needs[0]) return;
    ts_tensor *qkv = node->in[0], *stats = node->in[1], *rotated = node->in[2];
    int n_heads = node->iattr[0];
    double scale = node->fattr[0], theta = node->fattr[1];
    const int32_t *positions = node->index;
    if (ctx->grad_enabled) {
        ts_tensor *grads[3], *parts[3];
        for (int i = 0; i < 3; i++) parts[i] = packed_part(ctx, qkv, i, n_heads, positions, theta);
        primitive_backward(ctx, parts[0], parts[1], parts[2], split_heads(ctx, g, n_heads), scale,
                           true, (const bool[]){true, true, true}, grads);
        /* Back to [B, T, D]; q's and k's through RoPE's adjoint, the
         * rotation by the opposite angles. */
        int32_t *opposite = NULL;
        if (positions) {
            opposite = ts_alloc(ctx, (size_t)qkv->shape[1] * sizeof *opposite);
            for (int t = 0; t < qkv->shape[1]; t++) opposite[t] = -positions[t];
        }
        for (int i = 0; i < 3; i++) {
            ts_tensor *x = ts_permute(ctx, grads[i], (const int[]){0, 2, 1, 3});
            if (opposite && i < 2) x = ts_rope(ctx, x, opposite, theta);
            grads[i] = ts_reshape(ctx, x, TS_SHAPE(qkv->shape[0], qkv->shape[1], -1));
        }
        gin[0] = ts_concat(ctx, 3, grads, 2);
        return;
    }
    attn_layout a = packed_layout(qkv, n_heads);
    ts_tensor *dqkv = ts_new_like(ctx, qkv);
    long d = (long)a.per_batch * a.dh;
    if (!ctx->counting) {
        ts_rope_table rotate_back;
        if (positions) rotate_back = ts_rope_table_make(ctx, positions, a.t, a.dh, theta, -1);
        attn_operands in = {
            qkv->data, qkv->data, qkv->data, d, 2 * d, positions ? rotated->data : NULL, NULL};
        backward_heads(ctx, &a, in, stats->data, g->data, dqkv->data, dqkv->data, dqkv->data,
                       (ts_real)scale, positions ? &rotate_back : NULL);
    }
    /* dq and dk rotated back. */
    ts_count_flops(ctx, backward_flops(&a, (const bool[]){true, true, true}) +
                            (positions ? packed_rope_flops(&a) : 0));
    ts_record(ctx, "causal_attention_backward", NULL, dqkv, 0, NULL);
    gin[0] = dqkv;
}

ts_tensor *ts_causal_attention_packed(ts_ctx *ctx, ts_tensor *qkv, int n_heads,
                                      const int32_t *positions, double theta, double scale) {
    char s[64];
    if (qkv->ndim != 3 || n_heads < 1 || qkv->shape[2] % (3 * n_heads) ||
        (positions && qkv->shape[2] / (3 * n_heads) % 2))
        ts_fail(ctx, "causal_attention_packed",
                "qkv %s must be [B, T, 3 D] with D a multiple of %d heads (of even size with "
                "RoPE)",
                ts_shape_str(qkv, s, sizeof s), n_heads);
    attn_layout a = packed_layout(qkv, n_heads);
    long d = (long)n_heads * a.dh;
    ts_tensor *out = ts_new(ctx, TS_SHAPE(qkv->shape[0], a.t, (int)d));
    ts_tensor *stats = ts_new(ctx, TS_SHAPE((int)(a.heads * a.t), 2));
    /* The rotated q and k of each head, for the backward (a constant input;
     * a one-element placeholder without RoPE). */
    ts_tensor *rotated =
        positions ? ts_new(ctx, TS_SHAPE((int)a.heads, 2, a.t, a.dh)) : ts_new(ctx, TS_SHAPE(1));
    if (!ctx->counting) {
        ts_rope_table rotate;
        if (positions) rotate = ts_rope_table_make(ctx, positions, a.t, a.dh, theta, 1);
        attn_operands in = {qkv->data,
                            qkv->data,
                            qkv->data,
                            d,
                            2 * d,
                            positions ? rotated->data : NULL,
                            positions ? &rotate : NULL};
        forward_heads(ctx, &a, in, out->data, stats->data, (ts_real)scale);
    }
    ts_count_flops(ctx, forward_flops(&a) + (positions ? packed_rope_flops(&a) : 0));
    ts_node *node = ts_record(ctx, "causal_attention", packed_rule, out, 3,
                              (ts_tensor *[]){qkv, stats, rotated});
    if (node) {
        node->iattr[0] = n_heads;
        node->fattr[0] = scale;
        node->fattr[1] = theta;
        if (positions) {
            node->index = ts_copy_index(ctx, positions, a.t);
            node->index_len = a.t;
        }
    }
    return out;
}

ts_tensor *ts_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                        const ts_tensor *mask, double scale) {
    /* Scaling q instead of the scores touches T*dh instead of T*T elements. */
    ts_tensor *scores = ts_matmul(ctx, ts_scale(ctx, q, scale), k, false, true);
    ts_tensor *probs = ts_softmax(ctx, scores, mask);
    return ts_matmul(ctx, probs, v, false, false);
}
