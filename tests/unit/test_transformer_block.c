/* The Transformer++ block's fused products: one GEMM over wq, wk and wv,
 * and one over w1 and w3 (read in place by ts_swiglu_packed), where they lie
 * one after another in the model's flat buffer; the separate products where
 * they do not (parameters held elsewhere) or where a linear hook runs the
 * layers (tensor parallelism). Every path gives the same loss and the same
 * gradients, in the same places, and each engages where it should. Also the
 * block's attention without a mask (the Free Transformer's encoder) against
 * its composition of primitives. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/profile.h"
#include "models/model.h"
#include "models/transformer_block.h"
#include "models/transformerpp.h"

#ifdef TS_DOUBLE
#define TOL 1e-11
#else
#define TOL 2e-5
#endif

/* 70 positions: two strips of the fused attention. */
enum { BATCH = 2, SEQ = 70, DEPTH = 2, VOCAB = 11 };

typedef struct fixture {
    ts_model *model;
    ts_ctx ctx;
    int32_t tokens[BATCH * (SEQ + 1)];
    ts_batch batch;
} fixture;

static int setup(void **state) {
    static fixture f;
    char err[256];
    ts_model_config c = {.vocab_size = VOCAB,
                         .context = SEQ,
                         .depth = DEPTH,
                         .width = 8,
                         .heads = 2,
                         .ffn_mult = 1.5,
                         .norm_eps = 1e-5,
                         .rope_theta = 10000};
    strcpy(c.arch, "transformerpp");
    f.model = ts_model_create(&c, err, sizeof err);
    if (!f.model || !ts_ctx_init(&f.ctx, 1 << 22)) return -1;
    ts_model_init_params(f.model, 5);
    ts_model_bind(f.model, &f.ctx);
    ts_rng rng;
    ts_rng_seed(&rng, 9);
    for (int i = 0; i < BATCH * (SEQ + 1); i++) f.tokens[i] = (int32_t)ts_rng_below(&rng, VOCAB);
    f.batch = (ts_batch){.tokens = f.tokens, .batch = BATCH, .seq = SEQ, .mode = TS_MODE_TRAIN};
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    ts_ctx_free(&f->ctx);
    ts_model_destroy(f->model);
    return 0;
}

/* Calls of op in the forward pass of the profile. */
static long forward_calls(const ts_profile *p, const char *op) {
    for (int i = 0; i < p->n_entries[TS_PASS_FORWARD]; i++)
        if (!strcmp(p->entries[TS_PASS_FORWARD][i].op, op))
            return p->entries[TS_PASS_FORWARD][i].calls;
    return 0;
}

/* The loss of the batch, its gradient accumulated into every leaf's .grad
 * (the flat buffer's zeroed first; a moved leaf's starts at zero), and the
 * profile of the forward. */
static double loss_and_gradients(fixture *f, ts_profile *profile) {
    ts_model *m = f->model;
    memset(m->grads, 0, sizeof(ts_real) * (size_t)m->table.total);
    ts_mark mark = ts_get_mark(&f->ctx);
    ts_profile_start(&f->ctx, profile, TS_PROFILE_WALL);
    ts_tensor *loss = m->ops->loss(m, &f->ctx, &f->batch, NULL);
    ts_backward(&f->ctx, loss, NULL);
    ts_profile_stop(&f->ctx);
    double value = loss->data[0];
    ts_release(&f->ctx, mark);
    return value;
}

/* Every parameter's gradient, read through its leaf (wherever it lives). */
static ts_real *gradients(const ts_model *m) {
    ts_real *all = malloc(sizeof *all * (size_t)m->table.total);
    assert_non_null(all);
    for (long i = 0; i < m->table.count; i++)
        memcpy(all + m->table.entries[i].offset, m->tensors[i]->grad->data,
               sizeof *all * (size_t)m->table.entries[i].numel);
    return all;
}

static void expect_close(const ts_real *a, const ts_real *b, long n, const char *what) {
    double scale = 0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs((double)b[i]));
    assert_true(scale > 0);
    for (long i = 0; i < n; i++)
        if (!(fabs((double)a[i] - (double)b[i]) <= TOL * scale))
            fail_msg("%s: element %ld: %.12g against %.12g", what, i, (double)a[i], (double)b[i]);
}

/* Which products a run fused: Q|K|V and W1|W3. */
typedef struct fused_paths {
    bool qkv, mlp;
} fused_paths;

/* Each fused product is one adjacent_rows view per block; Q|K|V's fallback
 * concatenates its three products, W1|W3's runs ts_swiglu on two. */
static void expect_paths(const ts_profile *p, fused_paths fused) {
    assert_int_equal(forward_calls(p, "adjacent_rows"), DEPTH * (fused.qkv + fused.mlp));
    assert_int_equal(forward_calls(p, "concat"), fused.qkv ? 0 : DEPTH);
    assert_int_equal(forward_calls(p, "swiglu_packed"), fused.mlp ? DEPTH : 0);
    assert_int_equal(forward_calls(p, "swiglu"), fused.mlp ? 0 : DEPTH);
}

/* The fused run: both products fused in every block. */
static double fused_run(fixture *f, ts_real **grads) {
    ts_profile profile;
    double loss = loss_and_gradients(f, &profile);
    expect_paths(&profile, (fused_paths){true, true});
    *grads = gradients(f->model);
    return loss;
}

/* The same run after a change that makes every block fall back where
 * `fused` says it does not fuse. */
static void expect_fallback_equal(fixture *f, double fused_loss, const ts_real *fused_grads,
                                  fused_paths fused, const char *what) {
    ts_profile profile;
    double loss = loss_and_gradients(f, &profile);
    expect_paths(&profile, fused);
    assert_true(fabs(loss - fused_loss) <= TOL * fabs(fused_loss));
    ts_real *grads = gradients(f->model);
    expect_close(grads, fused_grads, f->model->table.total, what);
    free(grads);
}

/* The parameter `suffix` of every block moved out of the flat buffer (as a
 * layout that holds parameters elsewhere would): the separate products of
 * its group, same results. */
static void expect_fallback_when_moved(fixture *f, const char *suffix, fused_paths fused) {
    ts_model *m = f->model;
    ts_real *fused_grads;
    double fused_loss = fused_run(f, &fused_grads);
    ts_tensor *kept[DEPTH];
    ts_real *moved[DEPTH];
    int index[DEPTH];
    for (int l = 0; l < DEPTH; l++) {
        char name[TS_PARAM_NAME_MAX];
        snprintf(name, sizeof name, "layers.%d.%s", l, suffix);
        index[l] = ts_param_table_find(&m->table, name);
        assert_true(index[l] >= 0);
        const ts_param_entry *e = &m->table.entries[index[l]];
        moved[l] = calloc(2 * (size_t)e->numel, sizeof *moved[l]);
        assert_non_null(moved[l]);
        memcpy(moved[l], m->params + e->offset, sizeof *moved[l] * (size_t)e->numel);
        kept[l] = m->tensors[index[l]];
        m->tensors[index[l]] =
            ts_param(&f->ctx, moved[l], moved[l] + e->numel, e->ndim, e->shape, kept[l]->name);
    }
    expect_fallback_equal(f, fused_loss, fused_grads, fused, suffix);
    for (int l = 0; l < DEPTH; l++) {
        m->tensors[index[l]] = kept[l];
        free(moved[l]);
    }
    free(fused_grads);
}

static void test_fallback_when_wk_not_adjacent(void **state) {
    expect_fallback_when_moved(*state, "attention.wk", (fused_paths){false, true});
}

static void test_fallback_when_w3_not_adjacent(void **state) {
    expect_fallback_when_moved(*state, "mlp.w3", (fused_paths){true, false});
}

static ts_tensor *local_linear(void *user, ts_ctx *ctx, ts_tensor *x, ts_tensor *w) {
    (void)user;
    return ts_matmul(ctx, x, w, false, true);
}

/* A linear hook (how tensor parallelism runs the layers) gets each of the
 * five products: same results. */
static void test_fallback_under_linear_hook(void **state) {
    fixture *f = *state;
    ts_real *fused_grads;
    double fused_loss = fused_run(f, &fused_grads);
    f->model->linear = (ts_linear_hook){.apply = local_linear};
    expect_fallback_equal(f, fused_loss, fused_grads, (fused_paths){false, false}, "linear hook");
    f->model->linear = (ts_linear_hook){0};
    free(fused_grads);
}

/* softmax(rope(q) rope(k)^T / sqrt(dh)) v over heads, every row seeing
 * every key, from the primitives: linear, reshape, rope, permute,
 * ts_attention with no mask. */
static ts_tensor *heads_of(ts_ctx *ctx, ts_tensor *x, int n_heads, const int32_t *positions) {
    int b = x->shape[0], t = x->shape[1], d = x->shape[2];
    ts_tensor *h = ts_reshape(ctx, x, TS_SHAPE(b, t, n_heads, d / n_heads));
    if (positions) h = ts_rope(ctx, h, positions, 10000);
    return ts_permute(ctx, h, (const int[]){0, 2, 1, 3});
}
static ts_tensor *unmasked_attention_composed(ts_ctx *ctx, const tpp_block_params *p,
                                              ts_tensor *q_in, ts_tensor *kv_in, int n_heads,
                                              const int32_t *positions) {
    int b = q_in->shape[0], t = q_in->shape[1], d = q_in->shape[2];
    ts_tensor *q = heads_of(ctx, ts_matmul(ctx, q_in, p->wq, false, true), n_heads, positions);
    ts_tensor *k = heads_of(ctx, ts_matmul(ctx, kv_in, p->wk, false, true), n_heads, positions);
    ts_tensor *v = heads_of(ctx, ts_matmul(ctx, kv_in, p->wv, false, true), n_heads, NULL);
    ts_tensor *a = ts_attention(ctx, q, k, v, NULL, 1 / sqrt((double)(d / n_heads)));
    return ts_reshape(ctx, ts_permute(ctx, a, (const int[]){0, 2, 1, 3}), TS_SHAPE(b, t, d));
}

/* The block's attention without a mask (K|V one product read in place,
 * the fused unmasked attention) is the composition: values and gradients
 * for both inputs and the three weights; with the products fused and
 * under a linear hook (their separate products). */
static void expect_unmasked_attention_composed(fixture *f) {
    ts_ctx *ctx = &f->ctx;
    const ts_model_config *c = &f->model->config;
    tpp_block_params p = tpp_block(f->model, 0);
    static int32_t positions[SEQ];
    for (int t = 0; t < SEQ; t++) positions[t] = 3 * t % SEQ; /* out of order */
    tpp_attention_input in = {
        .positions = positions, .rope_theta = 10000, .n_heads = c->heads, .norm_eps = 1e-5};
    ts_mark mark = ts_get_mark(ctx);
    ts_rng rng;
    ts_rng_seed(&rng, 21);
    ts_tensor *x[2], *w = ts_new(ctx, TS_SHAPE(BATCH, SEQ, c->width));
    for (int i = 0; i < 2; i++) {
        x[i] = ts_new(ctx, TS_SHAPE(BATCH, SEQ, c->width));
        for (long j = 0; j < x[i]->numel; j++)
            x[i]->data[j] = (ts_real)(2 * ts_rng_uniform(&rng) - 1);
        ts_set_requires_grad(ctx, x[i], true);
    }
    for (long j = 0; j < w->numel; j++) w->data[j] = (ts_real)(2 * ts_rng_uniform(&rng) - 1);
    ts_tensor *y[2] = {tpp_multihead_attention(ctx, &p, x[0], x[1], &in),
                       unmasked_attention_composed(ctx, &p, x[0], x[1], c->heads, positions)};
    expect_close(y[0]->data, y[1]->data, y[0]->numel, "unmasked attention");
    ts_tensor *wrt[5] = {x[0], x[1], p.wq, p.wk, p.wv}, *g[2][5];
    for (int k = 0; k < 2; k++) ts_grad(ctx, 1, &y[k], &w, 5, wrt, g[k], false);
    for (int j = 0; j < 5; j++) {
        char what[64];
        snprintf(what, sizeof what, "unmasked attention: gradient %d", j);
        expect_close(g[0][j]->data, g[1][j]->data, g[0][j]->numel, what);
    }
    ts_release(ctx, mark);
}

static void test_unmasked_attention_is_its_composition(void **state) {
    fixture *f = *state;
    expect_unmasked_attention_composed(f);
    f->model->linear = (ts_linear_hook){.apply = local_linear};
    expect_unmasked_attention_composed(f);
    f->model->linear = (ts_linear_hook){0};
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fallback_when_wk_not_adjacent),
        cmocka_unit_test(test_fallback_when_w3_not_adjacent),
        cmocka_unit_test(test_fallback_under_linear_hook),
        cmocka_unit_test(test_unmasked_attention_is_its_composition),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
