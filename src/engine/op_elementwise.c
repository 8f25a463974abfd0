#include <math.h>
#include <string.h>

#include "engine/autodiff.h"
#include "engine/ops.h"

/* ---------------------------------------------------------------- broadcasting */

/* Shapes and element strides of a, b and the output, right-aligned to 4 dims;
 * a broadcast dimension has stride 0. */
typedef struct broadcast {
    int ndim;
    int shape[TS_MAX_DIMS];
    long stride_a[TS_MAX_DIMS], stride_b[TS_MAX_DIMS];
} broadcast;

static void padded_strides(const ts_tensor *t, const int *out_shape, long *stride) {
    int pad = TS_MAX_DIMS - t->ndim;
    long s = 1;
    for (int i = TS_MAX_DIMS - 1; i >= 0; i--) {
        int dim = i >= pad ? t->shape[i - pad] : 1;
        stride[i] = (dim == 1 && out_shape[i] != 1) ? 0 : s;
        s *= dim;
    }
}

static broadcast broadcast_shapes(ts_ctx *ctx, const char *op, const ts_tensor *a,
                                  const ts_tensor *b) {
    broadcast bc = {.ndim = a->ndim > b->ndim ? a->ndim : b->ndim};
    for (int i = 0; i < TS_MAX_DIMS; i++) {
        int ia = i - (TS_MAX_DIMS - a->ndim), ib = i - (TS_MAX_DIMS - b->ndim);
        int da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[64], sb[64];
            ts_fail(ctx, op, "shapes %s and %s do not broadcast", ts_shape_str(a, sa, sizeof sa),
                    ts_shape_str(b, sb, sizeof sb));
        }
        bc.shape[i] = da > db ? da : db;
    }
    padded_strides(a, bc.shape, bc.stride_a);
    padded_strides(b, bc.shape, bc.stride_b);
    return bc;
}

enum binary_kind { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV };

/* One contiguous run of the innermost dim; strides are 0 or 1. */
#define BINARY_RUN(EXPR)                                                                           \
    do {                                                                                           \
        if (sa == 1 && sb == 1)                                                                    \
            for (long i = 0; i < n; i++) {                                                         \
                ts_real x = pa[i], y = pb[i];                                                      \
                po[i] = (EXPR);                                                                    \
            }                                                                                      \
        else if (sa == 1)                                                                          \
            for (long i = 0; i < n; i++) {                                                         \
                ts_real x = pa[i], y = pb[0];                                                      \
                po[i] = (EXPR);                                                                    \
            }                                                                                      \
        else if (sb == 1)                                                                          \
            for (long i = 0; i < n; i++) {                                                         \
                ts_real x = pa[0], y = pb[i];                                                      \
                po[i] = (EXPR);                                                                    \
            }                                                                                      \
        else                                                                                       \
            for (long i = 0; i < n; i++) {                                                         \
                ts_real x = pa[0], y = pb[0];                                                      \
                po[i] = (EXPR);                                                                    \
            }                                                                                      \
    } while (0)

static void binary_run(enum binary_kind kind, long n, const ts_real *pa, long sa, const ts_real *pb,
                       long sb, ts_real *po) {
    switch (kind) {
    case BIN_ADD:
        BINARY_RUN(x + y);
        break;
    case BIN_SUB:
        BINARY_RUN(x - y);
        break;
    case BIN_MUL:
        BINARY_RUN(x * y);
        break;
    case BIN_DIV:
        BINARY_RUN(x / y);
        break;
    }
}

static ts_tensor *binary_forward(ts_ctx *ctx, const char *op, enum binary_kind kind,
                                 const ts_tensor *a, const ts_tensor *b) {
    broadcast bc = broadcast_shapes(ctx, op, a, b);
    ts_tensor *out = ts_new(ctx, bc.ndim, bc.shape + TS_MAX_DIMS - bc.ndim);
    if (ctx->counting) {
        /* shapes and FLOPs only */
    } else if (ts_same_shape(a, b)) {
        binary_run(kind, out->numel, a->data, 1, b->data, 1, out->data);
    } else {
        const int *s = bc.shape;
        long n = s[3];
        ts_real *po = out->data;
        for (int i0 = 0; i0 < s[0]; i0++)
            for (int i1 = 0; i1 < s[1]; i1++)
                for (int i2 = 0; i2 < s[2]; i2++, po += n) {
                    long oa = i0 * bc.stride_a[0] + i1 * bc.stride_a[1] + i2 * bc.stride_a[2];
                    long ob = i0 * bc.stride_b[0] + i1 * bc.stride_b[1] + i2 * bc.stride_b[2];
                    binary_run(kind, n, a->data + oa, bc.stride_a[3], b->data + ob, bc.stride_b[3],
                               po);
                }
    }
    ts_count_flops(ctx, (double)out->numel);
    return out;
}

/* The gradient of a broadcast input is the output gradient summed to its shape. */
static ts_tensor *reduce_like(ts_ctx *ctx, ts_tensor *g, const ts_tensor *like) {
    return ts_sum_to(ctx, g, like->ndim, like->shape);
}

static void add_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = reduce_like(ctx, g, node->in[0]);
    if (needs[1]) gin[1] = reduce_like(ctx, g, node->in[1]);
}

static void sub_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = reduce_like(ctx, g, node->in[0]);
    if (needs[1]) gin[1] = reduce_like(ctx, ts_scale(ctx, g, -1), node->in[1]);
}

static void mul_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = reduce_like(ctx, ts_mul(ctx, g, node->in[1]), node->in[0]);
    if (needs[1]) gin[1] = reduce_like(ctx, ts_mul(ctx, g, node->in[0]), node->in[1]);
}

static void div_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    ts_tensor *b = node->in[1];
    if (needs[0]) gin[0] = reduce_like(ctx, ts_div(ctx, g, b), node->in[0]);
    if (needs[1]) /* d(a/b)/db = -(a/b)/b */
        gin[1] = reduce_like(ctx, ts_scale(ctx, ts_div(ctx, ts_mul(ctx, g, node->out), b), -1), b);
}

#define DEFINE_BINARY(NAME, KIND, BACKWARD)                                                        \
    ts_tensor *ts_##NAME(ts_ctx *ctx, ts_tensor *a, ts_tensor *b) {                                \
        ts_tensor *out = binary_forward(ctx, #NAME, KIND, a, b);                                   \
        ts_record(ctx, #NAME, BACKWARD, out, 2, (ts_tensor *[]){a, b});                            \
        return out;                                                                                \
    }
DEFINE_BINARY(add, BIN_ADD, add_backward)
DEFINE_BINARY(sub, BIN_SUB, sub_backward)
DEFINE_BINARY(mul, BIN_MUL, mul_backward)
DEFINE_BINARY(div, BIN_DIV, div_backward)

/* ---------------------------------------------------------------- scalar ops */

/* y = m x, or y = x + c, over n elements. The output is a fresh tensor,
 * never x, so restrict holds and the loops vectorise (with the bound and the
 * data pointers read through the tensors in the loop they did not; fifth
 * round, docs/performance.md). */
static void scale_run(long n, const ts_real *restrict x, ts_real m, ts_real *restrict y) {
    for (long i = 0; i < n; i++) y[i] = m * x[i];
}

static void shift_run(long n, const ts_real *restrict x, ts_real c, ts_real *restrict y) {
    for (long i = 0; i < n; i++) y[i] = x[i] + c;
}

static void scale_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                           ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_scale(ctx, g, node->fattr[0]);
}

ts_tensor *ts_scale(ts_ctx *ctx, ts_tensor *a, double s) {
    ts_tensor *out = ts_new_like(ctx, a);
    ts_real f = (ts_real)s;
    scale_run(ctx->counting ? 0 : a->numel, a->data, f, out->data);
    ts_count_flops(ctx, (double)a->numel);
    ts_node *node = ts_record(ctx, "scale", scale_backward, out, 1, &a);
    if (node) node->fattr[0] = s;
    return out;
}

static void identity_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                              ts_tensor **gin) {
    (void)ctx;
    (void)node;
    if (needs[0]) gin[0] = g;
}

ts_tensor *ts_add_scalar(ts_ctx *ctx, ts_tensor *a, double s) {
    ts_tensor *out = ts_new_like(ctx, a);
    ts_real f = (ts_real)s;
    shift_run(ctx->counting ? 0 : a->numel, a->data, f, out->data);
    ts_count_flops(ctx, (double)a->numel);
    ts_record(ctx, "add_scalar", identity_backward, out, 1, &a);
    return out;
}

/* ---------------------------------------------------------------- unary ops */

/* Each rule is written with ops so that it can be differentiated again. */
static void exp_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_mul(ctx, g, node->out);
}

static void log_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                         ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_div(ctx, g, node->in[0]);
}

static void sqrt_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                          ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_div(ctx, ts_scale(ctx, g, 0.5), node->out);
}

static void rsqrt_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                           ts_tensor **gin) {
    /* d x^(-1/2) = -1/2 x^(-3/2) = -1/2 out^3 */
    ts_tensor *r = node->out;
    if (needs[0]) gin[0] = ts_mul(ctx, g, ts_scale(ctx, ts_mul(ctx, r, ts_square(ctx, r)), -0.5));
}

static void square_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                            ts_tensor **gin) {
    if (needs[0]) gin[0] = ts_mul(ctx, ts_scale(ctx, g, 2), node->in[0]);
}

static void sigmoid_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                             ts_tensor **gin) {
    ts_tensor *s = node->out;
    if (needs[0])
        gin[0] = ts_mul(ctx, g, ts_mul(ctx, s, ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1)));
}

static inline ts_real sigmoid_of(ts_real x);

/* The elements of silu's derivatives, s = sigmoid_of(a): silu'(a) h and
 * silu''(a), in the float operations of the primitives they replaced; every
 * kernel using them computes those operations in that order. */
static inline ts_real silu_slope_element(ts_real a, ts_real s, ts_real h) {
    return h * s * (1 + a * (1 - s));
}
static inline ts_real silu_curvature_element(ts_real a, ts_real s) {
    ts_real s_one_minus_s = s * ((ts_real)-1 * s + 1);
    ts_real slope = a * ((ts_real)-2 * s + 1) + 2;
    return s_one_minus_s * slope;
}

/* silu'''(a) in primitives: q ((1 - 2 s)(3 + a (1 - 2 s)) - 2 a q), q = s (1 - s). */
static ts_tensor *silu_third_derivative(ts_ctx *ctx, ts_tensor *a);

static void check_same_shape(ts_ctx *ctx, const char *op, const ts_tensor *a, const ts_tensor *b) {
    if (ts_same_shape(a, b)) return;
    char sa[64], sb[64];
    ts_fail(ctx, op, "shapes %s and %s differ", ts_shape_str(a, sa, sizeof sa),
            ts_shape_str(b, sb, sizeof sb));
}

/* silu's first-order rule, g * s (1 + x (1 - s)) with s = sigmoid(x), fused
 * into one pass over memory (the composition of primitives took seven). Its
 * own rule is written with ops, so higher orders stay exact. */
static ts_tensor *silu_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *g);

/* The VJP for x of silu_grad(x, g) against gout: gout g f(x) with
 * f = d/dx [s (1 + x (1 - s))] = s (1 - s) (2 + x (1 - 2 s)), as one op
 * (`silu_backward_dx`, one pass; the eleven primitives it replaces were the
 * largest group of EBT's second-order elementwise ops; sixth round,
 * docs/performance.md). The same float operations in the same order as those
 * primitives, so its values are theirs bit for bit; FLOPs booked as theirs.
 * Its rule: gout f(x) h = silu_grad_dx(x, gout, h) for g, likewise for gout,
 * and for x, h gout g f'(x) in primitives (silu_grad_dx_rule). */
static void silu_grad_dx_rule(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                              ts_tensor **gin);

static ts_tensor *silu_grad_dx(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, ts_tensor *gout) {
    check_same_shape(ctx, "silu_backward_dx", x, g);
    check_same_shape(ctx, "silu_backward_dx", x, gout);
    ts_tensor *out = ts_new_like(ctx, x);
    long n = ctx->counting ? 0 : x->numel;
    const ts_real *restrict px = x->data, *restrict pg = g->data, *restrict pgo = gout->data;
    ts_real *restrict po = out->data;
    for (long i = 0; i < n; i++)
        po[i] = (pgo[i] * pg[i]) * silu_curvature_element(px[i], sigmoid_of(px[i]));
    /* sigmoid 3, two scales, three shifts, five products */
    ts_count_flops(ctx, 13.0 * (double)x->numel);
    ts_record(ctx, "silu_backward_dx", silu_grad_dx_rule, out, 3, (ts_tensor *[]){x, g, gout});
    return out;
}

/* For x: h gout g silu'''(x), silu''' in primitives (silu_third_derivative). */
static void silu_grad_dx_rule(ts_ctx *ctx, ts_node *node, ts_tensor *h, const bool *needs,
                              ts_tensor **gin) {
    ts_tensor *x = node->in[0], *g = node->in[1], *gout = node->in[2];
    if (needs[1]) gin[1] = silu_grad_dx(ctx, x, gout, h);
    if (needs[2]) gin[2] = silu_grad_dx(ctx, x, g, h);
    if (needs[0])
        gin[0] = ts_mul(ctx, ts_mul(ctx, h, ts_mul(ctx, gout, g)), silu_third_derivative(ctx, x));
}

static ts_tensor *silu_third_derivative(ts_ctx *ctx, ts_tensor *a) {
    ts_tensor *s = ts_sigmoid(ctx, a);
    ts_tensor *q = ts_mul(ctx, s, ts_add_scalar(ctx, ts_scale(ctx, s, -1), 1));
    ts_tensor *one_minus_2s = ts_add_scalar(ctx, ts_scale(ctx, s, -2), 1);
    ts_tensor *first =
        ts_mul(ctx, one_minus_2s, ts_add_scalar(ctx, ts_mul(ctx, a, one_minus_2s), 3));
    return ts_mul(ctx, q, ts_sub(ctx, first, ts_scale(ctx, ts_mul(ctx, a, q), 2)));
}

static void silu_grad_backward(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                               ts_tensor **gin) {
    ts_tensor *x = node->in[0], *g = node->in[1];
    if (needs[1]) gin[1] = silu_grad(ctx, x, gout); /* linear in g */
    if (needs[0]) gin[0] = silu_grad_dx(ctx, x, g, gout);
}

static ts_tensor *silu_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *g) {
    if (!ts_same_shape(x, g)) {
        char sx[64], sg[64];
        ts_fail(ctx, "silu_backward", "gradient %s does not match input %s",
                ts_shape_str(g, sg, sizeof sg), ts_shape_str(x, sx, sizeof sx));
    }
    ts_tensor *out = ts_new_like(ctx, x);
    long n = ctx->counting ? 0 : x->numel; /* counting: nothing to compute */
    const ts_real *px = x->data, *pg = g->data;
    ts_real *po = out->data;
    for (long i = 0; i < n; i++) po[i] = silu_slope_element(px[i], sigmoid_of(px[i]), pg[i]);
    ts_count_flops(ctx, 8.0 * (double)x->numel); /* sigmoid 3, then 5 */
    ts_record(ctx, "silu_backward", silu_grad_backward, out, 2, (ts_tensor *[]){x, g});
    return out;
}

static void silu_backward(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                          ts_tensor **gin) {
    if (needs[0]) gin[0] = silu_grad(ctx, node->in[0], g);
}

static inline ts_real sigmoid_of(ts_real x) {
    /* Stable on both tails; branch-free so that the loops vectorise. The
     * numerator is chosen before the one division: written as two
     * quotients, GCC computed both and blended them, two vector divisions
     * per element (the same quotient either way). */
    ts_real e = ts_exp_nonpositive(x < 0 ? x : -x);
    return (x >= 0 ? 1 : e) / (1 + e);
}

/* The elements of SwiGLU and its gate's gradient, in the float operations
 * (and their order) of silu, mul and silu's rule: the kernels on separate
 * (ts_swiglu) and packed (ts_swiglu_packed) halves share them, so the two
 * agree bit for bit by construction. s is sigmoid_of(a). */
static inline ts_real swiglu_element(ts_real a, ts_real s, ts_real b) {
    return a * s * b;
}
static inline ts_real swiglu_gate_grad_element(ts_real a, ts_real s, ts_real b, ts_real g) {
    return silu_slope_element(a, s, g * b);
}

/* ---------------------------------------------------------------- SwiGLU
 *
 * ts_swiglu(a, b) = silu(a) b in one pass (the silu and the product were
 * two ops, the gate written and read back; fifth round,
 * docs/performance.md). Its rule: for b, silu(a) g = ts_swiglu(a, g); for a,
 * silu_grad(a, g b) as swiglu_grad_gate, one pass instead of a product and
 * silu's rule. The same float operations in the same order as silu, mul and
 * their rules (x s, then the product; g b, then the rule's expression), so
 * the values are those of the ops it replaces, bit for bit. */
static void swiglu_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                        ts_tensor **gin);

ts_tensor *ts_swiglu(ts_ctx *ctx, ts_tensor *a, ts_tensor *b) {
    check_same_shape(ctx, "swiglu", a, b);
    ts_tensor *out = ts_new_like(ctx, a);
    long n = ctx->counting ? 0 : a->numel;
    const ts_real *restrict pa = a->data, *restrict pb = b->data;
    ts_real *restrict po = out->data;
    for (long i = 0; i < n; i++) po[i] = swiglu_element(pa[i], sigmoid_of(pa[i]), pb[i]);
    ts_count_flops(ctx, 5.0 * (double)a->numel); /* silu 4, the product 1 */
    ts_record(ctx, "swiglu", swiglu_rule, out, 2, (ts_tensor *[]){a, b});
    return out;
}

/* silu_grad(a, g b): g b s (1 + a (1 - s)). Its rule: for a, silu_grad_dx
 * with g b; for b and g, the other factor times silu_grad(a, gout). */
static void swiglu_grad_gate_rule(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                  ts_tensor **gin) {
    ts_tensor *a = node->in[0], *b = node->in[1], *g = node->in[2];
    ts_tensor *slope = needs[1] || needs[2] ? silu_grad(ctx, a, gout) : NULL;
    if (needs[1]) gin[1] = ts_mul(ctx, g, slope);
    if (needs[2]) gin[2] = ts_mul(ctx, b, slope);
    if (needs[0]) gin[0] = silu_grad_dx(ctx, a, ts_mul(ctx, g, b), gout);
}

static ts_tensor *swiglu_grad_gate(ts_ctx *ctx, ts_tensor *a, ts_tensor *b, ts_tensor *g) {
    check_same_shape(ctx, "swiglu_backward", a, g);
    ts_tensor *out = ts_new_like(ctx, a);
    long n = ctx->counting ? 0 : a->numel;
    const ts_real *restrict pa = a->data, *restrict pb = b->data, *restrict pg = g->data;
    ts_real *restrict po = out->data;
    for (long i = 0; i < n; i++)
        po[i] = swiglu_gate_grad_element(pa[i], sigmoid_of(pa[i]), pb[i], pg[i]);
    ts_count_flops(ctx, 9.0 * (double)a->numel); /* the product 1, silu's rule 8 */
    ts_record(ctx, "swiglu_backward", swiglu_grad_gate_rule, out, 3, (ts_tensor *[]){a, b, g});
    return out;
}

static void swiglu_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                        ts_tensor **gin) {
    ts_tensor *a = node->in[0], *b = node->in[1];
    if (needs[0]) gin[0] = swiglu_grad_gate(ctx, a, b, g);
    if (needs[1]) gin[1] = ts_swiglu(ctx, a, g);
}

/* ---------------------------------------------------------------- packed SwiGLU
 *
 * ts_swiglu_packed(x) = silu(gate) up for x [..., 2 F] holding gate in its
 * first F columns and up in its last F: what one GEMM over the stacked
 * [w1; w3] weight writes, so neither half is copied out and the backward
 * writes one [..., 2 F] gradient for that GEMM's rule. The values are
 * ts_swiglu's and its rules', the same float operations in the same order;
 * FLOPs booked as theirs. */
static void swiglu_packed_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                               ts_tensor **gin);

/* Columns of each half of x [..., 2 F]: F. */
static int packed_half(ts_ctx *ctx, const char *op, const ts_tensor *x) {
    int last = x->ndim > 0 ? x->shape[x->ndim - 1] : 0;
    if (last < 2 || last % 2) {
        char sx[64];
        ts_fail(ctx, op, "input %s has no two halves in its last axis",
                ts_shape_str(x, sx, sizeof sx));
    }
    return last / 2;
}

/* A new tensor shaped like x [..., 2 F] with F in its last axis. */
static ts_tensor *new_half_of(ts_ctx *ctx, const ts_tensor *x, int f) {
    int shape[TS_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = f;
    return ts_new(ctx, x->ndim, shape);
}

ts_tensor *ts_swiglu_packed(ts_ctx *ctx, ts_tensor *x) {
    int f = packed_half(ctx, "swiglu_packed", x);
    ts_tensor *out = new_half_of(ctx, x, f);
    long rows = ctx->counting ? 0 : out->numel / f;
    for (long r = 0; r < rows; r++) {
        const ts_real *restrict pa = x->data + r * 2 * f, *restrict pb = pa + f;
        ts_real *restrict po = out->data + r * f;
        for (int i = 0; i < f; i++) po[i] = swiglu_element(pa[i], sigmoid_of(pa[i]), pb[i]);
    }
    ts_count_flops(ctx, 5.0 * (double)out->numel); /* as ts_swiglu */
    ts_record(ctx, "swiglu_packed", swiglu_packed_rule, out, 1, &x);
    return out;
}

/* The gradient of ts_swiglu_packed(x) for g [..., F], one [..., 2 F]:
 * swiglu_grad_gate(gate, up, g) in the first half, ts_swiglu(gate, g) in the
 * second. It is J(x)^T g, J the Jacobian of the packed SwiGLU: its rule is
 * J h for g (swiglu_packed_jvp) and the Hessian term for x
 * (swiglu_packed_grad_dx), two fused ops below. */
static void swiglu_packed_grad_rule(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                    ts_tensor **gin);

/* Fails unless t is [..., F] with x [..., 2 F]'s leading dims. */
static void check_half_of(ts_ctx *ctx, const char *op, const ts_tensor *x, const ts_tensor *t) {
    int f = packed_half(ctx, op, x);
    bool match = t->ndim == x->ndim && t->shape[t->ndim - 1] == f;
    for (int d = 0; match && d < x->ndim - 1; d++) match = t->shape[d] == x->shape[d];
    if (match) return;
    char sx[64], st[64];
    ts_fail(ctx, op, "gradient %s does not match input %s", ts_shape_str(t, st, sizeof st),
            ts_shape_str(x, sx, sizeof sx));
}

static ts_tensor *swiglu_packed_grad(ts_ctx *ctx, ts_tensor *x, ts_tensor *g) {
    check_half_of(ctx, "swiglu_packed_backward", x, g);
    int f = x->shape[x->ndim - 1] / 2;
    ts_tensor *out = ts_new_like(ctx, x);
    long rows = ctx->counting ? 0 : g->numel / f;
    for (long r = 0; r < rows; r++) {
        const ts_real *restrict pa = x->data + r * 2 * f, *restrict pb = pa + f;
        const ts_real *restrict pg = g->data + r * f;
        ts_real *restrict pda = out->data + r * 2 * f, *restrict pdb = pda + f;
        for (int i = 0; i < f; i++) {
            ts_real s = sigmoid_of(pa[i]);
            pda[i] = swiglu_gate_grad_element(pa[i], s, pb[i], pg[i]);
            pdb[i] = swiglu_element(pa[i], s, pg[i]);
        }
    }
    ts_count_flops(ctx, 14.0 * (double)g->numel); /* swiglu_backward 9, swiglu 5 */
    ts_record(ctx, "swiglu_packed_backward", swiglu_packed_grad_rule, out, 2,
              (ts_tensor *[]){x, g});
    return out;
}

/* The second order of the packed SwiGLU as two one-pass ops over the packed
 * layout (eighth round, docs/performance.md, lever 48). Per element, with
 * f = silu(a) b of x = [a, b], its Hessian is H = [[silu''(a) b, silu'(a)],
 * [silu'(a), 0]], and for h = [ha, hb]:
 *   swiglu_packed_jvp(x, h)        = J h     = silu'(a) ha b + silu(a) hb  [..., F]
 *   swiglu_packed_grad_dx(x, g, h) = g H h   = [g (silu''(a) b ha + silu'(a) hb),
 *                                               g silu'(a) ha]            [..., 2 F]
 * They replace a composition of 4 slices, silu_backward, silu_backward_dx,
 * swiglu_backward, swiglu, 3 products, 2 sums and a concat, and compute its
 * float operations in its order, so their values are its values bit for bit
 * (the shared slope g silu'(a) is computed in each op; each op's FLOPs are
 * booked as the primitives it stands for on its own). Their rules:
 *   jvp:     for h, J^T w = swiglu_packed_grad(x, w); for x, w H h = grad_dx(x, w, h);
 *   grad_dx: for h, g H w = grad_dx(x, g, w) (H is symmetric); for g, w H h and
 *            for x, g (d/dx H) [h, w], in primitives (swiglu_packed_grad_dx_rule),
 * so every order stays exact. */
static ts_tensor *swiglu_packed_grad_dx(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, ts_tensor *h);

/* FLOPs per element of g each op books, as the primitives it replaces (the
 * one-pass rule, swiglu_packed_second_order, books both). jvp: silu_backward
 * 8, the product 1, swiglu 5, the sum 1; grad_dx: silu_backward 8,
 * silu_backward_dx 13 with its product 1, swiglu_backward 9, the sum 1, the
 * product 1. */
enum { SWIGLU_JVP_FLOPS = 15, SWIGLU_GRAD_DX_FLOPS = 33 };

static void swiglu_packed_jvp_rule(ts_ctx *ctx, ts_node *node, ts_tensor *w, const bool *needs,
                                   ts_tensor **gin) {
    ts_tensor *x = node->in[0], *h = node->in[1];
    if (needs[1]) gin[1] = swiglu_packed_grad(ctx, x, w);
    if (needs[0]) gin[0] = swiglu_packed_grad_dx(ctx, x, w, h);
}

/* The composition's d g: up silu_grad(gate, ha) + ts_swiglu(gate, hb). */
static ts_tensor *swiglu_packed_jvp(ts_ctx *ctx, ts_tensor *x, ts_tensor *h) {
    int f = packed_half(ctx, "swiglu_packed_jvp", x);
    check_same_shape(ctx, "swiglu_packed_jvp", x, h);
    ts_tensor *out = new_half_of(ctx, x, f);
    long rows = ctx->counting ? 0 : out->numel / f;
    for (long r = 0; r < rows; r++) {
        const ts_real *restrict pa = x->data + r * 2 * f, *restrict pb = pa + f;
        const ts_real *restrict pha = h->data + r * 2 * f, *restrict phb = pha + f;
        ts_real *restrict po = out->data + r * f;
        for (int i = 0; i < f; i++) {
            ts_real s = sigmoid_of(pa[i]);
            po[i] = pb[i] * silu_slope_element(pa[i], s, pha[i]) + swiglu_element(pa[i], s, phb[i]);
        }
    }
    ts_count_flops(ctx, SWIGLU_JVP_FLOPS * (double)out->numel);
    ts_record(ctx, "swiglu_packed_jvp", swiglu_packed_jvp_rule, out, 2, (ts_tensor *[]){x, h});
    return out;
}

static void swiglu_packed_grad_dx_rule(ts_ctx *ctx, ts_node *node, ts_tensor *w, const bool *needs,
                                       ts_tensor **gin);

/* The composition's d x: [silu_grad_dx(gate, g up, ha) + swiglu_grad_gate(gate, g, hb),
 * g silu_grad(gate, ha)], for one row. A function of its own, so that its
 * restrict parameters reach the vectoriser: with the six pointers declared
 * in the loop over rows it asked for more run-time alias checks than it
 * makes and left the loop scalar (four times slower). */
static void swiglu_packed_grad_dx_row(int f, const ts_real *restrict a, const ts_real *restrict b,
                                      const ts_real *restrict ha, const ts_real *restrict hb,
                                      const ts_real *restrict g, ts_real *restrict da,
                                      ts_real *restrict db) {
    for (int i = 0; i < f; i++) {
        ts_real s = sigmoid_of(a[i]);
        ts_real curved = (ha[i] * (g[i] * b[i])) * silu_curvature_element(a[i], s);
        da[i] = curved + swiglu_gate_grad_element(a[i], s, g[i], hb[i]);
        db[i] = g[i] * silu_slope_element(a[i], s, ha[i]);
    }
}

static ts_tensor *swiglu_packed_grad_dx(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, ts_tensor *h) {
    check_half_of(ctx, "swiglu_packed_backward_dx", x, g);
    check_same_shape(ctx, "swiglu_packed_backward_dx", x, h);
    int f = x->shape[x->ndim - 1] / 2;
    ts_tensor *out = ts_new_like(ctx, x);
    long rows = ctx->counting ? 0 : g->numel / f;
    for (long r = 0; r < rows; r++) {
        const ts_real *pa = x->data + r * 2 * f, *pha = h->data + r * 2 * f;
        ts_real *pda = out->data + r * 2 * f;
        swiglu_packed_grad_dx_row(f, pa, pa + f, pha, pha + f, g->data + r * f, pda, pda + f);
    }
    ts_count_flops(ctx, SWIGLU_GRAD_DX_FLOPS * (double)g->numel);
    ts_record(ctx, "swiglu_packed_backward_dx", swiglu_packed_grad_dx_rule, out, 3,
              (ts_tensor *[]){x, g, h});
    return out;
}

/* Against w = [wa, wb], with c = wa hb + wb ha:
 *   d g  = silu''(a) b ha wa + silu'(a) c
 *   d a  = g (silu'''(a) b ha wa + silu''(a) c)
 *   d b  = g silu''(a) ha wa
 *   d h  = swiglu_packed_grad_dx(x, g, w). */
static void swiglu_packed_grad_dx_rule(ts_ctx *ctx, ts_node *node, ts_tensor *w, const bool *needs,
                                       ts_tensor **gin) {
    ts_tensor *x = node->in[0], *g = node->in[1], *h = node->in[2];
    if (needs[2]) gin[2] = swiglu_packed_grad_dx(ctx, x, g, w);
    if (!needs[0] && !needs[1]) return;
    int axis = x->ndim - 1, f = x->shape[axis] / 2;
    ts_tensor *a = ts_slice(ctx, x, axis, 0, f), *b = ts_slice(ctx, x, axis, f, f);
    ts_tensor *ha = ts_slice(ctx, h, axis, 0, f), *hb = ts_slice(ctx, h, axis, f, f);
    ts_tensor *wa = ts_slice(ctx, w, axis, 0, f), *wb = ts_slice(ctx, w, axis, f, f);
    ts_tensor *c = ts_add(ctx, ts_mul(ctx, wa, hb), ts_mul(ctx, wb, ha));
    ts_tensor *ha_wa = ts_mul(ctx, ha, wa);
    if (needs[1]) gin[1] = ts_add(ctx, silu_grad_dx(ctx, a, b, ha_wa), silu_grad(ctx, a, c));
    if (needs[0]) {
        ts_tensor *g_b = ts_mul(ctx, g, b);
        ts_tensor *d_a =
            ts_add(ctx, ts_mul(ctx, ts_mul(ctx, g_b, ha_wa), silu_third_derivative(ctx, a)),
                   silu_grad_dx(ctx, a, g, c));
        gin[0] = ts_concat(ctx, 2, (ts_tensor *[]){d_a, silu_grad_dx(ctx, a, g, ha_wa)}, axis);
    }
}

/* swiglu_packed_grad_dx(x, g, h) and swiglu_packed_jvp(x, h) of one row at
 * once: their float operations, in their order (the slope silu'(a) ha is
 * the same product in both), so their values bit for bit. */
static void swiglu_packed_second_order_row(int f, const ts_real *restrict a,
                                           const ts_real *restrict b, const ts_real *restrict ha,
                                           const ts_real *restrict hb, const ts_real *restrict g,
                                           ts_real *restrict da, ts_real *restrict db,
                                           ts_real *restrict jvp) {
    for (int i = 0; i < f; i++) {
        ts_real s = sigmoid_of(a[i]), slope = silu_slope_element(a[i], s, ha[i]);
        ts_real curved = (ha[i] * (g[i] * b[i])) * silu_curvature_element(a[i], s);
        da[i] = curved + swiglu_gate_grad_element(a[i], s, g[i], hb[i]);
        db[i] = g[i] * slope;
        jvp[i] = b[i] * slope + swiglu_element(a[i], s, hb[i]);
    }
}

/* Both gradients of swiglu_packed_grad in a plain pass (recording off: EBT's
 * second-order pass): one pass reading x, g and h once, where the two ops
 * read x and h twice and computed each sigmoid twice (seventeenth round,
 * docs/performance.md). FLOPs and the profile's row are the two ops'. */
static void swiglu_packed_second_order(ts_ctx *ctx, ts_tensor *x, ts_tensor *g, ts_tensor *h,
                                       ts_tensor **gin) {
    check_half_of(ctx, "swiglu_packed_backward_dx", x, g);
    check_same_shape(ctx, "swiglu_packed_backward_dx", x, h);
    int f = x->shape[x->ndim - 1] / 2;
    ts_tensor *dx = ts_new_like(ctx, x), *dg = new_half_of(ctx, x, f);
    long rows = ctx->counting ? 0 : g->numel / f;
    for (long r = 0; r < rows; r++) {
        const ts_real *pa = x->data + r * 2 * f, *pha = h->data + r * 2 * f;
        ts_real *pda = dx->data + r * 2 * f;
        swiglu_packed_second_order_row(f, pa, pa + f, pha, pha + f, g->data + r * f, pda, pda + f,
                                       dg->data + r * f);
    }
    ts_count_flops(ctx, (SWIGLU_GRAD_DX_FLOPS + SWIGLU_JVP_FLOPS) * (double)g->numel);
    /* Recording is off: this books the work to the profile and records nothing. */
    ts_record(ctx, "swiglu_packed_second_order", NULL, dx, 0, NULL);
    gin[0] = dx;
    gin[1] = dg;
}

static void swiglu_packed_grad_rule(ts_ctx *ctx, ts_node *node, ts_tensor *gout, const bool *needs,
                                    ts_tensor **gin) {
    ts_tensor *x = node->in[0], *g = node->in[1];
    if (needs[0] && needs[1] && !ctx->grad_enabled) {
        swiglu_packed_second_order(ctx, x, g, gout, gin);
        return;
    }
    if (needs[0]) gin[0] = swiglu_packed_grad_dx(ctx, x, g, gout);
    if (needs[1]) gin[1] = swiglu_packed_jvp(ctx, x, gout);
}

static void swiglu_packed_rule(ts_ctx *ctx, ts_node *node, ts_tensor *g, const bool *needs,
                               ts_tensor **gin) {
    if (needs[0]) gin[0] = swiglu_packed_grad(ctx, node->in[0], g);
}

enum unary_kind { UN_EXP, UN_LOG, UN_SQRT, UN_RSQRT, UN_SQUARE, UN_SIGMOID, UN_SILU };

static ts_tensor *unary(ts_ctx *ctx, const char *op, enum unary_kind kind, ts_tensor *a,
                        ts_backward_fn backward, double flops_per_element) {
    ts_tensor *out = ts_new_like(ctx, a);
    const ts_real *x = a->data;
    ts_real *y = out->data;
    long n = ctx->counting ? 0 : a->numel; /* counting: nothing to compute */
    switch (kind) {
    case UN_EXP:
        for (long i = 0; i < n; i++) y[i] = ts_exp_accurate(x[i]);
        break;
    case UN_LOG:
        for (long i = 0; i < n; i++) y[i] = TS_LOG(x[i]);
        break;
    case UN_SQRT:
        for (long i = 0; i < n; i++) y[i] = TS_SQRT(x[i]);
        break;
    case UN_RSQRT:
        for (long i = 0; i < n; i++) y[i] = 1 / TS_SQRT(x[i]);
        break;
    case UN_SQUARE:
        for (long i = 0; i < n; i++) y[i] = x[i] * x[i];
        break;
    case UN_SIGMOID:
        for (long i = 0; i < n; i++) y[i] = sigmoid_of(x[i]);
        break;
    case UN_SILU:
        for (long i = 0; i < n; i++) y[i] = x[i] * sigmoid_of(x[i]);
        break;
    }
    ts_count_flops(ctx, flops_per_element * (double)a->numel);
    ts_record(ctx, op, backward, out, 1, &a);
    return out;
}

ts_tensor *ts_exp(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "exp", UN_EXP, a, exp_backward, 1);
}
ts_tensor *ts_log(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "log", UN_LOG, a, log_backward, 1);
}
ts_tensor *ts_sqrt(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "sqrt", UN_SQRT, a, sqrt_backward, 1);
}
ts_tensor *ts_rsqrt(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "rsqrt", UN_RSQRT, a, rsqrt_backward, 2);
}
ts_tensor *ts_square(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "square", UN_SQUARE, a, square_backward, 1);
}
ts_tensor *ts_sigmoid(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "sigmoid", UN_SIGMOID, a, sigmoid_backward, 3);
}
ts_tensor *ts_silu(ts_ctx *ctx, ts_tensor *a) {
    return unary(ctx, "silu", UN_SILU, a, silu_backward, 4);
}
