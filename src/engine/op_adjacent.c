#include "engine/autodiff.h"
#include "engine/ops.h"

/* ---------------------------------------------------------------- adjacent rows
 *
 * Tensors that lie one after another in memory (the parameters of a model's
 * flat buffer, registered consecutively) viewed as one: [r_0, ...],
 * [r_1, ...], ... as [r_0 + r_1 + ..., ...]. A model uses it to run
 * several products with one weight each as one larger GEMM over their
 * stacked weights (y = x [W_0; W_1; ...]^T) without copying the weights and
 * without new parameters: the view is an op whose inputs are the parts, and
 * its rule hands each part its rows of the gradient (leading-axis slices,
 * views), so every part's gradient arrives where it always did (its own
 * .grad, through ts_backward, or ts_grad with respect to it), to any order. */

static void adjacent_rows_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                               ts_tensor **gin) {
    int start = 0;
    for (int i = 0; i < node->n_in; i++) {
        int rows = node->in[i]->shape[0];
        if (needs[i]) gin[i] = ts_slice(ctx, g, 0, start, rows);
        start += rows;
    }
}

/* Whether every part is a leaf with a .grad buffer and those buffers lie
 * one after another (the model's flat gradient buffer mirrors its
 * parameters'): then ts_backward may add the view's gradient into them as
 * one (autodiff.c, offer_sums), a weight GEMM's beta = 1 into the flat
 * buffer instead of a fresh [sum of rows, D] product, sliced and added part
 * by part (tenth round, docs/performance.md). */
static bool leaf_grads_adjacent(int n, ts_tensor *const *parts) {
    for (int i = 0; i < n; i++) {
        const ts_tensor *p = parts[i];
        if (p->node || !p->requires_grad || !p->grad || !p->grad->data) return false;
        if (i > 0 && p->grad->data != parts[i - 1]->grad->data + parts[i - 1]->numel) return false;
    }
    return true;
}

bool ts_rows_adjacent(ts_ctx *ctx, int n, ts_tensor *const *parts) {
    for (int i = 1; i < n; i++) {
        const ts_tensor *a = parts[i - 1], *b = parts[i];
        bool same_rows = a->ndim == b->ndim;
        for (int d = 1; same_rows && d < a->ndim; d++) same_rows = a->shape[d] == b->shape[d];
        if (!same_rows) return false;
        /* A counting context has no data: the shapes alone decide, as for a
         * model whose buffer holds the parts in order (what its
         * parameter table registers). */
        if (ctx->counting ? a->data || b->data : !a->data || b->data != a->data + a->numel)
            return false;
    }
    return true;
}

ts_tensor *ts_adjacent_rows(ts_ctx *ctx, int n, ts_tensor *const *parts) {
    if (n < 1 || n > TS_NODE_MAX_INPUTS)
        ts_fail(ctx, "adjacent_rows", "%d parts (1 to %d)", n, TS_NODE_MAX_INPUTS);
    if (!ts_rows_adjacent(ctx, n, parts))
        ts_fail(ctx, "adjacent_rows",
                "the %d parts do not lie one after another in memory with "
                "rows of one shape",
                n);
    int shape[TS_MAX_DIMS];
    for (int d = 0; d < parts[0]->ndim; d++) shape[d] = parts[0]->shape[d];
    for (int i = 1; i < n; i++) shape[0] += parts[i]->shape[0];
    ts_tensor *out = ts_wrap(ctx, parts[0]->data, parts[0]->ndim, shape);
    ts_node *node = ts_record(ctx, "adjacent_rows", adjacent_rows_rule, out, n, parts);
    if (node && leaf_grads_adjacent(n, parts))
        node->leaf_grads = ts_wrap(ctx, parts[0]->grad->data, parts[0]->ndim, shape);
    return out;
}
