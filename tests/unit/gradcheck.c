#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one check holds fixed while the inputs move. */
typedef struct problem {
    gc_fn f;
    const void *args;
    int n_in;
    ts_tensor *const *inputs;
    int n_x; /* inputs that require a gradient */
    ts_tensor *x[GC_MAX_INPUTS];
    int x_index[GC_MAX_INPUTS];  /* their position in inputs, for messages */
    ts_tensor *w, *u;            /* u is NULL for the linear loss */
    ts_tensor *v[GC_MAX_INPUTS]; /* the direction of the second-order check */
} problem;

/* L(x) evaluated without recording, accumulated in double. */
static double objective_value(ts_ctx *ctx, const problem *p) {
    ts_mark mark = ts_get_mark(ctx);
    bool was_enabled = ts_set_grad_enabled(ctx, false);
    const ts_tensor *y = p->f(ctx, p->inputs, p->args);
    double sum = 0;
    for (long k = 0; k < y->numel; k++) {
        double yk = y->data[k];
        sum += (double)p->w->data[k] * yk;
        if (p->u) sum += 0.5 * (double)p->u->data[k] * yk * yk;
    }
    ts_set_grad_enabled(ctx, was_enabled);
    ts_release(ctx, mark);
    return sum;
}

/* L(x) as a recorded graph. */
static ts_tensor *objective(ts_ctx *ctx, const problem *p) {
    ts_tensor *y = p->f(ctx, p->inputs, p->args);
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, p->w, y));
    if (p->u) {
        ts_tensor *quadratic = ts_sum_all(ctx, ts_mul(ctx, p->u, ts_square(ctx, y)));
        loss = ts_add(ctx, loss, ts_scale(ctx, quadratic, 0.5));
    }
    return loss;
}

/* <grad L(x), v>, the gradient taken without create_graph. */
static double gradient_dot_v(ts_ctx *ctx, const problem *p) {
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *loss = objective(ctx, p);
    ts_tensor *grads[GC_MAX_INPUTS];
    ts_grad(ctx, 1, &loss, NULL, p->n_x, p->x, grads, false);
    double dot = 0;
    for (int i = 0; i < p->n_x; i++)
        for (long k = 0; k < grads[i]->numel; k++)
            dot += (double)grads[i]->data[k] * (double)p->v[i]->data[k];
    ts_release(ctx, mark);
    return dot;
}

/* value(x) with element j of x set to x_j + offset (rounded to ts_real). */
static double value_at(ts_ctx *ctx, const problem *p, ts_tensor *x, long j, ts_real saved,
                       double offset, double (*value)(ts_ctx *, const problem *)) {
    x->data[j] = (ts_real)(saved + offset);
    double result = value(ctx, p);
    x->data[j] = saved;
    return result;
}

const double GC_STENCIL_OFFSET[4] = {1, -1, 2, -2};

double gc_stencil(const double *values) {
    double near = values[0] - values[1];
    if (!GC_FOUR_POINT_STENCIL) return near / (2 * GC_STEP);
    double far = values[2] - values[3];
    return (8 * near - far) / (12 * GC_STEP);
}

/* Central difference of `value` along element j of x. */
static double central_difference(ts_ctx *ctx, const problem *p, ts_tensor *x, long j,
                                 double (*value)(ts_ctx *, const problem *)) {
    ts_real saved = x->data[j];
    double values[4];
    for (int k = 0; k < GC_STENCIL_POINTS; k++)
        values[k] = value_at(ctx, p, x, j, saved, GC_STENCIL_OFFSET[k] * GC_STEP, value);
    return gc_stencil(values);
}

double gc_relative_error(const double *analytic, const double *numeric, long n, double extra_scale,
                         long *worst) {
    double scale = extra_scale;
    for (long j = 0; j < n; j++) {
        scale = fmax(scale, fabs(analytic[j]));
        scale = fmax(scale, fabs(numeric[j]));
    }
    double floor = GC_FLOOR * scale, max_error = 0;
    if (worst) *worst = 0;
    for (long j = 0; j < n; j++) {
        double diff = fabs(analytic[j] - numeric[j]);
        if (diff == 0) continue;
        double denominator = fmax(fmax(fabs(analytic[j]), fabs(numeric[j])), floor);
        double error = denominator > 0 ? diff / denominator : INFINITY;
        if (!(error <= max_error)) { /* also catches NaN */
            max_error = isnan(error) ? INFINITY : error;
            if (worst) *worst = j;
        }
    }
    return max_error;
}

static void describe(char *buf, size_t size, const problem *p, int i, long j, const double *a,
                     const double *n, const char *reference) {
    char shape[64];
    snprintf(buf, size, "input %d %s element %ld: engine %.10g, %s %.10g", p->x_index[i],
             ts_shape_str(p->x[i], shape, sizeof shape), j, a[j], reference, n[j]);
}

/* Compares analytic against numeric per input; keeps the worst. */
static void compare_inputs(const problem *p, double *const *analytic, double *const *numeric,
                           const char *reference, double extra_scale, double *error, char *where,
                           size_t where_size) {
    *error = 0;
    snprintf(where, where_size, "none");
    for (int i = 0; i < p->n_x; i++) {
        long worst;
        double e = gc_relative_error(analytic[i], numeric[i], p->x[i]->numel, extra_scale, &worst);
        if (e > *error || (i == 0 && e == 0)) {
            *error = e;
            describe(where, where_size, p, i, worst, analytic[i], numeric[i], reference);
        }
    }
}

static void fill_constant(ts_ctx *ctx, ts_tensor **t, const ts_tensor *like, test_rng *rng) {
    *t = ts_new(ctx, like->ndim, like->shape);
    test_rng_fill_normal(rng, (*t)->data, (*t)->numel, 1.0);
}

gc_result gc_check(ts_ctx *ctx, gc_fn f, const void *args, int n_in, ts_tensor *const *inputs,
                   enum gc_loss loss, uint64_t seed) {
    gc_result result = {0};
    ts_mark start = ts_get_mark(ctx);
    test_rng rng = test_rng_seeded(seed);
    problem p = {.f = f, .args = args, .n_in = n_in, .inputs = inputs};
    for (int i = 0; i < n_in && p.n_x < GC_MAX_INPUTS; i++)
        if (inputs[i]->requires_grad) {
            p.x_index[p.n_x] = i;
            p.x[p.n_x++] = inputs[i];
        }

    /* One unrecorded forward pass gives the output shape for w and u. */
    bool was_enabled = ts_set_grad_enabled(ctx, false);
    ts_tensor *probe = f(ctx, inputs, args);
    ts_set_grad_enabled(ctx, was_enabled);
    fill_constant(ctx, &p.w, probe, &rng);
    if (loss == GC_QUADRATIC_LOSS) fill_constant(ctx, &p.u, probe, &rng);
    for (int i = 0; i < p.n_x; i++) fill_constant(ctx, &p.v[i], p.x[i], &rng);

    double *first[GC_MAX_INPUTS], *first_fd[GC_MAX_INPUTS];
    double *second[GC_MAX_INPUTS], *second_fd[GC_MAX_INPUTS];
    for (int i = 0; i < p.n_x; i++) {
        size_t bytes = (size_t)p.x[i]->numel * sizeof(double);
        first[i] = malloc(bytes);
        first_fd[i] = malloc(bytes);
        second[i] = malloc(bytes);
        second_fd[i] = malloc(bytes);
        result.n_elements += p.x[i]->numel;
    }

    /* Engine gradients: grad L, then grad <grad L, v> through create_graph. */
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *l = objective(ctx, &p);
    ts_tensor *grads[GC_MAX_INPUTS], *hvp[GC_MAX_INPUTS];
    ts_grad(ctx, 1, &l, NULL, p.n_x, p.x, grads, true);
    ts_tensor *h = NULL;
    double grad_max = 0, v_max = 0;
    for (int i = 0; i < p.n_x; i++) {
        for (long k = 0; k < p.x[i]->numel; k++) {
            first[i][k] = grads[i]->data[k];
            grad_max = fmax(grad_max, fabs(first[i][k]));
            v_max = fmax(v_max, fabs((double)p.v[i]->data[k]));
        }
        ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, grads[i], p.v[i]));
        h = h ? ts_add(ctx, h, term) : term;
    }
    result.second_is_constant = !h->requires_grad;
    if (!result.second_is_constant) ts_grad(ctx, 1, &h, NULL, p.n_x, p.x, hvp, false);
    for (int i = 0; i < p.n_x; i++)
        for (long k = 0; k < p.x[i]->numel; k++)
            second[i][k] = result.second_is_constant ? 0 : (double)hvp[i]->data[k];
    ts_release(ctx, mark);

    /* The plain pass (create_graph off) runs the same rules unrecorded, on
     * the same numbers: it must agree with the recorded one bit for bit. */
    mark = ts_get_mark(ctx);
    l = objective(ctx, &p);
    ts_grad(ctx, 1, &l, NULL, p.n_x, p.x, grads, false);
    double *plain[GC_MAX_INPUTS];
    for (int i = 0; i < p.n_x; i++) {
        plain[i] = malloc((size_t)p.x[i]->numel * sizeof(double));
        for (long k = 0; k < p.x[i]->numel; k++) plain[i][k] = grads[i]->data[k];
    }
    ts_release(ctx, mark);

    for (int i = 0; i < p.n_x; i++)
        for (long k = 0; k < p.x[i]->numel; k++) {
            first_fd[i][k] = central_difference(ctx, &p, p.x[i], k, objective_value);
            second_fd[i][k] = central_difference(ctx, &p, p.x[i], k, gradient_dot_v);
        }

    compare_inputs(&p, first, first_fd, "finite difference", 0, &result.first_error,
                   result.first_worst, sizeof result.first_worst);
    compare_inputs(&p, plain, first, "with create_graph", 0, &result.plain_vs_recorded,
                   result.plain_worst, sizeof result.plain_worst);
    /* A second derivative the engine says is zero has no scale of its own:
     * measure the finite-difference noise against |grad| |v| instead. */
    compare_inputs(&p, second, second_fd, "finite difference",
                   result.second_is_constant ? grad_max * v_max : 0, &result.second_error,
                   result.second_worst, sizeof result.second_worst);

    for (int i = 0; i < p.n_x; i++) {
        free(first[i]);
        free(first_fd[i]);
        free(second[i]);
        free(second_fd[i]);
        free(plain[i]);
    }
    ts_release(ctx, start);
    return result;
}

ts_tensor *gc_constant(ts_ctx *ctx, test_rng *rng, int ndim, const int *shape, double lo,
                       double hi) {
    ts_tensor *t = ts_new(ctx, ndim, shape);
    test_rng_fill_uniform(rng, t->data, t->numel, lo, hi);
    return t;
}

ts_tensor *gc_leaf(ts_ctx *ctx, test_rng *rng, int ndim, const int *shape, double lo, double hi) {
    ts_tensor *t = gc_constant(ctx, rng, ndim, shape, lo, hi);
    ts_set_requires_grad(ctx, t, true);
    return t;
}
