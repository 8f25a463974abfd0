/* The Energy-Based Transformer (src/models/ebt*.c):
 * - the efficient two-stream energy equals the spec's masked doubled sequence
 *   built from plain Transformer++ blocks;
 * - the prediction attention sees nothing it must not (perturbation tests on
 *   tokens, predictions and other sequences, energies and their gradients);
 * - the parameter gradient of the training loss equals finite differences of
 *   that loss (double build, per element; float build along a direction):
 *   one step (S1 = S2, the exact loss), and two steps for S1 and S2 against a
 *   reference implementation of the spec's loop in which exactly what each
 *   mode cuts from the graph is held fixed;
 * - inference: NFEs, self-verification never raises the final energy, the
 *   energy trace agrees with the returned loss;
 * - presets, configuration checks, the parameter table, the replay buffer. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/config.h"
#include "models/ebt.h"
#include "models/ebt_internal.h"
#include "models/transformerpp.h"

#ifdef TS_DOUBLE
#define FD_STEP 1e-5
#define FD_TOLERANCE 1e-5
#define SAME_TOLERANCE 1e-12
#define DIRECTIONAL_STEP 1e-5
#define DIRECTIONAL_TOLERANCE 1e-6
#else
#define SAME_TOLERANCE 1e-6
#define DIRECTIONAL_STEP 1e-2
#define DIRECTIONAL_TOLERANCE 3e-3
#endif

enum { VOCAB = 11, SEQ = 4, BATCH = 2, WIDTH = 8, MAX_STEPS = 4 };

static ts_model_config tiny_config(void) {
    ts_model_config c = {.vocab_size = VOCAB,
                         .context = SEQ,
                         .depth = 2,
                         .width = WIDTH,
                         .heads = 2,
                         .ffn_mult = 1.5,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000};
    strcpy(c.arch, "ebt");
    c.ebt = (ts_ebt_config){.steps = 2,
                            .step_size = 2.0,
                            .step_size_learnable = 1,
                            .step_size_lr_mult = 1,
                            .init_scale = 1.0,
                            .infer_samples = 1};
    strcpy(c.ebt.mode, "s1");
    strcpy(c.ebt.loss_on, "mean");
    strcpy(c.ebt.init, "zero");
    return c;
}

static ts_model *make_model(const ts_model_config *config, ts_ctx *ctx, uint64_t seed) {
    char err[256] = "";
    ts_model *model = ts_model_create(config, err, sizeof err);
    if (!model) fail_msg("model creation failed: %s", err);
    ts_model_init_params(model, seed);
    ts_model_bind(model, ctx);
    return model;
}

static ts_real *param_value(ts_model *model, const char *name) {
    int i = ts_param_table_find(&model->table, name);
    assert_true(i >= 0);
    return model->params + model->table.entries[i].offset;
}

static double sum_of_squares(const ts_real *a, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * a[i];
    return s;
}

static void random_tokens(int32_t *tokens, int n, uint64_t seed) {
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) tokens[i] = (int32_t)ts_rng_below(&rng, VOCAB);
}

/* Probabilities [BATCH, SEQ, VOCAB]: the softmax of random logits. */
static ts_tensor *random_predictions(ts_ctx *ctx, uint64_t seed) {
    ts_tensor *logits = ts_new(ctx, TS_SHAPE(BATCH, SEQ, VOCAB));
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    ts_rng_fill_normal(&rng, logits->data, logits->numel, 0, 2);
    return ts_softmax(ctx, logits, NULL);
}

static double max_abs(const ts_real *a, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* ---------------------------------------------------------------- the spec's construction */

/* The spec's sequence [t_k; x_0..x_{L-1}; e_1..e_L] through unmodified
 * Transformer++ blocks under one (2L+1) x (2L+1) mask: observed rows causal,
 * prediction r sees columns 0..r+1 and itself (column L+1+r); RoPE positions
 * 0..L, then r+2. */
static ts_tensor *doubled_sequence_energy(ts_model *model, ts_ctx *ctx, const int32_t *inputs,
                                          ts_tensor *p, int landscape) {
    int b = BATCH, l = SEQ, d = WIDTH, n = 2 * l + 1;
    ts_tensor *tokens =
        ts_reshape(ctx, ts_embedding(ctx, ts_model_param(model, "embed"), inputs, (long)b * l),
                   TS_SHAPE(b, l, d));
    int32_t index = landscape;
    ts_tensor *time = ts_embedding(ctx, ts_model_param(model, "time_embed"), &index, 1);
    time = ts_broadcast_to(ctx, ts_reshape(ctx, time, TS_SHAPE(1, 1, d)), TS_SHAPE(b, 1, d));
    ts_tensor *predictions =
        ts_matmul(ctx, p, ts_model_param(model, "vocab_to_embed"), false, true);
    ts_tensor *x = ts_concat(ctx, 3, (ts_tensor *[]){time, tokens, predictions}, 1);
    int32_t positions[2 * SEQ + 1];
    for (int i = 0; i <= l; i++) positions[i] = i;
    for (int r = 0; r < l; r++) positions[l + 1 + r] = r + 2;
    ts_tensor *mask = ts_new(ctx, TS_SHAPE(n, n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            bool keep = i <= l ? j <= i : (j <= i - l || j == i);
            mask->data[i * n + j] = keep ? 0 : -INFINITY;
        }
    tpp_attention_input in = {.mask = mask,
                              .positions = positions,
                              .rope_theta = 10000,
                              .n_heads = model->config.heads,
                              .norm_eps = 1e-5};
    for (int layer = 0; layer < model->config.depth; layer++) {
        tpp_block_params block = tpp_block(model, layer);
        in.layer = layer;
        x = tpp_block_forward(ctx, &block, x, &in);
    }
    x = ts_rmsnorm(ctx, x, ts_model_param(model, "final_norm"), 1e-5);
    ts_tensor *energy = ts_matmul(ctx, ts_slice(ctx, x, 1, l + 1, l),
                                  ts_model_param(model, "energy_head"), false, true);
    return ts_reshape(ctx, energy, TS_SHAPE(b, l));
}

/* Energies of p and their gradient grad_p sum(E), copied out. */
static void energy_and_gradient(ts_model *model, ts_ctx *ctx, const int32_t *inputs,
                                const ts_real *p_values, int landscape, bool doubled,
                                ts_real *energy_out, ts_real *grad_out) {
    ts_mark mark = ts_get_mark(ctx);
    ts_tensor *p = ts_from_array(ctx, TS_SHAPE(BATCH, SEQ, VOCAB), p_values);
    ts_set_requires_grad(ctx, p, true);
    ts_tensor *energy;
    if (doubled) {
        energy = doubled_sequence_energy(model, ctx, inputs, p, landscape);
    } else {
        ebt_context *context = ebt_context_new(model, ctx, inputs, BATCH, SEQ);
        energy = ebt_energy(ctx, context, p, landscape);
    }
    memcpy(energy_out, energy->data, sizeof(ts_real) * BATCH * SEQ);
    if (grad_out) {
        ts_tensor *total = ts_sum_all(ctx, energy), *grad;
        ts_grad(ctx, 1, &total, NULL, 1, &p, &grad, false);
        memcpy(grad_out, grad->data, sizeof(ts_real) * BATCH * SEQ * VOCAB);
    }
    ts_release(ctx, mark);
}

static void test_energy_equals_the_masked_doubled_sequence(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model_config config = tiny_config();
    config.depth = 3;
    ts_model *model = make_model(&config, &ctx, 5);
    int32_t tokens[BATCH * SEQ];
    random_tokens(tokens, BATCH * SEQ, 8);
    ts_real p[BATCH * SEQ * VOCAB];
    ts_mark mark = ts_get_mark(&ctx);
    memcpy(p, random_predictions(&ctx, 9)->data, sizeof p);
    ts_release(&ctx, mark);
    for (int landscape = 0; landscape < 2; landscape++) {
        ts_real e_fast[BATCH * SEQ], e_ref[BATCH * SEQ];
        ts_real g_fast[BATCH * SEQ * VOCAB], g_ref[BATCH * SEQ * VOCAB];
        energy_and_gradient(model, &ctx, tokens, p, landscape, false, e_fast, g_fast);
        energy_and_gradient(model, &ctx, tokens, p, landscape, true, e_ref, g_ref);
        double scale_e = max_abs(e_ref, BATCH * SEQ), scale_g = max_abs(g_ref, BATCH * SEQ * VOCAB);
        assert_true(scale_e > 0 && scale_g > 0);
        for (int i = 0; i < BATCH * SEQ; i++)
            if (fabs(e_fast[i] - e_ref[i]) > 1e3 * SAME_TOLERANCE * scale_e)
                fail_msg("landscape %d energy %d: %.9g vs doubled sequence %.9g", landscape, i,
                         e_fast[i], e_ref[i]);
        for (int i = 0; i < BATCH * SEQ * VOCAB; i++)
            if (fabs(g_fast[i] - g_ref[i]) > 1e3 * SAME_TOLERANCE * scale_g)
                fail_msg("landscape %d gradient %d: %.9g vs doubled sequence %.9g", landscape, i,
                         g_fast[i], g_ref[i]);
    }
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

/* ---------------------------------------------------------------- what predictions see */

typedef struct observation {
    ts_real energy[BATCH * SEQ];
    ts_real grad[BATCH * SEQ * VOCAB];
} observation;

static void observe(ts_model *model, ts_ctx *ctx, const int32_t *tokens, const ts_real *p,
                    int landscape, observation *out) {
    energy_and_gradient(model, ctx, tokens, p, landscape, false, out->energy, out->grad);
}

static bool position_changed(const observation *a, const observation *b, int row, int r,
                             double scale_e, double scale_g) {
    int i = row * SEQ + r;
    bool changed = fabs(a->energy[i] - b->energy[i]) > SAME_TOLERANCE * scale_e;
    for (int v = 0; v < VOCAB; v++)
        changed |= fabs(a->grad[i * VOCAB + v] - b->grad[i * VOCAB + v]) > SAME_TOLERANCE * scale_g;
    return changed;
}

static void test_prediction_attention_sees_nothing_it_must_not(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model_config config = tiny_config();
    ts_model *model = make_model(&config, &ctx, 5);
    int32_t tokens[BATCH * SEQ];
    random_tokens(tokens, BATCH * SEQ, 8);
    ts_real p[BATCH * SEQ * VOCAB];
    ts_mark mark = ts_get_mark(&ctx);
    memcpy(p, random_predictions(&ctx, 9)->data, sizeof p);
    ts_release(&ctx, mark);
    observation base, other;
    observe(model, &ctx, tokens, p, 0, &base);
    double se = max_abs(base.energy, BATCH * SEQ), sg = max_abs(base.grad, BATCH * SEQ * VOCAB);

    /* Input token j of row 1: prediction r of that row sees x_0..x_r, so
     * exactly the positions r >= j may change (x_{r+1}, the token that
     * prediction r predicts, must be invisible to it); row 0 never. */
    for (int j = 0; j < SEQ; j++) {
        int32_t changed_tokens[BATCH * SEQ];
        memcpy(changed_tokens, tokens, sizeof tokens);
        changed_tokens[SEQ + j] = (tokens[SEQ + j] + 3) % VOCAB;
        observe(model, &ctx, changed_tokens, p, 0, &other);
        for (int r = 0; r < SEQ; r++) {
            if (position_changed(&base, &other, 0, r, se, sg))
                fail_msg("token %d of sequence 1 changed sequence 0's position %d", j, r);
            bool changed = position_changed(&base, &other, 1, r, se, sg);
            if (r < j && changed)
                fail_msg("prediction %d sees token %d (only tokens 0..%d are its context)", r, j,
                         r);
            if (r == j && !changed) fail_msg("prediction %d is blind to its own token %d", r, j);
        }
    }
    /* Prediction s of row 1: only its own energy and gradient may change. */
    for (int s = 0; s < SEQ; s++) {
        ts_real changed_p[BATCH * SEQ * VOCAB];
        memcpy(changed_p, p, sizeof p);
        ts_real *row = changed_p + (SEQ + s) * VOCAB;
        ts_real first = row[0];
        for (int v = 0; v + 1 < VOCAB; v++) row[v] = row[v + 1]; /* still a distribution */
        row[VOCAB - 1] = first;
        observe(model, &ctx, tokens, changed_p, 0, &other);
        for (int b = 0; b < BATCH; b++)
            for (int r = 0; r < SEQ; r++) {
                bool changed = position_changed(&base, &other, b, r, se, sg);
                bool own = b == 1 && r == s;
                if (changed && !own)
                    fail_msg("prediction %d of sequence 1 changed sequence %d's position %d", s, b,
                             r);
                if (!changed && own) fail_msg("prediction %d does not see itself", s);
            }
    }
    /* The time token is visible to every prediction. */
    observe(model, &ctx, tokens, p, 1, &other);
    for (int i = 0; i < BATCH * SEQ; i++)
        if (!position_changed(&base, &other, i / SEQ, i % SEQ, se, sg))
            fail_msg("position %d ignores the landscape's time token", i);
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

/* ---------------------------------------------------------------- gradients of the loss */

typedef struct grad_fixture {
    ts_model *model;
    ts_ctx ctx;
    int32_t tokens[BATCH * (SEQ + 1)];
    ts_batch batch;
} grad_fixture;

static void grad_fixture_init(grad_fixture *f, const ts_model_config *config) {
    assert_true(ts_ctx_init(&f->ctx, 1 << 20));
    f->model = make_model(config, &f->ctx, 7);
    random_tokens(f->tokens, BATCH * (SEQ + 1), 3);
    f->batch = (ts_batch){
        .tokens = f->tokens, .batch = BATCH, .seq = SEQ, .mode = TS_MODE_TRAIN, .seed = 1};
}

static void grad_fixture_free(grad_fixture *f) {
    ts_model_destroy(f->model);
    ts_ctx_free(&f->ctx);
}

/* The model's training loss (recorded: it takes gradients inside). */
static double model_loss(grad_fixture *f) {
    ts_mark mark = ts_get_mark(&f->ctx);
    double loss = f->model->ops->loss(f->model, &f->ctx, &f->batch, NULL)->data[0];
    ts_release(&f->ctx, mark);
    return loss;
}

static void analytic_gradient(grad_fixture *f) {
    memset(f->model->grads, 0, sizeof(ts_real) * (size_t)f->model->table.total);
    ts_mark mark = ts_get_mark(&f->ctx);
    ts_backward(&f->ctx, f->model->ops->loss(f->model, &f->ctx, &f->batch, NULL), NULL);
    ts_release(&f->ctx, mark);
}

/* The spec's loop, written independently of ebt.c, from the zero initial
 * condition without noise. What a mode cuts from the graph is recorded on
 * the first call (`record`) and held fixed afterwards, so finite differences
 * of this function are the gradient the mode defines:
 *   S1: y is detached at every step -> the start y_t of every step is fixed;
 *   S2 (truncated): only the last step's grad_p E is differentiated -> the
 *       earlier grad_p E are fixed, while y (and alpha in it) stays live. */
typedef struct frozen {
    ts_real y_start[MAX_STEPS][BATCH * SEQ * VOCAB];
    ts_real grad[MAX_STEPS][BATCH * SEQ * VOCAB];
} frozen;

static double reference_loss(grad_fixture *f, frozen *fixed, bool record) {
    const ts_model_config *c = &f->model->config;
    bool s1 = !strcmp(c->ebt.mode, "s1"), mean = !strcmp(c->ebt.loss_on, "mean");
    int steps = c->ebt.steps;
    long n = BATCH * SEQ * VOCAB;
    ts_ctx *ctx = &f->ctx;
    ts_mark mark = ts_get_mark(ctx);
    int32_t inputs[BATCH * SEQ], targets[BATCH * SEQ];
    for (int b = 0; b < BATCH; b++)
        for (int t = 0; t < SEQ; t++) {
            inputs[b * SEQ + t] = f->tokens[b * (SEQ + 1) + t];
            targets[b * SEQ + t] = f->tokens[b * (SEQ + 1) + t + 1];
        }
    double alpha = *param_value(f->model, "step_size");
    ebt_context *context = ebt_context_new(f->model, ctx, inputs, BATCH, SEQ);
    ts_tensor *y = ts_zeros(ctx, TS_SHAPE(BATCH, SEQ, VOCAB));
    double total = 0;
    int terms = 0;
    for (int t = 0; t < steps; t++) {
        bool last = t == steps - 1;
        if (s1) {
            if (record)
                memcpy(fixed->y_start[t], y->data, sizeof(ts_real) * n);
            else
                y = ts_from_array(ctx, TS_SHAPE(BATCH, SEQ, VOCAB), fixed->y_start[t]);
        }
        ts_tensor *p = ts_softmax(ctx, y, NULL);
        ts_tensor *grad;
        if (!s1 && !last && !record) {
            grad = ts_from_array(ctx, TS_SHAPE(BATCH, SEQ, VOCAB), fixed->grad[t]);
        } else {
            ts_tensor *leaf = ts_from_array(ctx, TS_SHAPE(BATCH, SEQ, VOCAB), p->data);
            ts_set_requires_grad(ctx, leaf, true);
            int landscape = t < ebt_landscapes(c) ? t : ebt_landscapes(c) - 1;
            ts_tensor *energy = ts_sum_all(ctx, ebt_energy(ctx, context, leaf, landscape));
            ts_grad(ctx, 1, &energy, NULL, 1, &leaf, &grad, false);
            if (record) memcpy(fixed->grad[t], grad->data, sizeof(ts_real) * n);
        }
        y = ts_sub(ctx, p, ts_scale(ctx, grad, alpha));
        if (mean || last) {
            total += ts_cross_entropy(ctx, y, targets, -1)->data[0];
            terms++;
        }
    }
    ts_release(ctx, mark);
    return total / terms;
}

typedef double (*loss_fn)(grad_fixture *f, frozen *fixed);
static double frozen_reference(grad_fixture *f, frozen *fixed) {
    return reference_loss(f, fixed, false);
}
static double the_model(grad_fixture *f, frozen *fixed) {
    (void)fixed;
    return model_loss(f);
}

#ifdef TS_DOUBLE
static double difference_quotient(grad_fixture *f, loss_fn loss, frozen *fixed, long i,
                                  double step) {
    ts_real saved = f->model->params[i];
    f->model->params[i] = saved + (ts_real)step;
    double up = loss(f, fixed);
    f->model->params[i] = saved - (ts_real)step;
    double down = loss(f, fixed);
    f->model->params[i] = saved;
    return (up - down) / (2 * step);
}
#endif

/* Compares the model's back-propagated gradient with finite differences of
 * `loss`: per element in the double build, along a random direction in
 * both. */
static void check_gradient(const ts_model_config *config, loss_fn loss, const char *what) {
    grad_fixture f;
    grad_fixture_init(&f, config);
    frozen *fixed = calloc(1, sizeof *fixed);
    assert_non_null(fixed);
    double reference_value = reference_loss(&f, fixed, true), value = model_loss(&f);
    if (fabs(reference_value - value) > 1e3 * SAME_TOLERANCE * fabs(value))
        fail_msg("%s: the model's loss %.12g differs from the spec's loop %.12g", what, value,
                 reference_value);
    analytic_gradient(&f);
    ts_model *model = f.model;
    long n = model->table.total;
    double alpha_grad = model->grads[param_value(model, "step_size") - model->params];
    assert_true(fabs(alpha_grad) > 0); /* the step size is trained through the step */

    ts_real *direction = malloc(sizeof(ts_real) * (size_t)n);
    ts_real *saved = malloc(sizeof(ts_real) * (size_t)n);
    assert_non_null(direction);
    assert_non_null(saved);
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    ts_rng_fill_normal(&rng, direction, n, 0, 1);
    /* A unit direction: the loss is steep (alpha multiplies grad_p E), so a
     * step of every parameter by O(1) * step would leave the linear range. */
    double norm = sqrt(sum_of_squares(direction, n));
    for (long i = 0; i < n; i++) direction[i] = (ts_real)(direction[i] / norm);
    memcpy(saved, model->params, sizeof(ts_real) * (size_t)n);
    double analytic = 0;
    for (long i = 0; i < n; i++) analytic += (double)model->grads[i] * direction[i];
    /* Four-point central difference: truncation error O(step^4). */
    double values[4];
    static const double offsets[4] = {-2, -1, 1, 2};
    for (int k = 0; k < 4; k++) {
        for (long i = 0; i < n; i++)
            model->params[i] = saved[i] + (ts_real)(offsets[k] * DIRECTIONAL_STEP) * direction[i];
        values[k] = loss(&f, fixed);
    }
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    double fd = (8 * (values[2] - values[1]) - (values[3] - values[0])) / (12 * DIRECTIONAL_STEP);
    double error = fabs(fd - analytic) / fmax(fabs(analytic), 1e-12);
    printf("%s: directional derivative %.9g, finite difference %.9g (relative error %.2g)\n", what,
           analytic, fd, error);
    if (error > DIRECTIONAL_TOLERANCE)
        fail_msg("%s: directional derivative %.9g vs finite difference %.9g: relative error %.3g",
                 what, analytic, fd, error);
#ifdef TS_DOUBLE
    double scale = max_abs(model->grads, n), worst = 0;
    long worst_index = -1;
    for (long i = 0; i < n; i++) {
        double quotient = difference_quotient(&f, loss, fixed, i, FD_STEP);
        double e = fabs(quotient - model->grads[i]) / fmax(fabs(quotient), 1e-3 * scale);
        if (e > worst) {
            worst = e;
            worst_index = i;
        }
    }
    printf("%s: %ld parameters, worst relative error %.2g\n", what, n, worst);
    if (worst > FD_TOLERANCE)
        fail_msg("%s: parameter %ld: relative error %.3g exceeds %.1g", what, worst_index, worst,
                 FD_TOLERANCE);
#endif
    free(direction);
    free(saved);
    free(fixed);
    grad_fixture_free(&f);
}

static void test_one_step_gradient_is_exact(void **state) {
    (void)state;
    /* With one step nothing is cut: S1 and S2 both differentiate the true loss. */
    for (int s2 = 0; s2 < 2; s2++) {
        ts_model_config config = tiny_config();
        config.ebt.steps = 1;
        strcpy(config.ebt.mode, s2 ? "s2" : "s1");
        check_gradient(&config, the_model, s2 ? "one step, S2" : "one step, S1");
    }
}

static void test_s1_gradient_through_two_detached_steps(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    check_gradient(&config, frozen_reference, "S1, two steps, mean loss");
}

static void test_s2_gradient_through_two_truncated_steps(void **state) {
    (void)state;
    ts_model_config config = tiny_config();
    strcpy(config.ebt.mode, "s2");
    strcpy(config.ebt.loss_on, "final");
    config.ebt.landscapes = 1;
    check_gradient(&config, frozen_reference, "S2, two steps, final loss, one landscape");
    config.ebt.steps = 3;
    config.ebt.landscapes = 0;
    check_gradient(&config, frozen_reference, "S2, three steps, final loss, three landscapes");
}

/* ---------------------------------------------------------------- inference */

typedef struct inference_result {
    double loss, stats[TS_MAX_MODEL_STATS];
} inference_result;

static inference_result infer(ts_model *model, ts_ctx *ctx, const ts_batch *batch) {
    inference_result r = {0};
    ts_mark mark = ts_get_mark(ctx);
    bool recording = ts_set_grad_enabled(ctx, false);
    r.loss = model->ops->loss(model, ctx, batch, r.stats)->data[0];
    assert_false(ctx->grad_enabled); /* left as the evaluator set it */
    ts_set_grad_enabled(ctx, recording);
    ts_release(ctx, mark);
    return r;
}

static int stat_index(const ts_model *model, const char *name) {
    for (int k = 0; k < model->ops->n_stats; k++)
        if (!strcmp(model->ops->stats[k].name, name)) return k;
    fail_msg("no statistic '%s'", name);
    return -1;
}

static void test_inference_counts_and_self_verification(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model_config config = tiny_config();
    strcpy(config.ebt.init, "random");
    ts_model *model = make_model(&config, &ctx, 5);
    int32_t tokens[BATCH * (SEQ + 1)];
    random_tokens(tokens, BATCH * (SEQ + 1), 4);
    ts_batch batch = {.tokens = tokens,
                      .batch = BATCH,
                      .seq = SEQ,
                      .mode = TS_MODE_EVAL,
                      .seed = 1,
                      .step = -1,
                      .first_index = 0};
    int nfe = stat_index(model, "nfe"), final = stat_index(model, "energy_final");

    model->config.ebt.infer_steps = 3;
    inference_result one = infer(model, &ctx, &batch);
    assert_true(fabs(one.stats[nfe] - 4) < 1e-12); /* 3 steps + the re-scoring */
    inference_result again = infer(model, &ctx, &batch);
    assert_true(one.loss == again.loss); /* draws depend on (seed, window) only */

    model->config.ebt.infer_samples = 3;
    ts_energy_trace trace;
    assert_true(ts_energy_trace_alloc(&trace, BATCH, 4, SEQ));
    assert_true(ebt_trace_energies(model, &trace));
    inference_result three = infer(model, &ctx, &batch);
    assert_true(ebt_trace_energies(model, NULL));
    assert_true(fabs(three.stats[nfe] - 12) < 1e-12);
    /* Candidate 1 starts where the single-candidate run started, and each
     * position keeps the lowest re-scored energy: never higher than with one. */
    printf("final energy: 1 candidate %.6g, 3 candidates %.6g\n", one.stats[final],
           three.stats[final]);
    assert_true(three.stats[final] <= one.stats[final] + 1e-12);
    double mean_final = 0, mean_loss = 0;
    for (int w = 0; w < BATCH; w++)
        for (int r = 0; r < SEQ; r++) {
            mean_final += trace.energy[(w * 4 + 3) * SEQ + r] / (BATCH * SEQ);
            mean_loss += trace.token_loss[w * SEQ + r] / (BATCH * SEQ);
        }
    assert_true(fabs(mean_final - three.stats[final]) < 1e-9 * fmax(1, fabs(mean_final)));
    assert_true(fabs(mean_loss - three.loss) < 1e3 * SAME_TOLERANCE * mean_loss);
    assert_int_equal(trace.tokens[SEQ + 1 + 2], tokens[SEQ + 1 + 2]);

    /* Only an EBT records energies. */
    ts_model_config plain = tiny_config();
    strcpy(plain.arch, "transformerpp");
    char err[128];
    ts_model *other = ts_model_create(&plain, err, sizeof err);
    assert_non_null(other);
    assert_false(ebt_trace_energies(other, &trace));
    ts_model_destroy(other);
    ts_energy_trace_free(&trace);
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

/* ---------------------------------------------------------------- configuration */

static void test_presets_fill_only_keys_not_set(void **state) {
    (void)state;
    char err[256] = "";
    ts_run_config c;
    ts_config_defaults(&c);
    assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
    assert_true(ts_config_set(&c, "ebt.preset=s2", err, sizeof err));
    assert_true(ts_config_set(&c, "ebt.step_size=7", err, sizeof err));
    assert_true(ts_config_validate(&c, err, sizeof err));
    const ts_ebt_config *e = &c.model.ebt;
    /* The spec's S2 column, except the key given explicitly. */
    assert_true(e->step_size == 7);
    assert_int_equal(e->step_size_learnable, 0);
    assert_true(e->step_size_random_scale == 2);
    assert_int_equal(e->steps, 2);
    assert_int_equal(e->steps + e->random_steps, 3);
    assert_int_equal(e->landscapes, 1);
    assert_true(e->langevin_noise == 3.0);
    assert_int_equal(e->replay_size, 192);
    assert_true(e->replay_fraction == 0.5);
    assert_string_equal(e->mode, "s2");
    assert_string_equal(e->loss_on, "final");

    ts_config_defaults(&c);
    assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
    assert_true(ts_config_set(&c, "ebt.preset=s1", err, sizeof err));
    assert_true(ts_config_set(&c, "ebt.steps=3", err, sizeof err));
    assert_true(ts_config_validate(&c, err, sizeof err));
    assert_int_equal(e->steps, 3);
    assert_true(e->step_size == 500 && e->step_size_learnable == 1 && e->step_size_lr_mult == 1500);
    assert_true(e->langevin_noise == 0 && e->replay_size == 0 && e->random_steps == 0);
    assert_string_equal(e->mode, "s1");
    assert_string_equal(e->loss_on, "mean");

    ts_config_defaults(&c);
    assert_true(ts_config_set(&c, "data.train=x.h5", err, sizeof err));
    assert_true(ts_config_set(&c, "ebt.preset=s3", err, sizeof err));
    assert_false(ts_config_validate(&c, err, sizeof err));
    assert_non_null(strstr(err, "ebt.preset: 's3'"));
}

static void expect_rejected(void (*change)(ts_ebt_config *), const char *message) {
    ts_model_config config = tiny_config();
    change(&config.ebt);
    char err[256] = "";
    ts_model *model = ts_model_create(&config, err, sizeof err);
    if (model) {
        ts_model_destroy(model);
        fail_msg("accepted, expected '%s'", message);
    }
    if (!strstr(err, message)) fail_msg("message '%s' does not name '%s'", err, message);
}
static void bad_mode(ts_ebt_config *e) {
    strcpy(e->mode, "s3");
}
static void bad_loss(ts_ebt_config *e) {
    strcpy(e->loss_on, "max");
}
static void bad_init(ts_ebt_config *e) {
    strcpy(e->init, "ones");
}
static void bad_landscapes(ts_ebt_config *e) {
    e->landscapes = 3;
}
static void bad_steps(ts_ebt_config *e) {
    e->steps = 0;
}
static void bad_alpha(ts_ebt_config *e) {
    e->step_size = 0;
}
static void bad_replay(ts_ebt_config *e) {
    e->replay_size = 4;
    e->replay_fraction = 0;
}
static void bad_samples(ts_ebt_config *e) {
    e->infer_samples = 0;
}
static void bad_noise(ts_ebt_config *e) {
    e->langevin_noise = -1;
}

static void test_inconsistent_settings_are_rejected(void **state) {
    (void)state;
    expect_rejected(bad_mode, "ebt.mode: 's3'");
    expect_rejected(bad_loss, "ebt.loss_on: 'max'");
    expect_rejected(bad_init, "ebt.init: 'ones'");
    expect_rejected(bad_landscapes, "ebt.landscapes (3)");
    expect_rejected(bad_steps, "ebt.steps must be at least 1");
    expect_rejected(bad_alpha, "ebt.step_size (alpha) must be positive");
    expect_rejected(bad_replay, "ebt.replay_fraction");
    expect_rejected(bad_samples, "ebt.infer_samples");
    expect_rejected(bad_noise, "ebt.langevin_noise");
}

static void test_parameters(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model_config config = tiny_config();
    config.vocab_size = 64;
    config.ebt.step_size_lr_mult = 1500;
    ts_model *model = make_model(&config, &ctx, 5);
    const ts_param_table *t = &model->table;
    assert_int_equal(ts_param_table_find(t, "head"), -1); /* the energy head replaces it */
    const ts_param_entry *time = &t->entries[ts_param_table_find(t, "time_embed")];
    assert_int_equal(time->shape[0], 2);
    assert_int_equal(time->shape[1], WIDTH);
    const ts_param_entry *v2e = &t->entries[ts_param_table_find(t, "vocab_to_embed")];
    assert_int_equal(v2e->shape[0], WIDTH);
    assert_int_equal(v2e->shape[1], 64);
    const ts_param_entry *head = &t->entries[ts_param_table_find(t, "energy_head")];
    assert_int_equal(head->numel, WIDTH);
    const ts_param_entry *alpha = &t->entries[ts_param_table_find(t, "step_size")];
    assert_false(alpha->decay);
    assert_true(alpha->lr_scale == 1500);
    assert_true(model->params[alpha->offset] == (ts_real)2.0);
    /* Xavier normal for the V x D matrix: std sqrt(2 / (D + V)) = 0.17, not 1. */
    double square = 0;
    for (long i = 0; i < v2e->numel; i++)
        square += model->params[v2e->offset + i] * model->params[v2e->offset + i];
    double std = sqrt(square / (double)v2e->numel);
    assert_true(std > 0.12 && std < 0.23);
    /* N excludes the vocabulary-sized matrices: 7 D^2-ish per block stays. */
    long expected = 0;
    for (int i = 0; i < t->count; i++)
        if (!strstr(t->entries[i].name, "embed")) expected += t->entries[i].numel;
    assert_int_equal(ts_model_non_embedding_params(model), expected);
    ts_model_destroy(model);

    config.ebt.step_size_learnable = 0;
    model = make_model(&config, &ctx, 5);
    alpha = &model->table.entries[ts_param_table_find(&model->table, "step_size")];
    assert_true(alpha->lr_scale == 0); /* a fixed alpha never moves */
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

static void test_replay_buffer_ring_and_sampling(void **state) {
    (void)state;
    ebt_replay r;
    assert_true(ebt_replay_init(&r, 3, 2, 4));
    int32_t tokens[3];
    ts_real logits[8];
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < 3; i++) tokens[i] = 10 * k + i;
        for (int i = 0; i < 8; i++) logits[i] = (ts_real)(k + 0.5);
        ebt_replay_add(&r, tokens, logits);
        assert_int_equal(ebt_replay_filled(&r), k < 3 ? k + 1 : 3);
    }
    /* Entries 2, 3, 4 remain; 3 and 4 overwrote slots 0 and 1. */
    assert_int_equal(r.state[1], 2);
    assert_int_equal(r.tokens[0 * 3], 30);
    assert_int_equal(r.tokens[1 * 3 + 2], 42);
    assert_true(r.logits[2 * 8 + 5] == (ts_real)2.5);
    ts_rng rng;
    ts_rng_seed(&rng, 1);
    int counts[3] = {0};
    for (int trial = 0; trial < 300; trial++) {
        int slots[2];
        ebt_replay_sample(&r, 2, &rng, slots);
        assert_true(slots[0] != slots[1]);
        for (int i = 0; i < 2; i++) {
            assert_in_range(slots[i], 0, 2);
            counts[slots[i]]++;
        }
    }
    for (int i = 0; i < 3; i++) assert_in_range(counts[i], 150, 250); /* 200 expected */
    ts_checkpoint_extra extras[4];
    assert_int_equal(ebt_replay_extras(&r, extras, 4), 3);
    assert_int_equal(extras[1].count, 3 * 2 * 4);
    assert_int_equal(extras[0].layout, TS_CKPT_PER_RANK);
    ebt_replay_free(&r);
    assert_true(ebt_replay_init(&r, 0, 2, 4));
    assert_int_equal(ebt_replay_extras(&r, extras, 4), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_energy_equals_the_masked_doubled_sequence),
        cmocka_unit_test(test_prediction_attention_sees_nothing_it_must_not),
        cmocka_unit_test(test_one_step_gradient_is_exact),
        cmocka_unit_test(test_s1_gradient_through_two_detached_steps),
        cmocka_unit_test(test_s2_gradient_through_two_truncated_steps),
        cmocka_unit_test(test_inference_counts_and_self_verification),
        cmocka_unit_test(test_presets_fill_only_keys_not_set),
        cmocka_unit_test(test_inconsistent_settings_are_rejected),
        cmocka_unit_test(test_parameters),
        cmocka_unit_test(test_replay_buffer_ring_and_sampling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
