/* Finite-difference checks of first- and second-order gradients.
 *
 * For a function f built from engine ops and a fixed random w (and u), the
 * objective is
 *     L(x) = sum(w * f(x))                        GC_LINEAR_LOSS
 *     L(x) = sum(w * f(x)) + 1/2 sum(u * f(x)^2)  GC_QUADRATIC_LOSS
 * and for every input that requires a gradient the check compares
 *   first order:  ts_grad(L, x) with central differences of L, element by element;
 *   second order: ts_grad(h, x), h = <ts_grad(L, x, create_graph), v> for a random v,
 *                 with central differences of <grad L(x +/- eps e_j), v>.
 * The quadratic loss matters for ops that are linear in x: with the linear loss
 * their gradient is a constant, so only the quadratic loss (whose output
 * gradient w + u f(x) depends on x) runs their backward rule's own backward. */
#ifndef TS_TEST_GRADCHECK_H
#define TS_TEST_GRADCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "splitmix.h"

/* Step, stencil and tolerances follow from the element type. A central
 * difference trades truncation error (step^2 for the two-point stencil,
 * step^4 for the four-point one) against rounding error (the rounding of f
 * divided by the step). The objective is accumulated in double in both
 * builds, so the rounding that matters is that of f's own arithmetic.
 *
 * double: the two-point stencil with a step of 1e-5 leaves errors near 1e-9
 *   relative, well inside 1e-6 (first order) and 1e-5 (second order).
 * float: f rounds at ~6e-8 relative per operation. The two-point stencil's
 *   best step (~1e-2) leaves ~1e-2 truncation error on curved functions such
 *   as 1/x, so float uses the four-point stencil
 *       f'(x) ~ (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h
 *   with h = 2^-6 (exact to add to most inputs). Its truncation error is
 *   ~1e-6; the rounding of f over a few dozen outputs, divided by h, leaves
 *   errors up to ~1.5e-3 relative (attention), hence the tolerances. An AMD
 *   EPYC with AVX-512 (the float build tuned for it by -march=native) put the
 *   fused causal attention's third-order case at 3.5e-3: 1e-6 absolute on an
 *   entry of 2.8e-4, just above the floor below, where the composed attention
 *   on the same inputs read 3.2e-4. So the first-order tolerance is 5e-3. A
 *   wrong rule is off by far more: a missing term, sign or factor shows at
 *   O(1), and the double build checks every rule at 1e-6. */
#ifdef TS_DOUBLE
#define GC_STEP 1e-5
#define GC_FOUR_POINT_STENCIL 0
#define GC_TOL_FIRST 1e-6
#define GC_TOL_SECOND 1e-5
#else
#define GC_STEP 0.015625
#define GC_FOUR_POINT_STENCIL 1
#define GC_TOL_FIRST 5e-3
#define GC_TOL_SECOND 5e-3
#endif

/* Entries smaller than GC_FLOOR times the largest one of the same gradient
 * are compared in absolute terms against that scale: their finite difference
 * carries the rounding error of the whole objective, not a relative one. */
#ifdef TS_DOUBLE
#define GC_FLOOR 1e-3
#else
#define GC_FLOOR 3e-2
#endif

#define GC_MAX_INPUTS 8

/* Builds f(inputs) with engine ops; args carries what is not a tensor input. */
typedef ts_tensor *(*gc_fn)(ts_ctx *ctx, ts_tensor *const *inputs, const void *args);

enum gc_loss { GC_LINEAR_LOSS, GC_QUADRATIC_LOSS };

typedef struct gc_result {
    double first_error;       /* worst relative error of dL/dx over all inputs */
    double second_error;      /* worst relative error of d<grad L, v>/dx */
    double plain_vs_recorded; /* grad L without against with create_graph: must be 0 */
    bool second_is_constant;  /* the engine recorded no dependence of grad L on x */
    long n_elements;          /* differentiable input elements checked */
    char first_worst[256];    /* the worst entry, for the failure message */
    char second_worst[256];
    char plain_worst[256];
} gc_result;

/* Checks the gradients of f with respect to every input that requires a
 * gradient. Inputs are perturbed in place and restored exactly. The random
 * w, u and v come from seed. Everything the check allocates is released. */
gc_result gc_check(ts_ctx *ctx, gc_fn f, const void *args, int n_in, ts_tensor *const *inputs,
                   enum gc_loss loss, uint64_t seed);

/* The central difference from values at x + GC_STENCIL_OFFSET[k] * GC_STEP
 * for k < GC_STENCIL_POINTS. */
#define GC_STENCIL_POINTS (GC_FOUR_POINT_STENCIL ? 4 : 2)
extern const double GC_STENCIL_OFFSET[4];
double gc_stencil(const double *values);

/* Worst entry of |a - n| / max(|a|, |n|, GC_FLOOR * scale), where scale is the
 * largest |a|, |n| or extra_scale. *worst receives its index (may be NULL). */
double gc_relative_error(const double *analytic, const double *numeric, long n, double extra_scale,
                         long *worst);

/* A leaf of the given shape that requires a gradient, uniform in [lo, hi). */
ts_tensor *gc_leaf(ts_ctx *ctx, test_rng *rng, int ndim, const int *shape, double lo, double hi);
/* The same without requires_grad (a constant input). */
ts_tensor *gc_constant(ts_ctx *ctx, test_rng *rng, int ndim, const int *shape, double lo,
                       double hi);

#endif
