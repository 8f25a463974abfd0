/* The parallelism interface (parallel/strategy.h) on 1 and 2 ranks (run by
 * tests/run_tests.sh; the CLI tests add 3): the reduced gradient, its global
 * norm and the gathered parameters of zero1, zero2 and zero3 equal ddp's,
 * with one MPI call per collective and with collectives cut into rounds of a
 * few elements (the path that buffers over 2^31 elements take); the
 * optimiser over each rank's shard, whose boundaries cut through tensors
 * with different decay and learning-rate scales, gives ddp's full update.
 * zero3 releases the model between steps (its shard only: the rest of the
 * buffer reads as zeros, the leaves keep their addresses) and gathers it
 * back. An array in the owned order spreads into the flat layout on every
 * rank and back (the moments' way into a tensor-parallel checkpoint). This
 * table has no blocks, so zero2 and zero3 take their whole-model
 * path here; tests/mpi/test_parallel_units.c runs the per-block one. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <mpi.h>

#include "mpi_cmocka.h"
#include "models/model.h"
#include "parallel/strategy.h"
#include "train/optimizer.h"

enum { TOTAL = 23 }; /* not a multiple of 2 or 3: the last shard is short */

static int rank, size;

/* A gradient that differs per rank and element. */
static void fill_gradient(ts_real *g, int r) {
    for (int i = 0; i < TOTAL; i++) g[i] = (ts_real)(0.25 * (i + 1) * (r + 1) - 0.5 * (i % 3));
}

/* Three tensors of 7, 9 and 7 elements: decayed, not decayed at lr x3, decayed. */
static ts_param_table make_table(void) {
    ts_param_table t = {0};
    int a[2] = {7, 1}, b[1] = {9}, c[2] = {1, 7};
    assert_true(ts_param_table_add(&t, "a", 2, a, TS_ROLE_MATRIX) == 0);
    assert_true(ts_param_table_add(&t, "b", 1, b, TS_ROLE_NORM) == 1);
    assert_true(ts_param_table_add(&t, "c", 2, c, TS_ROLE_MATRIX) == 2);
    t.entries[1].lr_scale = 3;
    assert_int_equal(t.total, TOTAL);
    return t;
}

/* Two optimiser steps under strategy (pieces: max elements per collective
 * call, 0 for MPI's limit) into params; the gradient norms into norms. */
static void run_steps(ts_parallel_strategy strategy, long pieces, ts_real *params, double *norms) {
    ts_param_table table = make_table();
    ts_optimizer_config oc = {.kind = TS_ADAMW,
                              .lr = 0.1,
                              .beta1 = 0.9,
                              .beta2 = 0.99,
                              .eps = 1e-8,
                              .weight_decay = 0.1,
                              .clip = 1.0};
    ts_parallel p;
    char err[256];
    /* A model over the table, its leaves bound, as the trainer holds it. */
    ts_model model = {.table = table};
    assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, strategy, &model, err, sizeof err));
    if (pieces > 0) p.max_piece = pieces;
    ts_optimizer opt;
    assert_true(ts_optimizer_init(&opt, &oc, p.owned, p.n_owned, strategy != TS_DDP));
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    model.tensors = calloc((size_t)table.count, sizeof *model.tensors);
    ts_real *full = calloc(TOTAL, sizeof *full), *full_grads = calloc(TOTAL, sizeof *full_grads);
    assert_non_null(model.tensors);
    assert_non_null(full);
    assert_non_null(full_grads);
    for (int i = 0; i < TOTAL; i++) full[i] = (ts_real)(0.01 * i);
    ts_model_set_buffers(&model, full, full_grads);
    ts_model_bind(&model, &ctx);
    assert_true(ts_parallel_adopt_model(&p, &model, &ctx, err, sizeof err));
    assert_false(p.per_unit);
    ts_real *leaf0 = model.tensors[0]->data;
    ts_parallel_release_model(&p, &model);
    assert_true(ts_parallel_model_present(&p, &model) == (strategy != TS_ZERO3));
    for (int step = 0; step < 2; step++) {
        /* As for an evaluation (no gradient), then for a step. */
        assert_int_equal(ts_parallel_gather_model(&p, &model, false), MPI_SUCCESS);
        assert_true(ts_parallel_model_present(&p, &model));
        assert_int_equal(ts_parallel_gather_model(&p, &model, true), MPI_SUCCESS);
        assert_non_null(model.grads);
        ts_real *grads = model.grads;
        assert_ptr_equal(model.tensors[1]->data, model.params + table.entries[1].offset);
        assert_ptr_equal(model.tensors[2]->grad->data, grads + table.entries[2].offset);
        ts_parallel_begin_step(&p, grads);
        /* Two micro-batches, each adding half of this rank's gradient. */
        for (int micro = 0; micro < 2; micro++) {
            ts_real g[TOTAL];
            fill_gradient(g, rank + step);
            for (int i = 0; i < TOTAL; i++) grads[i] += g[i] / 2;
            assert_int_equal(ts_parallel_micro_batch_done(&p, grads), MPI_SUCCESS);
        }
        assert_int_equal(ts_parallel_reduce_gradients(&p, grads), MPI_SUCCESS);
        assert_int_equal(ts_parallel_clip(&p, grads, oc.clip, &norms[step]), MPI_SUCCESS);
        ts_optimizer_step(&opt, &table, model.params, ts_parallel_owned_gradients(&p, grads), 0.1);
        assert_int_equal(ts_parallel_gather_params(&p, model.params), MPI_SUCCESS);
        ts_parallel_release_model(&p, &model);
        if (strategy == TS_ZERO3) {
            assert_false(ts_parallel_model_present(&p, &model));
            assert_ptr_equal(model.tensors[0]->data, leaf0); /* the same address */
            for (long i = 0; i < TOTAL; i++) {               /* only the shard is kept */
                bool owned = false;
                for (int k = 0; k < p.n_owned; k++)
                    owned =
                        owned || (i >= p.owned[k].first && i < p.owned[k].first + p.owned[k].count);
                if (!owned) assert_true(model.params[i] == 0);
            }
        }
    }
    assert_int_equal(ts_parallel_gather_model(&p, &model, false), MPI_SUCCESS);
    memcpy(params, model.params, TOTAL * sizeof *params);
    ts_optimizer_free(&opt);
    ts_parallel_free(&p); /* gives adopted buffers back and detaches them */
    ts_ctx_free(&ctx);
    free(model.params);
    free(model.grads);
    free(model.tensors);
    ts_param_table_free(&table);
}

static void test_shards_tile_the_buffer(void **state) {
    (void)state;
    ts_parallel p;
    char err[256];
    ts_param_table table = make_table();
    ts_model model = {.table = table};
    assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, TS_ZERO1, &model, err, sizeof err));
    assert_int_equal(p.shard, (TOTAL + size - 1) / size);
    /* zero1 owns its checkpoint range: one contiguous shard. */
    assert_true(ts_parallel_owned_is_checkpoint_range(&p));
    assert_int_equal(p.n_owned, 1);
    long next = 0;
    for (int r = 0; r < size; r++) {
        long first, count;
        ts_parallel_checkpoint_range(&p, r, &first, &count);
        if (r == rank) {
            assert_int_equal(p.owned[0].first, first);
            assert_int_equal(p.owned[0].count, count);
        }
        assert_int_equal(first, next);
        assert_true(count <= p.shard);
        next = first + count;
    }
    assert_int_equal(next, TOTAL);
    ts_parallel_free(&p);
    ts_param_table_free(&table);
}

static void test_zero_matches_ddp(void **state) {
    (void)state;
    ts_real want[TOTAL], got[TOTAL];
    double want_norms[2], got_norms[2];
    run_steps(TS_DDP, 0, want, want_norms);
    const ts_parallel_strategy strategies[] = {TS_ZERO1, TS_ZERO2, TS_ZERO3};
    const long pieces[] = {0, 1, 3, 5};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 4; k++) {
            run_steps(strategies[s], pieces[k], got, got_norms);
            for (int i = 0; i < TOTAL; i++)
                assert_true(fabs((double)got[i] - (double)want[i]) <=
                            1e-5 * fabs((double)want[i]) + 1e-6);
            for (int step = 0; step < 2; step++)
                assert_true(fabs(got_norms[step] - want_norms[step]) <= 1e-6 * want_norms[step]);
        }
}

/* An array of the owned ranges in the owned order spread into the flat
 * layout on every rank (how a grid position's moment shards are gathered
 * for a checkpoint, docs/parallelism.md), in one call and in rounds of 2
 * elements, and taken back; a checkpoint's transfer books no step traffic. */
static void test_owned_round_trip(void **state) {
    (void)state;
    const ts_parallel_strategy strategies[] = {TS_DDP, TS_ZERO1, TS_ZERO2, TS_ZERO3};
    for (int s = 0; s < 4; s++)
        for (long pieces = 0; pieces <= 2; pieces += 2) {
            ts_parallel p;
            char err[256];
            ts_param_table table = make_table();
            ts_model model = {.table = table};
            assert_true(
                ts_parallel_init(&p, MPI_COMM_WORLD, strategies[s], &model, err, sizeof err));
            if (pieces > 0) p.max_piece = pieces;
            ts_real owned[TOTAL], back[TOTAL], full[TOTAL];
            long at = 0;
            for (int k = 0; k < p.n_owned; k++)
                for (long i = 0; i < p.owned[k].count; i++)
                    owned[at++] = (ts_real)(p.owned[k].first + i + 1);
            assert_int_equal(at, p.owned_count);
            for (int i = 0; i < TOTAL; i++) full[i] = -1;
            assert_int_equal(ts_parallel_gather_owned(&p, owned, full), MPI_SUCCESS);
            for (int i = 0; i < TOTAL; i++) assert_true(full[i] == (ts_real)(i + 1));
            assert_true(p.bytes_sent == 0);
            ts_parallel_take_owned(&p, full, back);
            assert_memory_equal(back, owned, (size_t)p.owned_count * sizeof *back);
            ts_parallel_free(&p);
            ts_param_table_free(&table);
        }
}

static void test_strategy_names(void **state) {
    (void)state;
    ts_parallel_strategy s;
    assert_false(ts_parallel_strategy_parse("zero4", &s));
    assert_true(ts_parallel_strategy_parse("zero2", &s) && s == TS_ZERO2);
    assert_true(ts_parallel_strategy_parse("zero3", &s) && s == TS_ZERO3);
    assert_string_equal(ts_parallel_strategy_name(TS_ZERO3), "zero3");
}

static void test_memory_model(void **state) {
    (void)state;
    /* ddp holds 16 bytes per float parameter; zero1's moments are 8/N. */
    ts_parallel_memory ddp = ts_parallel_memory_estimate(TS_DDP, 1000, 100, 4, 4, 2);
    assert_true(ddp.parameters + ddp.gradients + ddp.optimizer == 16000);
    ts_parallel_memory z1 = ts_parallel_memory_estimate(TS_ZERO1, 1000, 100, 4, 4, 2);
    assert_true(z1.optimizer == 2000);
    /* Per unit (100 elements of working units): zero2's gradient is its
     * shard and the units, zero3 holds shards and units of parameters and
     * gradient; between steps the parameter and moment shards, 12/N. */
    ts_parallel_memory z2 = ts_parallel_memory_estimate(TS_ZERO2, 1000, 100, 4, 4, 2);
    assert_true(z2.gradients == 1400 && z2.parameters == 4000);
    ts_parallel_memory z3 = ts_parallel_memory_estimate(TS_ZERO3, 1000, 100, 4, 4, 2);
    assert_true(z3.parameters == 1400 && z3.gradients == 1400 && z3.optimizer == 2000);
    assert_true(z3.between_steps == 3000);
    assert_true(ddp.between_steps == 16000);
    /* The whole model as its unit (EBT): the full parameters and gradient,
     * and the shard it accumulates into: zero1's peak and one shard more. */
    ts_parallel_memory whole = ts_parallel_memory_estimate(TS_ZERO3, 1000, 1000, 4, 4, 2);
    assert_true(whole.parameters + whole.gradients + whole.optimizer ==
                z1.parameters + z1.gradients + z1.optimizer + 1000);
}

/* A rank that reaches the step's collectives while another is still
 * computing books the wait in collective_seconds (the trainer's per-step
 * train/collective_seconds), under every strategy: the last rank arrives
 * 0.2 s late, rank 0 books at least 0.15 s of it. The bookings are checked
 * after every rank has run every strategy's collectives, so a failed check
 * fails the test instead of leaving the other rank in a collective. */
static void test_collectives_book_their_wait(void **state) {
    (void)state;
    const ts_parallel_strategy strategies[] = {TS_DDP, TS_ZERO1, TS_ZERO2, TS_ZERO3};
    double booked[4];
    int calls_failed = 0;
    for (int s = 0; s < 4; s++) {
        ts_parallel p;
        char err[256];
        ts_param_table table = make_table();
        ts_model model = {.table = table};
        assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, strategies[s], &model, err, sizeof err));
        double before = p.collective_seconds;
        ts_real grads[TOTAL];
        ts_parallel_begin_step(&p, grads);
        fill_gradient(grads, rank);
        if (size > 1 && rank == size - 1) nanosleep(&(struct timespec){0, 200000000L}, NULL);
        double norm;
        calls_failed += ts_parallel_micro_batch_done(&p, grads) != MPI_SUCCESS;
        calls_failed += ts_parallel_reduce_gradients(&p, grads) != MPI_SUCCESS;
        calls_failed += ts_parallel_clip(&p, grads, 0, &norm) != MPI_SUCCESS;
        booked[s] = p.collective_seconds - before;
        assert_true(before == 0);
        ts_parallel_free(&p);
        ts_param_table_free(&table);
    }
    assert_int_equal(calls_failed, 0);
    for (int s = 0; s < 4; s++) {
        assert_true(booked[s] >= 0 && booked[s] < 60);
        if (size > 1 && rank == 0) assert_true(booked[s] >= 0.15);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shards_tile_the_buffer),
        cmocka_unit_test(test_zero_matches_ddp),
        cmocka_unit_test(test_owned_round_trip),
        cmocka_unit_test(test_strategy_names),
        cmocka_unit_test(test_memory_model),
        cmocka_unit_test(test_collectives_book_their_wait),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_parallel_strategy", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
