/* zero2 and zero3 block by block (parallel/strategy.h, docs/parallelism.md)
 * on 1, 2 and 3 ranks: a model of BLOCKS blocks marked with ts_unit_boundary
 * trained for two steps of two micro-batches, the last rank running no
 * sequence in the second micro-batch (it replays the others' collectives),
 * ends with ddp's parameters; on more than one rank the full gradient buffer
 * is never live at once (zero2, zero3) nor the full parameters during a step
 * (zero3); every block gather started ahead of its use (MPI_Iallgatherv) is
 * waited on when the block's turn comes, as many as the schedule says; and
 * a model whose loss differentiates its own gradient (as EBT's) takes the
 * whole-model path and matches ddp too. After a step, one gather serves an
 * evaluation and a checkpoint. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "mpi_cmocka.h"
#include "models/model.h"
#include "parallel/strategy.h"
#include "train/optimizer.h"

enum { WIDTH = 8, BLOCKS = 6, STEPS = 2, ACCUM = 2 };
enum { TOTAL = (BLOCKS + 2) * WIDTH };

static int rank, size;

static const ts_model_ops plain_ops = {0};
static const ts_model_ops second_order_ops = {.gradient_graph_in_loss = true};

/* emb, layers.0.w .. layers.5.w, head: [WIDTH] each; the blocks' tensors
 * are units 1 .. BLOCKS, emb and head unit 0. */
static ts_param_table make_table(void) {
    ts_param_table t = {0};
    int shape[1] = {WIDTH};
    assert_true(ts_param_table_add(&t, "emb", 1, shape, TS_ROLE_NORM) >= 0);
    for (int l = 0; l < BLOCKS; l++) {
        char name[32];
        snprintf(name, sizeof name, "layers.%d.w", l);
        assert_true(ts_param_table_add(&t, name, 1, shape, TS_ROLE_NORM) >= 0);
    }
    assert_true(ts_param_table_add(&t, "head", 1, shape, TS_ROLE_NORM) >= 0);
    assert_int_equal(t.total, TOTAL);
    return t;
}

/* The loss of one micro-batch: h = x * emb, each block h = h + silu(h * w)
 * between its unit markers, loss = sum(h * head) (with second_order, plus
 * the squared gradient of sum(h) with respect to emb, taken with
 * create_graph inside the loss as EBT does). */
static ts_tensor *forward(ts_ctx *ctx, ts_model *m, int seed, bool second_order) {
    int shape[1] = {WIDTH};
    ts_tensor *x = ts_zeros(ctx, 1, shape);
    for (int i = 0; i < WIDTH; i++) x->data[i] = (ts_real)(0.1 * (i + 1) - 0.05 * seed);
    ts_tensor *h = ts_mul(ctx, x, m->tensors[0]);
    for (int l = 0; l < BLOCKS; l++) {
        h = ts_unit_boundary(ctx, h, l + 1, true);
        h = ts_add(ctx, h, ts_silu(ctx, ts_mul(ctx, h, m->tensors[1 + l])));
        h = ts_unit_boundary(ctx, h, l + 1, false);
    }
    ts_tensor *loss = ts_sum_all(ctx, ts_mul(ctx, h, m->tensors[BLOCKS + 1]));
    if (second_order) {
        ts_tensor *g;
        ts_tensor *emb = m->tensors[0];
        ts_grad(ctx, 1, (ts_tensor *[]){ts_sum_all(ctx, h)}, NULL, 1, &emb, &g, true);
        loss = ts_add(ctx, loss, ts_scale(ctx, ts_sum_all(ctx, ts_square(ctx, g)), 0.01));
    }
    return loss;
}

typedef struct outcome {
    ts_real params[TOTAL];
    double peak_params, peak_grads; /* elements */
    long prefetches_started, prefetches_waited;
    bool per_unit;
} outcome;

/* start_gathered: the first step starts with every unit present (adopted,
 * never released), so zero3 moves nothing in it but must still reduce
 * block by block. */
static void run(ts_parallel_strategy strategy, bool second_order, long pieces, bool start_gathered,
                outcome *out) {
    ts_param_table table = make_table();
    ts_optimizer_config oc = {.kind = TS_ADAMW,
                              .lr = 0.05,
                              .beta1 = 0.9,
                              .beta2 = 0.99,
                              .eps = 1e-8,
                              .weight_decay = 0.1,
                              .clip = 10.0};
    char err[256];
    ts_parallel p;
    assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, strategy, TOTAL, err, sizeof err));
    if (pieces > 0) p.max_piece = pieces;
    ts_optimizer opt;
    assert_true(ts_optimizer_init(&opt, &oc, p.owned_first, p.owned_count, strategy != TS_DDP));
    ts_model model = {.table = table, .ops = second_order ? &second_order_ops : &plain_ops};
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    model.tensors = calloc((size_t)table.count, sizeof *model.tensors);
    ts_real *params = calloc(TOTAL, sizeof *params), *grads = calloc(TOTAL, sizeof *grads);
    assert_true(model.tensors && params && grads);
    for (int i = 0; i < TOTAL; i++) params[i] = (ts_real)(0.5 + 0.3 * sin(1.7 * i));
    ts_model_set_buffers(&model, params, grads);
    ts_model_bind(&model, &ctx);
    assert_true(ts_parallel_adopt_model(&p, &model, &ctx, err, sizeof err));
    if (!start_gathered) ts_parallel_release_model(&p, &model);
    ts_mark mark = ts_get_mark(&ctx);
    for (int step = 0; step < STEPS; step++) {
        assert_int_equal(ts_parallel_gather_model(&p, &model, true), MPI_SUCCESS);
        ts_parallel_begin_step(&p, model.grads);
        for (int a = 0; a < ACCUM; a++) {
            /* Every rank runs micro-batch 0; the last one skips micro-batch 1. */
            if (!(a == 1 && rank == size - 1 && size > 1)) {
                ts_tensor *loss = forward(&ctx, &model, 10 * step + 3 * a + rank, second_order);
                ts_backward(&ctx, ts_scale(&ctx, loss, 1.0 / size), NULL);
                ts_release(&ctx, mark);
            }
            assert_int_equal(ts_parallel_micro_batch_done(&p, model.grads), MPI_SUCCESS);
        }
        assert_int_equal(ts_parallel_reduce_gradients(&p, model.grads), MPI_SUCCESS);
        double norm;
        assert_int_equal(ts_parallel_clip(&p, model.grads, oc.clip, &norm), MPI_SUCCESS);
        ts_optimizer_step(&opt, &table, model.params, ts_parallel_owned_gradients(&p, model.grads),
                          0.05);
        assert_int_equal(ts_parallel_gather_params(&p, model.params), MPI_SUCCESS);
        ts_parallel_release_model(&p, &model);
    }
    if (strategy == TS_ZERO2 || strategy == TS_ZERO3) /* no gradient outlives a step */
        assert_true(p.grads_held == 0);
    if (strategy == TS_ZERO3) /* between steps: the parameter shard only */
        assert_true(p.params_held == (double)p.owned_count);
    out->peak_params = p.peak_params;
    out->peak_grads = p.peak_grads;
    out->prefetches_started = p.prefetches_started;
    out->prefetches_waited = p.prefetches_waited;
    out->per_unit = p.per_unit;
    /* An evaluation and a checkpoint after the step: one gather of every
     * rank's range serves both (the second call sends nothing). */
    double sent = p.bytes_sent;
    assert_int_equal(ts_parallel_gather_model(&p, &model, false), MPI_SUCCESS);
    if (strategy == TS_ZERO3 && size > 1)
        assert_true(p.bytes_sent - sent == (double)p.owned_count * sizeof(ts_real) * (size - 1));
    sent = p.bytes_sent;
    assert_int_equal(ts_parallel_gather_model(&p, &model, false), MPI_SUCCESS);
    assert_true(p.bytes_sent == sent);
    assert_true(ts_parallel_model_present(&p, &model));
    memcpy(out->params, model.params, sizeof out->params);
    ts_optimizer_free(&opt);
    ts_parallel_free(&p);
    ts_ctx_free(&ctx);
    free(model.params);
    free(model.grads);
    free(model.tensors);
    ts_param_table_free(&table);
}

static void assert_same_params(const outcome *got, const outcome *want) {
    for (int i = 0; i < TOTAL; i++)
        assert_true(fabs((double)got->params[i] - (double)want->params[i]) <=
                    1e-5 * fabs((double)want->params[i]) + 1e-6);
}

static void test_per_block_matches_ddp(void **state) {
    (void)state;
    static outcome want, got;
    run(TS_DDP, false, 0, false, &want);
    const long pieces[] = {0, 3};
    for (int k = 0; k < 2; k++) {
        for (ts_parallel_strategy s = TS_ZERO2; s <= TS_ZERO3; s++) {
            run(s, false, pieces[k], false, &got);
            assert_true(got.per_unit);
            assert_same_params(&got, &want);
            if (size > 1) /* never the whole gradient buffer at once */
                assert_true(got.peak_grads < TOTAL);
            if (s == TS_ZERO3 && size > 1) /* nor, in a step, the whole model */
                assert_true(got.peak_params < TOTAL);
        }
    }
    run(TS_ZERO3, false, 0, true, &got);
    assert_same_params(&got, &want);
}

static void test_gathers_overlap_and_are_waited_on(void **state) {
    (void)state;
    static outcome got;
    run(TS_ZERO3, false, 0, false, &got);
    /* Per step unit 1 ahead of the first forward, then per micro-batch the
     * forward's blocks 2 .. L and the backward's L - 1 .. 1 (block 1 stays
     * for the next micro-batch, block L for the backward: no gather). */
    long expected = STEPS * (1 + ACCUM * 2 * (BLOCKS - 1));
    assert_int_equal(got.prefetches_started, got.prefetches_waited);
    assert_int_equal(got.prefetches_started, expected);
}

static void test_second_order_model_keeps_units_for_the_step(void **state) {
    (void)state;
    static outcome want, got;
    run(TS_DDP, true, 0, false, &want);
    for (ts_parallel_strategy s = TS_ZERO2; s <= TS_ZERO3; s++) {
        run(s, true, 0, false, &got);
        assert_false(got.per_unit);
        assert_same_params(&got, &want);
        assert_int_equal(got.prefetches_started, 0);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_block_matches_ddp),
        cmocka_unit_test(test_gathers_overlap_and_are_waited_on),
        cmocka_unit_test(test_second_order_model_keeps_units_for_the_step),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_parallel_units", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
