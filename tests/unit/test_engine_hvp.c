/* Hessian-vector products of a whole transformer block (tiny_net.h) with
 * respect to all of its parameters, by grad-of-grad:
 *     Hv = grad_theta <grad_theta L, v>
 * checked against central finite differences of the gradient along v,
 *     Hv ~ (grad L(theta + h v) - grad L(theta - h v)) / 2h,
 * and against the symmetry of the Hessian, <H v1, v2> = <v1, H v2>. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "gradcheck.h"
#include "splitmix.h"
#include "tiny_net.h"
#include "engine_fixture.h"

typedef struct fixture {
    ts_ctx ctx;
    tiny_net net;
    ts_tensor *params[TINY_NET_N_PARAMS];
} fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx || !ts_ctx_init(&fx->ctx, 4 << 20) || !tiny_net_init(&fx->net, 20240607)) return -1;
    ts_ctx_set_error_handler(&fx->ctx, fail_test_on_engine_error, NULL);
    tiny_net_leaves(&fx->ctx, &fx->net, NULL, fx->params);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    tiny_net_free(&fx->net);
    ts_ctx_free(&fx->ctx);
    free(fx);
    return 0;
}

/* The flat gradient of the loss at the current parameters, in double. */
static void flat_gradient(fixture *fx, double *out) {
    ts_mark mark = ts_get_mark(&fx->ctx);
    ts_tensor *loss = tiny_net_loss(&fx->ctx, &fx->net, fx->params);
    ts_tensor *grads[TINY_NET_N_PARAMS];
    ts_grad(&fx->ctx, 1, &loss, NULL, TINY_NET_N_PARAMS, fx->params, grads, false);
    for (int p = 0; p < TINY_NET_N_PARAMS; p++)
        for (long i = 0; i < grads[p]->numel; i++) out[fx->net.offset[p] + i] = grads[p]->data[i];
    ts_release(&fx->ctx, mark);
}

/* H v by grad-of-grad, flat, in double. */
static void hessian_vector_product(fixture *fx, const double *v, double *out) {
    ts_ctx *ctx = &fx->ctx;
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *loss = tiny_net_loss(ctx, &fx->net, fx->params);
    ts_tensor *grads[TINY_NET_N_PARAMS], *hv[TINY_NET_N_PARAMS];
    ts_grad(ctx, 1, &loss, NULL, TINY_NET_N_PARAMS, fx->params, grads, true);
    ts_tensor *dot = NULL;
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        ts_tensor *direction = ts_new_like(ctx, fx->params[p]);
        for (long i = 0; i < direction->numel; i++)
            direction->data[i] = (ts_real)v[fx->net.offset[p] + i];
        ts_tensor *term = ts_sum_all(ctx, ts_mul(ctx, grads[p], direction));
        dot = dot ? ts_add(ctx, dot, term) : term;
    }
    ts_grad(ctx, 1, &dot, NULL, TINY_NET_N_PARAMS, fx->params, hv, false);
    for (int p = 0; p < TINY_NET_N_PARAMS; p++)
        for (long i = 0; i < hv[p]->numel; i++) out[fx->net.offset[p] + i] = hv[p]->data[i];
    ts_release(ctx, mark);
}

/* Zeroed so that no path reads an unset entry (and -Wmaybe-uninitialized agrees). */
static double *zeroed(long n) {
    return calloc((size_t)n, sizeof(double));
}

static void random_direction(long n, uint64_t seed, double *v) {
    test_rng rng = test_rng_seeded(seed);
    for (long i = 0; i < n; i++) v[i] = test_rng_normal(&rng);
}

static double norm(const double *x, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

static double dot(const double *x, const double *y, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

#ifdef TS_DOUBLE
#define NORMWISE_TOL 1e-7
#define ELEMENTWISE_CHECK 1
#else
#define ELEMENTWISE_CHECK 0
/* The float forward pass rounds at ~1e-7 per op; divided by the step this
 * leaves ~1e-4 noise in each finite-difference gradient. */
#define NORMWISE_TOL 2e-3
#endif

static void test_hvp_matches_finite_differences(void **state) {
    fixture *fx = *state;
    const long n = fx->net.n_values;
    double *v = zeroed(n), *hv = zeroed(n);
    double *fd = zeroed(n), *grad = zeroed(n);
    ts_real *saved = malloc((size_t)n * sizeof *saved);
    assert_non_null(v && hv && fd && grad && saved);
    random_direction(n, 77, v);
    hessian_vector_product(fx, v, hv);

    /* The same stencil as the op checks, along v: fd = sum_k c_k grad(theta + s_k h v). */
    memcpy(saved, fx->net.values, (size_t)n * sizeof *saved);
    for (int k = 0; k < GC_STENCIL_POINTS; k++) {
        double offset = GC_STENCIL_OFFSET[k] * GC_STEP;
        for (long i = 0; i < n; i++) fx->net.values[i] = (ts_real)(saved[i] + offset * v[i]);
        flat_gradient(fx, grad);
        /* gc_stencil is linear in its values: apply it to a one-hot set. */
        double unit[4] = {0};
        unit[k] = 1;
        double weight = gc_stencil(unit);
        for (long i = 0; i < n; i++) fd[i] += weight * grad[i];
    }
    memcpy(fx->net.values, saved, (size_t)n * sizeof *saved);

    /* grad is free now: reuse it for the difference. */
    for (long i = 0; i < n; i++) grad[i] = hv[i] - fd[i];
    double normwise = norm(grad, n) / norm(fd, n);
    print_message("parameters %ld, |Hv| %.6g, normwise relative error %.3g\n", n, norm(hv, n),
                  normwise);
    for (int p = 0; p < TINY_NET_N_PARAMS; p++) {
        long off = fx->net.offset[p], count = fx->params[p]->numel, worst;
        double block = norm(grad + off, count) / norm(fd + off, count);
        double e = gc_relative_error(hv + off, fd + off, count, 0, &worst);
        if (getenv("GC_VERBOSE"))
            print_message("  %-6s %4ld values: normwise %.3g, worst entry %.3g\n",
                          tiny_net_param_names[p], count, block, e);
        /* Every parameter takes part: a block whose curvature came out as
         * zero would mean the graph lost it. */
        assert_true(norm(hv + off, count) > 0);
        if (!(block <= NORMWISE_TOL))
            fail_msg("Hv for %s: normwise relative error %.3g > %.1g", tiny_net_param_names[p],
                     block, NORMWISE_TOL);
        /* Entry by entry only in double: in float the finite differences of
         * the smallest entries are dominated by the rounding of the forward pass. */
        if (ELEMENTWISE_CHECK && !(e <= GC_TOL_SECOND))
            fail_msg("Hv for %s element %ld: engine %.10g, finite difference %.10g "
                     "(relative error %.3g)",
                     tiny_net_param_names[p], worst, hv[off + worst], fd[off + worst], e);
    }
    if (!(normwise <= NORMWISE_TOL))
        fail_msg("Hv normwise relative error %.3g > %.1g", normwise, NORMWISE_TOL);
    free(v);
    free(hv);
    free(fd);
    free(grad);
    free(saved);
}

/* A Hessian is symmetric: <H v1, v2> = <v1, H v2>. This needs no finite
 * differences, so it holds to rounding. */
static void test_hvp_is_symmetric(void **state) {
    fixture *fx = *state;
    const long n = fx->net.n_values;
    double *v1 = zeroed(n), *v2 = zeroed(n);
    double *h1 = zeroed(n), *h2 = zeroed(n);
    assert_non_null(v1 && v2 && h1 && h2);
    random_direction(n, 1, v1);
    random_direction(n, 2, v2);
    hessian_vector_product(fx, v1, h1);
    hessian_vector_product(fx, v2, h2);
    double a = dot(h1, v2, n), b = dot(v1, h2, n);
    double scale = norm(h1, n) * norm(v2, n) + norm(v1, n) * norm(h2, n);
    print_message("<Hv1, v2> = %.12g, <v1, Hv2> = %.12g\n", a, b);
#ifdef TS_DOUBLE
    assert_true(fabs(a - b) <= 1e-12 * scale);
#else
    assert_true(fabs(a - b) <= 1e-5 * scale);
#endif
    /* Linear in v: H (v1 + v2) = H v1 + H v2. */
    double *sum = zeroed(n), *h_sum = zeroed(n);
    assert_non_null(sum && h_sum);
    for (long i = 0; i < n; i++) sum[i] = v1[i] + v2[i];
    hessian_vector_product(fx, sum, h_sum);
    for (long i = 0; i < n; i++) sum[i] = h_sum[i] - h1[i] - h2[i];
#ifdef TS_DOUBLE
    assert_true(norm(sum, n) <= 1e-12 * norm(h_sum, n));
#else
    assert_true(norm(sum, n) <= 1e-5 * norm(h_sum, n));
#endif
    free(v1);
    free(v2);
    free(h1);
    free(h2);
    free(sum);
    free(h_sum);
}

/* Grad-of-grad leaves nothing behind: after the release the tape and the
 * arena are where they were, and a second product gives the same numbers. */
static void test_hvp_is_repeatable(void **state) {
    fixture *fx = *state;
    const long n = fx->net.n_values;
    double *v = zeroed(n), *h1 = zeroed(n);
    double *h2 = zeroed(n);
    assert_non_null(v && h1 && h2);
    random_direction(n, 3, v);
    long tape_before = fx->ctx.tape_len;
    size_t in_use_before = fx->ctx.arena.in_use;
    hessian_vector_product(fx, v, h1);
    assert_int_equal(fx->ctx.tape_len, tape_before);
    assert_int_equal(fx->ctx.arena.in_use, in_use_before);
    hessian_vector_product(fx, v, h2);
    assert_memory_equal(h1, h2, (size_t)n * sizeof *h1);
    free(v);
    free(h1);
    free(h2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hvp_matches_finite_differences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hvp_is_symmetric, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hvp_is_repeatable, setup, teardown),
    };
    return cmocka_run_group_tests_name("engine Hessian-vector product (" TS_REAL_NAME ")", tests,
                                       NULL, NULL);
}
