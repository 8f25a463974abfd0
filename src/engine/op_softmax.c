#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/softmax_rows.h"

/* The forward passes and the first-order backward passes are fused row
 * kernels; the backward passes are themselves recorded ops (softmax_backward,
 * log_softmax_backward) whose own rules are written with primitives, so
 * gradients of any order stay exact. */

static void check_mask(ts_ctx *ctx, const char *op, const ts_tensor *x, const ts_tensor *mask) {
    if (!mask) return;
    char sx[64], sm[64];
    if (x->ndim < 2 || mask->ndim != 2 || mask->shape[0] != x->shape[x->ndim - 2] ||
        mask->shape[1] != x->shape[x->ndim - 1])
        ts_fail(ctx, op, "mask %s does not match the last two dims of %s",
                ts_shape_str(mask, sm, sizeof sm), ts_shape_str(x, sx, sizeof sx));
    if (mask->requires_grad)
        ts_fail(ctx, op, "the mask is a constant and cannot require a gradient");
}

/* sum_c exp(x[c] - max) in double, in TS_LANES partial sums combined
 * pairwise, then the tail (a fixed order). The cross-entropy's normaliser:
 * correctly rounded exponentials (ts_exp_accurate), not the attention's
 * inline one, whose 2 ulp moved the loss enough that test_ebt.sh's
 * 1-vs-2-rank check went from 2e-5 to 1.1e-4 (fifth round,
 * docs/performance.md). */
static double exp_sum_wide(const ts_real *x, long n, ts_real max) {
    double lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES) {
        ts_real e[TS_LANES]; /* float exponentials, widened as they are added */
        for (int j = 0; j < TS_LANES; j++) e[j] = ts_exp_accurate(x[c + j] - max);
        for (int j = 0; j < TS_LANES; j++) lane[j] += e[j];
    }
    double total = ts_combine_wide_lanes(lane);
    for (; c < n; c++) total += ts_exp_accurate(x[c] - max);
    return total;
}

/* ---------------------------------------------------------------- masked runs
 *
 * A masked softmax's output is exactly 0 where its mask is -inf, and so is
 * its first-order gradient y (g - rowsum(g y)) there (y = 0). Under a causal
 * or context mask that is half of every row, so the softmax and its backward
 * skip one run of masked columns per mask row, the longest: they write 0
 * there without reading their inputs; softmax_backward_dy (the backward's
 * gradient for y, not 0 there in general) skips the run in its row sums
 * only (eighth round, lever 46, docs/performance.md). The softmax finds the
 * runs in its mask and keeps them in its node (node->index: lo, hi per mask
 * row), and every rule hands them on, so the same columns are skipped in
 * every pass and order; the rules written with primitives are unchanged. A
 * mask with several runs in a row skips only the longest, a row without one
 * nothing; the log-softmax (masked entries -inf) reads whole rows. The
 * values are those of whole rows: the skipped terms of the row sums are
 * exact zeros (exp(-inf) = 0, g 0 = 0 for finite g), and the sums below
 * keep every other term in the lane and order of ts_row_dot and
 * ts_exp_shifted_sum (a zero added to a lane leaves it as it was, up to the
 * sign of a zero, which the flush to +0 after makes no matter), so training
 * stays bit for bit as it was; a non-finite entry in a skipped run, which
 * made the row NaN, is now ignored, as the mask says. */

/* The masked run of row r, [lo, hi); no runs: an empty one. */
typedef struct masked_run {
    long lo, hi;
} masked_run;

static masked_run run_of_row(const int32_t *runs, long n_runs, long r) {
    if (!runs) return (masked_run){0, 0};
    const int32_t *run = runs + 2 * (r % n_runs);
    return (masked_run){run[0], run[1]};
}

/* Each mask row's longest run of -inf columns, as lo, hi pairs in the
 * arena; NULL without a mask (or data). */
static const int32_t *find_masked_runs(ts_ctx *ctx, const ts_tensor *mask) {
    if (!mask || ctx->counting) return NULL;
    long rows = mask->shape[0], cols = mask->shape[1];
    int32_t *runs = ts_alloc(ctx, (size_t)(2 * rows) * sizeof *runs);
    for (long r = 0; r < rows; r++) {
        const ts_real *mr = mask->data + r * cols;
        long best_lo = 0, best_hi = 0;
        for (long c = 0; c < cols;) {
            if (mr[c] != -INFINITY) {
                c++;
                continue;
            }
            long lo = c;
            while (c < cols && mr[c] == -INFINITY) c++;
            if (c - lo > best_hi - best_lo) best_lo = lo, best_hi = c;
        }
        runs[2 * r] = (int32_t)best_lo;
        runs[2 * r + 1] = (int32_t)best_hi;
    }
    return runs;
}

/* Whether the TS_LANES entries from c lie inside the run. */
static bool block_in_run(long c, masked_run run) {
    return c >= run.lo && c + TS_LANES <= run.hi;
}

/* Whether the TS_LANES entries from c straddle an edge of the run: some
 * inside it, some not. */
static bool block_across_edge(long c, masked_run run) {
    return c < run.hi && c + TS_LANES > run.lo && !block_in_run(c, run);
}

/* The lanes of the block at c that lie inside the run, all bits set: a
 * compare of lane indices that stays in vector registers, where a scalar
 * loop over the block's lanes did not. */
#ifdef TS_DOUBLE
typedef int64_t lane_index;
#else
typedef int32_t lane_index;
#endif
static ts_lane_bits run_lanes(long c, masked_run run) {
    ts_lane_bits at;
    for (int j = 0; j < TS_LANES; j++) at[j] = (lane_index)(c + j);
    return (at >= (lane_index)run.lo) & (at < (lane_index)run.hi);
}

/* v with the lanes in `hidden` set to +0. */
static ts_lane_values zero_lanes(ts_lane_values v, ts_lane_bits hidden) {
    return (ts_lane_values)((ts_lane_bits)v & ~hidden);
}

/* ts_flush_subnormal of every lane. */
static ts_lane_values flush_lanes(ts_lane_values v) {
    return zero_lanes(v, (v > -TS_REAL_MIN) & (v < TS_REAL_MIN));
}

/* A row's entries outside its run (all of it without one), prefetched
 * AHEAD_ROWS rows before a kernel reads them: reads that stop at the run
 * and resume after it, row after row, leave the hardware's stream
 * prefetcher behind. On [8, 4, 256, 258] tensors in memory the vectorised
 * softmax_backward took 0.90 ms without and 0.69 ms with it, the forward
 * 1.13 and 0.87 ms (thirteenth round, docs/performance.md). */
enum { AHEAD_ROWS = 4, LINE_REALS = 64 / (int)sizeof(ts_real) };
static void prefetch_visible(const ts_real *row, long n, masked_run run) {
    for (long c = 0; c < run.lo; c += LINE_REALS) __builtin_prefetch(row + c);
    if (run.lo > 0) __builtin_prefetch(row + run.lo - 1);
    for (long c = run.hi; c < n; c += LINE_REALS) __builtin_prefetch(row + c);
    if (run.hi < n) __builtin_prefetch(row + n - 1);
}

/* ts_row_dot(x, y, n) without the run's terms (exact zeros there): the
 * lanes' blocks inside the run skipped, the run's entries of a block across
 * its edge taken as 0. */
static ts_real visible_dot(const ts_real *x, const ts_real *y, long n, masked_run run) {
    ts_lane_values lane = {0};
    long whole = n - n % TS_LANES;
    for (long c = 0; c < whole; c += TS_LANES) {
        if (block_in_run(c, run)) continue;
        ts_lane_values terms = ts_load_lanes(x + c) * ts_load_lanes(y + c);
        if (block_across_edge(c, run)) terms = zero_lanes(terms, run_lanes(c, run));
        lane += terms;
    }
    ts_real lanes[TS_LANES];
    memcpy(lanes, &lane, sizeof lanes);
    ts_real dot = ts_combine_lanes(lanes);
    for (long c = whole; c < n; c++)
        if (c < run.lo || c >= run.hi) dot += x[c] * y[c];
    return dot;
}

/* A softmax row with a masked run, in whole blocks of TS_LANES (the row's
 * tail after them one by one): blocks inside the run are skipped (the
 * exponentials write their zeros), a block across an edge is computed
 * whole with its run lanes -inf (exp gives exact zeros, 0 times 1 / sum
 * stays 0). The same values as entry by entry: the max is exact in any
 * order, the sum is ts_exp_shifted_sum_skipping's, and no input inside the
 * run is used. Loops of whole blocks, where per-row bounds at the run's
 * edges made remainder loops of every row. */
static void masked_softmax_row(const ts_real *restrict xr, const ts_real *restrict mr,
                               ts_real *restrict o, long cols, masked_run run) {
    long whole = cols - cols % TS_LANES;
    const ts_lane_values minus_inf = (ts_lane_values){0} - INFINITY;
    ts_lane_values lane_max = minus_inf;
    for (long c = 0; c < whole; c += TS_LANES) {
        if (block_in_run(c, run)) continue;
        ts_lane_values v = ts_load_lanes(xr + c) + ts_load_lanes(mr + c);
        if (block_across_edge(c, run)) {
            ts_lane_bits hidden = run_lanes(c, run);
            v = (ts_lane_values)(((ts_lane_bits)v & ~hidden) | ((ts_lane_bits)minus_inf & hidden));
        }
        memcpy(o + c, &v, sizeof v);
        lane_max = ts_max_lanes(lane_max, v);
    }
    ts_real max = ts_largest_lane(lane_max);
    for (long c = whole; c < cols; c++) {
        o[c] = c >= run.lo && c < run.hi ? -INFINITY : xr[c] + mr[c];
        max = o[c] > max ? o[c] : max;
    }
    if (max == -INFINITY) { /* fully masked row */
        for (long c = 0; c < cols; c++) o[c] = 0;
        return;
    }
    ts_real inv = 1 / ts_exp_shifted_sum_skipping(o, cols, max, run.lo, run.hi);
    for (long c = 0; c < whole; c += TS_LANES) {
        if (block_in_run(c, run)) continue;
        ts_lane_values v = flush_lanes(ts_load_lanes(o + c) * inv);
        memcpy(o + c, &v, sizeof v);
    }
    for (long c = whole; c < cols; c++) o[c] = ts_flush_subnormal(o[c] * inv);
}

/* One row: x + mask - shift with shift = max (softmax) or logsumexp
 * (log-softmax). The softmax skips the row's masked run (empty: none);
 * the log-softmax, whose masked entries are -inf, reads the whole row. */
static void softmax_row(const ts_real *xr, const ts_real *mr, ts_real *o, long cols, masked_run run,
                        bool log_form) {
    if (run.hi > run.lo) {
        masked_softmax_row(xr, mr, o, cols, run);
        return;
    }
    if (mr)
        for (long c = 0; c < cols; c++) o[c] = xr[c] + mr[c];
    else
        for (long c = 0; c < cols; c++) o[c] = xr[c];
    ts_real max = ts_row_max(o, cols);
    if (max == -INFINITY) { /* fully masked row: no probability mass anywhere */
        for (long c = 0; c < cols; c++) o[c] = log_form ? -INFINITY : 0;
        return;
    }
    if (log_form) {
        /* The normaliser of a cross-entropy: summed in double, as every
         * sum that feeds a loss. */
        ts_real shift = max + (ts_real)log(exp_sum_wide(o, cols, max));
        for (long c = 0; c < cols; c++) o[c] -= shift;
    } else {
        /* exp(-inf) is exactly 0, so a masked entry (a causal mask
         * hides half of them) needs no test; the inline exponential
         * vectorises (docs/performance.md, lever 7). */
        ts_real inv = 1 / ts_exp_shifted_sum(o, cols, max);
        for (long c = 0; c < cols; c++) o[c] = ts_flush_subnormal(o[c] * inv);
    }
}

/* Row r of x is masked with row (r mod mask rows), its run from runs (or
 * NULL: none), the rows AHEAD_ROWS ahead prefetched where they have one. */
static void softmax_rows(const ts_tensor *x, const ts_tensor *mask, ts_real *out, bool log_form,
                         const int32_t *runs) {
    long cols = x->shape[x->ndim - 1], rows = x->numel / cols;
    long mask_rows = mask ? mask->shape[0] : 1;
    for (long r = 0; r < rows; r++) {
        const ts_real *xr = x->data + r * cols;
        const ts_real *mr = mask ? mask->data + (r % mask_rows) * cols : NULL;
        masked_run run = run_of_row(runs, mask_rows, r);
        if (run.hi > run.lo && r + AHEAD_ROWS < rows)
            prefetch_visible(xr + AHEAD_ROWS * cols, cols,
                             run_of_row(runs, mask_rows, r + AHEAD_ROWS));
        softmax_row(xr, mr, out + r * cols, cols, run, log_form);
    }
}

void ts_softmax_row(const ts_real *xr, const ts_real *mr, ts_real *o, long cols, long run_lo,
                    long run_hi) {
    softmax_row(xr, mr, o, cols, (masked_run){run_lo, run_hi}, false);
}

const int32_t *ts_softmax_masked_runs(ts_ctx *ctx, const ts_tensor *mask) {
    return find_masked_runs(ctx, mask);
}

static ts_tensor *row_sum(ts_ctx *ctx, ts_tensor *a) {
    return ts_sum(ctx, a, -1, true);
}

/* ---------------------------------------------------------------- softmax */

/* softmax_backward's gradient for y, against gout:
 *     gout (g - s) - g r,  s = rowsum(g y), r = rowsum(gout y),
 * one pass per row instead of eight ops over the tensor (two products, two
 * row sums, two differences, two products): EBT's second-order pass runs it
 * on [B, H, L, L + 2] four times per step (docs/performance.md, lever 8).
 * An op of its own whose rule is written with primitives, so every further
 * order stays exact. FLOPs as the eight ops it replaces, 8 per element. */
static ts_tensor *softmax_backward_dy(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, ts_tensor *gout,
                                      const int32_t *runs, long n_runs);

/* The masked runs a node keeps (node->index), handed on to the ops its rule
 * makes: NULL, or lo, hi per mask row. */
static long node_runs(const ts_node *node) {
    return node->index ? node->index_len / 2 : 0;
}

static void keep_runs(ts_node *node, const int32_t *runs, long n_runs) {
    if (!node || !runs) return;
    node->index = runs;
    node->index_len = 2 * n_runs;
}

static void softmax_backward_dy_rule(ts_ctx *ctx, ts_node *node, ts_tensor *v, const bool *needs,
                                     ts_tensor **gin) {
    ts_tensor *y = node->in[0], *g = node->in[1], *gout = node->in[2];
    if (needs[0]) /* d/dy: -(g rowsum(v gout) + gout rowsum(v g)) */
        gin[0] = ts_scale(ctx,
                          ts_add(ctx, ts_mul(ctx, g, row_sum(ctx, ts_mul(ctx, v, gout))),
                                 ts_mul(ctx, gout, row_sum(ctx, ts_mul(ctx, v, g)))),
                          -1);
    if (needs[1]) /* d/dg: v (gout - r) - y rowsum(v gout) */
        gin[1] = ts_sub(ctx, ts_mul(ctx, v, ts_sub(ctx, gout, row_sum(ctx, ts_mul(ctx, gout, y)))),
                        ts_mul(ctx, y, row_sum(ctx, ts_mul(ctx, v, gout))));
    if (needs[2]) /* d/dgout: v (g - s) - y rowsum(v g) */
        gin[2] = ts_sub(ctx, ts_mul(ctx, v, ts_sub(ctx, g, row_sum(ctx, ts_mul(ctx, g, y)))),
                        ts_mul(ctx, y, row_sum(ctx, ts_mul(ctx, v, g))));
}

/* softmax_backward's gradient g must have its output y's shape. */
static void check_gradient_shape(ts_ctx *ctx, const ts_tensor *y, const ts_tensor *g) {
    if (ts_same_shape(y, g)) return;
    char sy[64], sg[64];
    ts_fail(ctx, "softmax_backward", "gradient %s does not match softmax output %s",
            ts_shape_str(g, sg, sizeof sg), ts_shape_str(y, sy, sizeof sy));
}

/* FLOPs per element of softmax_backward_dy (the eight it replaces), booked
 * by it and by the one-pass rule that stands for it and softmax_backward. */
enum { SOFTMAX_BACKWARD_DY_FLOPS = 8 };

/* A row of softmax_backward_dy: gout (g - s) - g r, s = rowsum(g y) and
 * r = rowsum(gout y) given. */
static void softmax_backward_dy_row(const ts_real *gr, const ts_real *hr, ts_real *o, long cols,
                                    ts_real s, ts_real rr) {
    for (long c = 0; c < cols; c++) o[c] = ts_flush_subnormal(hr[c] * (gr[c] - s) - gr[c] * rr);
}

/* A row of softmax_backward: y (g - dot), dot = rowsum(g y) given; 0 in
 * the masked run without reading g there. */
static void softmax_backward_row(const ts_real *yr, const ts_real *gr, ts_real *o, long cols,
                                 masked_run run, ts_real dot) {
    long whole = cols - cols % TS_LANES;
    for (long c = 0; c < whole; c += TS_LANES) {
        ts_lane_values v = {0};
        if (!block_in_run(c, run)) {
            v = flush_lanes(ts_load_lanes(yr + c) * (ts_load_lanes(gr + c) - dot));
            if (block_across_edge(c, run)) v = zero_lanes(v, run_lanes(c, run));
        }
        memcpy(o + c, &v, sizeof v);
    }
    for (long c = whole; c < cols; c++)
        o[c] = c >= run.lo && c < run.hi ? 0 : ts_flush_subnormal(yr[c] * (gr[c] - dot));
}

void ts_softmax_backward_row(const ts_real *yr, const ts_real *gr, ts_real *o, long cols,
                             long run_lo, long run_hi) {
    masked_run run = {run_lo, run_hi};
    softmax_backward_row(yr, gr, o, cols, run, visible_dot(gr, yr, cols, run));
}

/* The rows AHEAD_ROWS after row r of y, g and gout (at yr, gr, hr) for
 * softmax_backward_dy's row: y's visible part, g and gout whole. */
static void prefetch_dy_rows(const ts_real *yr, const ts_real *gr, const ts_real *hr, long cols,
                             const int32_t *runs, long n_runs, long r, long rows) {
    if (r + AHEAD_ROWS >= rows) return;
    long ahead = AHEAD_ROWS * cols;
    prefetch_visible(yr + ahead, cols, run_of_row(runs, n_runs, r + AHEAD_ROWS));
    prefetch_visible(gr + ahead, cols, (masked_run){0, 0});
    prefetch_visible(hr + ahead, cols, (masked_run){0, 0});
}

/* Its row sums s, r skip the masked runs (y is 0 there); the output is
 * written everywhere (g and gout need not be 0 in a run). */
static ts_tensor *softmax_backward_dy(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, ts_tensor *gout,
                                      const int32_t *runs, long n_runs) {
    ts_tensor *out = ts_new_like(ctx, y);
    long cols = y->shape[y->ndim - 1], rows = ctx->counting ? 0 : y->numel / cols;
    for (long r = 0; r < rows; r++) {
        const ts_real *yr = y->data + r * cols, *gr = g->data + r * cols;
        const ts_real *hr = gout->data + r * cols;
        ts_real *o = out->data + r * cols;
        masked_run run = run_of_row(runs, n_runs, r);
        prefetch_dy_rows(yr, gr, hr, cols, runs, n_runs, r, rows);
        softmax_backward_dy_row(gr, hr, o, cols, visible_dot(gr, yr, cols, run),
                                visible_dot(hr, yr, cols, run));
    }
    ts_count_flops(ctx, SOFTMAX_BACKWARD_DY_FLOPS * (double)y->numel);
    ts_node *node = ts_record(ctx, "softmax_backward_dy", softmax_backward_dy_rule, out, 3,
                              (ts_tensor *[]){y, g, gout});
    keep_runs(node, runs, n_runs);
    return out;
}

static ts_tensor *softmax_backward(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, const int32_t *runs,
                                   long n_runs);

/* Both gradients of softmax_backward(y, g) against gout in one pass over
 * the rows, in a plain pass (recording off: EBT's second-order pass, every
 * context attention's softmax). The two ops read y and gout, and each
 * formed rowsum(gout y); here y, g and gout are read once and that sum
 * formed once (eighteenth round, docs/performance.md). Each value comes
 * from the same row kernels on the same sums, so the results are the two
 * ops' bit for bit. FLOPs are the two ops'; the profile's row books the
 * five tensors the pass moves. */
static void softmax_backward_second_order(ts_ctx *ctx, ts_node *node, ts_tensor *gout,
                                          ts_tensor **gin) {
    ts_tensor *y = node->in[0], *g = node->in[1];
    check_gradient_shape(ctx, y, gout);
    const int32_t *runs = node->index;
    long n_runs = node_runs(node);
    ts_tensor *dy = ts_new_like(ctx, y), *dg = ts_new_like(ctx, y);
    long cols = y->shape[y->ndim - 1], rows = ctx->counting ? 0 : y->numel / cols;
    for (long r = 0; r < rows; r++) {
        const ts_real *yr = y->data + r * cols, *gr = g->data + r * cols;
        const ts_real *hr = gout->data + r * cols;
        masked_run run = run_of_row(runs, n_runs, r);
        prefetch_dy_rows(yr, gr, hr, cols, runs, n_runs, r, rows);
        ts_real s = visible_dot(gr, yr, cols, run), rr = visible_dot(hr, yr, cols, run);
        softmax_backward_dy_row(gr, hr, dy->data + r * cols, cols, s, rr);
        softmax_backward_row(yr, hr, dg->data + r * cols, cols, run, rr);
    }
    ts_count_flops(ctx, (SOFTMAX_BACKWARD_DY_FLOPS + TS_SOFTMAX_BACKWARD_FLOPS) * (double)y->numel);
    /* Recording is off: this books the work to the profile and records
     * nothing; dg is named as an input only so its bytes count. */
    ts_record(ctx, "softmax_backward_second_order", NULL, dy, 4, (ts_tensor *[]){y, g, gout, dg});
    gin[0] = dy;
    gin[1] = dg;
}

static void softmax_backward_rule(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                  ts_tensor **gin) {
    ts_tensor *y = node->in[0], *g = node->in[1];
    if (!ctx->grad_enabled && needs[0] && needs[1]) {
        softmax_backward_second_order(ctx, node, gout, gin);
        return;
    }
    if (needs[0]) gin[0] = softmax_backward_dy(ctx, y, g, gout, node->index, node_runs(node));
    if (needs[1]) gin[1] = softmax_backward(ctx, y, gout, node->index, node_runs(node));
}

/* The output is 0 in a masked run (y is), written without reading g there. */
static ts_tensor *softmax_backward(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, const int32_t *runs,
                                   long n_runs) {
    check_gradient_shape(ctx, y, g);
    ts_tensor *out = ts_new_like(ctx, y);
    long cols = y->shape[y->ndim - 1], rows = ctx->counting ? 0 : y->numel / cols;
    for (long r = 0; r < rows; r++) {
        const ts_real *yr = y->data + r * cols, *gr = g->data + r * cols;
        ts_real *o = out->data + r * cols;
        masked_run run = run_of_row(runs, n_runs, r);
        if (r + AHEAD_ROWS < rows) {
            masked_run ahead = run_of_row(runs, n_runs, r + AHEAD_ROWS);
            prefetch_visible(yr + AHEAD_ROWS * cols, cols, ahead);
            prefetch_visible(gr + AHEAD_ROWS * cols, cols, ahead);
        }
        ts_softmax_backward_row(yr, gr, o, cols, run.lo, run.hi);
    }
    return ts_softmax_backward_recorded(ctx, y, g, runs, n_runs, out);
}

ts_tensor *ts_softmax_backward_recorded(ts_ctx *ctx, ts_tensor *y, ts_tensor *g,
                                        const int32_t *runs, long n_runs, ts_tensor *out) {
    check_gradient_shape(ctx, y, g);
    ts_count_flops(ctx, TS_SOFTMAX_BACKWARD_FLOPS * (double)y->numel);
    ts_node *node =
        ts_record(ctx, "softmax_backward", softmax_backward_rule, out, 2, (ts_tensor *[]){y, g});
    keep_runs(node, runs, n_runs);
    return out;
}

ts_tensor *ts_softmax_backward(ts_ctx *ctx, ts_tensor *y, ts_tensor *g) {
    return softmax_backward(ctx, y, g, NULL, 0);
}

static void softmax_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = softmax_backward(ctx, node->out, g, node->index, node_runs(node));
}

ts_tensor *ts_softmax_backward_masked(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, const int32_t *runs,
                                      long n_runs) {
    return softmax_backward(ctx, y, g, runs, n_runs);
}

ts_tensor *ts_softmax(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask) {
    check_mask(ctx, "softmax", x, mask);
    ts_tensor *out = ts_new_like(ctx, x);
    const int32_t *runs = find_masked_runs(ctx, mask);
    if (!ctx->counting) softmax_rows(x, mask, out->data, false, runs);
    ts_count_flops(ctx, TS_SOFTMAX_FLOPS * (double)x->numel);
    ts_node *node = ts_record(ctx, "softmax", softmax_rule, out, 1, &x);
    keep_runs(node, runs, mask ? mask->shape[0] : 0);
    return out;
}

/* ---------------------------------------------------------------- log-softmax */

/* out = g - exp(z) * rowsum(g) */
static ts_tensor *log_softmax_backward_op(ts_ctx *ctx, ts_tensor *z, ts_tensor *g);

static void log_softmax_backward_rule(ts_ctx *ctx, ts_node *node, ts_tensor *gout,
                                      const bool *needs, ts_tensor **gin) {
    ts_tensor *z = node->in[0], *g = node->in[1];
    ts_tensor *e = ts_exp(ctx, z);
    if (needs[0]) /* d/dz: -gout e rowsum(g) */
        gin[0] = ts_scale(ctx, ts_mul(ctx, ts_mul(ctx, gout, e), row_sum(ctx, g)), -1);
    if (needs[1]) /* d/dg: gout - rowsum(gout e) */
        gin[1] = ts_sub(ctx, gout, row_sum(ctx, ts_mul(ctx, gout, e)));
}

static ts_tensor *log_softmax_backward_op(ts_ctx *ctx, ts_tensor *z, ts_tensor *g) {
    ts_tensor *out = ts_new_like(ctx, z);
    long cols = z->shape[z->ndim - 1], rows = ctx->counting ? 0 : z->numel / cols;
    for (long r = 0; r < rows; r++) {
        const ts_real *zr = z->data + r * cols, *gr = g->data + r * cols;
        ts_real *o = out->data + r * cols;
        /* The row sum in lanes (vectorises); the forward's exponential. */
        ts_real sum = ts_row_sum(gr, cols);
        for (long c = 0; c < cols; c++)
            o[c] = ts_flush_subnormal(gr[c] - ts_exp_accurate(zr[c]) * sum);
    }
    ts_count_flops(ctx, 4.0 * (double)z->numel);
    ts_record(ctx, "log_softmax_backward", log_softmax_backward_rule, out, 2,
              (ts_tensor *[]){z, g});
    return out;
}

static void log_softmax_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    if (needs[0]) gin[0] = log_softmax_backward_op(ctx, node->out, g);
}

ts_tensor *ts_log_softmax(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask) {
    check_mask(ctx, "log_softmax", x, mask);
    ts_tensor *out = ts_new_like(ctx, x);
    if (!ctx->counting) softmax_rows(x, mask, out->data, true, NULL);
    ts_count_flops(ctx, 5.0 * (double)x->numel);
    ts_record(ctx, "log_softmax", log_softmax_rule, out, 1, &x);
    return out;
}

/* ---------------------------------------------------------------- cross-entropy */

ts_tensor *ts_cross_entropy(ts_ctx *ctx, ts_tensor *logits, const int32_t *targets,
                            int32_t ignore_index) {
    int v = logits->shape[logits->ndim - 1];
    long rows = logits->numel / v, valid = 0;
    int32_t *picked_index = ts_alloc(ctx, (size_t)rows * sizeof *picked_index);
    for (long r = 0; r < rows; r++) {
        if (targets[r] == ignore_index) {
            picked_index[r] = -1;
            continue;
        }
        if (targets[r] < 0 || targets[r] >= v)
            ts_fail(ctx, "cross_entropy", "target %d at row %ld outside vocabulary of %d",
                    targets[r], r, v);
        picked_index[r] = targets[r];
        valid++;
    }
    ts_tensor *rows2d = ts_reshape(ctx, logits, TS_SHAPE((int)rows, v));
    ts_tensor *log_probs = ts_log_softmax(ctx, rows2d, NULL);
    ts_tensor *picked = ts_gather_last(ctx, log_probs, picked_index);
    return ts_scale(ctx, ts_sum_all(ctx, picked), valid ? -1.0 / (double)valid : 0.0);
}

ts_tensor *ts_causal_mask(ts_ctx *ctx, int t) {
    ts_tensor *mask = ts_new(ctx, TS_SHAPE(t, t));
    for (int i = 0; i < (ctx->counting ? 0 : t); i++)
        for (int j = 0; j < t; j++) mask->data[(long)i * t + j] = j <= i ? 0 : -INFINITY;
    return mask;
}
