/* The whole Transformer++ model's parameter gradient against central finite
 * differences of its loss, for every parameter element. In the double build
 * this is tight; in float the step and tolerance follow the type. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model_loss.h"
#include "models/model.h"

/* Per element in double; in float, rounding of the loss swamps a single
 * element's difference quotient, so float checks the derivative along a
 * random direction of all parameters instead (both builds run that one). */
#ifdef TS_DOUBLE
#define STEP 1e-5
#define TOLERANCE 1e-6
#define DIRECTIONAL_STEP 1e-5
#define DIRECTIONAL_TOLERANCE 1e-7
#else
#define DIRECTIONAL_STEP 1e-2
#define DIRECTIONAL_TOLERANCE 5e-3
#endif

enum { BATCH = 2, SEQ = 6 };

static ts_model_config tiny_config(void) {
    ts_model_config c = {.vocab_size = 11,
                         .context = SEQ,
                         .depth = 2,
                         .width = 8,
                         .heads = 2,
                         .ffn_mult = 1.5,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000};
    strcpy(c.arch, "transformerpp");
    return c;
}

typedef struct fixture {
    ts_model *model;
    ts_ctx ctx;
    int32_t tokens[BATCH * (SEQ + 1)];
    ts_batch batch;
} fixture;

/* A tiny model with its analytic gradient of one batch in model->grads. */
static int setup(void **state) {
    static fixture f;
    char err[256];
    ts_model_config config = tiny_config();
    f.model = ts_model_create(&config, err, sizeof err);
    if (!f.model || !ts_ctx_init(&f.ctx, 1 << 20)) return -1;
    ts_model_init_params(f.model, 7);
    ts_model_bind(f.model, &f.ctx);
    ts_rng rng;
    ts_rng_seed(&rng, 3);
    for (int i = 0; i < BATCH * (SEQ + 1); i++) f.tokens[i] = (int32_t)ts_rng_below(&rng, 11);
    f.batch = (ts_batch){.tokens = f.tokens, .batch = BATCH, .seq = SEQ, .mode = TS_MODE_TRAIN};
    ts_mark mark = ts_get_mark(&f.ctx);
    memset(f.model->grads, 0, sizeof(ts_real) * (size_t)f.model->table.total);
    ts_backward(&f.ctx, f.model->ops->loss(f.model, &f.ctx, &f.batch, NULL), NULL);
    ts_release(&f.ctx, mark);
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ts_ctx_free(&f->ctx);
    ts_model_destroy(f->model);
    return 0;
}

static void test_gradient_along_a_random_direction(void **state) {
    fixture *f = *state;
    ts_model *model = f->model;
    long n = model->table.total;
    ts_real saved[4096], direction[4096];
    assert_true(n <= 4096);
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    ts_rng_fill_normal(&rng, direction, n, 0, 1);
    memcpy(saved, model->params, sizeof(ts_real) * (size_t)n);
    double analytic = 0;
    for (long i = 0; i < n; i++) analytic += (double)model->grads[i] * direction[i];
    for (long i = 0; i < n; i++)
        model->params[i] = saved[i] + (ts_real)DIRECTIONAL_STEP * direction[i];
    double up = model_loss_value(model, &f->ctx, &f->batch);
    for (long i = 0; i < n; i++)
        model->params[i] = saved[i] - (ts_real)DIRECTIONAL_STEP * direction[i];
    double down = model_loss_value(model, &f->ctx, &f->batch);
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    double fd = (up - down) / (2 * DIRECTIONAL_STEP);
    double error = fabs(fd - analytic) / fmax(fabs(analytic), 1e-12);
    if (error > DIRECTIONAL_TOLERANCE)
        fail_msg("directional derivative %.9g vs finite difference %.9g: relative error %.3g",
                 analytic, fd, error);
}

#ifdef TS_DOUBLE
static void test_gradient_matches_finite_differences_per_element(void **state) {
    fixture *f = *state;
    ts_model *model = f->model;

    double scale = 0;
    for (long i = 0; i < model->table.total; i++) scale = fmax(scale, fabs(model->grads[i]));
    assert_true(scale > 0);
    double worst = 0;
    long worst_index = -1;
    for (long i = 0; i < model->table.total; i++) {
        ts_real saved = model->params[i];
        model->params[i] = saved + (ts_real)STEP;
        double up = model_loss_value(model, &f->ctx, &f->batch);
        model->params[i] = saved - (ts_real)STEP;
        double down = model_loss_value(model, &f->ctx, &f->batch);
        model->params[i] = saved;
        double fd = (up - down) / (2 * STEP);
        /* Relative to the entry, or to the largest gradient for tiny entries. */
        double denom = fmax(fabs(fd), 1e-3 * scale);
        double error = fabs(fd - model->grads[i]) / denom;
        if (error > worst) {
            worst = error;
            worst_index = i;
        }
    }
    if (worst > TOLERANCE)
        fail_msg("parameter %ld: relative error %.3g exceeds %.1g", worst_index, worst, TOLERANCE);
}
#endif

static void test_unknown_architecture_is_rejected(void **state) {
    (void)state;
    char err[256] = "";
    ts_model_config config = tiny_config();
    strcpy(config.arch, "lstm");
    assert_null(ts_model_create(&config, err, sizeof err));
    assert_non_null(strstr(err, "unknown architecture 'lstm'"));
    config = tiny_config();
    config.heads = 3; /* width 8 is not a multiple of 3 heads */
    assert_null(ts_model_create(&config, err, sizeof err));
    assert_non_null(strstr(err, "heads 3"));
}

static void test_parameter_count_matches_the_spec_formula(void **state) {
    (void)state;
    char err[256];
    ts_model_config config = tiny_config();
    config.ffn_mult = 1.0;
    config.width = 16;
    ts_model *model = ts_model_create(&config, err, sizeof err);
    assert_non_null(model);
    /* 7 D^2 per block with hidden = D, plus two norm vectors; final norm D. */
    long d = config.width, expected = config.depth * (7 * d * d + 2 * d) + d;
    assert_int_equal(ts_model_non_embedding_params(model), expected);
    assert_int_equal(model->table.total, expected + 2L * config.vocab_size * d);
    ts_model_destroy(model);
}

int main(void) {
    const struct CMUnitTest gradient_tests[] = {
        cmocka_unit_test(test_gradient_along_a_random_direction),
#ifdef TS_DOUBLE
        cmocka_unit_test(test_gradient_matches_finite_differences_per_element),
#endif
    };
    const struct CMUnitTest model_tests[] = {
        cmocka_unit_test(test_unknown_architecture_is_rejected),
        cmocka_unit_test(test_parameter_count_matches_the_spec_formula),
    };
    return cmocka_run_group_tests(gradient_tests, setup, teardown) |
           cmocka_run_group_tests(model_tests, NULL, NULL);
}
