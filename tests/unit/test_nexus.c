/* Nexus higher-order attention (src/models/nexus.c, docs/nexus.md):
 *  - order 1 is Transformer++ bit for bit with the same weights, in every
 *    variant and whatever order the model was trained at;
 *  - the shared and self-refine variants have Transformer++'s parameter
 *    table (names, shapes, offsets, initial values), the unshared variant
 *    exactly 2 D^2 more per layer and level;
 *  - no output depends on a later token at orders 1 to 3 (future tokens are
 *    perturbed), and the comparison does see a leak when one is made;
 *  - the parameter gradient against finite differences (per element in the
 *    double build, along a random direction in every build);
 *  - the unshared wiring, the rule for inference orders beyond the trained
 *    one, the extra executed FLOPs per order, configuration errors and
 *    misuse of the attention function. */
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
#include "models/nexus.h"
#include "models/transformerpp.h"

#ifdef TS_DOUBLE
#define STEP 1e-5
#define TOLERANCE 1e-6
#define DIRECTIONAL_STEP 1e-5
#define DIRECTIONAL_TOLERANCE 1e-7
#else
/* Float rounding of the loss allows only a directional check. With a step of
 * 2e-3 along a direction of norm ~36 the measured errors were 3e-5 .. 3e-4
 * (steps of 1e-2 left 7e-3 of truncation error on the self-refine variant);
 * a missing or wrong gradient term is off by far more. */
#define DIRECTIONAL_STEP 2e-3
#define DIRECTIONAL_TOLERANCE 2e-3
#endif

enum { VOCAB = 11, BATCH = 2, SEQ = 7, DEPTH = 2, WIDTH = 8, HEADS = 2 };
enum { N_LOGITS = BATCH * SEQ * VOCAB };

static const char *const variants[] = {"shared", "unshared", "selfrefine"};
enum { N_VARIANTS = 3 };

static ts_model_config tiny_config(const char *arch, const char *variant, int order) {
    ts_model_config c = {.vocab_size = VOCAB,
                         .context = SEQ,
                         .depth = DEPTH,
                         .width = WIDTH,
                         .heads = HEADS,
                         .ffn_mult = 1.5,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000,
                         .nexus = {.order = order}};
    strcpy(c.arch, arch);
    strcpy(c.nexus.variant, variant);
    return c;
}

static ts_model *create(const char *arch, const char *variant, int order) {
    char err[256];
    ts_model_config config = tiny_config(arch, variant, order);
    ts_model *model = ts_model_create(&config, err, sizeof err);
    if (!model) fail_msg("creating %s (%s, order %d): %s", arch, variant, order, err);
    return model;
}

static void random_tokens(int32_t *tokens, long n, uint64_t seed) {
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    for (long i = 0; i < n; i++) tokens[i] = (int32_t)ts_rng_below(&rng, VOCAB);
}

/* Logits through tpp_logits_from_embeddings with the attention `in`
 * describes; its positions, RoPE base, heads and norm epsilon are filled in
 * here. */
static void logits_into(ts_model *model, ts_ctx *ctx, const int32_t *inputs, tpp_attention_input in,
                        ts_real *out) {
    ts_mark mark = ts_get_mark(ctx);
    bool recording = ts_set_grad_enabled(ctx, false);
    int32_t positions[SEQ];
    for (int t = 0; t < SEQ; t++) positions[t] = t;
    in.positions = positions;
    in.rope_theta = model->config.rope_theta;
    in.n_heads = HEADS;
    in.norm_eps = model->config.norm_eps;
    ts_tensor *x = ts_embedding(ctx, ts_model_param(model, "embed"), inputs, BATCH * SEQ);
    x = ts_reshape(ctx, x, TS_SHAPE(BATCH, SEQ, WIDTH));
    ts_tensor *logits = tpp_logits_from_embeddings(model, ctx, x, &in);
    assert_int_equal(logits->numel, N_LOGITS);
    memcpy(out, logits->data, sizeof(ts_real) * N_LOGITS);
    ts_set_grad_enabled(ctx, recording);
    ts_release(ctx, mark);
}

/* Transformer++'s logits as its loss computes them (the default attention). */
static void tpp_logits_into(ts_model *model, ts_ctx *ctx, const int32_t *inputs, ts_real *out) {
    logits_into(model, ctx, inputs, (tpp_attention_input){.causal = true}, out);
}

static void nexus_logits_into(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int order,
                              ts_real *out) {
    ts_mark mark = ts_get_mark(ctx);
    bool recording = ts_set_grad_enabled(ctx, false);
    ts_tensor *logits = nexus_logits(model, ctx, inputs, BATCH, SEQ, order);
    assert_int_equal(logits->numel, N_LOGITS);
    memcpy(out, logits->data, sizeof(ts_real) * N_LOGITS);
    ts_set_grad_enabled(ctx, recording);
    ts_release(ctx, mark);
}

/* Number of logits that differ (compared as values: -0 equals +0). */
static long count_different(const ts_real *a, const ts_real *b, long n) {
    long different = 0;
    for (long i = 0; i < n; i++) different += a[i] != b[i];
    return different;
}

/* The table of a shared-weight model must be Transformer++'s, entry by
 * entry, for parameters to load from one into the other. */
static void assert_table_prefix_equal(const ts_param_table *base, const ts_param_table *other) {
    assert_true(other->count >= base->count);
    for (int i = 0; i < base->count; i++) {
        const ts_param_entry *a = &base->entries[i], *b = &other->entries[i];
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->ndim, b->ndim);
        for (int k = 0; k < a->ndim; k++) assert_int_equal(a->shape[k], b->shape[k]);
        assert_int_equal(a->offset, b->offset);
        assert_int_equal(a->decay, b->decay);
    }
}

static void test_parameter_tables(void **state) {
    (void)state;
    ts_model *tpp = create("transformerpp", "shared", 1);
    ts_model_init_params(tpp, 5);
    long d = WIDTH;
    for (int v = 0; v < N_VARIANTS; v++)
        for (int order = 1; order <= 3; order++) {
            ts_model *nexus = create("nexus", variants[v], order);
            ts_model_init_params(nexus, 5);
            assert_table_prefix_equal(&tpp->table, &nexus->table);
            /* The same seed gives the shared part the same initial values. */
            assert_memory_equal(tpp->params, nexus->params, sizeof(ts_real) * tpp->table.total);
            long extra = !strcmp(variants[v], "unshared") ? 2L * DEPTH * (order - 1) * d * d : 0;
            assert_int_equal(nexus->table.count,
                             tpp->table.count + (extra ? 2 * DEPTH * (order - 1) : 0));
            assert_int_equal(nexus->table.total, tpp->table.total + extra);
            assert_int_equal(ts_model_non_embedding_params(nexus),
                             ts_model_non_embedding_params(tpp) + extra);
            ts_model_destroy(nexus);
        }
    ts_model_destroy(tpp);
}

/* Loads Transformer++'s parameters into a Nexus model's shared part. */
static void copy_shared_params(ts_model *nexus, const ts_model *tpp) {
    assert_table_prefix_equal(&tpp->table, &nexus->table);
    memcpy(nexus->params, tpp->params, sizeof(ts_real) * tpp->table.total);
}

/* Copies the named parameter's values from one model to another. */
static void copy_param(ts_model *to, const char *to_name, const ts_model *from,
                       const char *from_name) {
    int i = ts_param_table_find(&to->table, to_name),
        j = ts_param_table_find(&from->table, from_name);
    assert_true(i >= 0 && j >= 0);
    assert_int_equal(to->table.entries[i].numel, from->table.entries[j].numel);
    memcpy(to->params + to->table.entries[i].offset, from->params + from->table.entries[j].offset,
           sizeof(ts_real) * (size_t)to->table.entries[i].numel);
}

static void test_order_one_is_transformerpp_bit_for_bit(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model *tpp = create("transformerpp", "shared", 1);
    ts_model_init_params(tpp, 7);
    ts_model_bind(tpp, &ctx);
    int32_t tokens[BATCH * (SEQ + 1)], inputs[BATCH * SEQ];
    random_tokens(tokens, BATCH * (SEQ + 1), 3);
    for (int b = 0; b < BATCH; b++)
        memcpy(inputs + b * SEQ, tokens + b * (SEQ + 1), sizeof(int32_t) * SEQ);
    ts_real expected[N_LOGITS], actual[N_LOGITS];
    tpp_logits_into(tpp, &ctx, inputs, expected);
    ts_batch train = {.tokens = tokens, .batch = BATCH, .seq = SEQ, .mode = TS_MODE_TRAIN};
    ts_batch eval = train;
    eval.mode = TS_MODE_EVAL;
    ts_mark mark = ts_get_mark(&ctx);
    memset(tpp->grads, 0, sizeof(ts_real) * (size_t)tpp->table.total);
    ts_tensor *tpp_loss = tpp->ops->loss(tpp, &ctx, &train, NULL);
    ts_real tpp_loss_value = tpp_loss->data[0];
    ts_backward(&ctx, tpp_loss, NULL);
    ts_release(&ctx, mark);

    for (int v = 0; v < N_VARIANTS; v++)
        for (int trained = 1; trained <= 3; trained++) {
            ts_model *nexus = create("nexus", variants[v], trained);
            nexus->config.nexus.infer_order = 1;
            ts_model_bind(nexus, &ctx);
            copy_shared_params(nexus, tpp);
            nexus_logits_into(nexus, &ctx, inputs, 1, actual);
            if (count_different(expected, actual, N_LOGITS))
                fail_msg("%s trained at order %d: order-1 logits differ from Transformer++'s",
                         variants[v], trained);
            /* The evaluation loss at inference order 1 ... */
            mark = ts_get_mark(&ctx);
            bool recording = ts_set_grad_enabled(&ctx, false);
            double stats[TS_MAX_MODEL_STATS] = {0};
            ts_real loss = nexus->ops->loss(nexus, &ctx, &eval, stats)->data[0];
            ts_set_grad_enabled(&ctx, recording);
            ts_release(&ctx, mark);
            assert_true(loss == tpp_loss_value);
            assert_true(stats[0] == 1.0);
            /* ... and, trained at order 1, the training loss and every gradient. */
            if (trained == 1) {
                assert_int_equal(nexus->table.total, tpp->table.total);
                mark = ts_get_mark(&ctx);
                memset(nexus->grads, 0, sizeof(ts_real) * (size_t)nexus->table.total);
                ts_tensor *train_loss = nexus->ops->loss(nexus, &ctx, &train, stats);
                assert_true(train_loss->data[0] == tpp_loss_value);
                ts_backward(&ctx, train_loss, NULL);
                ts_release(&ctx, mark);
                assert_int_equal(count_different(tpp->grads, nexus->grads, tpp->table.total), 0);
            }
            ts_model_destroy(nexus);
        }
    ts_model_destroy(tpp);
    ts_ctx_free(&ctx);
}

static void test_higher_orders_change_the_output(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    int32_t inputs[BATCH * SEQ];
    random_tokens(inputs, BATCH * SEQ, 4);
    for (int v = 0; v < N_VARIANTS; v++) {
        ts_model *model = create("nexus", variants[v], 3);
        ts_model_init_params(model, 8);
        ts_model_bind(model, &ctx);
        ts_real logits[3][N_LOGITS];
        for (int order = 1; order <= 3; order++)
            nexus_logits_into(model, &ctx, inputs, order, logits[order - 1]);
        /* Position 0 sees only itself, where every level's attention is the
         * identity on V; every later position must change with the order. */
        assert_true(count_different(logits[0], logits[1], N_LOGITS) > N_LOGITS - BATCH * VOCAB - 1);
        assert_true(count_different(logits[1], logits[2], N_LOGITS) > N_LOGITS - BATCH * VOCAB - 1);
        ts_model_destroy(model);
    }
    ts_ctx_free(&ctx);
}

/* Positions before `cut` must not change when tokens from `cut` on do;
 * positions from `cut` on must (or the perturbation proves nothing). */
static void check_causal(ts_model *model, ts_ctx *ctx, int order, const char *what) {
    int32_t inputs[BATCH * SEQ], perturbed[BATCH * SEQ];
    random_tokens(inputs, BATCH * SEQ, 21);
    ts_real base[N_LOGITS], changed[N_LOGITS];
    nexus_logits_into(model, ctx, inputs, order, base);
    for (int cut = 1; cut < SEQ; cut++) {
        memcpy(perturbed, inputs, sizeof inputs);
        for (int b = 0; b < BATCH; b++)
            for (int t = cut; t < SEQ; t++)
                perturbed[b * SEQ + t] = (inputs[b * SEQ + t] + 1 + t) % VOCAB;
        nexus_logits_into(model, ctx, perturbed, order, changed);
        for (int b = 0; b < BATCH; b++) {
            long row = (long)b * SEQ * VOCAB;
            long before = count_different(base + row, changed + row, (long)cut * VOCAB);
            long after = count_different(base + row + (long)cut * VOCAB,
                                         changed + row + (long)cut * VOCAB, VOCAB);
            if (before)
                fail_msg("%s order %d: %ld logits before position %d depend on later tokens", what,
                         order, before, cut);
            if (!after)
                fail_msg("%s order %d: position %d ignores its own perturbed token", what, order,
                         cut);
        }
    }
}

static void test_no_output_depends_on_a_later_token(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    for (int v = 0; v < N_VARIANTS; v++)
        for (int trained = 1; trained <= 3; trained++) {
            ts_model *model = create("nexus", variants[v], trained);
            ts_model_init_params(model, 9);
            ts_model_bind(model, &ctx);
            /* Every inference order, including beyond the trained one. */
            for (int order = 1; order <= 3; order++) check_causal(model, &ctx, order, variants[v]);
            ts_model_destroy(model);
        }
    ts_ctx_free(&ctx);
}

/* The control: the same comparison flags a model whose attention sees the
 * future (nexus_attention under a mask that hides nothing). */
static void test_the_causality_check_sees_a_leak(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model *model = create("nexus", "shared", 2);
    ts_model_init_params(model, 9);
    ts_model_bind(model, &ctx);
    int32_t inputs[BATCH * SEQ], positions[SEQ];
    random_tokens(inputs, BATCH * SEQ, 21);
    for (int t = 0; t < SEQ; t++) positions[t] = t;
    ts_real logits[2][N_LOGITS];
    for (int k = 0; k < 2; k++) {
        if (k) inputs[SEQ - 1] = (inputs[SEQ - 1] + 1) % VOCAB; /* the last token of sequence 0 */
        ts_mark mark = ts_get_mark(&ctx);
        bool recording = ts_set_grad_enabled(&ctx, false);
        nexus_attention_user user = {.model = model, .order = 2};
        tpp_attention_input in = {.mask = ts_zeros(&ctx, TS_SHAPE(SEQ, SEQ)),
                                  .positions = positions,
                                  .rope_theta = 10000,
                                  .n_heads = HEADS,
                                  .norm_eps = 1e-5,
                                  .attention = nexus_attention,
                                  .attention_user = &user};
        ts_tensor *x = ts_embedding(&ctx, ts_model_param(model, "embed"), inputs, BATCH * SEQ);
        x = ts_reshape(&ctx, x, TS_SHAPE(BATCH, SEQ, WIDTH));
        memcpy(logits[k], tpp_logits_from_embeddings(model, &ctx, x, &in)->data,
               sizeof(ts_real) * N_LOGITS);
        ts_set_grad_enabled(&ctx, recording);
        ts_release(&ctx, mark);
    }
    assert_true(count_different(logits[0], logits[1], VOCAB) > 0); /* position 0 saw the end */
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

/* The analytic gradient of the training loss against central differences. */
static void check_gradient(const char *variant, int order) {
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    ts_model *model = create("nexus", variant, order);
    ts_model_init_params(model, 7);
    ts_model_bind(model, &ctx);
    int32_t tokens[BATCH * (SEQ + 1)];
    random_tokens(tokens, BATCH * (SEQ + 1), 3);
    ts_batch batch = {.tokens = tokens, .batch = BATCH, .seq = SEQ, .mode = TS_MODE_TRAIN};
    long n = model->table.total;
    ts_mark mark = ts_get_mark(&ctx);
    memset(model->grads, 0, sizeof(ts_real) * (size_t)n);
    ts_backward(&ctx, model->ops->loss(model, &ctx, &batch, NULL), NULL);
    ts_release(&ctx, mark);
    /* Every level's own projections are trained (unshared). */
    char name[64];
    for (int level = 2; level <= order && !strcmp(variant, "unshared"); level++) {
        snprintf(name, sizeof name, "layers.0.attention.level%d.wq", level);
        int i = ts_param_table_find(&model->table, name);
        assert_true(i >= 0);
        double norm = 0;
        for (long j = 0; j < model->table.entries[i].numel; j++)
            norm += fabs(model->grads[model->table.entries[i].offset + j]);
        assert_true(norm > 0);
    }

    ts_real saved[8192], direction[8192];
    assert_true(n <= 8192);
    memcpy(saved, model->params, sizeof(ts_real) * (size_t)n);
    ts_rng rng;
    ts_rng_seed(&rng, 11);
    ts_rng_fill_normal(&rng, direction, n, 0, 1);
    double analytic = 0;
    for (long i = 0; i < n; i++) analytic += (double)model->grads[i] * direction[i];
    for (long i = 0; i < n; i++)
        model->params[i] = saved[i] + (ts_real)DIRECTIONAL_STEP * direction[i];
    double up = model_loss_value(model, &ctx, &batch);
    for (long i = 0; i < n; i++)
        model->params[i] = saved[i] - (ts_real)DIRECTIONAL_STEP * direction[i];
    double down = model_loss_value(model, &ctx, &batch);
    memcpy(model->params, saved, sizeof(ts_real) * (size_t)n);
    double fd = (up - down) / (2 * DIRECTIONAL_STEP);
    double error = fabs(fd - analytic) / fmax(fabs(analytic), 1e-12);
    print_message("    %s order %d: directional derivative %.10g, finite difference %.10g, "
                  "relative error %.2g\n",
                  variant, order, analytic, fd, error);
    if (error > DIRECTIONAL_TOLERANCE)
        fail_msg("%s order %d: directional relative error %.3g", variant, order, error);

#ifdef TS_DOUBLE
    double scale = 0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs(model->grads[i]));
    assert_true(scale > 0);
    double worst = 0;
    long worst_index = -1;
    for (long i = 0; i < n; i++) {
        model->params[i] = saved[i] + (ts_real)STEP;
        double plus = model_loss_value(model, &ctx, &batch);
        model->params[i] = saved[i] - (ts_real)STEP;
        double minus = model_loss_value(model, &ctx, &batch);
        model->params[i] = saved[i];
        double numeric = (plus - minus) / (2 * STEP);
        double relative = fabs(numeric - model->grads[i]) / fmax(fabs(numeric), 1e-3 * scale);
        if (relative > worst) {
            worst = relative;
            worst_index = i;
        }
    }
    print_message("    %s order %d: %ld elements, worst relative error %.2g\n", variant, order, n,
                  worst);
    if (worst > TOLERANCE)
        fail_msg("%s order %d: parameter %ld: relative error %.3g exceeds %.1g", variant, order,
                 worst_index, worst, TOLERANCE);
#endif
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
}

static void test_gradient_shared_order_2(void **state) {
    (void)state;
    check_gradient("shared", 2);
}
static void test_gradient_shared_order_3(void **state) {
    (void)state;
    check_gradient("shared", 3);
}
static void test_gradient_unshared_order_3(void **state) {
    (void)state;
    check_gradient("unshared", 3);
}
static void test_gradient_selfrefine_order_3(void **state) {
    (void)state;
    check_gradient("selfrefine", 3);
}

/* Unshared with every level's projections set to the block's W_Q, W_K is
 * the shared variant; an unshared model run deeper than it was trained uses
 * its deepest level's projections for the extra levels (docs/nexus.md). */
static void test_unshared_levels(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    int32_t inputs[BATCH * SEQ];
    random_tokens(inputs, BATCH * SEQ, 5);
    ts_model *shared = create("nexus", "shared", 3);
    ts_model *unshared3 = create("nexus", "unshared", 3);
    ts_model *unshared2 = create("nexus", "unshared", 2);
    ts_model_init_params(shared, 1);
    ts_model_init_params(unshared3, 2);
    ts_model_init_params(unshared2, 3);
    ts_model_bind(shared, &ctx);
    ts_model_bind(unshared3, &ctx);
    ts_model_bind(unshared2, &ctx);
    ts_real expected[N_LOGITS], actual[N_LOGITS];

    copy_shared_params(unshared3, shared);
    char to[64], from[64];
    for (int l = 0; l < DEPTH; l++)
        for (int level = 2; level <= 3; level++)
            for (int w = 0; w < 2; w++) {
                const char *which = w ? "wk" : "wq";
                snprintf(to, sizeof to, "layers.%d.attention.level%d.%s", l, level, which);
                snprintf(from, sizeof from, "layers.%d.attention.%s", l, which);
                copy_param(unshared3, to, shared, from);
            }
    nexus_logits_into(shared, &ctx, inputs, 3, expected);
    nexus_logits_into(unshared3, &ctx, inputs, 3, actual);
    assert_int_equal(count_different(expected, actual, N_LOGITS), 0);

    /* unshared2 at order 3 == unshared3 whose level 3 copies unshared2's level 2. */
    for (int i = 0; i < shared->table.count; i++) /* the backbone, by name */
        copy_param(unshared3, shared->table.entries[i].name, unshared2,
                   shared->table.entries[i].name);
    for (int l = 0; l < DEPTH; l++)
        for (int w = 0; w < 2; w++) {
            const char *which = w ? "wk" : "wq";
            snprintf(from, sizeof from, "layers.%d.attention.level2.%s", l, which);
            copy_param(unshared3, from, unshared2, from);
            snprintf(to, sizeof to, "layers.%d.attention.level3.%s", l, which);
            copy_param(unshared3, to, unshared2, from);
        }
    nexus_logits_into(unshared2, &ctx, inputs, 3, expected);
    nexus_logits_into(unshared3, &ctx, inputs, 3, actual);
    assert_int_equal(count_different(expected, actual, N_LOGITS), 0);
    /* And the level-2 projections matter (unlike the shared variant's copy). */
    nexus_logits_into(shared, &ctx, inputs, 3, expected);
    assert_true(count_different(expected, actual, N_LOGITS) > 0);

    ts_model_destroy(shared);
    ts_model_destroy(unshared3);
    ts_model_destroy(unshared2);
    ts_ctx_free(&ctx);
}

/* The causal levels run on Transformer++'s packed layout (heads read in
 * place, RoPE inside the attention, V a slice of level 1's Q|K|V). The same
 * levels through the composition ts_attention under an explicit causal mask
 * (heads split, RoPE op, matmuls and softmax) must give the same logits up
 * to rounding. */
static void test_packed_levels_match_the_composition(void **state) {
    (void)state;
#ifdef TS_DOUBLE
    const double tolerance = 1e-12;
#else
    const double tolerance = 2e-6; /* relative to the largest logit */
#endif
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    int32_t inputs[BATCH * SEQ];
    random_tokens(inputs, BATCH * SEQ, 11);
    const ts_tensor *mask = ts_causal_mask(&ctx, SEQ);
    for (int v = 0; v < 2; v++) /* shared, unshared (self-refine has no packed path) */
        for (int order = 2; order <= 3; order++) {
            ts_model *model = create("nexus", variants[v], order);
            ts_model_init_params(model, 7 + order);
            ts_model_bind(model, &ctx);
            ts_real packed[N_LOGITS], composed[N_LOGITS];
            nexus_logits_into(model, &ctx, inputs, order, packed);
            nexus_attention_user user = {.model = model, .order = order};
            logits_into(model, &ctx, inputs,
                        (tpp_attention_input){.causal = false,
                                              .mask = mask,
                                              .attention = nexus_attention,
                                              .attention_user = &user},
                        composed);
            double largest = 0, worst = 0;
            for (int i = 0; i < N_LOGITS; i++) {
                largest = fmax(largest, fabs((double)composed[i]));
                worst = fmax(worst, fabs((double)packed[i] - (double)composed[i]));
            }
            if (!(worst <= tolerance * largest))
                fail_msg("%s order %d: packed levels differ from the composition by %.3g "
                         "(largest logit %.3g)",
                         variants[v], order, worst, largest);
            ts_model_destroy(model);
        }
    ts_ctx_free(&ctx);
}

/* Forward FLOPs of the model at `order`, recording off. */
static double forward_flops(ts_model *model, ts_ctx *ctx, const int32_t *inputs, int order) {
    ts_real logits[N_LOGITS];
    ts_reset_flops(ctx);
    nexus_logits_into(model, ctx, inputs, order, logits);
    return ts_flops_total(ctx);
}

/* The spec: each order adds per layer two D x D projections and one
 * attention core (RoPE on Q and K, scores, softmax, weighted sum); the
 * self-refine reading adds two cores (one for Q, one for K) and no
 * projection. The cost of those pieces is measured on the engine itself. */
static void test_extra_flops_per_order(void **state) {
    (void)state;
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    int32_t inputs[BATCH * SEQ], positions[SEQ];
    random_tokens(inputs, BATCH * SEQ, 6);
    for (int t = 0; t < SEQ; t++) positions[t] = t;

    bool recording = ts_set_grad_enabled(&ctx, false);
    ts_mark mark = ts_get_mark(&ctx);
    ts_tensor *h = ts_zeros(&ctx, TS_SHAPE(BATCH, SEQ, WIDTH));
    ts_tensor *w = ts_zeros(&ctx, TS_SHAPE(WIDTH, WIDTH));
    ts_tensor *mask = ts_causal_mask(&ctx, SEQ);
    ts_reset_flops(&ctx);
    ts_matmul(&ctx, h, w, false, true);
    double projection = ts_flops_total(&ctx);
    ts_reset_flops(&ctx);
    ts_tensor *q = tpp_split_heads(&ctx, h, HEADS, positions, 10000);
    ts_tensor *k = tpp_split_heads(&ctx, h, HEADS, positions, 10000);
    ts_attention(&ctx, q, k, tpp_split_heads(&ctx, h, HEADS, NULL, 0), mask, 0.5);
    double core = ts_flops_total(&ctx);
    ts_reset_flops(&ctx);
    ts_tensor *rotated = tpp_split_heads(&ctx, h, HEADS, positions, 10000);
    ts_attention(&ctx, rotated, rotated, tpp_split_heads(&ctx, h, HEADS, NULL, 0), mask, 0.5);
    double refine = ts_flops_total(&ctx);
    ts_release(&ctx, mark);
    ts_set_grad_enabled(&ctx, recording);
    assert_true(projection > 0 && core > projection);

    ts_model *tpp = create("transformerpp", "shared", 1);
    ts_model_bind(tpp, &ctx);
    ts_real logits[N_LOGITS];
    ts_reset_flops(&ctx);
    tpp_logits_into(tpp, &ctx, inputs, logits);
    double baseline = ts_flops_total(&ctx);
    const double per_level[N_VARIANTS] = {2 * projection + core, 2 * projection + core, 2 * refine};
    for (int v = 0; v < N_VARIANTS; v++) {
        ts_model *model = create("nexus", variants[v], 3);
        ts_model_bind(model, &ctx);
        for (int order = 1; order <= 3; order++) {
            double flops = forward_flops(model, &ctx, inputs, order);
            double expected = baseline + (order - 1) * DEPTH * per_level[v];
            if (flops != expected)
                fail_msg("%s order %d: %.0f forward FLOPs, expected %.0f", variants[v], order,
                         flops, expected);
        }
        ts_model_destroy(model);
    }
    ts_model_destroy(tpp);
    ts_ctx_free(&ctx);
}

static void expect_rejected(ts_model_config config, const char *message) {
    char err[256] = "";
    ts_model *model = ts_model_create(&config, err, sizeof err);
    if (model) {
        ts_model_destroy(model);
        fail_msg("accepted a configuration that should fail with \"%s\"", message);
    }
    if (!strstr(err, message)) fail_msg("error \"%s\" lacks \"%s\"", err, message);
}

static void test_configuration_errors(void **state) {
    (void)state;
    expect_rejected(tiny_config("nexus", "shared", 0),
                    "nexus.order must be between 1 and 16, got 0");
    expect_rejected(tiny_config("nexus", "shared", 17), "got 17");
    expect_rejected(tiny_config("nexus", "mixed", 2), "not 'mixed'");
    ts_model_config c = tiny_config("nexus", "shared", 2);
    c.nexus.infer_order = -1;
    expect_rejected(c, "nexus.infer_order must be between 0 (as trained) and 16, got -1");

    /* Training runs at nexus.order; evaluation at infer_order when set. */
    char err[128] = "";
    ts_nexus_config n = {.order = 2, .infer_order = 0};
    assert_int_equal(nexus_order_for_mode(&n, TS_MODE_EVAL, err, sizeof err), 2);
    n.infer_order = 3;
    assert_int_equal(nexus_order_for_mode(&n, TS_MODE_TRAIN, err, sizeof err), 2);
    assert_int_equal(nexus_order_for_mode(&n, TS_MODE_EVAL, err, sizeof err), 3);
    n.infer_order = 99;
    assert_int_equal(nexus_order_for_mode(&n, TS_MODE_EVAL, err, sizeof err), 0);
    assert_non_null(strstr(err, "got 99"));
}

/* Runs nexus_attention in every block of `model` at `order` (with keys and
 * values from a second stream when asked) and returns the message it failed
 * with, or "" when it ran. */
static const char *attention_failure(const char *arch, int order, bool kv_source) {
    static ts_ctx ctx; /* static: not indeterminate after the longjmp */
    static ts_error_catch c;
    static ts_model *model;
    assert_true(ts_ctx_init(&ctx, 1 << 20));
    model = create(arch, "shared", 2);
    ts_model_bind(model, &ctx);
    ts_ctx_set_error_handler(&ctx, ts_error_catch_jump, &c);
    c.message[0] = '\0';
    if (setjmp(c.back) == 0) {
        int32_t positions[SEQ] = {0, 1, 2, 3, 4, 5, 6};
        nexus_attention_user user = {.model = model, .order = order};
        ts_tensor *x = ts_zeros(&ctx, TS_SHAPE(BATCH, SEQ, WIDTH));
        tpp_attention_input in = {.mask = ts_causal_mask(&ctx, SEQ),
                                  .positions = positions,
                                  .rope_theta = 10000,
                                  .n_heads = HEADS,
                                  .norm_eps = 1e-5,
                                  .kv_source = kv_source ? x : NULL,
                                  .attention = nexus_attention,
                                  .attention_user = &user};
        tpp_logits_from_embeddings(model, &ctx, x, &in);
    }
    ts_model_destroy(model);
    ts_ctx_free(&ctx);
    return c.message;
}

/* Misuse goes through ts_fail: keys and values from another stream have no
 * inner attention above order 1, and the state must be a Nexus model's. */
static void test_attention_misuse(void **state) {
    (void)state;
    assert_string_equal(attention_failure("nexus", 1, true), "");
    assert_string_equal(attention_failure("nexus", 2, false), "");
    const char *message = attention_failure("nexus", 2, true);
    if (!strstr(message, "order 2 needs self-attention"))
        fail_msg("message \"%s\" does not refuse kv_source at order 2", message);
    message = attention_failure("transformerpp", 2, false);
    if (!strstr(message, "with a Nexus model"))
        fail_msg("message \"%s\" does not refuse a Transformer++ model", message);
    message = attention_failure("nexus", 0, false);
    if (!strstr(message, "order >= 1")) fail_msg("message \"%s\" does not refuse order 0", message);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parameter_tables),
        cmocka_unit_test(test_order_one_is_transformerpp_bit_for_bit),
        cmocka_unit_test(test_higher_orders_change_the_output),
        cmocka_unit_test(test_no_output_depends_on_a_later_token),
        cmocka_unit_test(test_the_causality_check_sees_a_leak),
        cmocka_unit_test(test_gradient_shared_order_2),
        cmocka_unit_test(test_gradient_shared_order_3),
        cmocka_unit_test(test_gradient_unshared_order_3),
        cmocka_unit_test(test_gradient_selfrefine_order_3),
        cmocka_unit_test(test_unshared_levels),
        cmocka_unit_test(test_packed_levels_match_the_composition),
        cmocka_unit_test(test_extra_flops_per_order),
        cmocka_unit_test(test_configuration_errors),
        cmocka_unit_test(test_attention_misuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
