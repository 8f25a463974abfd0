/* EBT: parameters, configuration checks, the training objective through the
 * optimisation steps, and System 2 inference. The energy function itself is
 * in ebt_energy.c, the replay buffer in ebt_replay.c. */
#include "models/ebt.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/profile.h"
#include "models/ebt_internal.h"
#include "models/transformerpp.h"

/* The reference clamps alpha from below (torch.clamp(alpha, min=0.0001)). */
#define MIN_STEP_SIZE 1e-4

/* What a random draw is for; the index distinguishes steps or candidates. */
enum draw_kind { DRAW_INIT = 1, DRAW_NOISE, DRAW_STEP_SIZE, DRAW_STEPS, DRAW_REPLAY };

static uint64_t purpose(enum draw_kind kind, int index) {
    return ((uint64_t)kind << 32) | (uint32_t)index;
}

static const ts_model_stat ebt_stats[] = {
    {"nfe", "1",
     "energy evaluations per sequence: steps x candidates, plus one re-scoring of each "
     "candidate at evaluation"},
    {"energy_first", "1", "mean energy of the predictions at the first step"},
    {"energy_final", "1",
     "mean energy at the last step (training) or of the selected final predictions "
     "(evaluation, re-scored)"},
    {"loss_first_step", "nats/token", "cross-entropy after the first step (first candidate)"},
    {"step_size", "1", "mean step size alpha used"},
};
enum { STAT_NFE, STAT_ENERGY_FIRST, STAT_ENERGY_FINAL, STAT_LOSS_FIRST, STAT_STEP_SIZE };

int ebt_inference_steps(const ts_model_config *c) {
    return c->ebt.infer_steps > 0 ? c->ebt.infer_steps : c->ebt.steps + c->ebt.random_steps;
}

/* ---------------------------------------------------------------- randomness */

/* Rows past the batch's own sequences are replayed ones (this rank's buffer). */
static void row_rng(const ts_batch *batch, int row, uint64_t draw, ts_rng *rng) {
    if (row < batch->batch) {
        ts_sequence_rng(batch, row, draw, rng);
    } else {
        ts_sequence_rng(batch, row - batch->batch, draw ^ (1ull << 63), rng);
    }
}

static void initial_logits(const ts_model_config *c, const ts_batch *batch, int row, int candidate,
                           ts_real *y) {
    long n = (long)batch->seq * c->vocab_size;
    if (!strcmp(c->ebt.init, "zero") || c->ebt.init_scale == 0) {
        memset(y, 0, (size_t)n * sizeof *y);
        return;
    }
    ts_rng rng;
    row_rng(batch, row, purpose(DRAW_INIT, candidate), &rng);
    ts_rng_fill_normal(&rng, y, n, 0, c->ebt.init_scale);
}

/* Draws are no op: booked to the profile (if any) under a name of their
 * own, or the next op would carry their time. */
static const char *const INITIAL_LOGITS_ROW = "ebt_initial_logits";
static const char *const NOISE_ROW = "ebt_logit_noise";

static void book_draws(ts_ctx *ctx, const char *row, const ts_tensor *drawn) {
    ts_profile_book(ctx, row, (double)drawn->numel * sizeof(ts_real));
}

/* Langevin noise N(0, sigma^2) on every logit, for draw `index`. */
static ts_tensor *logit_noise(ts_ctx *ctx, const ts_batch *batch, int rows, int vocab, double sigma,
                              int index) {
    ts_tensor *noise = ts_new(ctx, TS_SHAPE(rows, batch->seq, vocab));
    long n = (long)batch->seq * vocab;
    for (int r = 0; r < (ts_is_counting(ctx) ? 0 : rows); r++) {
        ts_rng rng;
        row_rng(batch, r, purpose(DRAW_NOISE, index), &rng);
        ts_rng_fill_normal(&rng, noise->data + r * n, n, 0, sigma);
    }
    book_draws(ctx, NOISE_ROW, noise);
    return noise;
}

/* NaN in a counting context, whose tensors have no values. */
static double mean_of(const ts_tensor *t) {
    if (!t->data) return NAN;
    double sum = 0;
    for (long i = 0; i < t->numel; i++) sum += t->data[i];
    return t->numel ? sum / (double)t->numel : 0;
}

/* ---------------------------------------------------------------- training */

/* The step size of every (row, position): the parameter (or its floor, as a
 * constant), times a factor ~ U[1/s, s] per position when randomised; with
 * distributed activations (act) for this rank's part of the predictions.
 * *mean: its mean over every position (for the statistics). */
static ts_tensor *training_step_size(ts_model *model, ts_ctx *ctx, const ts_batch *batch, int rows,
                                     const ts_activation_hook *act, double *mean) {
    const ts_ebt_config *e = &model->config.ebt;
    ts_tensor *alpha = ts_model_param(model, "step_size");
    /* A count has no parameter values: alpha's initial value decides the floor. */
    double value = ts_is_counting(ctx) ? e->step_size : alpha->data[0];
    if (!e->step_size_learnable || value < MIN_STEP_SIZE)
        alpha = ts_full(ctx, TS_SHAPE(1), (ts_real)fmax(value, MIN_STEP_SIZE));
    double s = e->step_size_random_scale;
    if (s <= 1) {
        *mean = mean_of(alpha);
        return act ? act->share(act->user, ctx, alpha) : alpha;
    }
    ts_tensor *factor = ts_new(ctx, TS_SHAPE(rows, batch->seq, 1));
    for (int r = 0; r < (ts_is_counting(ctx) ? 0 : rows); r++) {
        ts_rng rng;
        row_rng(batch, r, purpose(DRAW_STEP_SIZE, 0), &rng);
        for (int t = 0; t < batch->seq; t++)
            factor->data[(long)r * batch->seq + t] =
                (ts_real)(1 / s + ts_rng_uniform(&rng) * (s - 1 / s));
    }
    ts_tensor *scaled = ts_mul(ctx, alpha, factor);
    *mean = mean_of(scaled);
    if (!act) return scaled;
    return ts_mul(ctx, act->share(act->user, ctx, alpha),
                  act->token_values(act->user, ctx, factor));
}

/* Steps of this forward: ebt.steps plus U{0..random_steps}, the same on
 * every rank and micro-batch of an optimiser step. */
static int training_steps(const ts_ebt_config *e, const ts_batch *batch) {
    if (e->random_steps <= 0) return e->steps;
    ts_batch whole_step = *batch;
    whole_step.first_index = 0;
    ts_rng rng;
    ts_sequence_rng(&whole_step, 0, purpose(DRAW_STEPS, 0), &rng);
    return e->steps + (int)ts_rng_below(&rng, (uint64_t)e->random_steps + 1);
}

/* The batch's sequences followed by replayed ones: tokens (rows x (seq + 1))
 * and the initial logits of every row. */
static int32_t *training_rows(ts_model *model, ts_ctx *ctx, const ts_batch *batch, int *rows_out,
                              ts_tensor **y_out) {
    const ts_model_config *c = &model->config;
    ebt_replay *replay = &((ebt_state *)model->arch)->replay;
    int seq = batch->seq, vocab = c->vocab_size, n_replay = 0;
    int *slots = NULL;
    if (replay->capacity > 0 && replay->seq == seq) {
        n_replay = (int)lround(c->ebt.replay_fraction * batch->batch);
        if (n_replay > ebt_replay_filled(replay)) n_replay = ebt_replay_filled(replay);
        slots = ts_alloc(ctx, (size_t)(n_replay + 1) * sizeof *slots);
        ts_rng rng;
        ts_sequence_rng(batch, 0, purpose(DRAW_REPLAY, 0), &rng);
        ebt_replay_sample(replay, n_replay, &rng, slots);
    }
    int rows = batch->batch + n_replay;
    long row_logits = (long)seq * vocab;
    int32_t *tokens = ts_alloc(ctx, (size_t)rows * (size_t)(seq + 1) * sizeof *tokens);
    memcpy(tokens, batch->tokens, (size_t)batch->batch * (size_t)(seq + 1) * sizeof *tokens);
    ts_tensor *y = ts_new(ctx, TS_SHAPE(rows, seq, vocab));
    bool counting = ts_is_counting(ctx); /* no values: any valid tokens cost the same */
    if (counting)
        memset(tokens + (long)batch->batch * (seq + 1), 0,
               (size_t)n_replay * (size_t)(seq + 1) * sizeof *tokens);
    for (int r = 0; r < (counting ? 0 : batch->batch); r++)
        initial_logits(c, batch, r, 0, y->data + r * row_logits);
    for (int j = 0; j < (counting ? 0 : n_replay); j++) {
        int r = batch->batch + j;
        const int64_t *stored = replay->tokens + (long)slots[j] * (seq + 1);
        for (int t = 0; t <= seq; t++) tokens[(long)r * (seq + 1) + t] = (int32_t)stored[t];
        memcpy(y->data + r * row_logits, replay->logits + (long)slots[j] * row_logits,
               (size_t)row_logits * sizeof *y->data);
    }
    book_draws(ctx, INITIAL_LOGITS_ROW, y);
    *rows_out = rows;
    *y_out = y;
    return tokens;
}

/* One forward of the spec's training loop (S1 or S2), returning the loss:
 *   for each step: p = softmax(y [+ noise]); g = dE(p).sum()/dp; y = p - alpha g;
 *   loss += CE(y) (every step, or the final one only).
 * S1 cuts y from the graph at every step and keeps every step's grad_p E
 * differentiable; S2 keeps y in the graph but only the last step's grad_p E
 * (truncate_mcmc). */
static ts_tensor *training_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch,
                                double *stats) {
    const ts_model_config *c = &model->config;
    const ts_ebt_config *e = &c->ebt;
    int seq = batch->seq, rows;
    ts_tensor *y;
    int32_t *tokens = training_rows(model, ctx, batch, &rows, &y);
    ts_batch all_rows = *batch;
    all_rows.tokens = tokens;
    all_rows.batch = rows;
    all_rows.target_mask = NULL; /* training scores every target */
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, &all_rows, &inputs, &targets);
    double positions = (double)rows * seq;
    bool detach = !strcmp(e->mode, "s1"), every_step = !strcmp(e->loss_on, "mean");
    ebt_context *context = ebt_context_new_on(model, ctx, inputs, rows, seq, true);
    /* Distributed activations: from here on y, p, the gradient, the noise,
     * the step sizes and the energies are this rank's parts. */
    const ts_activation_hook *act = ebt_context_activations(context);
    if (act) y = act->to_local(act->user, ctx, y);
    double alpha_mean;
    ts_tensor *alpha = training_step_size(model, ctx, batch, rows, act, &alpha_mean);
    int n_steps = training_steps(e, batch);
    ts_tensor *loss = NULL;
    int n_losses = 0;
    double energy_first = 0, energy_final = 0, loss_first = 0;
    for (int t = 0; t < n_steps; t++) {
        bool last = t == n_steps - 1;
        ts_tensor *y_in = detach ? ts_detach(ctx, y) : y;
        if (e->langevin_noise > 0) {
            ts_tensor *noise = logit_noise(ctx, batch, rows, c->vocab_size, e->langevin_noise, t);
            y_in = ts_add(ctx, y_in, act ? act->to_local(act->user, ctx, noise) : noise);
        }
        ts_tensor *p = act ? act->softmax(act->user, ctx, y_in) : ts_softmax(ctx, y_in, NULL);
        bool made_leaf = !p->requires_grad;
        if (made_leaf) ts_set_requires_grad(ctx, p, true);
        ts_tensor *energy = ebt_energy(ctx, context, p, ebt_landscape_of_step(c, t));
        ts_tensor *total = act ? act->sum_tokens(act->user, ctx, energy) : ts_sum_all(ctx, energy);
        ts_tensor *grad;
        ts_grad(ctx, 1, &total, NULL, 1, &p, &grad, detach || last);
        /* The loss needs no gradient with respect to a cut-off p; without
         * this the backward pass would compute one. */
        if (made_leaf) ts_set_requires_grad(ctx, p, false);
        y = ts_sub(ctx, p, ts_mul(ctx, grad, alpha));
        ts_tensor *step_loss = NULL;
        if (every_step || last) {
            step_loss = ts_act_cross_entropy(ctx, act, y, targets, -1);
            loss = loss ? ts_add(ctx, loss, step_loss) : step_loss;
            n_losses++;
        }
        double energy_mean =
            act ? (ts_is_counting(ctx) ? NAN : ts_item(ctx, total) / positions) : mean_of(energy);
        if (t == 0) {
            energy_first = energy_mean;
            if (!step_loss) {
                bool recording = ts_set_grad_enabled(ctx, false);
                step_loss = ts_act_cross_entropy(ctx, act, y, targets, -1);
                ts_set_grad_enabled(ctx, recording);
            }
            loss_first = ts_item(ctx, step_loss);
        }
        if (last) energy_final = energy_mean;
    }
    if (n_losses > 1) loss = ts_scale(ctx, loss, 1.0 / n_losses);

    ebt_replay *replay = &((ebt_state *)model->arch)->replay;
    if (replay->capacity > 0 && replay->seq == seq && !ts_is_counting(ctx)) {
        ts_tensor *whole = y;
        if (act) {
            bool recording = ts_set_grad_enabled(ctx, false);
            whole = act->whole(act->user, ctx, y, c->vocab_size);
            ts_set_grad_enabled(ctx, recording);
        }
        for (int r = 0; r < rows; r++)
            ebt_replay_add(replay, tokens + (long)r * (seq + 1),
                           whole->data + (long)r * seq * c->vocab_size);
    }
    if (stats) {
        stats[STAT_NFE] = n_steps;
        stats[STAT_ENERGY_FIRST] = energy_first;
        stats[STAT_ENERGY_FINAL] = energy_final;
        stats[STAT_LOSS_FIRST] = loss_first;
        stats[STAT_STEP_SIZE] = alpha_mean;
    }
    return loss;
}

/* ---------------------------------------------------------------- inference */

/* Cross-entropy of each row of logits [rows, V] at its target, in double. */
static void token_losses(const ts_real *logits, const int32_t *targets, long rows, int vocab,
                         double *out) {
    for (long r = 0; r < rows; r++) {
        const ts_real *row = logits + r * vocab;
        double max = row[0], sum = 0;
        for (int v = 1; v < vocab; v++) max = fmax(max, row[v]);
        for (int v = 0; v < vocab; v++) sum += exp(row[v] - max);
        out[r] = targets[r] < 0 ? NAN : max + log(sum) - row[targets[r]]; /* not scored */
    }
}

/* Writes the kept candidate's energies of this batch into the trace. */
static void fill_trace(ts_ctx *ctx, ts_energy_trace *trace, const ts_batch *batch,
                       const double *energies, int points, const ts_real *logits,
                       const int32_t *targets, int vocab) {
    int seq = batch->seq;
    if (trace->points != points || trace->seq != seq)
        ts_fail(ctx, "ebt", "energy trace of %d points x %d positions, evaluation needs %d x %d",
                trace->points, trace->seq, points, seq);
    long positions = (long)batch->batch * seq;
    double *losses = ts_alloc(ctx, (size_t)positions * sizeof *losses);
    token_losses(logits, targets, positions, vocab, losses);
    for (int b = 0; b < batch->batch; b++) {
        long window = batch->first_index + b;
        if (window < 0 || window >= trace->windows)
            ts_fail(ctx, "ebt", "window %ld outside the energy trace of %ld", window,
                    trace->windows);
        for (int k = 0; k < points; k++)
            for (int r = 0; r < seq; r++)
                trace->energy[(window * points + k) * seq + r] =
                    energies[k * positions + (long)b * seq + r];
        for (int r = 0; r < seq; r++)
            trace->token_loss[window * seq + r] = losses[(long)b * seq + r];
        for (int t = 0; t <= seq; t++)
            trace->tokens[window * (seq + 1) + t] = batch->tokens[(long)b * (seq + 1) + t];
    }
}

/* System 2 inference: G candidates from random starts, N steps each with
 * grad_p E taken without a graph, every final state re-scored with one more
 * energy pass; per position the candidate of lowest final energy is kept and
 * scored (teacher-forced cross-entropy). Recording is off on entry. */
static ts_tensor *inference_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch,
                                 double *stats) {
    const ts_model_config *c = &model->config;
    const ts_ebt_config *e = &c->ebt;
    int n_steps = ebt_inference_steps(c), candidates = e->infer_samples;
    if (candidates < 1 || e->infer_step_size < 0)
        ts_fail(ctx, "ebt",
                "ebt.infer_samples (%d) must be at least 1 and ebt.infer_step_size "
                "(%g) not negative",
                candidates, e->infer_step_size);
    double trained_alpha = fmax(ts_model_param(model, "step_size")->data[0], MIN_STEP_SIZE);
    double alpha = e->infer_step_size > 0 ? e->infer_step_size : trained_alpha;
    double sigma = e->infer_noise > 0 ? e->infer_noise : e->infer_noise < 0 ? 0 : e->langevin_noise;
    int rows = batch->batch, seq = batch->seq, vocab = c->vocab_size, points = n_steps + 1;
    long positions = (long)rows * seq, n = positions * vocab;
    int32_t *inputs, *targets;
    tpp_split_batch(ctx, batch, &inputs, &targets);
    ebt_context *context = ebt_context_new(model, ctx, inputs, rows, seq);
    int final_landscape = ebt_landscape_of_step(c, n_steps - 1);
    /* Observed streams as constants, before the per-step marks release graphs. */
    for (int k = 0; k <= final_landscape; k++) ebt_context_observe(ctx, context, k);

    ts_tensor *y = ts_new(ctx, TS_SHAPE(rows, seq, vocab));
    ts_tensor *best = ts_new(ctx, TS_SHAPE(rows, seq, vocab));
    double *energies = ts_alloc(ctx, (size_t)(points * positions) * sizeof *energies);
    double *best_energies = ts_alloc(ctx, (size_t)(points * positions) * sizeof *best_energies);
    double loss_first = 0;
    for (int g = 0; g < candidates; g++) {
        for (int r = 0; r < rows; r++) initial_logits(c, batch, r, g, y->data + r * seq * vocab);
        book_draws(ctx, INITIAL_LOGITS_ROW, y);
        for (int t = 0; t <= n_steps; t++) {
            bool rescoring = t == n_steps;
            ts_mark mark = ts_get_mark(ctx);
            ts_tensor *y_in = y;
            if (sigma > 0 && !rescoring)
                y_in = ts_add(ctx, y, logit_noise(ctx, batch, rows, vocab, sigma, g * 65536 + t));
            bool recording = ts_set_grad_enabled(ctx, !rescoring);
            ts_tensor *p = ts_softmax(ctx, y_in, NULL);
            if (!rescoring) ts_set_requires_grad(ctx, p, true);
            ts_tensor *energy = ebt_energy(
                ctx, context, p, rescoring ? final_landscape : ebt_landscape_of_step(c, t));
            for (long i = 0; i < positions; i++) energies[t * positions + i] = energy->data[i];
            if (!rescoring) {
                ts_tensor *total = ts_sum_all(ctx, energy), *grad;
                ts_grad(ctx, 1, &total, NULL, 1, &p, &grad, false);
                ts_set_grad_enabled(ctx, recording);
                ts_tensor *next = ts_sub(ctx, p, ts_scale(ctx, grad, alpha));
                memcpy(y->data, next->data, (size_t)n * sizeof *y->data);
                if (g == 0 && t == 0) loss_first = ts_cross_entropy(ctx, y, targets, -1)->data[0];
            }
            ts_set_grad_enabled(ctx, recording);
            ts_release(ctx, mark);
        }
        /* Self-verification: per position, the lowest re-scored energy so far. */
        const double *final = energies + n_steps * positions;
        for (long i = 0; i < positions; i++) {
            if (g > 0 && final[i] >= best_energies[n_steps * positions + i]) continue;
            memcpy(best->data + i * vocab, y->data + i * vocab, (size_t)vocab * sizeof *y->data);
            for (int k = 0; k < points; k++)
                best_energies[k * positions + i] = energies[k * positions + i];
        }
    }
    ts_tensor *loss = ts_cross_entropy(ctx, best, targets, -1);
    ebt_state *state = model->arch;
    if (state->trace)
        fill_trace(ctx, state->trace, batch, best_energies, points, best->data, targets, vocab);
    if (stats) {
        double first = 0, final = 0;
        for (long i = 0; i < positions; i++) {
            first += best_energies[i];
            final += best_energies[n_steps * positions + i];
        }
        stats[STAT_NFE] = (double)candidates * points;
        stats[STAT_ENERGY_FIRST] = first / (double)positions;
        stats[STAT_ENERGY_FINAL] = final / (double)positions;
        stats[STAT_LOSS_FIRST] = loss_first;
        stats[STAT_STEP_SIZE] = alpha;
    }
    return loss;
}

static ts_tensor *ebt_loss(ts_model *model, ts_ctx *ctx, const ts_batch *batch, double *stats) {
    if (batch->seq > model->config.context)
        ts_fail(ctx, "ebt", "sequence of %d tokens exceeds the context of %d", batch->seq,
                model->config.context);
    return batch->mode == TS_MODE_TRAIN ? training_loss(model, ctx, batch, stats)
                                        : inference_loss(model, ctx, batch, stats);
}

/* ---------------------------------------------------------------- model */

static int ebt_checkpoint_extras(ts_model *model, ts_saved_role *roles, int max) {
    return ebt_replay_extras(&((ebt_state *)model->arch)->replay, roles, max);
}

/* The step size alpha starts at its configured value. */
static void ebt_init_params(ts_model *model, ts_rng *rng) {
    const ts_param_entry *alpha =
        &model->table.entries[ts_param_table_find(&model->table, "step_size")];
    model->params[alpha->offset] = (ts_real)model->config.ebt.step_size;
}

static void ebt_destroy(ts_model *model) {
    ebt_state *state = model->arch;
    if (!state) return;
    ebt_replay_free(&state->replay);
    free(state);
    model->arch = NULL;
}

static const ts_model_ops ebt_ops = {
    .loss = ebt_loss,
    .distributable_activations = true,
    .gradient_graph_in_loss = true,
    .n_stats = (int)(sizeof ebt_stats / sizeof ebt_stats[0]),
    .stats = ebt_stats,
    .checkpoint_extras = ebt_checkpoint_extras,
    .init_params = ebt_init_params,
    .destroy = ebt_destroy,
};

bool ebt_trace_energies(ts_model *model, ts_energy_trace *trace) {
    if (model->ops != &ebt_ops) return false;
    ((ebt_state *)model->arch)->trace = trace;
    return true;
}

bool ebt_energies_begin(ts_model *model, ts_energy_trace *trace, long windows, int seq, char *err,
                        size_t errlen) {
    *trace = (ts_energy_trace){0};
    if (model->ops != &ebt_ops) {
        snprintf(err, errlen, "--energies needs an EBT checkpoint (this one is '%s')",
                 model->config.arch);
        return false;
    }
    if (!ts_energy_trace_alloc(trace, windows, ebt_inference_steps(&model->config) + 1, seq)) {
        snprintf(err, errlen, "out of memory for the energies of %ld windows", windows);
        return false;
    }
    return ebt_trace_energies(model, trace);
}

static bool one_of(const char *value, const char *a, const char *b) {
    return !strcmp(value, a) || !strcmp(value, b);
}

static bool validate(const ts_ebt_config *e, char *err, size_t errlen) {
#define REQUIRE(condition, ...)                                                                    \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            snprintf(err, errlen, __VA_ARGS__);                                                    \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    REQUIRE(e->steps >= 1, "ebt.steps must be at least 1, got %d", e->steps);
    REQUIRE(e->landscapes >= 0 && e->landscapes <= e->steps,
            "ebt.landscapes (%d) must be between 0 (one per step) and ebt.steps (%d)",
            e->landscapes, e->steps);
    REQUIRE(e->random_steps >= 0, "ebt.random_steps must not be negative, got %d", e->random_steps);
    REQUIRE(e->step_size > 0, "ebt.step_size (alpha) must be positive, got %g", e->step_size);
    REQUIRE(e->step_size_lr_mult >= 0, "ebt.step_size_lr_mult must not be negative, got %g",
            e->step_size_lr_mult);
    REQUIRE(e->langevin_noise >= 0, "ebt.langevin_noise must not be negative, got %g",
            e->langevin_noise);
    REQUIRE(e->replay_size >= 0, "ebt.replay_size must not be negative, got %d", e->replay_size);
    REQUIRE(e->replay_size == 0 || (e->replay_fraction > 0 && e->replay_fraction <= 1),
            "ebt.replay_fraction must be in (0, 1] with a replay buffer, got %g",
            e->replay_fraction);
    REQUIRE(one_of(e->mode, "s1", "s2"), "ebt.mode: '%s' is neither s1 nor s2", e->mode);
    REQUIRE(one_of(e->loss_on, "mean", "final"), "ebt.loss_on: '%s' is neither mean nor final",
            e->loss_on);
    REQUIRE(one_of(e->init, "random", "zero"), "ebt.init: '%s' is neither random nor zero",
            e->init);
    REQUIRE(e->init_scale >= 0, "ebt.init_scale must not be negative, got %g", e->init_scale);
    REQUIRE(e->infer_steps >= 0, "ebt.infer_steps must not be negative (0: as trained), got %d",
            e->infer_steps);
    REQUIRE(e->infer_samples >= 1, "ebt.infer_samples must be at least 1, got %d",
            e->infer_samples);
    REQUIRE(e->infer_step_size >= 0,
            "ebt.infer_step_size must not be negative (0: as trained), got %g", e->infer_step_size);
#undef REQUIRE
    return true;
}

/* The backbone's parameters without its vocabulary head (the energy head
 * replaces it), then the EBT's own. */
static bool add_params(ts_model *model) {
    const ts_model_config *c = &model->config;
    int d = c->width, v = c->vocab_size;
    ts_param_table backbone = {0};
    bool ok = tpp_add_params(&backbone, c);
    for (int i = 0; ok && i < backbone.count; i++) {
        const ts_param_entry *e = &backbone.entries[i];
        if (strcmp(e->name, "head"))
            ok = ts_param_table_add(&model->table, e->name, e->ndim, e->shape, e->role) >= 0;
    }
    ts_param_table_free(&backbone);
    ok = ok && ts_param_table_add(&model->table, "time_embed", TS_SHAPE(ebt_landscapes(c), d),
                                  TS_ROLE_EMBEDDING) >= 0;
    /* vocab_to_embed is a linear layer (Xavier, as the reference initialises
     * it), drawn after the others with its in-order draws reserved: the
     * stream of every EBT initialised so far. */
    ts_param_role vocab_in = {TS_INIT_XAVIER_NORMAL, TS_DRAW_AFTER_RESERVING, true, true, true};
    ok = ok && ts_param_table_add(&model->table, "vocab_to_embed", TS_SHAPE(d, v), vocab_in) >= 0;
    ok =
        ok && ts_param_table_add(&model->table, "energy_head", TS_SHAPE(1, d), TS_ROLE_MATRIX) >= 0;
    ts_param_role alpha_role = {TS_INIT_ARCHITECTURE, TS_DRAW_IN_ORDER, false, false, false};
    int alpha = ok ? ts_param_table_add(&model->table, "step_size", TS_SHAPE(1), alpha_role) : -1;
    if (alpha < 0) return false;
    /* A fixed alpha stays a parameter (so checkpoints hold it) that never moves. */
    model->table.entries[alpha].lr_scale =
        c->ebt.step_size_learnable ? c->ebt.step_size_lr_mult : 0;
    return true;
}

bool ebt_model_setup(ts_model *model, char *err, size_t errlen) {
    model->ops = &ebt_ops;
    const ts_model_config *c = &model->config;
    if (!validate(&c->ebt, err, errlen)) return false;
    ebt_state *state = calloc(1, sizeof *state);
    model->arch = state;
    if (state && model->counting_only)
        ebt_replay_init_counting(&state->replay, c->ebt.replay_size, c->context, c->vocab_size);
    if (!state || !add_params(model) ||
        (!model->counting_only &&
         !ebt_replay_init(&state->replay, c->ebt.replay_size, c->context, c->vocab_size))) {
        snprintf(err, errlen,
                 "out of memory building the EBT (parameters, or a replay buffer "
                 "of %d x %d x %d logits)",
                 c->ebt.replay_size, c->context, c->vocab_size);
        return false;
    }
    return true;
}
