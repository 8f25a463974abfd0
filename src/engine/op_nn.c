#include <math.h>

#include "engine/autodiff.h"
#include "engine/ops.h"
#include "engine/rope_table.h"

/* ---------------------------------------------------------------- RMSNorm
 *
 * y = x r w with r = (mean(x^2) + eps)^(-1/2) per row, one fused pass. Its
 * rule: dx = G(x, u) = r u - x r^3 mean(u x) with u = g w, a fused op of
 * its own (one pass instead of a dozen, the product g w folded in), and
 * dw = W(x, g), the sum over rows of g x r, another.
 * G's rule is G again (for u) and F, its VJP for x, another fused op whose
 * rule is written with primitives (r recomputed from x), so every order
 * stays exact and a gradient with create_graph runs the same arithmetic as
 * one without. */

/* r of one row of x, as the primitives compute it up to the order of the
 * double sum of squares: the mean, eps and 1/sqrt in ts_real. */
static inline ts_real inverse_rms(const ts_real *row, int d, double eps) {
    return 1 / TS_SQRT((ts_real)ts_row_dot_wide(row, row, d) * (ts_real)(1.0 / d) + (ts_real)eps);
}

/* What every RMSNorm kernel starts from: x [..., d] as rows of d and an
 * output shaped like x; run is false in a counting context, where no
 * kernel runs. Each kernel computes a row's r where it uses the row, so x
 * is read from memory once (a pass computing every row's r first read it
 * twice; fifth round, docs/performance.md). */
typedef struct rms_rows {
    int d;
    long rows;
    ts_tensor *out;
    bool run;
} rms_rows;

static rms_rows rms_rows_of(ts_ctx *ctx, const ts_tensor *x) {
    rms_rows k = {.d = x->shape[x->ndim - 1], .run = !ctx->counting};
    k.rows = x->numel / k.d;
    k.out = ts_new_like(ctx, x);
    return k;
}

/* Records an RMSNorm kernel's node, which keeps eps for its rule. */
static void record_with_eps(ts_ctx *ctx, const char *op, ts_backward_fn rule, ts_tensor *out,
                            int n_in, ts_tensor **in, double eps) {
    ts_node *node = ts_record(ctx, op, rule, out, n_in, in);
    if (node) node->fattr[0] = eps;
}

/* r [..., 1] of x with primitives: differentiable. */
static ts_tensor *inverse_rms_op(ts_ctx *ctx, ts_tensor *x, double eps) {
    return ts_rsqrt(ctx, ts_add_scalar(ctx, ts_mean(ctx, ts_square(ctx, x), -1, true), eps));
}

static void check_rms_grad(ts_ctx *ctx, const ts_tensor *x, const ts_tensor *u,
                           const ts_tensor *w) {
    char sx[64], s2[64];
    if (!ts_same_shape(x, u))
        ts_fail(ctx, "rmsnorm_backward", "gradient %s does not match input %s",
                ts_shape_str(u, s2, sizeof s2), ts_shape_str(x, sx, sizeof sx));
    if (w && w->numel != x->shape[x->ndim - 1])
        ts_fail(ctx, "rmsnorm_backward", "weight %s does not match the last dim of %s",
                ts_shape_str(w, s2, sizeof s2), ts_shape_str(x, sx, sizeof sx));
}

/* r: 2 per element, 4 per row; the dot 2 and the rest 3 per element, 5 per
 * row; the weight's product as the mul it replaces, 1 per element */
static double rms_grad_flops(const ts_tensor *x, bool weighted) {
    long rows = x->numel / x->shape[x->ndim - 1];
    return (weighted ? 8.0 : 7.0) * (double)x->numel + 9.0 * (double)rows;
}

/* The FLOPs the second-order ops book, each as the primitives it replaces;
 * the one-pass rule (rms_grad_backward_plain) books the sum of those it
 * stands for. G(x, v) w: G and the product. */
static double rms_grad_times_flops(const ts_tensor *x) {
    return rms_grad_flops(x, false) + (double)x->numel;
}
/* The rows' sum of u G(x, v): G, the product and the sum over rows. */
static double rms_grad_weight_sum_flops(const ts_tensor *x) {
    return rms_grad_flops(x, false) + 2.0 * (double)x->numel;
}
/* F(x, u q, v): 16 per element (squares, three products and four row sums,
 * five for the sum of terms, three for the result), 13 per row (r, its
 * powers, the means, x's coefficient); with q, its product 1 more. */
static double rms_grad_dx_flops(const ts_tensor *x, bool weighted) {
    long rows = x->numel / x->shape[x->ndim - 1];
    return (weighted ? 17.0 : 16.0) * (double)x->numel + 13.0 * (double)rows;
}

static ts_tensor *rms_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *w, double eps);

/* F(x, u, v), the VJP of G(x, u) for x against v:
 *   F = -r^3 (x a + v m + u b) + 3 r^5 x m b,  a = mean(v u), m = mean(u x), b = mean(v x),
 * one pass per row instead of some twenty ops (EBT's second-order pass runs
 * it for every RMSNorm; docs/performance.md, lever 9). F is the Hessian of
 * u . (x r) applied to v, symmetric in u and v, so its own rule is F again
 * for u and for v, and for x (w the incoming gradient, mean(w .) per row)
 *   x (3 r^5 (a mean(w x) + m mean(w v) + b mean(w u)) - 15 r^7 m b mean(w x))
 *   + w (3 r^5 m b - r^3 a) + u (3 r^5 b mean(w x) - r^3 mean(w v))
 *   + v (3 r^5 m mean(w x) - r^3 mean(w u)),
 * in primitives, so every further order stays exact. */
static ts_tensor *rms_grad_dx(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *v, ts_tensor *w,
                              double eps);

static ts_tensor *row_mean(ts_ctx *ctx, ts_tensor *a, ts_tensor *b) {
    return ts_mean(ctx, ts_mul(ctx, a, b), -1, true);
}

/* With a weight q (F(x, u q, v)): F(x, w, v) q for u, the rows' sum of
 * u F(x, w, v) for q, and the rest with u q for u. */
static void rms_grad_dx_backward(ts_ctx *ctx, ts_node *node, ts_tensor *w, const bool *needs,
                                 ts_tensor **gin) {
    ts_tensor *x = node->in[0], *u = node->in[1], *v = node->in[2];
    ts_tensor *q = node->n_in > 3 ? node->in[3] : NULL;
    double eps = node->fattr[0];
    bool needs_q = q && needs[3];
    ts_tensor *fw = needs[1] || needs_q ? rms_grad_dx(ctx, x, w, v, NULL, eps) : NULL;
    if (needs[1]) gin[1] = q ? ts_mul(ctx, fw, q) : fw;
    if (needs_q) gin[3] = ts_sum_to(ctx, ts_mul(ctx, u, fw), q->ndim, q->shape);
    if (needs[2]) gin[2] = rms_grad_dx(ctx, x, u, w, q, eps);
    if (!needs[0]) return;
    if (q) u = ts_mul(ctx, u, q);
    ts_tensor *r = inverse_rms_op(ctx, x, eps), *r2 = ts_square(ctx, r);
    ts_tensor *r3 = ts_mul(ctx, r, r2), *r5 = ts_mul(ctx, r3, r2), *r7 = ts_mul(ctx, r5, r2);
    ts_tensor *a = row_mean(ctx, v, u), *m = row_mean(ctx, u, x), *b = row_mean(ctx, v, x);
    ts_tensor *wx = row_mean(ctx, w, x), *wv = row_mean(ctx, w, v), *wu = row_mean(ctx, w, u);
    ts_tensor *mb = ts_mul(ctx, m, b);
    ts_tensor *cx =
        ts_sub(ctx,
               ts_scale(ctx,
                        ts_mul(ctx, r5,
                               ts_add(ctx, ts_add(ctx, ts_mul(ctx, a, wx), ts_mul(ctx, m, wv)),
                                      ts_mul(ctx, b, wu))),
                        3),
               ts_scale(ctx, ts_mul(ctx, r7, ts_mul(ctx, mb, wx)), 15));
    ts_tensor *cw = ts_sub(ctx, ts_scale(ctx, ts_mul(ctx, r5, mb), 3), ts_mul(ctx, r3, a));
    ts_tensor *cu =
        ts_sub(ctx, ts_scale(ctx, ts_mul(ctx, r5, ts_mul(ctx, b, wx)), 3), ts_mul(ctx, r3, wv));
    ts_tensor *cv =
        ts_sub(ctx, ts_scale(ctx, ts_mul(ctx, r5, ts_mul(ctx, m, wx)), 3), ts_mul(ctx, r3, wu));
    gin[0] = ts_add(ctx, ts_add(ctx, ts_mul(ctx, x, cx), ts_mul(ctx, w, cw)),
                    ts_add(ctx, ts_mul(ctx, u, cu), ts_mul(ctx, v, cv)));
}

/* F(x, u q, v), q [d] or NULL: the weight's product u q folded into the
 * pass (lever 49), the same float products as the separate op. */
static ts_tensor *rms_grad_dx(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *v, ts_tensor *q,
                              double eps) {
    check_rms_grad(ctx, x, u, q);
    check_rms_grad(ctx, x, v, NULL);
    rms_rows k = rms_rows_of(ctx, x);
    int d = k.d;
    if (k.run) {
        ts_real *uq = q ? ts_alloc(ctx, (size_t)d * sizeof *uq) : NULL;
        for (long i = 0; i < k.rows; i++) {
            const ts_real *xi = x->data + i * d, *ui = u->data + i * d, *vi = v->data + i * d;
            if (q) {
                for (int j = 0; j < d; j++) uq[j] = ui[j] * q->data[j];
                ui = uq;
            }
            ts_real ri = inverse_rms(xi, d, eps);
            double vu = ts_row_dot_wide(vi, ui, d), ux = ts_row_dot_wide(ui, xi, d);
            double vx = ts_row_dot_wide(vi, xi, d);
            ts_real a = (ts_real)(vu / d), m = (ts_real)(ux / d), b = (ts_real)(vx / d);
            ts_real r3 = ri * ri * ri, r5 = r3 * ri * ri;
            ts_real cx = 3 * r5 * m * b - r3 * a;
            ts_real *o = k.out->data + i * d;
            for (int j = 0; j < d; j++) o[j] = xi[j] * cx - r3 * (vi[j] * m + ui[j] * b);
        }
    }
    ts_count_flops(ctx, rms_grad_dx_flops(x, q != NULL));
    record_with_eps(ctx, "rmsnorm_backward_dx", rms_grad_dx_backward, k.out, q ? 4 : 3,
                    (ts_tensor *[]){x, u, v, q}, eps);
    return k.out;
}

static ts_tensor *rms_grad_times(ts_ctx *ctx, ts_tensor *x, ts_tensor *v, ts_tensor *w, double eps);
static ts_tensor *rms_grad_weight_sum(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *v,
                                      const ts_tensor *w, double eps);

/* The three gradients below in one pass over the rows, in a plain pass
 * (recording off: EBT's second-order pass, every RMSNorm of its
 * prediction stream). The three ops each read x and v, two of them u,
 * and each computed the row's r and its dot products again; here x, u and
 * v are read once and the shared terms formed once (seventeenth round,
 * docs/performance.md). Every value is formed by the float operations of
 * the op it stands for, in the same order, so the results are theirs bit
 * for bit: G's coefficient c = r^3 mean(v x) is F's r3 b. FLOPs and the
 * profile's row are the three ops'. */
static void rms_grad_backward_plain(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *v,
                                    ts_tensor *w, double eps, const bool *needs, ts_tensor **gin) {
    check_rms_grad(ctx, x, u, w);
    check_rms_grad(ctx, x, v, NULL);
    int d = x->shape[x->ndim - 1];
    long rows = ctx->counting ? 0 : x->numel / d;
    ts_tensor *du = needs[1] ? ts_new_like(ctx, x) : NULL;
    ts_tensor *dw = needs[2] ? ts_zeros(ctx, w->ndim, w->shape) : NULL;
    ts_tensor *dx = needs[0] ? ts_new_like(ctx, x) : NULL;
    ts_real *uq = ts_alloc(ctx, (size_t)d * sizeof *uq), *g = ts_alloc(ctx, (size_t)d * sizeof *g);
    const ts_real *q = w->data;
    for (long i = 0; i < rows; i++) {
        const ts_real *xi = x->data + i * d, *ui = u->data + i * d, *vi = v->data + i * d;
        ts_real ri = inverse_rms(xi, d, eps);
        double vx = ts_row_dot_wide(vi, xi, d);
        ts_real b = (ts_real)(vx / d), r3 = ri * ri * ri;
        if (du || dw) { /* G(x, v): rms_grad_times and rms_grad_weight_sum's row */
            ts_real c = r3 * b;
            for (int j = 0; j < d; j++) g[j] = ri * vi[j] - xi[j] * c;
        }
        if (du) {
            ts_real *o = du->data + i * d;
            for (int j = 0; j < d; j++) o[j] = g[j] * q[j];
        }
        if (dw) {
            ts_real *restrict o = dw->data;
            for (int j = 0; j < d; j++) o[j] += ui[j] * g[j];
        }
        if (dx) { /* F(x, u q, v): rms_grad_dx's row */
            for (int j = 0; j < d; j++) uq[j] = ui[j] * q[j];
            double vu = ts_row_dot_wide(vi, uq, d), ux = ts_row_dot_wide(uq, xi, d);
            ts_real a = (ts_real)(vu / d), m = (ts_real)(ux / d), r5 = r3 * ri * ri;
            ts_real cx = 3 * r5 * m * b - r3 * a;
            ts_real *o = dx->data + i * d;
            for (int j = 0; j < d; j++) o[j] = xi[j] * cx - r3 * (vi[j] * m + uq[j] * b);
        }
    }
    ts_count_flops(ctx, (du ? rms_grad_times_flops(x) : 0) +
                            (dw ? rms_grad_weight_sum_flops(x) : 0) +
                            (dx ? rms_grad_dx_flops(x, true) : 0));
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, "rmsnorm_second_order", NULL, du ? du : dx ? dx : dw, 0, NULL);
    gin[0] = dx;
    gin[1] = du;
    if (dw) gin[2] = dw;
}

/* The VJP of G(x, u w) with v (w NULL: no weight): G(x, v) w for u (G is
 * linear in u and symmetric), the rows' sum of u G(x, v) for w, and
 * F(x, u w, v) for x; each one fused op (lever 49: the products with w and
 * u and the sum over rows were 3 products and a sum_to per RMSNorm in EBT's
 * second order), or in a plain pass all three in one (above). */
static void rms_grad_backward(ts_ctx *ctx, ts_node *node, ts_tensor *v, const bool *needs,
                              ts_tensor **gin) {
    ts_tensor *x = node->in[0], *u = node->in[1], *w = node->n_in > 2 ? node->in[2] : NULL;
    double eps = node->fattr[0];
    if (w && !ctx->grad_enabled) {
        rms_grad_backward_plain(ctx, x, u, v, w, eps, needs, gin);
        return;
    }
    if (needs[1]) gin[1] = w ? rms_grad_times(ctx, x, v, w, eps) : rms_grad(ctx, x, v, NULL, eps);
    if (w && needs[2]) gin[2] = rms_grad_weight_sum(ctx, x, u, v, w, eps);
    if (needs[0]) gin[0] = rms_grad_dx(ctx, x, u, v, w, eps);
}

/* r and c = r^3 mean(u x) of one row: G's row is r u - x c. */
static inline ts_real rms_grad_coefficient(const ts_real *xi, const ts_real *ui, int d, double eps,
                                           ts_real *ri) {
    double dot = ts_row_dot_wide(ui, xi, d);
    *ri = inverse_rms(xi, d, eps);
    return *ri * *ri * *ri * (ts_real)(dot / d);
}

/* G(x, v) w, w [d]: G's row times w in one pass, the float operations of
 * rms_grad and the product it replaces. Its rule against z: G(x, z w) for v,
 * the rows' sum of z G(x, v) for w, F(x, z w, v) for x. */
static void rms_grad_times_backward(ts_ctx *ctx, ts_node *node, ts_tensor *z, const bool *needs,
                                    ts_tensor **gin) {
    ts_tensor *x = node->in[0], *v = node->in[1], *w = node->in[2];
    double eps = node->fattr[0];
    if (needs[1]) gin[1] = rms_grad(ctx, x, z, w, eps);
    if (needs[2]) gin[2] = rms_grad_weight_sum(ctx, x, z, v, w, eps);
    if (needs[0]) gin[0] = rms_grad_dx(ctx, x, z, v, w, eps);
}

static ts_tensor *rms_grad_times(ts_ctx *ctx, ts_tensor *x, ts_tensor *v, ts_tensor *w,
                                 double eps) {
    check_rms_grad(ctx, x, v, w);
    rms_rows k = rms_rows_of(ctx, x);
    int d = k.d;
    for (long i = 0; i < (k.run ? k.rows : 0); i++) {
        const ts_real *xi = x->data + i * d, *vi = v->data + i * d;
        ts_real ri, c = rms_grad_coefficient(xi, vi, d, eps, &ri);
        ts_real *o = k.out->data + i * d;
        for (int j = 0; j < d; j++) o[j] = (ri * vi[j] - xi[j] * c) * w->data[j];
    }
    ts_count_flops(ctx, rms_grad_times_flops(x));
    record_with_eps(ctx, "rmsnorm_backward_weighted", rms_grad_times_backward, k.out, 3,
                    (ts_tensor *[]){x, v, w}, eps);
    return k.out;
}

/* The rows' sum of u G(x, v), shaped like the weight w: one pass for G, the
 * product and the sum (the same float operations in the same order as
 * rms_grad, the product and ts_sum_to's running sum over rows). Its rule
 * against z [d]: G(x, v) z for u, G(x, u z) for v, F(x, u z, v) for x. */
static void rms_grad_weight_sum_backward(ts_ctx *ctx, ts_node *node, ts_tensor *z,
                                         const bool *needs, ts_tensor **gin) {
    ts_tensor *x = node->in[0], *u = node->in[1], *v = node->in[2];
    double eps = node->fattr[0];
    if (needs[1]) gin[1] = rms_grad_times(ctx, x, v, z, eps);
    if (needs[2]) gin[2] = rms_grad(ctx, x, u, z, eps);
    if (needs[0]) gin[0] = rms_grad_dx(ctx, x, u, v, z, eps);
}

static ts_tensor *rms_grad_weight_sum(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *v,
                                      const ts_tensor *w, double eps) {
    check_rms_grad(ctx, x, u, w);
    check_rms_grad(ctx, x, v, NULL);
    int d = x->shape[x->ndim - 1];
    long rows = x->numel / d;
    ts_tensor *out = ts_zeros(ctx, w->ndim, w->shape);
    for (long i = 0; i < (ctx->counting ? 0 : rows); i++) {
        const ts_real *xi = x->data + i * d, *ui = u->data + i * d, *vi = v->data + i * d;
        ts_real ri, c = rms_grad_coefficient(xi, vi, d, eps, &ri);
        ts_real *restrict o = out->data;
        for (int j = 0; j < d; j++) o[j] += ui[j] * (ri * vi[j] - xi[j] * c);
    }
    ts_count_flops(ctx, rms_grad_weight_sum_flops(x));
    record_with_eps(ctx, "rmsnorm_backward_row_sum", rms_grad_weight_sum_backward, out, 3,
                    (ts_tensor *[]){x, u, v}, eps);
    return out;
}

/* The rows of G(x, u w) into out, or added into it (add): the same float
 * operations either way, so a sum formed here equals the add it replaces.
 * uw_row: d elements of scratch for u w when adding (out then holds the sum). */
static void rms_grad_rows(const ts_tensor *x, const ts_tensor *u, const ts_tensor *w, double eps,
                          ts_real *out, bool add, ts_real *uw_row) {
    int d = x->shape[x->ndim - 1];
    long rows = x->numel / d;
    for (long i = 0; i < rows; i++) {
        const ts_real *xi = x->data + i * d, *ui = u->data + i * d;
        ts_real *o = out + i * d;
        const ts_real *uw = ui;
        if (w) { /* u w into the output row first (or the scratch row): it stays in L1 */
            ts_real *s = add ? uw_row : o;
            for (int j = 0; j < d; j++) s[j] = ui[j] * w->data[j];
            uw = s;
        }
        ts_real ri, c = rms_grad_coefficient(xi, uw, d, eps, &ri);
        if (add)
            for (int j = 0; j < d; j++) o[j] += ri * uw[j] - xi[j] * c;
        else
            for (int j = 0; j < d; j++) o[j] = ri * uw[j] - xi[j] * c;
    }
}

/* G(x, u w) = r u w - x r^3 mean(u w x), w the RMSNorm's weight [d] or
 * NULL: the weight's product folded into the pass (fifth round: one
 * product over the tensor fewer per RMSNorm in every backward; the same
 * float products u w as the separate op, so the same result). */
static ts_tensor *rms_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *w, double eps) {
    check_rms_grad(ctx, x, u, w);
    rms_rows k = rms_rows_of(ctx, x);
    if (k.run) rms_grad_rows(x, u, w, eps, k.out->data, false, NULL);
    ts_count_flops(ctx, rms_grad_flops(x, w != NULL));
    ts_node *node = ts_record(ctx, "rmsnorm_backward", rms_grad_backward, k.out, w ? 3 : 2,
                              (ts_tensor *[]){x, u, w});
    if (node) node->fattr[0] = eps;
    return k.out;
}

/* sum += G(x, u w) in a plain pass (nothing recorded), in place of a tensor
 * of its own and an add; booked as the rmsnorm_backward it is, its sum as
 * the add it replaces. */
static void rms_grad_into(ts_ctx *ctx, ts_tensor *x, ts_tensor *u, ts_tensor *w, double eps,
                          ts_tensor *sum) {
    check_rms_grad(ctx, x, u, w);
    ts_real *uw_row = w ? ts_alloc(ctx, (size_t)w->numel * sizeof *uw_row) : NULL;
    rms_grad_rows(x, u, w, eps, sum->data, true, uw_row);
    ts_count_flops(ctx, rms_grad_flops(x, w != NULL) + (double)x->numel);
    ts_record(ctx, "rmsnorm_backward", NULL, sum, 0, NULL); /* recording is off: books it */
}

/* The weight's gradient, W(x, g) = sum over rows of g x r, shaped like the
 * weight: one pass per row (r, then the row's products added into the
 * result) instead of eight ops (r in primitives, two products, the sum over
 * rows; fifth round, docs/performance.md). W is linear in g and its VJP
 * for x is G(x, g v), so its rule is the forward RMSNorm with weight v (for
 * g) and G (for x): fused ops with exact rules of their own. */
static ts_tensor *rms_weight_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, const ts_tensor *w,
                                  double eps);

static void rms_weight_grad_backward(ts_ctx *ctx, ts_node *node, ts_tensor *v, const bool *needs,
                                     ts_tensor **gin) {
    ts_tensor *x = node->in[0], *g = node->in[1];
    double eps = node->fattr[0];
    if (needs[1]) gin[1] = ts_rmsnorm(ctx, x, v, eps);
    if (needs[0]) gin[0] = rms_grad(ctx, x, g, v, eps);
}

static ts_tensor *rms_weight_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, const ts_tensor *w,
                                  double eps) {
    if (!ts_same_shape(x, g)) {
        char sx[64], sg[64];
        ts_fail(ctx, "rmsnorm_weight_grad", "gradient %s does not match input %s",
                ts_shape_str(g, sg, sizeof sg), ts_shape_str(x, sx, sizeof sx));
    }
    int d = x->shape[x->ndim - 1];
    long rows = x->numel / d;
    ts_tensor *out = ts_zeros(ctx, w->ndim, w->shape);
    if (!ctx->counting) {
        ts_real *restrict o = out->data;
        for (long i = 0; i < rows; i++) {
            const ts_real *xi = x->data + i * d, *gi = g->data + i * d;
            ts_real r = inverse_rms(xi, d, eps);
            for (int j = 0; j < d; j++) o[j] += gi[j] * (xi[j] * r);
        }
    }
    /* As the ops it replaces: r (square and sum 2 per element, 4 per row),
     * the two products and the sum over rows, 3 per element. */
    ts_count_flops(ctx, 5.0 * (double)x->numel + 4.0 * (double)rows);
    record_with_eps(ctx, "rmsnorm_weight_grad", rms_weight_grad_backward, out, 2,
                    (ts_tensor *[]){x, g}, eps);
    return out;
}

/* The rule; in a plain pass x's gradient goes into the sum x already holds
 * where the pass offers one (see ts_backward_into_fn). */
static void rmsnorm_backward_into(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                                  ts_tensor *const *sums, ts_tensor **gin) {
    ts_tensor *x = node->in[0], *w = node->in[1];
    double eps = node->fattr[0];
    if (needs[0] && sums[0] && !ctx->grad_enabled) {
        rms_grad_into(ctx, x, g, w, eps, sums[0]);
        gin[0] = sums[0];
    } else if (needs[0]) {
        gin[0] = rms_grad(ctx, x, g, w, eps);
    }
    if (needs[1]) gin[1] = rms_weight_grad(ctx, x, g, w, eps);
}

static void rmsnorm_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    rmsnorm_backward_into(ctx, node, g, needs, (ts_tensor *[TS_NODE_MAX_INPUTS]){NULL}, gin);
}

ts_tensor *ts_rmsnorm(ts_ctx *ctx, ts_tensor *x, ts_tensor *weight, double eps) {
    int d = x->shape[x->ndim - 1];
    if (weight->numel != d) {
        char sx[64], sw[64];
        ts_fail(ctx, "rmsnorm", "weight %s does not match the last dim of %s",
                ts_shape_str(weight, sw, sizeof sw), ts_shape_str(x, sx, sizeof sx));
    }
    rms_rows k = rms_rows_of(ctx, x);
    if (k.run) {
        const ts_real *w = weight->data;
        for (long i = 0; i < k.rows; i++) {
            const ts_real *in = x->data + i * d;
            ts_real *o = k.out->data + i * d, ri = inverse_rms(in, d, eps);
            for (int j = 0; j < d; j++) o[j] = in[j] * ri * w[j];
        }
    }
    /* r: squares and their sum 2 per element, mean, eps and rsqrt 4 per row;
     * the scaling 2 per element */
    ts_count_flops(ctx, 4.0 * (double)x->numel + 4.0 * (double)k.rows);
    ts_node *node =
        ts_record(ctx, "rmsnorm", rmsnorm_backward, k.out, 2, (ts_tensor *[]){x, weight});
    if (node) {
        node->fattr[0] = eps;
        node->backward_into = rmsnorm_backward_into;
    }
    return k.out;
}

/* ---------------------------------------------------------------- RoPE */

/* Rotation is linear and orthogonal: its adjoint is the rotation by the
 * opposite angle, so the backward rule is this op again with direction -1. */
static ts_tensor *rope_directed(ts_ctx *ctx, ts_tensor *x, const int32_t *positions, double theta,
                                int direction);

static void rope_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                          ts_tensor **gin) {
    if (needs[0]) gin[0] = rope_directed(ctx, g, node->index, node->fattr[0], -node->iattr[0]);
}

ts_rope_table ts_rope_table_make(ts_ctx *ctx, const int32_t *positions, int t_len, int dh,
                                 double theta, int direction) {
    int half = dh / 2;
    ts_real *cos_t = ts_alloc(ctx, (size_t)t_len * dh * sizeof *cos_t);
    ts_real *sin_t = ts_alloc(ctx, (size_t)t_len * dh * sizeof *sin_t);
    /* The frequencies once per pair, not once per (t, pair): pow for every
     * entry of the table cost as much as the rotation itself (the same
     * values, so the same table). */
    double *frequency = ts_alloc(ctx, (size_t)half * sizeof *frequency);
    /* cos and sin of the previous position's angles and of one step, in
     * double: a position one after the previous one (the usual case) is
     * rotated from it by the angle-addition formulas instead of calling cos
     * and sin (two libm calls per table entry were ~1% of a Transformer++
     * step; fifth round, docs/performance.md). Every ROPE_ANCHOR-th entry,
     * and any position that is not the previous one plus 1, is computed
     * exactly, so the recurrence's error stays below ~ROPE_ANCHOR ulp of a
     * double: far below a float's rounding. */
    enum { ROPE_ANCHOR = 8 };
    double *prev_cos = ts_alloc(ctx, (size_t)half * sizeof *prev_cos);
    double *prev_sin = ts_alloc(ctx, (size_t)half * sizeof *prev_sin);
    double *step_cos = ts_alloc(ctx, (size_t)half * sizeof *step_cos);
    double *step_sin = ts_alloc(ctx, (size_t)half * sizeof *step_sin);
    for (int i = 0; i < half; i++) {
        frequency[i] = pow(theta, -2.0 * i / dh);
        step_cos[i] = cos(frequency[i]);
        step_sin[i] = sin(frequency[i]);
    }
    for (int t = 0; t < t_len; t++) {
        bool next = t % ROPE_ANCHOR && positions[t] == positions[t - 1] + 1;
        for (int i = 0; i < half; i++) {
            double c, sn;
            if (next) {
                c = prev_cos[i] * step_cos[i] - prev_sin[i] * step_sin[i];
                sn = prev_sin[i] * step_cos[i] + prev_cos[i] * step_sin[i];
            } else {
                double angle = positions[t] * frequency[i];
                c = cos(angle);
                sn = sin(angle);
            }
            prev_cos[i] = c;
            prev_sin[i] = sn;
            long at = (long)t * dh + 2 * i;
            ts_real s = (ts_real)(direction * sn);
            cos_t[at] = cos_t[at + 1] = (ts_real)c;
            sin_t[at] = -s;
            sin_t[at + 1] = s;
        }
    }
    return (ts_rope_table){cos_t, sin_t, dh};
}

void ts_rope_rotate_rows(const ts_rope_table *table, const ts_real *x, long ld_x, ts_real *out,
                         long ld_out, int rows) {
    /* each element's partner in its pair */
    const ts_lane_bits partner = {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14};
    int dh = table->dh;
    for (int t = 0; t < rows; t++) {
        const ts_real *c = table->cos + (long)t * dh, *sn = table->sin + (long)t * dh;
        const ts_real *in = x + t * ld_x;
        ts_real *res = out + t * ld_out;
        int j = 0;
        for (; j + TS_LANES <= dh; j += TS_LANES) {
            ts_lane_values v = ts_load_lanes(in + j);
            ts_lane_values r =
                v * ts_load_lanes(c + j) + __builtin_shuffle(v, partner) * ts_load_lanes(sn + j);
            memcpy(res + j, &r, sizeof r);
        }
        for (; j < dh; j++) res[j] = in[j] * c[j] + in[j ^ 1] * sn[j];
    }
}

/* out = x with pairs (2i, 2i+1) of every head at time t rotated by
 * direction * positions[t] * theta^(-2i/dh). In memory order, a time's
 * heads one after the other under its row of the table, so the tensor is
 * read and written as one stream: head by head, each of H passes read one
 * head's dh of every row (a strided walk over a quarter of the lines at
 * H = 4), which took 1.5-2x as long (twentieth round, docs/performance.md). */
static void rotate_pairs(ts_ctx *ctx, const ts_tensor *x, ts_tensor *out, const int32_t *positions,
                         double theta, int direction) {
    int t_len = x->shape[x->ndim - 3], heads = x->shape[x->ndim - 2], dh = x->shape[x->ndim - 1];
    long rows = x->numel / ((long)heads * dh);
    ts_rope_table table = ts_rope_table_make(ctx, positions, t_len, dh, theta, direction);
    for (long row = 0; row < rows; row++) {
        long t = row % t_len, at = row * heads * dh;
        ts_rope_table at_t = {table.cos + t * dh, table.sin + t * dh, dh};
        for (int h = 0; h < heads; h++)
            ts_rope_rotate_rows(&at_t, x->data + at + (long)h * dh, dh,
                                out->data + at + (long)h * dh, dh, 1);
    }
}

static ts_tensor *rope_directed(ts_ctx *ctx, ts_tensor *x, const int32_t *positions, double theta,
                                int direction) {
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
