/* The cost of a step before it runs (src/train/step_cost.c): for small
 * configurations of all four architectures, ts_step_flops equals, exactly,
 * the FLOPs the engine books while the trainer's own micro-batch code
 * (ts_train_micro_batch) executes that step on real parameters and tokens:
 * Transformer++ with and without accumulation and on several ranks, Nexus at
 * orders 2 and 3 in all variants, the Free Transformer, EBT S1 and S2 (with
 * its replay buffer in the steady state and its random step count, per step
 * and in expectation). Also the parameter counts and the error messages. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cli/config.h"
#include "models/ebt_preset.h"
#include "parallel/data_parallel.h"
#include "train/micro_batch.h"
#include "train/step_cost.h"

/* A tiny configuration of `arch` with "section.key=value" overrides (NULL-terminated). */
static ts_run_config small_config(const char *arch, const char *const *overrides) {
    ts_run_config c;
    ts_config_defaults(&c);
    char err[256] = "", assignment[128];
    snprintf(assignment, sizeof assignment, "model.arch=%s", arch);
    assert_true(ts_config_set(&c, assignment, err, sizeof err));
    static const char *const sizes[] = {
        "model.vocab_size=13", "model.context=6", "model.depth=2",      "model.width=8",
        "model.heads=2",       "train.batch=3",   "free.latent_bits=3", NULL};
    for (int i = 0; sizes[i]; i++) assert_true(ts_config_set(&c, sizes[i], err, sizeof err));
    for (int i = 0; overrides && overrides[i]; i++)
        if (!ts_config_set(&c, overrides[i], err, sizeof err)) fail_msg("%s", err);
    if (!ebt_apply_preset(&c, err, sizeof err)) fail_msg("%s", err);
    return c;
}

/* The trainer's steps 0..last executed on `ranks` simulated ranks (one model,
 * so EBT's replay buffer is shared, which the steady state does not notice):
 * real initial parameters, random tokens; the FLOPs of step `last`. */
static void executed_step_flops(const ts_run_config *c, int ranks, long last, double flops[2]) {
    char err[256] = "";
    ts_model *model = ts_model_create(&c->model, err, sizeof err);
    if (!model) fail_msg("%s", err);
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    ts_model_init_params(model, (uint64_t)c->seed);
    ts_model_bind(model, &ctx);
    int seq = c->model.context;
    long micro = c->batch / c->accum;
    int32_t *tokens = malloc((size_t)micro * (size_t)(seq + 1) * sizeof *tokens);
    assert_non_null(tokens);
    ts_rng rng;
    ts_rng_seed(&rng, 7);
    for (long step = 0; step <= last; step++) {
        ts_reset_flops(&ctx);
        for (int rank = 0; rank < ranks; rank++)
            for (long a = 0; a < c->accum; a++) {
                long first, count;
                ts_shard_range(micro, rank, ranks, &first, &count);
                if (count == 0) continue;
                for (long i = 0; i < count * (seq + 1); i++)
                    tokens[i] = (int32_t)ts_rng_below(&rng, (uint64_t)c->model.vocab_size);
                ts_batch batch = {.tokens = tokens,
                                  .batch = (int)count,
                                  .seq = seq,
                                  .mode = TS_MODE_TRAIN,
                                  .seed = (uint64_t)c->seed,
                                  .step = step,
                                  .first_index = a * micro + first};
                double stats[TS_MAX_MODEL_STATS];
                double loss = ts_train_micro_batch(model, &ctx, &batch,
                                                   (double)count / (double)c->batch, stats);
                assert_true(isfinite(loss));
            }
    }
    flops[0] = ctx.flops[TS_FORWARD];
    flops[1] = ctx.flops[TS_BACKWARD];
    free(tokens);
    ts_ctx_free(&ctx);
    ts_model_destroy(model);
}

/* ts_step_flops_with at `step` equals the executed step, phase by phase. */
static void check_step(const ts_run_config *c, int ranks, long step) {
    double executed[2];
    executed_step_flops(c, ranks, step, executed);
    ts_step_flops_result r;
    char err[256] = "";
    ts_step_flops_options options = {.ranks = ranks, .step = step};
    if (!ts_step_flops_with(c, &options, &r, err, sizeof err)) fail_msg("%s", err);
    assert_true(executed[0] > 0 && executed[1] > 0);
    assert_true(r.forward == executed[0]);
    assert_true(r.backward == executed[1]);
    assert_true(r.total == executed[0] + executed[1]);
    assert_true(r.min_total == r.total && r.max_total == r.total);
    assert_int_equal(r.tokens, c->batch * c->model.context);
    assert_true(r.total_per_token == r.total / (double)r.tokens);
}

/* Without random steps the default (expected) count is the count at any step. */
static void check_default(const ts_run_config *c) {
    double executed[2];
    executed_step_flops(c, 1, 0, executed);
    ts_step_flops_result r;
    char err[256] = "";
    if (!ts_step_flops(c, &r, err, sizeof err)) fail_msg("%s", err);
    assert_true(r.forward == executed[0] && r.backward == executed[1]);
    assert_int_equal(r.ranks, 1);
}

static void test_transformerpp(void **state) {
    (void)state;
    ts_run_config c = small_config("transformerpp", NULL);
    check_default(&c);
    check_step(&c, 2, 0);
    ts_run_config accum =
        small_config("transformerpp", (const char *const[]){"train.accum=3", NULL});
    check_step(&accum, 1, 0);
    check_step(&accum, 2, 0); /* a rank with nothing to do in some micro-batches */
    /* The per-micro-batch constant: more micro-batches cost more, though the tokens are the same.
     */
    ts_step_flops_result one, three;
    char err[256];
    assert_true(ts_step_flops(&c, &one, err, sizeof err));
    assert_true(ts_step_flops(&accum, &three, err, sizeof err));
    assert_true(three.total > one.total);
}

static void test_nexus(void **state) {
    (void)state;
    static const char *const variants[][3] = {
        {"nexus.order=2", "nexus.variant=shared", NULL},
        {"nexus.order=3", "nexus.variant=shared", NULL},
        {"nexus.order=3", "nexus.variant=unshared", NULL},
        {"nexus.order=3", "nexus.variant=selfrefine", NULL},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        ts_run_config c = small_config("nexus", variants[i]);
        check_default(&c);
        check_step(&c, 1, 1);
    }
}

static void test_free_transformer(void **state) {
    (void)state;
    ts_run_config c = small_config("free", NULL);
    check_default(&c);
    check_step(&c, 2, 1);
    ts_run_config after =
        small_config("free", (const char *const[]){"free.injection=after_norm", NULL});
    check_default(&after);
}

static void test_ebt_s1(void **state) {
    (void)state;
    ts_run_config c = small_config("ebt", (const char *const[]){"ebt.preset=s1", NULL});
    check_default(&c);
    check_step(&c, 2, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformerpp),
        cmocka_unit_test(test_nexus),
        cmocka_unit_test(test_free_transformer),
        cmocka_unit_test(test_ebt_s1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
