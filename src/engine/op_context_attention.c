#include <math.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/small_gemm.h"
#include "engine/softmax_rows.h"

/* ---------------------------------------------------------------- context attention
 *
 * ts_context_attention: L queries attend to C >= L context keys aligned at the
 * end (row r sees context keys 0..r + C - L, the causal mask of the last L of C
 * positions) and to one key of their own (k_self[r], v_self[r]); EBT's
 * prediction stream (C = L + 1). The composition of primitives: scores [L, C]
 * against the context concatenated with the self score [L, 1], a softmax
 * under the [L, C + 1] mask, two slices of P and two mixes.
 *
 * Fused as three bilinear ops over the "context layout" [L, C + 1] (context
 * columns, then the self column), each reading and writing only the visible
 * entries (the rest of an [L, C + 1] output is 0, of an input ignored), in
 * strips of CONTEXT_STRIP rows whose GEMMs stop at the strip's last visible key:
 *   context_product(a, b, b_self) = S: S[r, j] = a_r . b_j, S[r, C] = a_r . b_self_r;
 *   context_mix(P, v, v_self) = O: O_r = sum_j P[r, j] v_j + P[r, C] v_self_r;
 *   context_mix_t(P, g) = D: D_j = sum_r P[r, j] g_r (the self column unread).
 * Each one's rule is the other two (and a product with the self column):
 *   product: da = mix(G, b, b_self), db = mix_t(G, a), db_self = G[:, C] a;
 *   mix:     dP = product(g, v, v_self), dv = mix_t(P, g), dv_self = P[:, C] g;
 *   mix_t:   dP = product(g, h, none), dg = mix(P, h, none);
 * so every pass (forward, backward, a recorded backward and the second-order
 * rules of that) skips the masked half, no pass copies through a
 * concatenation or slices of [L, C + 1], and plain and recorded gradients
 * are the same computation (bit for bit). The attention is then
 * mix(softmax(product(q, k, k_self; alpha = scale), mask), v, v_self) with the
 * ordinary masked softmax. FLOPs are the executed ones, booked with the
 * conventions of the primitives they replace (matmul 2 dh per element,
 * docs/engine.md).
 *
 * Every one of these ops (and the self column's two below) multiplies its
 * result by a factor alpha that its rule hands on, so the scores' scale
 * 1/sqrt(dh) rides in the GEMMs instead of a scale op over q (and its
 * rule's over the gradient) in every pass (sixth round, docs/performance.md).
 * The values are those of the scale op when alpha is a power of two, as at
 * dh = 64 (or 4, 16, 256), and equal to rounding otherwise. */

/* Rows per strip of the context ops (its own constant: ATTN_STRIP also sets
 * the causal attention's executed FLOPs). */
enum { CONTEXT_STRIP = 64 };

typedef struct context_shape {
    long heads;
    int rows, keys, dh; /* L, C, dh; the layout is [L, C + 1] */
    /* Rows tensors (queries, their own keys and values, the rows' outputs
     * and gradients) token-major, [B, L, H, dh] (ts_context_attention_tokens):
     * head hh = b H + h starts at (b L H + h) dh, rows n_heads dh apart.
     * Otherwise [..., L, dh] per head, rows dh apart. */
    bool token_major;
    int n_heads;
} context_shape;

/* Offset of head hh's first row in a rows tensor, and its row stride. */
static long rows_head(context_shape s, long hh) {
    if (!s.token_major) return hh * (long)s.rows * s.dh;
    long b = hh / s.n_heads, h = hh % s.n_heads;
    return (b * s.rows * s.n_heads + h) * s.dh;
}

static int rows_stride(context_shape s) {
    return s.token_major ? s.n_heads * s.dh : s.dh;
}

/* The rows of every head in memory order: a walk from row_walk_start,
 * advanced by row_walk_next, visits row `row` of head `head` at `at` (=
 * rows_head(s, head) + row rows_stride(s)), `at` rising by dh a step.
 * Token-major rows [B, L, H, dh] run b, r, h (the heads of a token lie side
 * by side); per head, rows run r. Loops over rows of the rows tensors take
 * them so, which the hardware prefetches as one stream: head by head,
 * token-major rows are n_heads dh apart and nearly every row missed the
 * cache (the self scores, self columns and self scales; tenth round,
 * docs/performance.md). */
typedef struct row_walk {
    long head, at;
    int row, head_in_batch, heads_per_batch;
} row_walk;

static row_walk row_walk_start(context_shape s) {
    return (row_walk){0, 0, 0, 0, s.token_major ? s.n_heads : 1};
}

static void row_walk_next(context_shape s, row_walk *w) {
    w->at += s.dh;
    if (++w->head_in_batch < w->heads_per_batch) {
        w->head++;
        return;
    }
    w->head -= w->heads_per_batch - 1; /* the batch's first head */
    w->head_in_batch = 0;
    if (++w->row < s.rows) return;
    w->row = 0;
    w->head += w->heads_per_batch; /* the next batch's */
}

/* Rows of all heads (the walk's steps). */
static long all_rows(context_shape s) {
    return s.heads * s.rows;
}

/* Rows of the strip starting at i0 (the last one may be partial). */
static int strip_rows(int rows, int i0) {
    return rows - i0 < CONTEXT_STRIP ? rows - i0 : CONTEXT_STRIP;
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
static double context_strip_elements(context_shape a) {
    double n = 0;
    for (int i0 = 0; i0 < a.rows; i0 += CONTEXT_STRIP) {
        int strip = strip_rows(a.rows, i0);
        n += (double)strip * (i0 + strip + a.keys - a.rows);
    }
    return n * (double)a.heads;
}

static bool same_leading(const ts_tensor *x, const ts_tensor *y) {
    if (x->ndim != y->ndim) return false;
    for (int i = 0; i < x->ndim - 2; i++)
        if (x->shape[i] != y->shape[i]) return false;
    return true;
}

/* A rows tensor's header as its head-major shape: token-major [B, L, H, dh]
 * seen as [B, H, L, dh] (shape checks only). */
static ts_tensor head_major(const ts_tensor *rows, bool token_major) {
    ts_tensor t = *rows;
    if (token_major && t.ndim == 4) {
        t.shape[1] = rows->shape[2];
        t.shape[2] = rows->shape[1];
    }
    return t;
}

/* Checks rows [..., L, dh], context [..., C, dh] (C >= L) and, when given,
 * self [..., L, dh] and layout [..., L, C + 1]; token-major rows and self
 * [B, L, H, dh] against context [B, H, C, dh] and layout [B, H, L, C + 1]. */
static context_shape context_shape_of(ts_ctx *ctx, const char *op, const ts_tensor *rows_in,
                                      const ts_tensor *context, const ts_tensor *self_in,
                                      const ts_tensor *layout, bool token_major) {
    char s1[64], s2[64], s3[64], s4[64];
    if (token_major && (rows_in->ndim != 4 || (self_in && self_in->ndim != 4)))
        ts_fail(ctx, op, "token-major rows %s need 4 dims [B, L, H, dh]",
                ts_shape_str(rows_in, s1, sizeof s1));
    ts_tensor rows_view = head_major(rows_in, token_major);
    ts_tensor self_view = self_in ? head_major(self_in, token_major) : rows_view;
    const ts_tensor *rows = &rows_view, *self = self_in ? &self_view : NULL;
    int n = rows->ndim;
    bool ok =
        n >= 2 && same_leading(rows, context) && context->shape[n - 1] == rows->shape[n - 1] &&
        context->shape[n - 2] >= rows->shape[n - 2] && (!self || ts_same_shape(rows, self)) &&
        (!layout || (same_leading(rows, layout) && layout->shape[n - 2] == rows->shape[n - 2] &&
                     layout->shape[n - 1] == context->shape[n - 2] + 1));
    if (!ok)
        ts_fail(ctx, op,
                "rows %s, their own keys or values %s, the context %s and the layout %s: need "
                "[..., L, dh], [..., L, dh], [..., C, dh] with C >= L, and [..., L, C + 1]",
                ts_shape_str(rows, s1, sizeof s1), self ? ts_shape_str(self, s2, sizeof s2) : "-",
                ts_shape_str(context, s3, sizeof s3),
                layout ? ts_shape_str(layout, s4, sizeof s4) : "-");
    int l = rows->shape[n - 2], dh = rows->shape[n - 1];
    return (context_shape){
        rows->numel / ((long)l * dh),    l, context->shape[n - 2], dh, token_major,
        token_major ? rows->shape[1] : 0};
}

/* Rows of a layout tensor are prefetched PREFETCH_ROWS ahead of the row a
 * loop reads: its rows (C + 1 floats) are read in strides of a few hundred
 * floats and a 4 KiB page holds four of them, where the hardware's
 * prefetcher hardly trains, so its visible entries came from memory at
 * ~17 GB/s (tenth round, docs/performance.md). */
enum { PREFETCH_ROWS = 8, LINE_FLOATS = 64 / (int)sizeof(ts_real) };

/* Prefetches the first n entries of a row (of a layout or a rows tensor). */
static void prefetch_row(const ts_real *row, int n) {
    for (int c = 0; c < n; c += LINE_FLOATS) __builtin_prefetch(row + c);
    if (n > 0) __builtin_prefetch(row + n - 1);
}

/* The strip's visible part of a layout tensor (rows [i0, i0 + rows) of a
 * head's `head_rows`, context columns [0, strip_keys)) into buf [rows,
 * strip_keys], masked entries 0, so the GEMMs read nothing outside the
 * visible entries; the rows PREFETCH_ROWS ahead prefetched. */
static void visible_strip(const ts_real *layout_head, int width, int head_rows, int i0, int rows,
                          int strip_keys, int offset, ts_real *buf) {
    for (int r = 0; r < rows; r++) {
        const ts_real *src = layout_head + (long)(i0 + r) * width;
        ts_real *dst = buf + (long)r * strip_keys;
        int visible = i0 + r + offset + 1, ahead = i0 + r + PREFETCH_ROWS;
        if (ahead < head_rows) prefetch_row(src + (long)PREFETCH_ROWS * width, ahead + offset + 1);
        for (int c = 0; c < visible; c++) dst[c] = src[c];
        for (int c = visible; c < strip_keys; c++) dst[c] = 0;
    }
}

/* Columns of the context ops' GEMMs are taken in panels of CONTEXT_PANEL:
 * a multiple of every build's panel in ts_small_gemm (two vectors: 32
 * floats under AVX-512, fewer elsewhere), so a GEMM over a multiple of it
 * has no edge panel. */
enum { CONTEXT_PANEL = 32 };

static int round_up(int n, int multiple) {
    return (n + multiple - 1) / multiple * multiple;
}

/* A strip's scores S = alpha a b^T into s [rows, strip_keys] (row stride
 * ld_s), row r seeing keys 0..first_visible + r (first_visible: the last
 * key row 0 sees). The strip's keys (i0 + rows + C - L: 65, 129, ... in EBT)
 * are never a whole number of panels, and ts_small_gemm pads the last
 * partial panel to a full one, computing it into a scratch tile and copying
 * it out: over all rows, a third more work at 65 keys for one visible
 * column. So the whole panels run over all rows, and the columns past them
 * only over the rows that see one of them. Each score is the same dot
 * product either way (ts_small_gemm sums each one over dh in order,
 * whatever tile computes it), so the values are unchanged; entries past a
 * row's visible keys are left as they are (garbage, for the caller). */
static void strip_scores(int rows, int strip_keys, int first_visible, int dh, ts_real alpha,
                         const ts_real *a, int lda, const ts_real *bt, int ld_bt, ts_real *s,
                         int ld_s) {
    int whole = strip_keys / CONTEXT_PANEL * CONTEXT_PANEL;
    ts_small_gemm(false, rows, whole, dh, alpha, a, lda, bt, ld_bt, 0, s, ld_s);
    /* row r sees column `whole` from r = whole - first_visible on */
    int first_row = whole - first_visible > 0 ? whole - first_visible : 0;
    if (whole < strip_keys && first_row < rows)
        ts_small_gemm(false, rows - first_row, strip_keys - whole, dh, alpha,
                      a + (long)first_row * lda, lda, bt + whole, ld_bt, 0,
                      s + (long)first_row * ld_s + whole, ld_s);
}

/* Every op below takes a sum `into` (NULL: none): in a plain pass (recording
 * off) a rule hands it the sum its input's gradient already holds
 * (ts_backward_into_fn), and the op adds its result into that buffer and
 * returns it instead of a tensor of its own. The result is first formed
 * exactly as without a sum (in a strip's or a head's scratch where a GEMM
 * makes it), then added element by element: the sum + the result, the very
 * float additions of the accumulation's add it replaces, so training stays
 * bit for bit as it was; it saves the fresh tensor's write and the add's
 * separate pass over both (seventh round, lever 39, docs/performance.md).
 * FLOPs: the op's plus the add's (one per element of the sum). */
static ts_tensor *context_product(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, ts_tensor *b_self,
                                  double alpha, bool token_major, ts_tensor *into);
static ts_tensor *context_mix(ts_ctx *ctx, ts_tensor *p, ts_tensor *v, ts_tensor *v_self,
                              double alpha, bool token_major, ts_tensor *into);
static ts_tensor *context_mix_t(ts_ctx *ctx, ts_tensor *p, ts_tensor *g, double alpha,
                                bool token_major, ts_tensor *into);

/* The sum a rule may add into: only in a plain pass, where no rule is
 * recorded (a recorded pass would have to record the sum as an input of the
 * op; EBT's recorded pass has no sums of the context ops to spare). */
static ts_tensor *plain_sum(const ts_ctx *ctx, ts_tensor *const *sums, int j) {
    return !ctx->grad_enabled && !ctx->counting ? sums[j] : NULL;
}

/* The FLOPs of the add a sum into replaces. */
static double into_flops(const ts_tensor *into) {
    return into ? (double)into->numel : 0;
}

/* FLOPs of the factor alpha of every op below: one product per element of
 * the operand the scores' scale was applied to (the scale op it replaces). */
static double alpha_flops(double alpha, const ts_tensor *scaled) {
    return alpha != 1 ? (double)scaled->numel : 0;
}

/* Every op records alpha and whether its rows are token-major, and hands
 * both on to its rule's ops. */
static void keep_attributes(ts_node *node, double alpha, bool token_major) {
    if (!node) return;
    node->fattr[0] = alpha;
    node->iattr[0] = token_major;
}

/* The self column's two bilinear ops (sixth round, docs/performance.md; they
 * replace a slice of the column, a broadcast product and, in the next order,
 * a product, a row sum and a pad of the column back into the layout):
 *   context_self_scale(layout, x) = O: O_r = layout[r, C] x_r;
 *   context_self_column(h, x, C) = a layout tensor, zero but for its last
 *   column h_r . x_r (the row sum in double lanes of the float products, as
 *   sum_to of ts_mul, so the values are those of the ops replaced).
 * Each one's rule is the other (and itself):
 *   self_scale:  dlayout = self_column(h, x), dx = self_scale(layout, h);
 *   self_column: dh = self_scale(G, x), dx = self_scale(G, h). */
static ts_tensor *context_self_column(ts_ctx *ctx, ts_tensor *h, ts_tensor *x, int width,
                                      double alpha, bool token_major, ts_tensor *into);

static void context_self_scale_rule(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                                    ts_tensor **gin);
static void context_self_scale_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *h,
                                         const bool *needs, ts_tensor *const *sums,
                                         ts_tensor **gin);

/* The layout of rows x: heads and rows per head (x [..., L, dh] or
 * token-major [B, L, H, dh]), for the self column's loops. */
static context_shape self_shape(const ts_tensor *x, bool token_major) {
    int n = x->ndim, dh = x->shape[n - 1];
    int rows = token_major ? x->shape[1] : x->shape[n - 2];
    return (context_shape){x->numel / ((long)rows * dh), rows, 0, dh, token_major,
                           token_major ? x->shape[2] : 0};
}

/* context_self_scale's FLOPs: as the product it replaces. */
static double self_scale_flops(const ts_tensor *x, double alpha, const ts_tensor *into) {
    return (double)x->numel + alpha_flops(alpha, x) + into_flops(into);
}

/* A row of context_self_scale: o = p x_r (added into o with a sum), p =
 * alpha times the row's entry of the layout's self column. */
static void self_scale_row(ts_real p, const ts_real *xr, ts_real *o, int dh, bool add) {
    if (add)
        for (int c = 0; c < dh; c++) o[c] += p * xr[c];
    else
        for (int c = 0; c < dh; c++) o[c] = p * xr[c];
}

static ts_tensor *context_self_scale(ts_ctx *ctx, ts_tensor *layout, ts_tensor *x, double alpha,
                                     bool token_major, ts_tensor *into) {
    int width = layout->shape[layout->ndim - 1];
    ts_tensor *out = into ? into : ts_new_like(ctx, x);
    context_shape s = self_shape(x, token_major);
    row_walk w = row_walk_start(s);
    for (long t = 0; t < (ctx->counting ? 0 : all_rows(s)); t++, row_walk_next(s, &w)) {
        /* the layout's self column: a cache line a row, PREFETCH_ROWS ahead
         * (87% of the op's time was this load's miss) */
        const ts_real *self = layout->data + (w.head * s.rows + w.row + 1) * width - 1;
        if (w.row + PREFETCH_ROWS < s.rows) __builtin_prefetch(self + (long)PREFETCH_ROWS * width);
        self_scale_row((ts_real)alpha * *self, x->data + w.at, out->data + w.at, s.dh,
                       into != NULL);
    }
    ts_count_flops(ctx, self_scale_flops(x, alpha, into));
    ts_node *node = ts_record(ctx, "context_self_scale", context_self_scale_rule, out, 2,
                              (ts_tensor *[]){layout, x});
    keep_attributes(node, alpha, token_major);
    if (node) node->backward_into = context_self_scale_rule_into;
    return out;
}

/* Every rule below is a backward_into: input j's gradient goes into
 * plain_sum(sums, j) where there is one. An input given twice gets the same
 * sum twice, and its second gradient adds to the sum its first went into. */
static ts_tensor *const no_sums[TS_NODE_MAX_INPUTS] = {NULL};

static void context_self_scale_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *h,
                                         const bool *needs, ts_tensor *const *sums,
                                         ts_tensor **gin) {
    ts_tensor *layout = node->in[0], *x = node->in[1];
    double alpha = node->fattr[0];
    bool tm = node->iattr[0];
    if (needs[0])
        gin[0] = context_self_column(ctx, h, x, layout->shape[layout->ndim - 1], alpha, tm,
                                     plain_sum(ctx, sums, 0));
    if (needs[1]) gin[1] = context_self_scale(ctx, layout, h, alpha, tm, plain_sum(ctx, sums, 1));
}

static void context_self_scale_rule(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                                    ts_tensor **gin) {
    context_self_scale_rule_into(ctx, node, h, needs, no_sums, gin);
}

static void context_self_column_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *g,
                                          const bool *needs, ts_tensor *const *sums,
                                          ts_tensor **gin) {
    ts_tensor *h = node->in[0], *x = node->in[1];
    bool tm = node->iattr[0];
    if (needs[0])
        gin[0] = context_self_scale(ctx, g, x, node->fattr[0], tm, plain_sum(ctx, sums, 0));
    if (needs[1])
        gin[1] = context_self_scale(ctx, g, h, node->fattr[0], tm, plain_sum(ctx, sums, 1));
}

static void context_self_column_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                     ts_tensor **gin) {
    context_self_column_rule_into(ctx, node, g, needs, no_sums, gin);
}

static ts_tensor *context_self_column(ts_ctx *ctx, ts_tensor *h, ts_tensor *x, int width,
                                      double alpha, bool token_major, ts_tensor *into) {
    ts_tensor view = head_major(x, token_major);
    int n = x->ndim, shape[TS_MAX_DIMS];
    for (int i = 0; i < n; i++) shape[i] = view.shape[i];
    shape[n - 1] = width;
    ts_tensor *out = into ? into : ts_new(ctx, n, shape);
    context_shape s = self_shape(x, token_major);
    row_walk w = row_walk_start(s);
    for (long t = 0; t < (ctx->counting ? 0 : all_rows(s)); t++, row_walk_next(s, &w)) {
        const ts_real *hr = h->data + w.at, *xr = x->data + w.at;
        ts_real *o = out->data + (w.head * s.rows + w.row) * width; /* each row written once */
        /* the row PREFETCH_ROWS ahead, for writing (with a sum, its last entry) */
        for (int c = into ? width - 1 : 0; w.row + PREFETCH_ROWS < s.rows && c < width;
             c += LINE_FLOATS)
            __builtin_prefetch(o + (long)PREFETCH_ROWS * width + c, 1);
        for (int c = 0; !into && c < width - 1; c++) o[c] = 0; /* a sum + 0: the sum */
        double lane[TS_LANES] = {0};
        long c = 0;
        for (; c + TS_LANES <= s.dh; c += TS_LANES)
            for (int j = 0; j < TS_LANES; j++) lane[j] += (ts_real)(hr[c + j] * xr[c + j]);
        double sum = ts_combine_wide_lanes(lane);
        for (; c < s.dh; c++) sum += (ts_real)(hr[c] * xr[c]);
        if (!into) o[width - 1] = 0; /* 0 + the sum, as sum_to's zeroed output plus the sum */
        o[width - 1] += (ts_real)(sum * alpha);
    }
    /* as the product and row sum it replaces */
    ts_count_flops(ctx, 2.0 * (double)x->numel + alpha_flops(alpha, x) + into_flops(into));
    ts_node *node = ts_record(ctx, "context_self_column", context_self_column_rule, out, 2,
                              (ts_tensor *[]){h, x});
    keep_attributes(node, alpha, token_major);
    if (node) node->backward_into = context_self_column_rule_into;
    return out;
}

static void mix_pair(ts_ctx *ctx, ts_tensor *g, ts_tensor *a, ts_tensor *b, ts_tensor *b_self,
                     double alpha, bool token_major, ts_tensor *into_a, ts_tensor *into_b,
                     ts_tensor **da, ts_tensor **db);

static void context_product_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                      ts_tensor *const *sums, ts_tensor **gin) {
    ts_tensor *a = node->in[0], *b = node->in[1], *b_self = node->n_in > 2 ? node->in[2] : NULL;
    double alpha = node->fattr[0];
    bool tm = node->iattr[0];
    if (!ctx->grad_enabled && needs[0] && needs[1] && a != b) {
        mix_pair(ctx, g, a, b, b_self, alpha, tm, plain_sum(ctx, sums, 0), plain_sum(ctx, sums, 1),
                 &gin[0], &gin[1]);
    } else {
        if (needs[0]) gin[0] = context_mix(ctx, g, b, b_self, alpha, tm, plain_sum(ctx, sums, 0));
        if (needs[1]) gin[1] = context_mix_t(ctx, g, a, alpha, tm, plain_sum(ctx, sums, 1));
    }
    if (b_self && needs[2])
        gin[2] = context_self_scale(ctx, g, a, alpha, tm, plain_sum(ctx, sums, 2));
}

static void context_product_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                 ts_tensor **gin) {
    context_product_rule_into(ctx, node, g, needs, no_sums, gin);
}

/* The scores' self column alpha a_r . b_self_r, [heads, rows], taken in
 * the rows' memory order. */
static ts_real *self_scores_of(ts_ctx *ctx, context_shape s, const ts_tensor *a,
                               const ts_tensor *b_self, double alpha) {
    ts_real *self_scores = ts_alloc(ctx, (size_t)all_rows(s) * sizeof *self_scores);
    row_walk w = row_walk_start(s);
    for (long t = 0; t < all_rows(s); t++, row_walk_next(s, &w))
        self_scores[w.head * s.rows + w.row] =
            (ts_real)alpha * ts_row_dot(a->data + w.at, b_self->data + w.at, s.dh);
    return self_scores;
}

/* The layout shape [..., L, C + 1] of rows a (token-major: seen head-major). */
static void layout_shape(const ts_tensor *a, context_shape s, bool token_major, int *shape) {
    ts_tensor view = head_major(a, token_major);
    for (int i = 0; i < a->ndim; i++) shape[i] = view.shape[i];
    shape[a->ndim - 1] = s.keys + 1;
}

/* FLOPs of context_product: as matmul over the executed elements; the self
 * score as mul and sum. */
static double product_flops(context_shape s, const ts_tensor *a, bool self, double alpha) {
    return 2.0 * s.dh * context_strip_elements(s) + (self ? 2.0 * (double)a->numel : 0) +
           alpha_flops(alpha, a);
}

static ts_node *record_product(ts_ctx *ctx, ts_tensor *out, ts_tensor *a, ts_tensor *b,
                               ts_tensor *b_self, double alpha, bool token_major) {
    ts_node *node = ts_record(ctx, "context_product", context_product_rule, out, b_self ? 3 : 2,
                              (ts_tensor *[]){a, b, b_self});
    keep_attributes(node, alpha, token_major);
    if (node) node->backward_into = context_product_rule_into;
    return node;
}

/* A strip of a layout as the mix jobs below read it: its visible part, rows
 * [i0, i0 + rows) and context columns [0, strip_keys), in rows ld apart
 * (entries past a row's visible keys 0), and its self column, row r's at
 * self[r self_ld]: a copy of a layout tensor's strip (run_strips), a
 * strip a rule formed in scratch (softmax_mix_pair), or the rows of P just
 * written (product_strips). */
typedef struct layout_strip {
    const ts_real *visible, *self;
    int ld, self_ld;
} layout_strip;

/* context_mix's work strip by strip (below). */
typedef struct mix_job mix_job;
static void mix_strip(const mix_job *j, long h, int i0, layout_strip strip);

/* The strips of alpha a b^T of every head with the self column, finished
 * row by row into out's layout one of three ways: written, masked entries
 * 0 (context_product); added into out, the sum a rule hands on (add); or,
 * under mask with its runs, turned into the softmax's probabilities
 * (context_probabilities). Added or turned into probabilities, a strip is
 * first formed in scratch. Probabilities go on to the mix job mj, if any,
 * strip by strip as they are written (in cache). */
static void product_strips(ts_ctx *ctx, context_shape s, const ts_tensor *a, const ts_tensor *b,
                           const ts_tensor *b_self, double alpha, ts_tensor *out, bool add,
                           const ts_tensor *mask, const int32_t *runs, const mix_job *mj) {
    int width = s.keys + 1, offset = s.keys - s.rows, ld = rows_stride(s);
    long b_size = (long)s.keys * s.dh, o_size = (long)s.rows * width;
    /* b's head transposed, [dh, C]: ts_small_gemm reads B by rows; its rows
     * padded to whole vectors, so B's loads stay aligned */
    int ld_bt = round_up(s.keys, CONTEXT_PANEL);
    ts_real *bt = ts_alloc(ctx, (size_t)ld_bt * s.dh * sizeof *bt);
    /* the scratch strip [rows, strip_keys]: to add, in rows of ld_bt (whole
     * vectors: its stores aligned); for the softmax, in the layout's rows
     * (its row kernel reads the self column after the keys) */
    bool scratch = add || mask;
    int ld_strip = add ? ld_bt : width;
    ts_real *strip =
        scratch ? ts_alloc(ctx, (size_t)CONTEXT_STRIP * ld_strip * sizeof *strip) : NULL;
    ts_real *self_scores = b_self ? self_scores_of(ctx, s, a, b_self, alpha) : NULL;
    for (long h = 0; h < s.heads; h++) {
        const ts_real *ah = a->data + rows_head(s, h), *bh = b->data + h * b_size;
        ts_real *oh = out->data + h * o_size;
        ts_transpose_rows(bh, s.keys, s.dh, s.dh, bt, ld_bt);
        for (int i0 = 0; i0 < s.rows; i0 += CONTEXT_STRIP) {
            int rows = strip_rows(s.rows, i0), strip_keys = i0 + rows + offset;
            strip_scores(rows, strip_keys, i0 + offset, s.dh, (ts_real)alpha, ah + (long)i0 * ld,
                         ld, bt, ld_bt, scratch ? strip : oh + (long)i0 * width,
                         scratch ? ld_strip : width);
            for (int r = 0; r < rows; r++) {
                long row_index = i0 + r;
                ts_real *row = oh + row_index * width;
                ts_real *formed = scratch ? strip + (long)r * ld_strip : NULL;
                int visible = i0 + r + offset + 1;
                ts_real self = b_self ? self_scores[h * s.rows + row_index] : 0;
                if (add) { /* masked entries: the sum + 0, the sum */
                    for (int c = 0; c < visible; c++) row[c] += formed[c];
                    row[s.keys] += self;
                } else if (mask) { /* the entries past visible are the row's run, unread */
                    formed[s.keys] = self;
                    ts_softmax_row(formed, mask->data + row_index * width, row, width,
                                   runs[2 * row_index], runs[2 * row_index + 1]);
                } else {
                    for (int c = visible; c < s.keys; c++) row[c] = 0;
                    row[s.keys] = self;
                }
            }
            const ts_real *written = oh + (long)i0 * width;
            if (mj) mix_strip(mj, h, i0, (layout_strip){written, written + s.keys, width, width});
        }
    }
}

static ts_tensor *context_product(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, ts_tensor *b_self,
                                  double alpha, bool token_major, ts_tensor *into) {
    context_shape s = context_shape_of(ctx, "context_product", a, b, b_self, NULL, token_major);
    int shape[TS_MAX_DIMS];
    layout_shape(a, s, token_major, shape);
    if (into) context_shape_of(ctx, "context_product", a, b, NULL, into, token_major);
    ts_tensor *out = into ? into : ts_new(ctx, a->ndim, shape);
    if (!ctx->counting)
        product_strips(ctx, s, a, b, b_self, alpha, out, into != NULL, NULL, NULL, NULL);
    ts_count_flops(ctx, product_flops(s, a, b_self != NULL, alpha) + into_flops(into));
    record_product(ctx, out, a, b, b_self, alpha, token_major);
    return out;
}

static void context_mix_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor *const *sums, ts_tensor **gin) {
    ts_tensor *p = node->in[0], *v = node->in[1], *v_self = node->n_in > 2 ? node->in[2] : NULL;
    double alpha = node->fattr[0];
    bool tm = node->iattr[0];
    if (needs[0]) gin[0] = context_product(ctx, g, v, v_self, alpha, tm, plain_sum(ctx, sums, 0));
    if (needs[1]) gin[1] = context_mix_t(ctx, p, g, alpha, tm, plain_sum(ctx, sums, 1));
    if (v_self && needs[2])
        gin[2] = context_self_scale(ctx, p, g, alpha, tm, plain_sum(ctx, sums, 2));
}

static void context_mix_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    context_mix_rule_into(ctx, node, g, needs, no_sums, gin);
}

/* context_mix's work over one layout p, strip by strip (mix_strip), so a
 * rule that also runs context_mix_t over the same layout can hand both the
 * same copy of each strip (context_product's plain rule). */
struct mix_job {
    context_shape s;
    ts_tensor *p, *v, *v_self, *out, *into;
    double alpha;
    ts_real *strip; /* with a sum: the strip's rows, [rows, dh], then added */
};

static mix_job mix_start(ts_ctx *ctx, ts_tensor *p, ts_tensor *v, ts_tensor *v_self, double alpha,
                         bool token_major, ts_tensor *into) {
    ts_tensor *like = into ? into : v_self;
    if (into && v_self) context_shape_of(ctx, "context_mix", v_self, v, into, p, token_major);
    if (!like) { /* the output's shape: p's rows, v's width (token-major: [B, L, H, dh]) */
        int shape[TS_MAX_DIMS];
        for (int i = 0; i < p->ndim; i++) shape[i] = p->shape[i];
        shape[p->ndim - 1] = v->shape[v->ndim - 1];
        if (token_major && p->ndim == 4) {
            shape[1] = p->shape[2];
            shape[2] = p->shape[1];
        }
        like = ts_new(ctx, p->ndim, shape);
    }
    mix_job j = {.s = context_shape_of(ctx, "context_mix", like, v, NULL, p, token_major),
                 .p = p,
                 .v = v,
                 .v_self = v_self,
                 .out = into     ? into
                        : v_self ? ts_new_like(ctx, v_self)
                                 : like,
                 .into = into,
                 .alpha = alpha};
    if (into && !ctx->counting)
        j.strip = ts_alloc(ctx, (size_t)CONTEXT_STRIP * j.s.dh * sizeof *j.strip);
    return j;
}

/* Head h's strip from row i0 of the layout. */
static void mix_strip(const mix_job *j, long h, int i0, layout_strip strip) {
    context_shape s = j->s;
    int offset = s.keys - s.rows, ld = rows_stride(s);
    const ts_real *vh = j->v->data + h * (long)s.keys * s.dh;
    const ts_tensor *v_self = j->v_self;
    int rows = strip_rows(s.rows, i0), strip_keys = i0 + rows + offset;
    long at = rows_head(s, h) + (long)i0 * ld;
    ts_real *dst = j->into ? j->strip : j->out->data + at;
    int ld_dst = j->into ? s.dh : ld;
    /* the self mix's operands, on their way during the GEMM */
    for (int r = 0; v_self && r < rows; r++) {
        __builtin_prefetch(strip.self + (long)r * strip.self_ld);
        prefetch_row(v_self->data + at + (long)r * ld, s.dh);
    }
    ts_small_gemm(false, rows, s.dh, strip_keys, (ts_real)j->alpha, strip.visible, strip.ld, vh,
                  s.dh, 0, dst, ld_dst);
    for (int r = 0; v_self && r < rows; r++) {
        ts_real p_self = (ts_real)j->alpha * strip.self[(long)r * strip.self_ld];
        ts_real *o = dst + (long)r * ld_dst;
        const ts_real *vs = v_self->data + at + (long)r * ld;
        for (int c = 0; c < s.dh; c++) o[c] += p_self * vs[c];
    }
    for (int r = 0; j->into && r < rows; r++) {
        ts_real *o = j->out->data + at + (long)r * ld;
        const ts_real *add = j->strip + (long)r * s.dh;
        for (int c = 0; c < s.dh; c++) o[c] += add[c];
    }
}

/* As matmul over the executed elements; the self mix as mul and add. */
static double mix_flops(const mix_job *j) {
    return 2.0 * j->s.dh * context_strip_elements(j->s) +
           (j->v_self ? 2.0 * (double)j->out->numel : 0) + alpha_flops(j->alpha, j->out) +
           into_flops(j->into);
}

static ts_tensor *mix_record(ts_ctx *ctx, const mix_job *j, bool token_major) {
    ts_node *node = ts_record(ctx, "context_mix", context_mix_rule, j->out, j->v_self ? 3 : 2,
                              (ts_tensor *[]){j->p, j->v, j->v_self});
    keep_attributes(node, j->alpha, token_major);
    if (node) node->backward_into = context_mix_rule_into;
    return j->out;
}

static void context_mix_t_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                                    ts_tensor *const *sums, ts_tensor **gin) {
    ts_tensor *p = node->in[0], *g = node->in[1];
    bool tm = node->iattr[0];
    if (needs[0])
        gin[0] = context_product(ctx, g, h, NULL, node->fattr[0], tm, plain_sum(ctx, sums, 0));
    if (needs[1])
        gin[1] = context_mix(ctx, p, h, NULL, node->fattr[0], tm, plain_sum(ctx, sums, 1));
}

static void context_mix_t_rule(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                               ts_tensor **gin) {
    context_mix_t_rule_into(ctx, node, h, needs, no_sums, gin);
}

/* context_mix_t's work over one layout p, strip by strip (mix_t_strip)
 * and head by head (mix_t_head_end), as mix_job's. */
typedef struct mix_t_job {
    context_shape s;
    ts_tensor *p, *g, *out, *into;
    double alpha;
    ts_real *head; /* with a sum: the head's product, [C, dh], then added */
} mix_t_job;

static mix_t_job mix_t_start(ts_ctx *ctx, ts_tensor *p, ts_tensor *g, double alpha,
                             bool token_major, ts_tensor *into) {
    ts_tensor view = head_major(g, token_major);
    int n = p->ndim, shape[TS_MAX_DIMS];
    for (int i = 0; i < n; i++) shape[i] = view.shape[i];
    shape[n - 2] = p->shape[n - 1] - 1;
    /* written whole by the strips below (zeros only when there are no rows) */
    ts_tensor *out = into                  ? into
                     : p->shape[n - 2] > 0 ? ts_new(ctx, n, shape)
                                           : ts_zeros(ctx, n, shape);
    mix_t_job j = {.s = context_shape_of(ctx, "context_mix_t", g, out, NULL, p, token_major),
                   .p = p,
                   .g = g,
                   .out = out,
                   .into = into,
                   .alpha = alpha};
    if (into && !ctx->counting) j.head = ts_alloc(ctx, (size_t)j.s.keys * j.s.dh * sizeof *j.head);
    return j;
}

/* Head h's strip from row i0 of the layout; `seen`: the keys the head's
 * earlier strips saw. A key's row of D is written (beta 0)
 * by the first strip that sees it and accumulated (beta 1) by the later
 * ones: every key is seen by the last row, so no row needs zeros first.
 * The first write, alpha sum, is what 0 + alpha sum gave (alpha > 0: the
 * sums start at +0 and never become -0). */
static void mix_t_strip(const mix_t_job *j, long h, int i0, int seen, layout_strip strip) {
    context_shape s = j->s;
    int offset = s.keys - s.rows, ld = rows_stride(s);
    int rows = strip_rows(s.rows, i0), strip_keys = i0 + rows + offset;
    const ts_real *g_strip = j->g->data + rows_head(s, h) + (long)i0 * ld;
    ts_real *dst = j->into ? j->head : j->out->data + h * (long)s.keys * s.dh;
    ts_small_gemm(true, seen, s.dh, rows, (ts_real)j->alpha, strip.visible, strip.ld, g_strip, ld,
                  1, dst, s.dh);
    ts_small_gemm(true, strip_keys - seen, s.dh, rows, (ts_real)j->alpha, strip.visible + seen,
                  strip.ld, g_strip, ld, 0, dst + (long)seen * s.dh, s.dh);
}

/* After head h's strips: with a sum, the head's product added into it. */
static void mix_t_head_end(const mix_t_job *j, long h) {
    long o_size = (long)j->s.keys * j->s.dh;
    ts_real *o = j->out->data + h * o_size;
    for (long i = 0; j->into && i < o_size; i++) o[i] += j->head[i];
}

static double mix_t_flops(const mix_t_job *j) {
    return 2.0 * j->s.dh * context_strip_elements(j->s) + alpha_flops(j->alpha, j->g) +
           into_flops(j->into);
}

static ts_tensor *mix_t_record(ts_ctx *ctx, const mix_t_job *j, bool token_major) {
    ts_node *node =
        ts_record(ctx, "context_mix_t", context_mix_t_rule, j->out, 2, (ts_tensor *[]){j->p, j->g});
    keep_attributes(node, j->alpha, token_major);
    if (node) node->backward_into = context_mix_t_rule_into;
    return j->out;
}

/* The strips of a layout (the p of the jobs given: a mix, a mix_t or
 * both over the same layout), each strip's visible part copied once into
 * a buffer that every given job's GEMMs then read. */
static void run_strips(ts_ctx *ctx, context_shape s, const ts_tensor *layout, const mix_job *mj,
                       const mix_t_job *tj) {
    if (ctx->counting) return;
    int width = s.keys + 1, offset = s.keys - s.rows;
    ts_real *buf = ts_alloc(ctx, (size_t)CONTEXT_STRIP * s.keys * sizeof *buf);
    for (long h = 0; h < s.heads; h++) {
        for (int i0 = 0, seen = 0; i0 < s.rows; i0 += CONTEXT_STRIP) {
            int rows = strip_rows(s.rows, i0), strip_keys = i0 + rows + offset;
            const ts_real *head = layout->data + h * (long)s.rows * width;
            visible_strip(head, width, s.rows, i0, rows, strip_keys, offset, buf);
            layout_strip strip = {buf, head + (long)i0 * width + s.keys, strip_keys, width};
            if (mj) mix_strip(mj, h, i0, strip);
            if (tj) mix_t_strip(tj, h, i0, seen, strip);
            seen = strip_keys;
        }
        if (tj) mix_t_head_end(tj, h);
    }
}

static ts_tensor *context_mix(ts_ctx *ctx, ts_tensor *p, ts_tensor *v, ts_tensor *v_self,
                              double alpha, bool token_major, ts_tensor *into) {
    mix_job j = mix_start(ctx, p, v, v_self, alpha, token_major, into);
    run_strips(ctx, j.s, p, &j, NULL);
    ts_count_flops(ctx, mix_flops(&j));
    return mix_record(ctx, &j, token_major);
}

static ts_tensor *context_mix_t(ts_ctx *ctx, ts_tensor *p, ts_tensor *g, double alpha,
                                bool token_major, ts_tensor *into) {
    mix_t_job j = mix_t_start(ctx, p, g, alpha, token_major, into);
    run_strips(ctx, j.s, p, NULL, &j);
    ts_count_flops(ctx, mix_t_flops(&j));
    return mix_t_record(ctx, &j, token_major);
}

/* context_product's two gradients, da = mix(G, b, b_self) and db =
 * mix_t(G, a), in one loop over G's strips, in a plain pass (recording
 * off: the backward of every context attention's scores, and EBT's
 * second-order pass): each strip of G is copied once for both GEMMs,
 * where each op copied it (eighteenth round, docs/performance.md). The
 * same GEMMs on the same copies: the values are the two ops' bit for bit.
 * FLOPs are theirs; the profile books the pair as one row. Not when a and
 * b are one tensor (one sum would then take both ops' adds in another
 * order). */
static void mix_pair(ts_ctx *ctx, ts_tensor *g, ts_tensor *a, ts_tensor *b, ts_tensor *b_self,
                     double alpha, bool token_major, ts_tensor *into_a, ts_tensor *into_b,
                     ts_tensor **da, ts_tensor **db) {
    mix_job mj = mix_start(ctx, g, b, b_self, alpha, token_major, into_a);
    mix_t_job tj = mix_t_start(ctx, g, a, alpha, token_major, into_b);
    run_strips(ctx, mj.s, g, &mj, &tj);
    ts_count_flops(ctx, mix_flops(&mj) + mix_t_flops(&tj));
    /* Recording is off: this books the pair to the profile and records
     * nothing; db is named as an input only so its bytes count. */
    ts_tensor *moved[5] = {g, b, a, tj.out, b_self};
    ts_record(ctx, "context_mix_pair", NULL, mj.out, b_self ? 5 : 4, moved);
    *da = mj.out;
    *db = tj.out;
}

/* softmax_backward(P, G)'s rows of the strip from row i0 of a head (P's
 * rows at ph, the strip's rows of G at gs, C + 1 apart) into out [rows,
 * C + 1] (the layout's rows), by its row kernel under the masked runs; the
 * rows PREFETCH_ROWS ahead prefetched, of G too when g_ahead (G a tensor
 * in memory, not a strip formed in scratch). */
static void softmax_backward_strip(context_shape s, const ts_real *ph, const ts_real *gs,
                                   bool g_ahead, const int32_t *runs, int i0, ts_real *out) {
    int width = s.keys + 1, offset = s.keys - s.rows;
    for (int r = 0; r < strip_rows(s.rows, i0); r++) {
        long row = i0 + r, ahead = row + PREFETCH_ROWS;
        if (ahead < s.rows) { /* its visible keys and its self column */
            prefetch_row(ph + ahead * width, (int)ahead + offset + 1);
            __builtin_prefetch(ph + (ahead + 1) * width - 1);
            if (g_ahead) {
                const ts_real *g_row = gs + (long)(r + PREFETCH_ROWS) * width;
                prefetch_row(g_row, (int)ahead + offset + 1);
                __builtin_prefetch(g_row + width - 1);
            }
        }
        ts_softmax_backward_row(ph + row * width, gs + (long)r * width, out + r * width, width,
                                runs ? runs[2 * row] : 0, runs ? runs[2 * row + 1] : 0);
    }
}

/* self_scale's rows of the strip from row i0 of head h: out_r = (or +=,
 * add) alpha column[r column_ld] x_r, column the strip's self column. */
static void self_scale_strip(context_shape s, long h, int i0, const ts_real *column, int column_ld,
                             double alpha, const ts_tensor *x, ts_tensor *out, bool add) {
    int ld = rows_stride(s);
    for (int r = 0; r < strip_rows(s.rows, i0); r++) {
        long at = rows_head(s, h) + (long)(i0 + r) * ld;
        self_scale_row((ts_real)alpha * column[(long)r * column_ld], x->data + at, out->data + at,
                       s.dh, add);
    }
}

/* context_probabilities' rule (node: its node) in a plain pass, strip by
 * strip: each strip of the scores' gradient G = softmax_backward(P, dP)
 * formed in scratch by the softmax backward's own row kernel, and the
 * product's rule run on it while it is in cache: da = mix(G, b, b_self)
 * and db = mix_t(G, a), as context_mix_pair, and db_self = self_scale(G,
 * a) where needed. G never reaches memory: the softmax backward's write of
 * it, the pair's read and the self scale's are saved (nineteenth round,
 * docs/performance.md). The same row kernel, GEMMs and products on the
 * same values as the two rules' ops, so their results bit for bit. */
typedef struct scores_grad_job {
    mix_job da;
    mix_t_job db;
    const ts_tensor *a;
    ts_tensor *db_self, *into_self; /* db_self NULL: not needed */
    double alpha;
    const int32_t *runs;
    ts_real *scratch; /* the strip of G [CONTEXT_STRIP, C + 1] */
} scores_grad_job;

static scores_grad_job scores_grad_start(ts_ctx *ctx, const ts_node *node, const bool *needs,
                                         ts_tensor *const *sums) {
    ts_tensor *p = node->out, *a = node->in[0], *b = node->in[1];
    ts_tensor *b_self = node->n_in > 2 ? node->in[2] : NULL;
    double alpha = node->fattr[0];
    bool tm = node->iattr[0];
    scores_grad_job j = {.da = mix_start(ctx, p, b, b_self, alpha, tm, plain_sum(ctx, sums, 0)),
                         .db = mix_t_start(ctx, p, a, alpha, tm, plain_sum(ctx, sums, 1)),
                         .a = a,
                         .alpha = alpha,
                         .runs = node->index};
    if (b_self && needs[2]) {
        j.into_self = plain_sum(ctx, sums, 2);
        j.db_self = j.into_self ? j.into_self : ts_new_like(ctx, a);
    }
    if (!ctx->counting)
        j.scratch = ts_alloc(ctx, (size_t)CONTEXT_STRIP * (j.da.s.keys + 1) * sizeof *j.scratch);
    return j;
}

/* Head h's strip from row i0: P's rows at ph, the strip's rows of P's
 * gradient at gs (g_ahead: a tensor in memory, prefetched ahead). */
static void scores_grad_strip(const scores_grad_job *j, long h, int i0, int seen, const ts_real *ph,
                              const ts_real *gs, bool g_ahead) {
    context_shape s = j->da.s;
    int width = s.keys + 1;
    softmax_backward_strip(s, ph, gs, g_ahead, j->runs, i0, j->scratch);
    layout_strip strip = {j->scratch, j->scratch + s.keys, width, width};
    mix_strip(&j->da, h, i0, strip);
    mix_t_strip(&j->db, h, i0, seen, strip);
    if (j->db_self)
        self_scale_strip(s, h, i0, j->scratch + s.keys, width, j->alpha, j->a, j->db_self,
                         j->into_self != NULL);
}

static double scores_grad_flops(const scores_grad_job *j, const ts_tensor *p) {
    return TS_SOFTMAX_BACKWARD_FLOPS * (double)p->numel + mix_flops(&j->da) + mix_t_flops(&j->db) +
           (j->db_self ? self_scale_flops(j->a, j->alpha, j->into_self) : 0);
}

/* context_probabilities' gradient in a plain pass (recording off: the
 * backward of a context attention whose mix's rule ran on its own), in one
 * loop over the strips of dP. Not when two of a, b and b_self are one
 * tensor (one sum would then take the adds in another order). FLOPs are
 * the ops'; the profile books them as one row. */
static void softmax_mix_pair(ts_ctx *ctx, ts_node *node, ts_tensor *dp, const bool *needs,
                             ts_tensor *const *sums, ts_tensor **gin) {
    ts_tensor *p = node->out, *a = node->in[0], *b = node->in[1];
    ts_tensor *b_self = node->n_in > 2 ? node->in[2] : NULL;
    context_shape_of(ctx, "context_probabilities", a, b, NULL, dp, node->iattr[0]);
    scores_grad_job j = scores_grad_start(ctx, node, needs, sums);
    context_shape s = j.da.s;
    int width = s.keys + 1, offset = s.keys - s.rows;
    for (long h = 0; h < (ctx->counting ? 0 : s.heads); h++) {
        const ts_real *ph = p->data + h * (long)s.rows * width;
        const ts_real *gh = dp->data + h * (long)s.rows * width;
        for (int i0 = 0, seen = 0; i0 < s.rows; i0 += CONTEXT_STRIP) {
            scores_grad_strip(&j, h, i0, seen, ph, gh + (long)i0 * width, true);
            seen = i0 + strip_rows(s.rows, i0) + offset;
        }
        mix_t_head_end(&j.db, h);
    }
    ts_count_flops(ctx, scores_grad_flops(&j, p));
    /* Recording is off: this books the work to the profile and records
     * nothing; the gradients are named as inputs only so their bytes count. */
    ts_tensor *moved[7] = {dp, p, b, a, j.db.out, b_self, j.db_self};
    int n_moved = j.db_self ? 7 : b_self ? 6 : 5;
    ts_record(ctx, "context_softmax_mix_pair", NULL, j.da.out, n_moved, moved);
    gin[0] = j.da.out;
    gin[1] = j.db.out;
    if (j.db_self) gin[2] = j.db_self;
}

/* The scores' gradient dS = softmax_backward(P, G) and da = mix(dS, b,
 * b_self; alpha) in one loop, outside softmax_mix_pair (a recorded pass:
 * EBT's energy gradient): dS written row by row, as the graph keeps it,
 * and each strip of it mixed from the rows just written, in cache, instead
 * of from a copy read back from memory (nineteenth round). Recorded as the
 * two ops' nodes, with their values bit for bit; the profile books the
 * loop's time and both ops' FLOPs to softmax_backward's row. */
static ts_tensor *softmax_backward_mix(ts_ctx *ctx, ts_node *node, ts_tensor *g, ts_tensor *into,
                                       ts_tensor **da) {
    ts_tensor *p = node->out, *b = node->in[1], *b_self = node->n_in > 2 ? node->in[2] : NULL;
    bool tm = node->iattr[0];
    const int32_t *runs = node->index;
    context_shape_of(ctx, "softmax_backward", node->in[0], b, NULL, g, tm);
    ts_tensor *ds = ts_new_like(ctx, p);
    mix_job mj = mix_start(ctx, ds, b, b_self, node->fattr[0], tm, into);
    context_shape s = mj.s;
    int width = s.keys + 1;
    for (long h = 0; h < (ctx->counting ? 0 : s.heads); h++) {
        long at = h * (long)s.rows * width;
        const ts_real *ph = p->data + at, *gh = g->data + at;
        for (int i0 = 0; i0 < s.rows; i0 += CONTEXT_STRIP) {
            ts_real *written = ds->data + at + (long)i0 * width;
            softmax_backward_strip(s, ph, gh + (long)i0 * width, true, runs, i0, written);
            mix_strip(&mj, h, i0, (layout_strip){written, written + s.keys, width, width});
        }
    }
    ts_count_flops(ctx, mix_flops(&mj));
    ts_softmax_backward_recorded(ctx, p, g, runs, runs ? node->index_len / 2 : 0, ds);
    *da = mix_record(ctx, &mj, tm);
    return ds;
}

/* The rule of context_probabilities: the softmax's and then the product's,
 * in one loop in a plain pass (softmax_mix_pair); otherwise as the two
 * nodes' rules, recorded (the second-order graph is theirs), the softmax
 * backward and the product's mix in one loop (softmax_backward_mix). */
static void context_probabilities_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *g,
                                            const bool *needs, ts_tensor *const *sums,
                                            ts_tensor **gin) {
    ts_tensor *a = node->in[0], *b = node->in[1];
    ts_tensor *b_self = node->n_in > 2 ? node->in[2] : NULL;
    if (!ctx->grad_enabled && needs[0] && needs[1] && a != b && b_self != a && b_self != b) {
        softmax_mix_pair(ctx, node, g, needs, sums, gin);
        return;
    }
    double alpha = node->fattr[0];
    bool tm = node->iattr[0];
    ts_tensor *scores_grad =
        needs[0] ? softmax_backward_mix(ctx, node, g, plain_sum(ctx, sums, 0), &gin[0])
                 : ts_softmax_backward_masked(ctx, node->out, g, node->index,
                                              node->index ? node->index_len / 2 : 0);
    if (needs[1]) gin[1] = context_mix_t(ctx, scores_grad, a, alpha, tm, plain_sum(ctx, sums, 1));
    if (b_self && needs[2])
        gin[2] = context_self_scale(ctx, scores_grad, a, alpha, tm, plain_sum(ctx, sums, 2));
}

static void context_probabilities_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                       ts_tensor **gin) {
    context_probabilities_rule_into(ctx, node, g, needs, no_sums, gin);
}

/* Whether the tensors given (NULL entries skipped) are all different. */
static bool all_different(int n, const ts_tensor *const *t) {
    for (int i = 0; i < n; i++)
        for (int j = 0; t[i] && j < i; j++)
            if (t[i] == t[j]) return false;
    return true;
}

/* The context attention's backward in a plain pass: the rule of its mix O =
 * mix(P, v, v_self) and of its probabilities P (softmax_mix_pair) as one
 * loop over the strips (a ts_pair_backward_fn, engine/autodiff.h). Each
 * strip of P's gradient, dP = product(g, v, v_self) plus what P's other
 * consumers gave (dp_sum: EBT's second-order pass), is formed in scratch
 * and turned into the scores' gradient there, so dP is never written nor
 * read back, and each strip of P is read once for both rules: dv =
 * mix_t(P, g) and dv_self = self_scale(P, g), then dq, dk and dk_self as
 * softmax_mix_pair. The same GEMMs, row kernels and sums on the same values
 * as the two rules (dP's entries are dp_sum + the product, as the
 * product's add into a sum), so their results bit for bit. FLOPs are the
 * two rules'; the profile books them as one row. Declined (the two rules
 * run one after the other) unless P is context_probabilities' and the two
 * rules would run their plain loops: q and k need gradients and no two
 * inputs are one tensor (one sum would then take the adds in another
 * order). */
static bool context_attention_pair_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, ts_tensor *dp_sum,
                                        ts_rule_io own, ts_rule_io producer) {
    ts_tensor *p = node->in[0], *v = node->in[1], *v_self = node->n_in > 2 ? node->in[2] : NULL;
    const ts_node *pn = p->node;
    if (pn->backward != context_probabilities_rule || pn->iattr[0] != node->iattr[0]) return false;
    ts_tensor *a = pn->in[0], *b = pn->in[1], *b_self = pn->n_in > 2 ? pn->in[2] : NULL;
    if (!producer.needs[0] || !producer.needs[1] ||
        !all_different(5, (const ts_tensor *[]){a, b, b_self, v, v_self}))
        return false;
    double alpha_mix = node->fattr[0];
    bool tm = node->iattr[0], dv = own.needs[1], dv_self = v_self && own.needs[2];
    context_shape s = context_shape_of(ctx, "context_attention_backward", g, v, v_self, dp_sum, tm);
    context_shape_of(ctx, "context_attention_backward", a, b, b_self, p, tm);
    mix_t_job vj = {0};
    if (dv) vj = mix_t_start(ctx, p, g, alpha_mix, tm, own.sums[1]);
    ts_tensor *into_v_self = dv_self ? own.sums[2] : NULL;
    ts_tensor *dv_self_out = !dv_self ? NULL : into_v_self ? into_v_self : ts_new_like(ctx, g);
    scores_grad_job sj = scores_grad_start(ctx, pn, producer.needs, producer.sums);

    int width = s.keys + 1, offset = s.keys - s.rows, ld = rows_stride(s);
    int ld_vt = round_up(s.keys, CONTEXT_PANEL);
    ts_real *vt = ts_alloc(ctx, (size_t)ld_vt * s.dh * sizeof *vt);
    ts_real *g_self = v_self ? self_scores_of(ctx, s, g, v_self, alpha_mix) : NULL;
    ts_real *dp = ts_alloc(ctx, (size_t)CONTEXT_STRIP * width * sizeof *dp);
    ts_real *p_visible = ts_alloc(ctx, (size_t)CONTEXT_STRIP * s.keys * sizeof *p_visible);
    for (long h = 0; h < s.heads; h++) {
        const ts_real *ph = p->data + h * (long)s.rows * width, *gh = g->data + rows_head(s, h);
        ts_transpose_rows(v->data + h * (long)s.keys * s.dh, s.keys, s.dh, s.dh, vt, ld_vt);
        for (int i0 = 0, seen = 0; i0 < s.rows; i0 += CONTEXT_STRIP) {
            int rows = strip_rows(s.rows, i0), strip_keys = i0 + rows + offset;
            /* dP's strip: (dp_sum +) alpha g v^T, its self column (dp_sum +) g . v_self */
            strip_scores(rows, strip_keys, i0 + offset, s.dh, (ts_real)alpha_mix,
                         gh + (long)i0 * ld, ld, vt, ld_vt, dp, width);
            for (int r = 0; r < rows; r++) {
                ts_real *row = dp + (long)r * width;
                ts_real self_score = g_self ? g_self[h * s.rows + i0 + r] : 0;
                const ts_real *sum =
                    dp_sum ? dp_sum->data + h * (long)s.rows * width + (long)(i0 + r) * width
                           : NULL;
                for (int c = 0; sum && c < i0 + r + offset + 1; c++) row[c] = sum[c] + row[c];
                row[s.keys] = sum ? sum[s.keys] + self_score : self_score;
            }
            /* the mix's rule on P's strip: dv and dv_self */
            visible_strip(ph, width, s.rows, i0, rows, strip_keys, offset, p_visible);
            const ts_real *p_self = ph + (long)i0 * width + s.keys;
            if (dv)
                mix_t_strip(&vj, h, i0, seen, (layout_strip){p_visible, p_self, strip_keys, width});
            if (dv_self)
                self_scale_strip(s, h, i0, p_self, width, alpha_mix, g, dv_self_out,
                                 into_v_self != NULL);
            /* the probabilities' rule on dP's strip: dq, dk and dk_self */
            scores_grad_strip(&sj, h, i0, seen, ph, dp, false);
            seen = strip_keys;
        }
        if (dv) mix_t_head_end(&vj, h);
        mix_t_head_end(&sj.db, h);
    }
    ts_count_flops(ctx, product_flops(s, g, v_self != NULL, alpha_mix) + into_flops(dp_sum) +
                            (dv ? mix_t_flops(&vj) : 0) +
                            (dv_self ? self_scale_flops(g, alpha_mix, into_v_self) : 0) +
                            scores_grad_flops(&sj, p));
    /* Recording is off: this books the work to the profile and records
     * nothing; the tensors are named as inputs only so their bytes count. */
    ts_tensor *given[] = {g, p,      dp_sum, v,           v_self,    a,
                          b, b_self, vj.out, dv_self_out, sj.db.out, sj.db_self};
    ts_tensor *moved[sizeof given / sizeof *given];
    int n_moved = 0;
    for (size_t i = 0; i < sizeof given / sizeof *given; i++)
        if (given[i]) moved[n_moved++] = given[i];
    ts_record(ctx, "context_attention_backward", NULL, sj.da.out, n_moved, moved);
    if (dv) own.gin[1] = vj.out;
    if (dv_self) own.gin[2] = dv_self_out;
    producer.gin[0] = sj.da.out;
    producer.gin[1] = sj.db.out;
    if (sj.db_self) producer.gin[2] = sj.db_self;
    return true;
}

/* softmax(context_product(a, b, b_self; alpha), mask), the attention's
 * probabilities, as one node with the same values bit for bit: each strip's
 * scores formed in scratch and turned into probabilities while they are in
 * cache, by the softmax's own row kernel, so the scores [..., L, C + 1] are
 * never written nor read back (seventeenth round, docs/performance.md). Its
 * rule is the softmax's and the product's (nineteenth round). It keeps the
 * product's attributes and the softmax's masked runs.
 * With values v (v_self), the attention's mix of P is computed too, strip
 * by strip from the rows of P just written, in cache, instead of from a
 * copy of each strip read back from memory (nineteenth round); it is
 * recorded as context_mix's node, its output in *mixed. Its work is then
 * booked to the profile with the probabilities' (one loop). */
static ts_tensor *context_probabilities(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, ts_tensor *b_self,
                                        double alpha, bool token_major, const ts_tensor *mask,
                                        ts_tensor *v, ts_tensor *v_self, ts_tensor **mixed) {
    context_shape s =
        context_shape_of(ctx, "context_probabilities", a, b, b_self, NULL, token_major);
    int shape[TS_MAX_DIMS];
    layout_shape(a, s, token_major, shape);
    ts_tensor *p = ts_new(ctx, a->ndim, shape);
    const int32_t *runs = ts_softmax_masked_runs(ctx, mask);
    mix_job mj;
    if (v) mj = mix_start(ctx, p, v, v_self, 1, token_major, NULL);
    if (!ctx->counting)
        product_strips(ctx, s, a, b, b_self, alpha, p, false, mask, runs, v ? &mj : NULL);
    ts_count_flops(ctx, product_flops(s, a, b_self != NULL, alpha) +
                            TS_SOFTMAX_FLOPS * (double)p->numel + (v ? mix_flops(&mj) : 0));
    ts_node *node = ts_record(ctx, "context_probabilities", context_probabilities_rule, p,
                              b_self ? 3 : 2, (ts_tensor *[]){a, b, b_self});
    keep_attributes(node, alpha, token_major);
    if (node) {
        node->backward_into = context_probabilities_rule_into;
        node->index = runs;
        node->index_len = runs ? 2L * s.rows : 0;
    }
    if (v) {
        *mixed = mix_record(ctx, &mj, token_major);
        if ((*mixed)->node) (*mixed)->node->backward_with_producer = context_attention_pair_rule;
    }
    return p;
}

static ts_tensor *context_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                    ts_tensor *k_self, ts_tensor *v_self, double scale,
                                    bool token_major) {
    context_shape s = context_shape_of(ctx, "context_attention", q, k, k_self, NULL, token_major);
    context_shape_of(ctx, "context_attention", v_self, v, q, NULL, token_major);
    ts_tensor *mixed = NULL;
    context_probabilities(ctx, q, k, k_self, scale, token_major, context_mask(ctx, s.rows, s.keys),
                          v, v_self, &mixed);
    return mixed;
}

ts_tensor *ts_context_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                ts_tensor *k_self, ts_tensor *v_self, double scale) {
    return context_attention(ctx, q, k, v, k_self, v_self, scale, false);
}

ts_tensor *ts_context_attention_tokens(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                       ts_tensor *k_self, ts_tensor *v_self, double scale) {
    return context_attention(ctx, q, k, v, k_self, v_self, scale, true);
}

ts_tensor *ts_context_attention_composed(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                                         ts_tensor *k_self, ts_tensor *v_self, double scale) {
    context_shape s = context_shape_of(ctx, "context_attention", q, k, k_self, NULL, false);
    context_shape_of(ctx, "context_attention", v_self, v, q, NULL, false);
    int last = q->ndim - 1;
    ts_tensor *qs = ts_scale(ctx, q, scale);
    ts_tensor *context = ts_matmul(ctx, qs, k, false, true);
    ts_tensor *self = ts_sum(ctx, ts_mul(ctx, qs, k_self), -1, true);
    ts_tensor *scores = ts_concat(ctx, 2, (ts_tensor *[]){context, self}, last);
    ts_tensor *p = ts_softmax(ctx, scores, context_mask(ctx, s.rows, s.keys));
    return ts_add(ctx, ts_matmul(ctx, ts_slice(ctx, p, last, 0, s.keys), v, false, false),
                  ts_mul(ctx, ts_slice(ctx, p, last, s.keys, 1), v_self));
}
