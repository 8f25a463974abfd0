#include <math.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

ts_tensor *ts_rmsnorm(ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps) {
    int d = x->shape[x->ndim - 1];
    if (weight->numel != d) {
        char sx[64], sw[64];
        ts_fail(ctx, "rmsnorm", "weight %s does not match the last dim of %s",
                ts_shape_str(weight, sw, sizeof sw), ts_shape_str(x, sx, sizeof sx));
    }
    ts_tensor *mean_square = ts_mean(ctx, ts_square(ctx, x), -1, true);
    ts_tensor *inv_rms = ts_rsqrt(ctx, ts_add_scalar(ctx, mean_square, eps));
    return ts_mul(ctx, ts_mul(ctx, x, inv_rms), weight);
}

/* ---------------------------------------------------------------- RoPE */

/* Rotation is linear and orthogonal: its adjoint is the rotation by the
 * opposite angle, so the backward rule is this op again with direction -1. */
static ts_tensor *rope_directed(ts_ctx *ctx, ts_tensor *x, const int32_t *positions,
                                double theta, int direction);

static void rope_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                          ts_tensor **gin) {
    if (needs[0]) gin[0] = rope_directed(ctx, g, node->index, node->fattr[0], -node->iattr[0]);
}

/* out = x with pairs (2i, 2i+1) of every head at time t rotated by
 * direction * positions[t] * theta^(-2i/dh). */
static void rotate_pairs(ts_ctx *ctx, const ts_tensor *x, ts_tensor *out,
                         const int32_t *positions, double theta, int direction) {
    int t_len = x->shape[x->ndim - 3], heads = x->shape[x->ndim - 2], dh = x->shape[x->ndim - 1];
    int half = dh / 2;
    long outer = x->numel / ((long)t_len * heads * dh);
    ts_real *cos_t = ts_alloc(ctx, (size_t)t_len * half * sizeof *cos_t);
    ts_real *sin_t = ts_alloc(ctx, (size_t)t_len * half * sizeof *sin_t);
    for (int t = 0; t < t_len; t++)
        for (int i = 0; i < half; i++) {
            double angle = positions[t] * pow(theta, -2.0 * i / dh);
            cos_t[t * half + i] = (ts_real)cos(angle);
            sin_t[t * half + i] = (ts_real)(direction * sin(angle));
        }
    for (long o = 0; o < outer; o++)
        for (int t = 0; t < t_len; t++) {
            const ts_real *c = cos_t + t * half, *sn = sin_t + t * half;
            for (int h = 0; h < heads; h++) {
                long base = ((o * t_len + t) * heads + h) * dh;
                const ts_real *in = x->data + base;
                ts_real *res = out->data + base;
                for (int i = 0; i < half; i++) {
                    ts_real a = in[2 * i], b = in[2 * i + 1];
                    res[2 * i] = a * c[i] - b * sn[i];
                    res[2 * i + 1] = a * sn[i] + b * c[i];
                }
            }
        }
}

static ts_tensor *rope_directed(ts_ctx *ctx, ts_tensor *x, const int32_t *positions,
                                double theta, int direction) {
    char s[64];
    if (x->ndim < 3 || x->shape[x->ndim - 1] % 2)
        ts_fail(ctx, "rope", "input %s must be [..., T, H, dh] with even dh",
                ts_shape_str(x, s, sizeof s));
    int t_len = x->shape[x->ndim - 3];
    ts_tensor *out = ts_new_like(ctx, x);
    if (!ctx->counting) rotate_pairs(ctx, x, out, positions, theta, direction);
    ts_count_flops(ctx, 3.0 * (double)x->numel);
    ts_node *node = ts_record(ctx, "rope", rope_backward, out, 1, &x);
    if (node) {
        node->index = ts_copy_index(ctx, positions, t_len);
        node->index_len = t_len;
        node->iattr[0] = direction;
        node->fattr[0] = theta;
    }
    return out;
}

ts_tensor *ts_rope(ts_ctx *ctx, ts_tensor *x, const int32_t *positions, double theta) {
    return rope_directed(ctx, x, positions, theta, 1);
}

/* ---------------------------------------------------------------- attention */

ts_tensor *ts_attention(ts_ctx *ctx, ts_tensor *q, ts_tensor *k, ts_tensor *v,
                        const ts_tensor *mask, double scale) {
    /* Scaling q instead of the scores touches T*dh instead of T*T elements. */
    ts_tensor *scores = ts_matmul(ctx, ts_scale(ctx, q, scale), k, false, true);
    ts_tensor *probs = ts_softmax(ctx, scores, mask);
    return ts_matmul(ctx, probs, v, false, false);
}
