#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/rope_table.h"

/* ---------------------------------------------------- heads of a packed part
 *
 * ts_packed_heads reads one part of projections written side by side (a
 * fused K|V or Q|K|V product, x [B, T, n_parts D]) as heads [B, H, T, dh],
 * rotated by RoPE when positions are given: the value of
 *   ts_permute(ts_rope(ts_reshape(ts_slice(x, part D, D), [B, T, H, dh])))
 * in one pass over the part, instead of a slice, a rotation and a permute
 * each writing the whole part (EBT's observed stream keeps its keys and
 * values so for the predictions; seventeenth round, docs/performance.md).
 * The rotation is the rope op's (rope_table.h), so the values are the same.
 *
 * Its rule depends on the pass:
 *   - a plain pass (recording off) writes the gradient back into the part's
 *     columns, rotated back with the rope op's own rule's table; where the
 *     input's gradient already has a sum (the attention's d(qkv) over the
 *     same projection) it adds into that sum's columns, the additions the
 *     accumulation's add would make (its other columns + 0 are themselves,
 *     but for a -0, which stays -0 where the add made it +0);
 *     otherwise a fresh gradient, the other parts' columns 0;
 *   - a recorded pass is the adjoint composition (permute, rotation by the
 *     opposite angles, reshape, pad), differentiable to any order.
 * FLOPs: the rope op's 3 per rotated element; the layout change none, as
 * the permute it replaces; an add into a sum as the accumulation's add. */

typedef struct packed_shape {
    int batch, t, n_heads, dh;
    long ld, part_at; /* x's row stride (n_parts D) and the part's first column */
} packed_shape;

static packed_shape packed_shape_of(const ts_tensor *x, int part, int n_parts, int n_heads) {
    int d = x->shape[2] / n_parts;
    return (packed_shape){x->shape[0], x->shape[1], n_heads,
                          d / n_heads, x->shape[2], (long)part * d};
}

/* Offsets of head (b, h)'s first row in x and in the heads [B, H, T, dh]. */
static long packed_row(packed_shape s, int b, int h) {
    return (long)b * s.t * s.ld + s.part_at + (long)h * s.dh;
}
static long heads_row(packed_shape s, int b, int h) {
    return ((long)b * s.n_heads + h) * s.t * s.dh;
}

static void packed_heads_rule_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                   ts_tensor *const *sums, ts_tensor **gin) {
    if (!needs[0]) return;
    ts_tensor *x = node->in[0];
    int part = node->iattr[0], n_parts = node->iattr[1], n_heads = node->iattr[2];
    const int32_t *positions = node->index;
    double theta = node->fattr[0];
    packed_shape s = packed_shape_of(x, part, n_parts, n_heads);
    if (ctx->grad_enabled) {
        ts_tensor *rows = ts_permute(ctx, g, (const int[]){0, 2, 1, 3});
        if (positions) {
            int32_t *opposite = ts_alloc(ctx, (size_t)s.t * sizeof *opposite);
            for (int t = 0; t < s.t; t++) opposite[t] = -positions[t];
            rows = ts_rope(ctx, rows, opposite, theta);
        }
        rows = ts_reshape(ctx, rows, TS_SHAPE(s.batch, s.t, n_heads * s.dh));
        gin[0] = ts_pad(ctx, rows, 2, (int)s.part_at, (int)s.ld);
        return;
    }
    ts_tensor *sum = ctx->counting ? NULL : sums[0];
    ts_tensor *dx = sum ? sum : ts_new_like(ctx, x);
    if (!ctx->counting) {
        ts_rope_table rotate_back;
        if (positions) rotate_back = ts_rope_table_make(ctx, positions, s.t, s.dh, theta, -1);
        /* with a sum: one head's rows, formed as without one, then added */
        ts_real *head = sum ? ts_alloc(ctx, (size_t)s.t * s.dh * sizeof *head) : NULL;
        for (int b = 0; b < s.batch; b++) {
            ts_real *rows = dx->data + (long)b * s.t * s.ld;
            if (!sum) /* the other parts' columns */
                for (int t = 0; t < s.t; t++) {
                    ts_real *row = rows + t * s.ld;
                    memset(row, 0, (size_t)s.part_at * sizeof *row);
                    long after = s.part_at + (long)n_heads * s.dh;
                    memset(row + after, 0, (size_t)(s.ld - after) * sizeof *row);
                }
            for (int h = 0; h < s.n_heads; h++) {
                const ts_real *gh = g->data + heads_row(s, b, h);
                ts_real *dst = dx->data + packed_row(s, b, h);
                ts_real *formed = sum ? head : dst;
                long ld_formed = sum ? s.dh : s.ld;
                if (positions)
                    ts_rope_rotate_rows(&rotate_back, gh, s.dh, formed, ld_formed, s.t);
                else if (!sum)
                    ts_copy_rows(gh, s.dh, formed, ld_formed, s.t, s.dh);
                const ts_real *add = positions ? head : gh; /* unrotated: g itself */
                for (int t = 0; sum && t < s.t; t++)
                    for (int c = 0; c < s.dh; c++) dst[t * s.ld + c] += add[(long)t * s.dh + c];
            }
        }
    }
    /* with a sum, the add it replaces: one per element of the sum, as a
     * counting pass books it (no sums there) */
    ts_count_flops(ctx, (positions ? 3.0 * (double)g->numel : 0) + (sum ? (double)x->numel : 0));
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, "packed_heads_backward", NULL, dx, 0, NULL);
    gin[0] = dx;
}

static void packed_heads_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                              ts_tensor **gin) {
    static ts_tensor *const no_sums[TS_NODE_MAX_INPUTS] = {NULL};
    packed_heads_rule_into(ctx, node, g, needs, no_sums, gin);
}

ts_tensor *ts_packed_heads(ts_ctx *ctx, ts_tensor *x, int part, int n_parts, int n_heads,
                           const int32_t *positions, double theta) {
    char s1[64];
    if (x->ndim != 3 || n_parts < 1 || part < 0 || part >= n_parts || n_heads < 1 ||
        x->shape[2] % ((long)n_parts * n_heads) ||
        (positions && x->shape[2] / ((long)n_parts * n_heads) % 2))
        ts_fail(ctx, "packed_heads",
                "part %d of %d in %s with %d heads: need x [B, T, %d D], D a multiple of the "
                "heads (of even size with RoPE)",
                part, n_parts, ts_shape_str(x, s1, sizeof s1), n_heads, n_parts);
    packed_shape s = packed_shape_of(x, part, n_parts, n_heads);
    ts_tensor *out = ts_new(ctx, TS_SHAPE(s.batch, n_heads, s.t, s.dh));
    if (!ctx->counting) {
        ts_rope_table rotate;
        if (positions) rotate = ts_rope_table_make(ctx, positions, s.t, s.dh, theta, 1);
        for (int b = 0; b < s.batch; b++)
            for (int h = 0; h < n_heads; h++) {
                const ts_real *src = x->data + packed_row(s, b, h);
                ts_real *dst = out->data + heads_row(s, b, h);
                if (positions)
                    ts_rope_rotate_rows(&rotate, src, s.ld, dst, s.dh, s.t);
                else
                    ts_copy_rows(src, s.ld, dst, s.dh, s.t, s.dh);
            }
    }
    ts_count_flops(ctx, positions ? 3.0 * (double)out->numel : 0);
    ts_node *node = ts_record(ctx, "packed_heads", packed_heads_rule, out, 1, &x);
    if (node) {
        node->iattr[0] = part;
        node->iattr[1] = n_parts;
        node->iattr[2] = n_heads;
        node->fattr[0] = theta;
        node->backward_into = packed_heads_rule_into;
        if (positions) {
            node->index = ts_copy_index(ctx, positions, s.t);
            node->index_len = s.t;
        }
    }
    return out;
}
