/* The Free Transformer (src/models/free_*.c): the binary mapper and its
 * 2^H-way gradient pass-through, the KL with free bits, the whole model's
 * gradient against finite differences, where the latent is injected, that
 * generation never runs the encoder, the honest evaluation, and that a
 * batch split between ranks gives the batch's result.
 *
 * The straight-through estimator is not the derivative of the forward value
 * (that value is a one-hot, locally constant in the logits). It is the exact
 * derivative of Y + G(theta) - G(theta0) with G(theta0) held fixed, so the
 * finite-difference checks replay a draw: same states, detach(G) frozen at
 * its value at the unperturbed point (free_frozen_latent). */
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
#include "models/free_transformer.h"
#include "models/transformer_block.h"
#include "engine_fixture.h"
#include "splitmix.h"

typedef engine_fixture fixture;

static int setup_ctx(void **state) {
    return engine_fixture_setup(state, 1 << 22, 0xF4EE);
}

static int teardown_ctx(void **state) {
    return engine_fixture_teardown(state);
}

static double sigmoid(double x) {
    return 1 / (1 + exp(-x));
}

/* Both losses of gradcheck.h, failing with the worst entry. */
static void expect_gradients(ts_ctx *ctx, const char *name, gc_fn f, const void *args,
                             ts_tensor *x) {
    static const enum gc_loss losses[] = {GC_LINEAR_LOSS, GC_QUADRATIC_LOSS};
    for (int l = 0; l < 2; l++) {
        gc_result r = gc_check(ctx, f, args, 1, &x, losses[l], 77u + (unsigned)l);
        if (r.n_elements == 0) fail_msg("%s: nothing checked", name);
        if (!(r.first_error <= GC_TOL_FIRST))
            fail_msg("%s: first-order relative error %.3g at %s", name, r.first_error,
                     r.first_worst);
        if (!(r.second_error <= GC_TOL_SECOND))
            fail_msg("%s: second-order relative error %.3g at %s", name, r.second_error,
                     r.second_worst);
    }
}

/* Logits whose magnitude is at least `gap`: the KL's |o| and the bits'
 * thresholds stay clear of finite-difference steps. */
static ts_tensor *logits_leaf(fixture *fx, int n, int bits, double gap) {
    ts_tensor *o = gc_leaf(&fx->ctx, &fx->rng, TS_SHAPE(n, bits), -3, 3);
    for (long i = 0; i < o->numel; i++)
        if (fabs(o->data[i]) < gap) o->data[i] = o->data[i] < 0 ? -gap : gap;
    return o;
}

/* ---------------------------------------------------------------- the binary mapper */

static void test_state_probabilities_are_products_of_bit_probabilities(void **state) {
    fixture *fx = *state;
    static const int bit_counts[] = {1, 3, 8};
    for (int c = 0; c < 3; c++) {
        int bits = bit_counts[c], n = 4, states = 1 << bits;
        ts_tensor *o = gc_constant(&fx->ctx, &fx->rng, TS_SHAPE(n, bits), -4, 4);
        ts_tensor *g = free_state_probabilities(&fx->ctx, o);
        assert_int_equal(g->shape[0], n);
        assert_int_equal(g->shape[1], states);
        for (int r = 0; r < n; r++) {
            double total = 0;
            for (int d = 0; d < states; d++) {
                double expected = 1;
                for (int h = 0; h < bits; h++) {
                    double p = sigmoid(o->data[r * bits + h]);
                    expected *= (d >> h) & 1 ? p : 1 - p;
                }
                double got = g->data[(long)r * states + d];
                if (fabs(got - expected) > 1e-5 * fmax(expected, 1e-3))
                    fail_msg("H=%d row %d state %d: G = %.9g, product of bits %.9g", bits, r, d,
                             got, expected);
                total += got;
            }
            assert_true(fabs(total - 1) < 1e-5);
        }
    }
}

static ts_tensor *f_state_probabilities(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    (void)args;
    return free_state_probabilities(ctx, in[0]);
}

static void test_state_probabilities_gradients(void **state) {
    fixture *fx = *state;
    expect_gradients(&fx->ctx, "G, H=3", f_state_probabilities, NULL, logits_leaf(fx, 3, 3, 0));
    expect_gradients(&fx->ctx, "G, H=8", f_state_probabilities, NULL, logits_leaf(fx, 2, 8, 0));
}

static void test_mapper_value_is_the_one_hot_of_the_sampled_bits(void **state) {
    fixture *fx = *state;
    int n = 6, bits = 5;
    ts_tensor *o = gc_constant(&fx->ctx, &fx->rng, TS_SHAPE(n, bits), -2, 2);
    ts_real u[6 * 5];
    test_rng_fill_uniform(&fx->rng, u, n * bits, 0, 1);
    free_latent z = free_binary_mapper(&fx->ctx, o, u, NULL);
    for (int r = 0; r < n; r++) {
        int expected = 0;
        for (int h = 0; h < bits; h++)
            if (u[r * bits + h] < sigmoid(o->data[r * bits + h])) expected |= 1 << h;
        assert_int_equal(z.states[r], expected);
        for (int d = 0; d < 1 << bits; d++) /* exactly one-hot: G - G cancels */
            assert_true(z.z->data[(long)r * (1 << bits) + d] == (d == expected ? 1 : 0));
    }
}

static void test_mapper_samples_bits_with_their_probabilities(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 22));
    enum { N = 40000, BITS = 2 };
    static const ts_real row[BITS] = {-1.0, 2.0};
    ts_tensor *o = ts_new(&ctx, TS_SHAPE(N, BITS));
    ts_real *u = malloc(sizeof(ts_real) * N * BITS);
    assert_non_null(u);
    ts_rng rng;
    ts_rng_seed(&rng, 5);
    for (long i = 0; i < (long)N * BITS; i++) {
        o->data[i] = row[i % BITS];
        u[i] = (ts_real)ts_rng_uniform(&rng);
    }
    free_latent z = free_binary_mapper(&ctx, o, u, NULL);
    long count[1 << BITS] = {0};
    for (long r = 0; r < N; r++) count[z.states[r]]++;
    for (int d = 0; d < 1 << BITS; d++) {
        double p = z.g->data[d]; /* every row has the same G */
        double sd = sqrt(N * p * (1 - p));
        if (fabs(count[d] - N * p) > 5 * sd)
            fail_msg("state %d drawn %ld times in %d, expected %.1f +- %.1f", d, count[d], N, N * p,
                     sd);
    }
    free(u);
    ts_ctx_free(&ctx);
}

typedef struct mapper_args {
    const ts_real *uniforms;
    const free_frozen_latent *replay;
} mapper_args;

static ts_tensor *f_mapper(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    const mapper_args *a = args;
    return free_binary_mapper(ctx, in[0], a->uniforms, a->replay).z;
}

/* The pass-through gradient is G's (the full 2^H-way vector), checked two
 * ways: bit for bit against the gradient of G itself, and against finite
 * differences of Y + G(o) - G(o0). */
static void test_mapper_gradient_is_the_full_probability_vector_gradient(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    int n = 3, bits = 4, states = 1 << bits;
    ts_tensor *o = logits_leaf(fx, n, bits, 0);
    ts_real u[3 * 4];
    test_rng_fill_uniform(&fx->rng, u, n * bits, 0, 1);
    ts_tensor *w = gc_constant(ctx, &fx->rng, TS_SHAPE(n, states), -1, 1);
    free_latent z = free_binary_mapper(ctx, o, u, NULL);
    ts_tensor *via_z, *via_g;
    ts_tensor *lz = ts_sum_all(ctx, ts_mul(ctx, w, z.z));
    ts_grad(ctx, 1, &lz, NULL, 1, &o, &via_z, false);
    ts_tensor *lg = ts_sum_all(ctx, ts_mul(ctx, w, free_state_probabilities(ctx, o)));
    ts_grad(ctx, 1, &lg, NULL, 1, &o, &via_g, false);
    double norm = 0;
    for (long i = 0; i < o->numel; i++) {
        assert_true(via_z->data[i] == via_g->data[i]);
        norm += fabs(via_z->data[i]);
    }
    assert_true(norm > 0); /* a per-bit or zero estimator would not match G's gradient */

    int32_t states_copy[3];
    ts_real g_copy[3 * 16];
    memcpy(states_copy, z.states, sizeof states_copy);
    memcpy(g_copy, z.g->data, sizeof g_copy);
    free_frozen_latent replay = {states_copy, g_copy};
    expect_gradients(ctx, "binary mapper (replayed draw)", f_mapper, &(mapper_args){u, &replay}, o);
}

/* ---------------------------------------------------------------- KL and free bits */

static void test_kl_matches_the_formula_and_stays_finite(void **state) {
    fixture *fx = *state;
    int bits = 3;
    static const ts_real values[] = {0.0,  0.0, 0.0,  1.5, -0.3, 2.0, -4.0, 7.0,
                                     0.01, 200, -200, 90,  -1e4, 1e4, 40};
    int n = (int)(sizeof values / sizeof values[0]) / bits;
    ts_tensor *o = ts_from_array(&fx->ctx, TS_SHAPE(n, bits), values);
    ts_set_requires_grad(&fx->ctx, o, true);
    ts_tensor *kl = free_kl_per_token(&fx->ctx, o);
    assert_int_equal(kl->ndim, 1);
    assert_int_equal(kl->shape[0], n);
    for (int r = 0; r < n; r++) {
        double expected = 0;
        for (int h = 0; h < bits; h++) {
            double x = values[r * bits + h], p = sigmoid(x);
            double plogp = p > 0 ? p * log(p) : 0, qlogq = p < 1 ? (1 - p) * log(1 - p) : 0;
            expected += log(2.0) + plogp + qlogq;
        }
        if (!(fabs(kl->data[r] - expected) < 1e-5))
            fail_msg("row %d: KL %.9g, formula %.9g", r, (double)kl->data[r], expected);
    }
    assert_true(fabs(kl->data[0]) < 1e-6);                   /* o = 0: the prior itself */
    assert_true(fabs(kl->data[4] - bits * log(2.0)) < 1e-6); /* certain bits: H log 2 */
    ts_tensor *grad;
    ts_tensor *total = ts_sum_all(&fx->ctx, kl);
    ts_grad(&fx->ctx, 1, &total, NULL, 1, &o, &grad, false);
    for (long i = 0; i < grad->numel; i++) assert_true(isfinite(grad->data[i]));
    assert_true(fabs(grad->data[0]) < 1e-12); /* the KL is flat at the prior */
}

static ts_tensor *f_kl(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    (void)args;
    return free_kl_per_token(ctx, in[0]);
}

static void test_kl_gradients(void **state) {
    fixture *fx = *state;
    expect_gradients(&fx->ctx, "KL per token", f_kl, NULL, logits_leaf(fx, 4, 5, 0.1));
}

static ts_tensor *f_penalty(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return free_bits_penalty(ctx, in[0], *(const double *)args);
}

static ts_tensor *f_penalty_of_logits(ts_ctx *ctx, ts_tensor *const *in, const void *args) {
    return free_bits_penalty(ctx, free_kl_per_token(ctx, in[0]), *(const double *)args);
}

/* The free-bits mean of many nearly equal KLs: summed in float, 4096 terms
 * near 0.3 drift by ~1e-6 relative; accumulated in double, the only error
 * left is the final rounding to ts_real (~1e-7 in float). */
static void test_free_bits_mean_accumulates_in_double(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    enum { N = 4096 };
    ts_tensor *kl = ts_new(ctx, TS_SHAPE(N));
    double exact = 0;
    for (int i = 0; i < N; i++) {
        kl->data[i] = (ts_real)(0.3 + 1e-6 * (i % 5));
        exact += kl->data[i]; /* kappa 0: every term is its KL, exactly */
    }
    exact /= N;
    ts_tensor *penalty = free_bits_penalty(ctx, kl, 0.0);
    assert_true(fabs(penalty->data[0] - exact) / exact < 2e-7);
}

static void test_free_bits_penalty(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    double kappa = 0.7;
    static const ts_real values[] = {0.1, 0.5, 0.9, 1.4, 2.0, 0.3};
    ts_tensor *kl = ts_from_array(ctx, TS_SHAPE(6), values);
    ts_set_requires_grad(ctx, kl, true);
    ts_tensor *penalty = free_bits_penalty(ctx, kl, kappa);
    double expected = ((0.9 - 0.7) + (1.4 - 0.7) + (2.0 - 0.7)) / 6;
    assert_true(fabs(penalty->data[0] - expected) < 1e-6);
    ts_tensor *grad;
    ts_grad(ctx, 1, &penalty, NULL, 1, &kl, &grad, false);
    for (int i = 0; i < 6; i++) /* below kappa a token's KL is free */
        assert_true(fabs(grad->data[i] - (values[i] > kappa ? 1.0 / 6 : 0)) < 1e-7);
    expect_gradients(ctx, "free bits of a KL vector", f_penalty, &kappa, kl);

    /* Through the KL: kappa halfway between two tokens' KLs, so that some
     * tokens are free and some are not, away from the kink. */
    ts_tensor *o = logits_leaf(fx, 6, 3, 0.1);
    ts_tensor *kls = free_kl_per_token(ctx, o);
    double sorted[6];
    for (int i = 0; i < 6; i++) sorted[i] = kls->data[i];
    for (int i = 0; i < 6; i++)
        for (int j = i + 1; j < 6; j++)
            if (sorted[j] < sorted[i]) {
                double t = sorted[i];
                sorted[i] = sorted[j];
                sorted[j] = t;
            }
    double mid = 0.5 * (sorted[2] + sorted[3]);
    assert_true(sorted[3] - sorted[2] > 0.02);
    expect_gradients(ctx, "free bits of the encoder logits", f_penalty_of_logits, &mid, o);
}

/* ---------------------------------------------------------------- the model */

enum { BATCH = 2, SEQ = 6, VOCAB = 11, BITS = 3 };

static ts_model_config tiny_config(void) {
    ts_model_config c = {.vocab_size = VOCAB,
                         .context = SEQ,
                         .depth = 2,
                         .width = 8,
                         .heads = 2,
                         .ffn_mult = 1.5,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000};
    strcpy(c.arch, "free");
    c.free =
        (ts_free_config){.latent_bits = BITS, .kappa = 0, .eval_samples = 1, .eval_posterior = 1};
    strcpy(c.free.injection, "before_norm");
    return c;
}

typedef struct model_fixture {
    ts_model *model;
    ts_ctx ctx;
    int32_t tokens[BATCH * (SEQ + 1)];
    ts_batch batch;
    int32_t states[BATCH * SEQ];
    ts_real g[BATCH * SEQ << BITS];
    free_frozen_latent replay;
} model_fixture;

static ts_model *make_model(const ts_model_config *config, uint64_t seed) {
    char err[256];
    ts_model *model = ts_model_create(config, err, sizeof err);
    if (!model) fail_msg("%s", err);
    ts_model_init_params(model, seed);
    return model;
}

/* A tiny model and batch; kappa is then put between two tokens' KLs so the
 * free bits leave some tokens free and charge others. */
static model_fixture *new_model_fixture(const ts_model_config *config) {
    model_fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->model = make_model(config, 7);
    assert_true(ts_ctx_init(&f->ctx, 1 << 22));
    ts_ctx_set_error_handler(&f->ctx, fail_test_on_engine_error, NULL);
    ts_model_bind(f->model, &f->ctx);
    ts_rng rng;
    ts_rng_seed(&rng, 3);
    for (int i = 0; i < BATCH * (SEQ + 1); i++) f->tokens[i] = (int32_t)ts_rng_below(&rng, VOCAB);
    f->batch = (ts_batch){.tokens = f->tokens,
                          .batch = BATCH,
                          .seq = SEQ,
                          .mode = TS_MODE_TRAIN,
                          .seed = 9,
                          .step = 4,
                          .first_index = 0};
    f->replay = (free_frozen_latent){f->states, f->g};
    return f;
}

static void free_model_fixture(model_fixture *f) {
    ts_ctx_free(&f->ctx);
    ts_model_destroy(f->model);
    free(f);
}

static double replayed_loss(model_fixture *f) {
    ts_mark mark = ts_get_mark(&f->ctx);
    bool recording = ts_set_grad_enabled(&f->ctx, false);
    double loss = free_training_loss(f->model, &f->ctx, &f->batch, NULL, NULL, &f->replay)->data[0];
    ts_set_grad_enabled(&f->ctx, recording);
    ts_release(&f->ctx, mark);
    return loss;
}

static void place_kappa_between_token_kls(model_fixture *f) {
    ts_mark mark = ts_get_mark(&f->ctx);
    int32_t inputs[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) inputs[b * SEQ + t] = f->tokens[b * (SEQ + 1) + t];
    ts_tensor *x = free_first_half(f->model, &f->ctx, inputs, BATCH, SEQ);
    ts_tensor *kl = free_kl_per_token(&f->ctx, free_encoder_logits(f->model, &f->ctx, x));
    double best_gap = 0;
    for (long i = 0; i < kl->numel; i++)
        for (long j = 0; j < kl->numel; j++) {
            double lo = kl->data[i], hi = kl->data[j], gap = hi - lo;
            bool closer = true; /* no KL strictly between them */
            for (long k = 0; k < kl->numel; k++) closer &= !(kl->data[k] > lo && kl->data[k] < hi);
            if (gap > best_gap && closer) {
                best_gap = gap;
                f->model->config.free.kappa = 0.5 * (lo + hi);
            }
        }
    assert_true(best_gap > 1e-3);
    ts_release(&f->ctx, mark);
}

/* Which tokens' KLs exceed kappa, as a bit mask, at the current parameters. */
static uint64_t tokens_over_kappa(model_fixture *f) {
    ts_mark mark = ts_get_mark(&f->ctx);
    bool recording = ts_set_grad_enabled(&f->ctx, false);
    int32_t inputs[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) inputs[b * SEQ + t] = f->tokens[b * (SEQ + 1) + t];
    ts_tensor *x = free_first_half(f->model, &f->ctx, inputs, BATCH, SEQ);
    ts_tensor *kl = free_kl_per_token(&f->ctx, free_encoder_logits(f->model, &f->ctx, x));
    uint64_t mask = 0;
    for (long i = 0; i < kl->numel; i++)
        if (kl->data[i] > f->model->config.free.kappa) mask |= (uint64_t)1 << i;
    ts_set_grad_enabled(&f->ctx, recording);
    ts_release(&f->ctx, mark);
    return mask;
}

/* Whether the free-bits indicator changes anywhere on the four-point
 * stencil of step h along direction from saved. */
static bool free_bits_kink_within(model_fixture *f, const ts_real *saved, const ts_real *direction,
                                  double h) {
    ts_model *model = f->model;
    long n = model->table.total;
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    uint64_t at_zero = tokens_over_kappa(f);
    bool crossed = false;
    for (int k = -2; k <= 2 && !crossed; k++) {
        for (long i = 0; i < n; i++) model->params[i] = saved[i] + (ts_real)(k * h) * direction[i];
        crossed = tokens_over_kappa(f) != at_zero;
    }
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    return crossed;
}

/* The analytic gradient of the training loss (the straight-through
 * estimator) against finite differences of the replayed loss. */
static void check_model_gradient(const ts_model_config *config) {
    model_fixture *f = new_model_fixture(config);
    ts_model *model = f->model;
    place_kappa_between_token_kls(f);
    long n = model->table.total;
    memset(model->grads, 0, sizeof(ts_real) * (size_t)n);
    ts_mark mark = ts_get_mark(&f->ctx);
    double stats[TS_MAX_MODEL_STATS];
    ts_tensor *loss = free_training_loss(model, &f->ctx, &f->batch, stats, &f->replay, NULL);
    ts_backward(&f->ctx, loss, NULL);
    ts_release(&f->ctx, mark);
    assert_true(stats[FREE_STAT_KL_PENALTY] > 0);
    ts_real *saved = malloc(sizeof(ts_real) * (size_t)n);
    ts_real *direction = malloc(sizeof(ts_real) * (size_t)n);
    assert_true(saved && direction);
    memcpy(saved, model->params, sizeof(ts_real) * (size_t)n);

    /* Every parameter group receives a gradient, the encoder's included. */
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        double norm = 0;
        for (long j = 0; j < e->numel; j++) norm += fabs(model->grads[e->offset + j]);
        if (!(norm > 0)) fail_msg("no gradient reaches %s", e->name);
    }

#ifdef TS_DOUBLE
    const double step = 1e-5, tolerance = 1e-6, dir_step = 1e-5, dir_tolerance = 1e-7;
    double scale = 0, worst = 0;
    long worst_index = -1;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs(model->grads[i]));
    for (long i = 0; i < n; i++) {
        model->params[i] = saved[i] + (ts_real)step;
        double up = replayed_loss(f);
        model->params[i] = saved[i] - (ts_real)step;
        double down = replayed_loss(f);
        model->params[i] = saved[i];
        double fd = (up - down) / (2 * step);
        double error = fabs(fd - model->grads[i]) / fmax(fabs(fd), 1e-3 * scale);
        if (error > worst) {
            worst = error;
            worst_index = i;
        }
    }
    if (worst > tolerance) {
        const char *name = "?";
        for (int e = 0; e < model->table.count; e++)
            if (worst_index >= model->table.entries[e].offset) name = model->table.entries[e].name;
        fail_msg("parameter %ld (%s): relative error %.3g exceeds %.1g", worst_index, name, worst,
                 tolerance);
    }
#else
    const double dir_step = 1e-2, dir_tolerance = 5e-3;
#endif
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    ts_rng_fill_normal(&rng, direction, n, 0, 1);
    double analytic = 0, h = dir_step;
    for (long i = 0; i < n; i++) analytic += (double)model->grads[i] * direction[i];
    /* A difference quotient across the free-bits kink measures nothing:
     * shrink the step until no token's KL crosses kappa within the stencil. */
    while (free_bits_kink_within(f, saved, direction, h)) {
        h /= 2;
        if (h < dir_step / 64) fail_msg("a token's KL sits on kappa: no usable step");
    }
    /* The four-point stencil: float needs a step large enough to rise above
     * the loss's rounding, and the encoder's sigmoids then curve enough that
     * the two-point stencil's step^2 error shows. */
    double along[4];
    static const double offsets[4] = {-2, -1, 1, 2};
    for (int k = 0; k < 4; k++) {
        for (long i = 0; i < n; i++)
            model->params[i] = saved[i] + (ts_real)(offsets[k] * h) * direction[i];
        along[k] = replayed_loss(f);
    }
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    double fd = (8 * (along[2] - along[1]) - (along[3] - along[0])) / (12 * h);
    double error = fabs(fd - analytic) / fmax(fabs(analytic), 1e-12);
    if (getenv("FREE_VERBOSE"))
        print_message("directional step %g: analytic %.9g, fd %.9g, error %.2e\n", h, analytic, fd,
                      error);
    if (error > dir_tolerance)
        fail_msg("directional derivative %.9g vs finite difference %.9g: relative error %.3g",
                 analytic, fd, error);
    free(saved);
    free(direction);
    free_model_fixture(f);
}

static void test_model_gradient_matches_finite_differences(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    check_model_gradient(&config);
}

static void test_model_gradient_after_norm_injection(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    strcpy(config.free.injection, "after_norm");
    config.depth = 3; /* an odd depth: first half of one block, then two */
    check_model_gradient(&config);
}

/* Logits of the fixture's inputs under given latent states. */
static ts_tensor *logits_with_states(model_fixture *f, const int32_t *states) {
    int32_t inputs[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) inputs[b * SEQ + t] = f->tokens[b * (SEQ + 1) + t];
    ts_tensor *x = free_first_half(f->model, &f->ctx, inputs, BATCH, SEQ);
    return free_second_half(f->model, &f->ctx, x,
                            free_one_hot_states(&f->ctx, states, BATCH * SEQ, BITS));
}

/* Largest |a - b| over positions t of every sequence in [from, to). */
static double logit_change(const ts_tensor *a, const ts_tensor *b, int from, int to) {
    double worst = 0;
    for (int s = 0; s < BATCH; s++)
        for (int t = from; t < to; t++)
            for (int v = 0; v < VOCAB; v++) {
                long i = ((long)s * SEQ + t) * VOCAB + v;
                worst = fmax(worst, fabs(a->data[i] - b->data[i]));
            }
    return worst;
}

static void zero_param(ts_model *model, const char *name) {
    int i = ts_param_table_find(&model->table, name);
    assert_true(i >= 0);
    const ts_param_entry *e = &model->table.entries[i];
    memset(model->params + e->offset, 0, sizeof(ts_real) * (size_t)e->numel);
}

/* The encoder's logits as the spec writes them: its block run on T copies
 * of zeta by the default attention (every query projected), then the
 * readout norm and the readout. */
static ts_tensor *encoder_logits_on_copies(ts_model *m, ts_ctx *ctx, ts_tensor *x) {
    const ts_model_config *c = &m->config;
    tpp_block_params block = free_encoder_block(m);
    static int32_t positions[SEQ];
    for (int t = 0; t < SEQ; t++) positions[t] = t;
    tpp_attention_input in = {.positions = positions,
                              .rope_theta = c->rope_theta,
                              .n_heads = c->heads,
                              .norm_eps = c->norm_eps,
                              .layer = c->depth,
                              .kv_source = x};
    ts_tensor *copies =
        ts_broadcast_to(ctx, ts_model_param(m, "encoder.zeta"), TS_SHAPE(BATCH, SEQ, c->width));
    ts_tensor *y = ts_rmsnorm(ctx, tpp_block_forward(ctx, &block, copies, &in),
                              ts_model_param(m, "encoder.out_norm"), c->norm_eps);
    ts_tensor *logits = ts_linear(ctx, &m->linear, y, ts_model_param(m, "encoder.readout"));
    return ts_reshape(ctx, logits, TS_SHAPE(BATCH * SEQ, BITS));
}

/* The encoder projects zeta once and broadcasts the row: the same logits
 * and gradients (for the input, zeta and wq) as projecting T copies. */
static void test_encoder_projects_zeta_once(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    model_fixture *f = new_model_fixture(&config);
    ts_ctx *ctx = &f->ctx;
    ts_tensor *x = ts_new(ctx, TS_SHAPE(BATCH, SEQ, config.width));
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    for (long i = 0; i < x->numel; i++) x->data[i] = (ts_real)(2 * ts_rng_uniform(&rng) - 1);
    ts_set_requires_grad(ctx, x, true);
    ts_tensor *y[2] = {free_encoder_logits(f->model, ctx, x),
                       encoder_logits_on_copies(f->model, ctx, x)};
    ts_tensor *w = ts_new_like(ctx, y[0]);
    for (long i = 0; i < w->numel; i++) w->data[i] = (ts_real)(2 * ts_rng_uniform(&rng) - 1);
    ts_tensor *wrt[3] = {x, ts_model_param(f->model, "encoder.zeta"),
                         ts_model_param(f->model, "encoder.attention.wq")};
    ts_tensor *grads[2][3];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, 3, wrt, grads[k], false);
#ifdef TS_DOUBLE
    const double tol = 1e-12;
#else
    const double tol = 1e-5;
#endif
    for (int j = -1; j < 3; j++) {
        const ts_tensor *a = j < 0 ? y[0] : grads[0][j], *b = j < 0 ? y[1] : grads[1][j];
        double scale = 0;
        for (long i = 0; i < b->numel; i++) scale = fmax(scale, fabs(b->data[i]));
        assert_true(scale > 0);
        for (long i = 0; i < a->numel; i++)
            if (!(fabs(a->data[i] - b->data[i]) <= tol * scale))
                fail_msg("%s %d, element %ld: %.9g against %.9g on copies",
                         j < 0 ? "logits" : "gradient", j, i, (double)a->data[i],
                         (double)b->data[i]);
    }
    free_model_fixture(f);
}

/* Z reaches the model only through the keys and values of block L/2+1:
 * with that block's key and value projections zeroed, no choice of Z
 * changes any logit; zeroing any other block's leaves Z's effect. And Z_t
 * only reaches positions >= t (causal attention over the keys it feeds). */
static void check_injection(const char *injection, int depth) {
    ts_model_config config = tiny_config();
    config.depth = depth;
    strcpy(config.free.injection, injection);
    model_fixture *f = new_model_fixture(&config);
    ts_model *model = f->model;
    ts_set_grad_enabled(&f->ctx, false);
    int32_t z1[BATCH * SEQ], z2[BATCH * SEQ];
    for (int i = 0; i < BATCH * SEQ; i++) {
        z1[i] = i % (1 << BITS);
        z2[i] = (i * 5 + 3) % (1 << BITS);
    }
    assert_true(logit_change(logits_with_states(f, z1), logits_with_states(f, z2), 0, SEQ) > 1e-3);

    /* Only Z at position 3 differs: positions 0..2 are untouched. */
    int32_t z3[BATCH * SEQ];
    memcpy(z3, z1, sizeof z3);
    for (int s = 0; s < BATCH; s++) z3[s * SEQ + 3] = (z1[s * SEQ + 3] + 1) % (1 << BITS);
    ts_tensor *a = logits_with_states(f, z1), *b = logits_with_states(f, z3);
    assert_true(logit_change(a, b, 0, 3) == 0);
    assert_true(logit_change(a, b, 3, SEQ) > 1e-4);

    ts_real *saved = malloc(sizeof(ts_real) * (size_t)model->table.total);
    assert_non_null(saved);
    memcpy(saved, model->params, sizeof(ts_real) * (size_t)model->table.total);
    int injection_layer = free_injection_layer(&config);
    assert_int_equal(injection_layer, depth / 2);
    for (int l = 0; l < depth; l++) {
        char wk[64], wv[64];
        snprintf(wk, sizeof wk, "layers.%d.attention.wk", l);
        snprintf(wv, sizeof wv, "layers.%d.attention.wv", l);
        zero_param(model, wk);
        zero_param(model, wv);
        double change = logit_change(logits_with_states(f, z1), logits_with_states(f, z2), 0, SEQ);
        if (l == injection_layer && change != 0)
            fail_msg("%s: with block %d's keys and values zeroed Z still moves logits by %g",
                     injection, l, change);
        if (l != injection_layer && !(change > 1e-4))
            fail_msg("%s: zeroing block %d's keys and values removed Z's effect", injection, l);
        memcpy(model->params, saved, sizeof(ts_real) * (size_t)model->table.total);
    }
    free(saved);
    free_model_fixture(f);
}

static void test_injection_touches_only_keys_and_values_of_block_l2_plus_1(void **state) {
    (void)state;
    check_injection("before_norm", 2);
    check_injection("before_norm", 4);
    check_injection("after_norm", 4);
    check_injection("before_norm", 5);
}

/* With a zero post-sampler R = 0 and the decoder is exactly Transformer++
 * with the same backbone parameters. */
static void test_zero_latent_gives_the_transformerpp_backbone(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    config.depth = 4;
    model_fixture *f = new_model_fixture(&config);
    ts_set_grad_enabled(&f->ctx, false);
    zero_param(f->model, "post_sampler");
    ts_model_config base = config;
    strcpy(base.arch, "transformerpp");
    ts_model *tpp = make_model(&base, 1);
    ts_model_bind(tpp, &f->ctx);
    for (int i = 0; i < tpp->table.count; i++) {
        const ts_param_entry *e = &tpp->table.entries[i];
        int j = ts_param_table_find(&f->model->table, e->name);
        assert_true(j >= 0);
        memcpy(tpp->params + e->offset, f->model->params + f->model->table.entries[j].offset,
               sizeof(ts_real) * (size_t)e->numel);
    }
    f->batch.mode = TS_MODE_EVAL;
    double free_loss = f->model->ops->loss(f->model, &f->ctx, &f->batch, NULL)->data[0];
    double tpp_loss = tpp->ops->loss(tpp, &f->ctx, &f->batch, NULL)->data[0];
    assert_true(fabs(free_loss - tpp_loss) < 1e-5 * tpp_loss);
    ts_model_destroy(tpp);
    free_model_fixture(f);
}

/* ---------------------------------------------------------------- generation */

enum { GEN_SEQS = 3, GEN_PROMPT = 2, GEN_LEN = 6 };

static void generate(model_fixture *f, bool prefill, int32_t *states, int32_t *out) {
    int32_t prompt[GEN_SEQS * GEN_PROMPT] = {1, 2, 3, 4, 5, 6};
    ts_real uniforms[GEN_SEQS * GEN_PROMPT * BITS];
    for (int i = 0; i < GEN_SEQS * GEN_PROMPT * BITS; i++)
        uniforms[i] = (ts_real)((i * 7 % 10) / 10.0);
    ts_rng rngs[GEN_SEQS];
    for (int s = 0; s < GEN_SEQS; s++) ts_rng_seed_stream(&rngs[s], 21, (uint64_t)s);
    free_generate_request request = {.prompt = prompt,
                                     .prompt_len = GEN_PROMPT,
                                     .length = GEN_LEN,
                                     .n_seqs = GEN_SEQS,
                                     .states = states,
                                     .prompt_from_encoder = prefill,
                                     .prompt_uniforms = uniforms,
                                     .token_rngs = rngs};
    free_generate(f->model, &f->ctx, &request, out);
    for (int s = 0; s < GEN_SEQS; s++)
        for (int t = 0; t < GEN_LEN; t++) {
            int32_t token = out[s * GEN_LEN + t];
            assert_true(token >= 0 && token < VOCAB);
            if (t < GEN_PROMPT) assert_int_equal(token, prompt[s * GEN_PROMPT + t]);
        }
}

static void test_generation_never_runs_the_encoder(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    model_fixture *f = new_model_fixture(&config);
    ts_model *model = f->model;
    int32_t states[GEN_SEQS * GEN_LEN], out[GEN_SEQS * GEN_LEN], again[GEN_SEQS * GEN_LEN];
    for (int i = 0; i < GEN_SEQS * GEN_LEN; i++) states[i] = (i * 3) % (1 << BITS);
    long runs = free_encoder_runs(model);
    generate(f, false, states, out);
    assert_int_equal(free_encoder_runs(model), runs);

    /* NaN in every encoder parameter: nothing generated can notice. */
    for (int i = 0; i < model->table.count; i++) {
        const ts_param_entry *e = &model->table.entries[i];
        if (strncmp(e->name, "encoder.", 8)) continue;
        for (long j = 0; j < e->numel; j++) model->params[e->offset + j] = NAN;
    }
    generate(f, false, states, again);
    assert_memory_equal(out, again, sizeof out);
    assert_int_equal(free_encoder_runs(model), runs);

    /* Prompt prefill through the encoder: once per call, whatever the length. */
    ts_model_init_params(model, 7);
    generate(f, true, states, again);
    assert_int_equal(free_encoder_runs(model), runs + 1);
    free_model_fixture(f);
}

/* ---------------------------------------------------------------- evaluation */

/* K prior samples per sequence combined by log-mean-exp of the sequence
 * likelihood, recomputed here from the model's pieces. */
static void test_evaluation_uses_the_prior_and_log_mean_exp(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    model_fixture *f = new_model_fixture(&config);
    ts_model *model = f->model;
    ts_set_grad_enabled(&f->ctx, false);
    f->batch.mode = TS_MODE_EVAL;
    f->batch.step = -1;
    enum { K = 5 };
    model->config.free.eval_samples = K;
    model->config.free.eval_posterior = 0;
    long runs = free_encoder_runs(model);
    double stats[TS_MAX_MODEL_STATS];
    double loss = model->ops->loss(model, &f->ctx, &f->batch, stats)->data[0];
    assert_int_equal(free_encoder_runs(model), runs); /* the honest number needs no encoder */
    for (int s = 0; s < FREE_N_STATS; s++) assert_true(isnan(stats[s]));

    int32_t prior[BATCH][K * SEQ], states[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++) free_prior_states(&f->batch, b, K, BITS, prior[b]);
    double ll[K][BATCH] = {{0}};
    for (int k = 0; k < K; k++) {
        for (int b = 0; b < BATCH; b++)
            memcpy(states + b * SEQ, prior[b] + k * SEQ, sizeof(int32_t) * SEQ);
        ts_tensor *logits = logits_with_states(f, states);
        for (int b = 0; b < BATCH; b++)
            for (int t = 0; t < SEQ; t++) {
                const ts_real *row = logits->data + ((long)b * SEQ + t) * VOCAB;
                double sum = 0;
                for (int v = 0; v < VOCAB; v++) sum += exp(row[v]);
                ll[k][b] += row[f->tokens[b * (SEQ + 1) + t + 1]] - log(sum);
            }
    }
    double total = 0, first_sample = 0;
    for (int b = 0; b < BATCH; b++) {
        double mean = 0;
        for (int k = 0; k < K; k++) mean += exp(ll[k][b]) / K;
        total += log(mean);
        first_sample += ll[0][b];
    }
    double expected = -total / (BATCH * SEQ);
    if (fabs(loss - expected) > 1e-5 * expected)
        fail_msg("K=%d loss %.9g, log-mean-exp of sequence likelihoods %.9g", K, loss, expected);

    /* K = 1 is the first of those samples: more samples add draws, they do
     * not replace them. */
    model->config.free.eval_samples = 1;
    double one = model->ops->loss(model, &f->ctx, &f->batch, NULL)->data[0];
    assert_true(fabs(one - (-first_sample / (BATCH * SEQ))) < 1e-5 * one);

    /* The posterior number is a statistic, from one encoder run. */
    model->config.free.eval_posterior = 1;
    double prior_again = model->ops->loss(model, &f->ctx, &f->batch, stats)->data[0];
    assert_true(prior_again == one);
    assert_int_equal(free_encoder_runs(model), runs + 1);
    assert_true(isfinite(stats[FREE_STAT_POSTERIOR_LOSS]) && stats[FREE_STAT_KL] > 0);
    assert_true(stats[FREE_STAT_POSTERIOR_LOSS] != one);
    free_model_fixture(f);
}

/* What makes 1 and 2 ranks agree: a batch's loss is the mean of its halves'
 * when each half carries its sequences' global indices. */
static void test_split_batch_gives_the_batch_result(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    model_fixture *f = new_model_fixture(&config);
    ts_model *model = f->model;
    model->config.free.kappa = 0.05;
    model->config.free.eval_samples = 3;
    ts_set_grad_enabled(&f->ctx, false);
    for (int mode = 0; mode < 2; mode++) {
        ts_batch whole = f->batch;
        whole.mode = mode ? TS_MODE_EVAL : TS_MODE_TRAIN;
        ts_batch first = whole, second = whole;
        first.batch = second.batch = 1;
        second.tokens = f->tokens + SEQ + 1;
        second.first_index = 1;
        double stats_whole[TS_MAX_MODEL_STATS], stats_a[TS_MAX_MODEL_STATS],
            stats_b[TS_MAX_MODEL_STATS];
        double l = model->ops->loss(model, &f->ctx, &whole, stats_whole)->data[0];
        double a = model->ops->loss(model, &f->ctx, &first, stats_a)->data[0];
        double b = model->ops->loss(model, &f->ctx, &second, stats_b)->data[0];
        assert_true(fabs(l - 0.5 * (a + b)) < 1e-5 * l);
        for (int s = 0; s < FREE_N_STATS; s++)
            assert_true(fabs(stats_whole[s] - 0.5 * (stats_a[s] + stats_b[s])) <
                        1e-5 * fmax(fabs(stats_whole[s]), 1e-3));
        /* The draws follow the sequence's global index: the same tokens
         * as sequence 1 of the batch draw differently. */
        ts_batch moved = first;
        moved.first_index = 1;
        assert_true(model->ops->loss(model, &f->ctx, &moved, NULL)->data[0] != a);
    }
    free_model_fixture(f);
}

/* ---------------------------------------------------------------- configuration */

static void expect_rejected(ts_model_config config, const char *fragment) {
    char err[256] = "";
    ts_model *model = ts_model_create(&config, err, sizeof err);
    if (model) fail_msg("accepted a configuration that should fail with '%s'", fragment);
    if (!strstr(err, fragment)) fail_msg("message '%s' does not mention '%s'", err, fragment);
}

static void test_configuration_is_validated(void **state) {
    (void)state;
    ts_model_config c = tiny_config();
    c.depth = 1;
    expect_rejected(c, "depth");
    c = tiny_config();
    c.free.latent_bits = 0;
    expect_rejected(c, "latent_bits");
    c.free.latent_bits = 17;
    expect_rejected(c, "latent_bits");
    c = tiny_config();
    c.free.kappa = -0.1;
    expect_rejected(c, "kappa");
    c = tiny_config();
    c.free.eval_samples = 0;
    expect_rejected(c, "eval_samples");
    c = tiny_config();
    strcpy(c.free.injection, "residual");
    expect_rejected(c, "injection");
}

/* The backbone, plus one block, zeta, a norm, the H x D readout and the
 * 2^H x D post-sampler. */
static void test_parameter_count(void **state) {
    (void)state;
    ts_model_config c = tiny_config();
    c.ffn_mult = 1.0;
    c.width = 16;
    c.free.latent_bits = 8;
    ts_model *model = make_model(&c, 1);
    long d = c.width, block = 7 * d * d + 2 * d;
    long expected = c.depth * block + d + block + d + d + 8 * d + 256 * d;
    assert_int_equal(ts_model_non_embedding_params(model), expected);
    assert_int_equal(model->table.total, expected + 2L * c.vocab_size * d);
    ts_model_destroy(model);
}

int main(void) {
    const struct CMUnitTest latent_tests[] = {
        cmocka_unit_test(test_state_probabilities_are_products_of_bit_probabilities),
        cmocka_unit_test(test_state_probabilities_gradients),
        cmocka_unit_test(test_mapper_value_is_the_one_hot_of_the_sampled_bits),
        cmocka_unit_test(test_mapper_samples_bits_with_their_probabilities),
        cmocka_unit_test(test_mapper_gradient_is_the_full_probability_vector_gradient),
        cmocka_unit_test(test_kl_matches_the_formula_and_stays_finite),
        cmocka_unit_test(test_kl_gradients),
        cmocka_unit_test(test_free_bits_penalty),
        cmocka_unit_test(test_free_bits_mean_accumulates_in_double),
    };
    const struct CMUnitTest model_tests[] = {
        cmocka_unit_test(test_model_gradient_matches_finite_differences),
        cmocka_unit_test(test_model_gradient_after_norm_injection),
        cmocka_unit_test(test_injection_touches_only_keys_and_values_of_block_l2_plus_1),
        cmocka_unit_test(test_zero_latent_gives_the_transformerpp_backbone),
        cmocka_unit_test(test_encoder_projects_zeta_once),
        cmocka_unit_test(test_generation_never_runs_the_encoder),
        cmocka_unit_test(test_evaluation_uses_the_prior_and_log_mean_exp),
        cmocka_unit_test(test_split_batch_gives_the_batch_result),
        cmocka_unit_test(test_configuration_is_validated),
        cmocka_unit_test(test_parameter_count),
    };
    return cmocka_run_group_tests(latent_tests, setup_ctx, teardown_ctx) |
           cmocka_run_group_tests(model_tests, NULL, NULL);
}
