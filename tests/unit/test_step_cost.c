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

#include "core/config.h"
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
    if (!ts_config_resolve_presets(&c, err, sizeof err)) fail_msg("%s", err);
    return c;
}

/* The trainer's steps 0..last executed on `ranks` simulated ranks (one model,
 * so EBT's replay buffer is shared, which the steady state does not notice):
 * real initial parameters, random tokens; the FLOPs of every step, forward
 * and backward, into per_step[0 .. last]. */
static void executed_steps(const ts_run_config *c, int ranks, long last, double (*per_step)[2]) {
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
        per_step[step][0] = ctx.flops[TS_FORWARD];
        per_step[step][1] = ctx.flops[TS_BACKWARD];
    }
    free(tokens);
    ts_ctx_free(&ctx);
    ts_model_destroy(model);
}

enum { MAX_STEPS = 24 };

static void executed_step_flops(const ts_run_config *c, int ranks, long last, double flops[2]) {
    double per_step[MAX_STEPS][2];
    assert_true(last < MAX_STEPS);
    executed_steps(c, ranks, last, per_step);
    flops[0] = per_step[last][0];
    flops[1] = per_step[last][1];
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

/* A learnable alpha is a parameter in the graph (its gradient is computed);
 * accumulation and ranks change the per-micro-batch constant. */
static void test_ebt_s1_accumulation_and_ranks(void **state) {
    (void)state;
    ts_run_config c = small_config(
        "ebt", (const char *const[]){"ebt.preset=s1", "train.batch=4", "train.accum=2", NULL});
    check_step(&c, 1, 0);
    check_step(&c, 2, 1);
    check_step(&c, 3, 0);
}

/* The distinct (forward, backward) costs among executed[first .. last]
 * (at most max of them, else the test fails), their count and their sums. */
static int distinct_costs(const double (*executed)[2], long first, long last, int max,
                          double (*distinct)[2], double sums[2]) {
    int n = 0;
    sums[0] = sums[1] = 0;
    for (long step = first; step <= last; step++) {
        bool seen = false;
        for (int k = 0; k < n; k++)
            seen |= distinct[k][0] == executed[step][0] && distinct[k][1] == executed[step][1];
        if (seen) continue;
        assert_true(n < max);
        distinct[n][0] = executed[step][0];
        distinct[n][1] = executed[step][1];
        sums[0] += executed[step][0];
        sums[1] += executed[step][1];
        n++;
    }
    return n;
}

/* S2: no detach, truncated, Langevin noise, a randomised step size, a fixed
 * alpha, a replay buffer and a random number of steps. From step 1 on the
 * buffer (2 entries, filled by step 0's 3 sequences) is full: every step
 * replays round(0.5 x 3) = 2 sequences, as the count assumes. */
static void test_ebt_s2_replay_and_random_steps(void **state) {
    (void)state;
    ts_run_config c =
        small_config("ebt", (const char *const[]){"ebt.preset=s2", "ebt.replay_size=2", NULL});
    assert_int_equal(c.model.ebt.random_steps, 1);
    enum { LAST = 16 };
    double executed[LAST + 1][2];
    executed_steps(&c, 1, LAST, executed);
    char err[256] = "";
    ts_step_flops_result r;
    /* Step by step, at each step's own draw. */
    for (long step = 1; step <= 4; step++) {
        ts_step_flops_options options = {.ranks = 1, .step = step};
        assert_true(ts_step_flops_with(&c, &options, &r, err, sizeof err));
        assert_true(r.forward == executed[step][0]);
        assert_true(r.backward == executed[step][1]);
    }
    /* Step 0 starts from an empty buffer: cheaper than the steady state. */
    assert_true(ts_step_flops_with(&c, &(ts_step_flops_options){.ranks = 1, .step = 0}, &r, err,
                                   sizeof err));
    assert_true(executed[0][0] + executed[0][1] < r.total);
    /* In expectation: the steps of the steady state take two distinct costs
     * (2 or 3 inner steps); the default count is their mean, min and max. */
    double distinct[2][2], sums[2];
    int n_distinct = distinct_costs(executed, 1, LAST, 2, distinct, sums);
    assert_int_equal(n_distinct, 2);
    assert_true(ts_step_flops(&c, &r, err, sizeof err));
    assert_true(r.forward == sums[0] / 2);
    assert_true(r.backward == sums[1] / 2);
    double t0 = distinct[0][0] + distinct[0][1], t1 = distinct[1][0] + distinct[1][1];
    assert_true(r.min_total == fmin(t0, t1) && r.max_total == fmax(t0, t1));
    assert_true(r.min_total < r.total && r.total < r.max_total);
}

/* Random steps on one landscape per step: a drawn count beyond ebt.steps
 * reuses the last landscape, so the expected count must not add landscapes. */
static void test_ebt_random_steps_over_landscapes(void **state) {
    (void)state;
    ts_run_config c =
        small_config("ebt", (const char *const[]){"ebt.preset=s1", "ebt.random_steps=2", NULL});
    assert_int_equal(c.model.ebt.landscapes, 0);
    enum { LAST = 20 };
    double executed[LAST + 1][2];
    executed_steps(&c, 1, LAST, executed);
    double seen[3][2], sums[2];
    int n = distinct_costs(executed, 0, LAST, 3, seen, sums);
    assert_int_equal(n, 3);
    ts_step_flops_result r;
    char err[256] = "";
    assert_true(ts_step_flops(&c, &r, err, sizeof err));
    assert_true(r.forward == sums[0] / 3);
    assert_true(r.backward == sums[1] / 3);
}

/* Parameter counts without buffers equal the allocated model's. */
static void test_param_counts(void **state) {
    (void)state;
    static const char *const archs[] = {"transformerpp", "ebt", "free", "nexus"};
    for (int i = 0; i < 4; i++) {
        ts_run_config c = small_config(
            archs[i], (const char *const[]){"nexus.variant=unshared", "nexus.order=3", NULL});
        char err[256] = "";
        long total = 0, non_embedding = 0;
        assert_true(ts_param_counts(&c.model, &total, &non_embedding, err, sizeof err));
        ts_model *model = ts_model_create(&c.model, err, sizeof err);
        assert_non_null(model);
        assert_int_equal(total, model->table.total);
        assert_int_equal(non_embedding, ts_model_non_embedding_params(model));
        assert_true(non_embedding < total);
        ts_model_destroy(model);
    }
    ts_model_config bad = small_config("transformerpp", NULL).model;
    bad.heads = 3;
    char err[256] = "";
    long total, non_embedding;
    assert_false(ts_param_counts(&bad, &total, &non_embedding, err, sizeof err));
    assert_non_null(strstr(err, "heads 3"));
}

static void test_errors(void **state) {
    (void)state;
    char err[256] = "";
    ts_step_flops_result r;
    ts_run_config c = small_config("transformerpp", NULL);
    c.model.vocab_size = 0;
    assert_false(ts_step_flops(&c, &r, err, sizeof err));
    assert_non_null(strstr(err, "vocab_size"));
    c = small_config("transformerpp", (const char *const[]){"train.accum=2", NULL});
    assert_false(ts_step_flops(&c, &r, err, sizeof err));
    assert_non_null(strstr(err, "train.accum"));
    c = small_config("nexus", NULL);
    c.model.nexus.order = 0;
    assert_false(ts_step_flops(&c, &r, err, sizeof err));
    assert_non_null(strstr(err, "nexus.order"));
}

/* The EBT paper's largest size (L 24, D 1536, 16 heads, context 256, batch
 * 256, vocabulary 50277): executing a step would need tens of GiB (the EBT's
 * logits alone are 256 x 256 x 50277 values per inner step); counting it
 * stays within a few MiB for every architecture. The Transformer++ count
 * lies where the 6N convention (head included) says, backward twice forward.
 * Timing is in bench/bench_step_cost.c. */
static void test_paper_large_counts_without_tensor_data(void **state) {
    (void)state;
    static const char *const large[] = {
        "model.vocab_size=50277", "model.context=256", "model.depth=24",     "model.width=1536",
        "model.heads=16",         "train.batch=256",   "free.latent_bits=8", NULL};
    static const struct {
        const char *arch, *setting;
    } variants[] = {{"transformerpp", NULL},    {"ebt", "ebt.preset=s1"},
                    {"ebt", "ebt.preset=s2"},   {"free", NULL},
                    {"nexus", "nexus.order=2"}, {"nexus", "nexus.order=3"}};
    const double d = 1536, l = 24, v = 50277;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const char *settings[16];
        int n = 0;
        for (; large[n]; n++) settings[n] = large[n];
        settings[n++] = variants[i].setting; /* may be NULL: none */
        settings[n] = NULL;
        ts_run_config c = small_config(variants[i].arch, settings);
        ts_step_flops_result r;
        char err[256] = "";
        if (!ts_step_flops(&c, &r, err, sizeof err)) fail_msg("%s", err);
        assert_true(r.counting_bytes > 0);
        assert_true(r.counting_bytes < (size_t)64 << 20);
        assert_true(r.total > 0 && r.forward > 0 && r.backward > 0);
        if (!strcmp(variants[i].arch, "transformerpp")) {
            long total, non_embedding;
            assert_true(ts_param_counts(&c.model, &total, &non_embedding, err, sizeof err));
            assert_int_equal(non_embedding, (long)(l * (7 * d * d + 2 * d) + d));
            assert_int_equal(total, non_embedding + (long)(2 * v * d));
            double two_n = 2 * ((double)non_embedding + v * d);
            assert_true(r.forward_per_token > two_n && r.forward_per_token < 1.1 * two_n);
            assert_true(r.backward > 1.9 * r.forward && r.backward < 2.1 * r.forward);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformerpp),
        cmocka_unit_test(test_nexus),
        cmocka_unit_test(test_free_transformer),
        cmocka_unit_test(test_ebt_s1),
        cmocka_unit_test(test_ebt_s1_accumulation_and_ranks),
        cmocka_unit_test(test_ebt_s2_replay_and_random_steps),
        cmocka_unit_test(test_ebt_random_steps_over_landscapes),
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_paper_large_counts_without_tensor_data),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
