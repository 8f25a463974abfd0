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
 * evaluation and a checkpoint. The same runs on a table of uneven blocks
 * (1 to 9 elements, some smaller than the rank count, the first block in
 * two intervals as Nexus's) check that every rank owns a slice of every
 * unit and that the slices tile the buffer. Those tables are smaller than a
 * page; the discard that gives a unit's pages back is checked apart on a
 * buffer of several pages. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <mpi.h>

#include "mpi_cmocka.h"
#include "models/model.h"
#include "parallel/strategy.h"
#include "train/optimizer.h"

enum { WIDTH = 8, BLOCKS = 6, STEPS = 2, ACCUM = 2 };
enum { TOTAL = (BLOCKS + 2) * WIDTH, MAX_TOTAL = TOTAL };

static int rank, size;
/* The uneven table: block sizes, and block 0's second tensor registered
 * after the head (its unit is then two intervals). */
static bool uneven;
static const int uneven_sizes[BLOCKS] = {1, 2, 9, 3, 1, 5};
enum { UNEVEN_EXTRA = 2 };

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

/* emb [WIDTH], layers.l.w [uneven_sizes[l]], head [WIDTH], layers.0.extra
 * [UNEVEN_EXTRA]. */
static ts_param_table make_uneven_table(void) {
    ts_param_table t = {0};
    int shape[1] = {WIDTH}, extra[1] = {UNEVEN_EXTRA};
    assert_true(ts_param_table_add(&t, "emb", 1, shape, TS_ROLE_NORM) >= 0);
    for (int l = 0; l < BLOCKS; l++) {
        char name[32];
        int n[1] = {uneven_sizes[l]};
        snprintf(name, sizeof name, "layers.%d.w", l);
        assert_true(ts_param_table_add(&t, name, 1, n, TS_ROLE_NORM) >= 0);
    }
    assert_true(ts_param_table_add(&t, "head", 1, shape, TS_ROLE_NORM) >= 0);
    assert_true(ts_param_table_add(&t, "layers.0.extra", 1, extra, TS_ROLE_NORM) >= 0);
    assert_true(t.total <= MAX_TOTAL);
    return t;
}

/* Block l's mixing weights: its tensor itself (WIDTH elements), or, in the
 * uneven table, the sum of silu over its tensors broadcast to WIDTH. */
static ts_tensor *block_weights(ts_ctx *ctx, ts_model *m, int l) {
    if (!uneven) return m->tensors[1 + l];
    int shape[1] = {WIDTH};
    ts_tensor *c = ts_sum_all(ctx, ts_silu(ctx, m->tensors[1 + l]));
    if (l == 0) c = ts_add(ctx, c, ts_sum_all(ctx, ts_silu(ctx, m->tensors[BLOCKS + 2])));
    return ts_broadcast_to(ctx, ts_scale(ctx, c, 0.3), 1, shape);
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
        h = ts_add(ctx, h, ts_silu(ctx, ts_mul(ctx, h, block_weights(ctx, m, l))));
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
    ts_real params[MAX_TOTAL];
    long total;
    double peak_params, peak_grads; /* elements */
    long prefetches_started, prefetches_waited;
    bool per_unit;
} outcome;

/* The strategy, the context and the model a test adopted, freed (the
 * model's table with it). */
static void free_adopted(ts_parallel *p, ts_ctx *ctx, ts_model *model) {
    ts_parallel_free(p); /* gives adopted buffers back and detaches them */
    ts_ctx_free(ctx);
    free(model->params);
    free(model->grads);
    free(model->tensors);
    ts_param_table_free(&model->table);
}

/* start_gathered: the first step starts with every unit present (adopted,
 * never released), so zero3 moves nothing in it but must still reduce
 * block by block. */
static void run(ts_parallel_strategy strategy, bool second_order, long pieces, bool start_gathered,
                outcome *out) {
    ts_param_table table = uneven ? make_uneven_table() : make_table();
    const long total = table.total;
    ts_optimizer_config oc = {.kind = TS_ADAMW,
                              .lr = 0.05,
                              .beta1 = 0.9,
                              .beta2 = 0.99,
                              .eps = 1e-8,
                              .weight_decay = 0.1,
                              .clip = 10.0};
    char err[256];
    ts_parallel p;
    ts_model model = {.table = table, .ops = second_order ? &second_order_ops : &plain_ops};
    assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, strategy, &model, err, sizeof err));
    if (pieces > 0) p.max_piece = pieces;
    ts_optimizer opt;
    assert_true(ts_optimizer_init(&opt, &oc, p.owned, p.n_owned, strategy != TS_DDP));
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    model.tensors = calloc((size_t)table.count, sizeof *model.tensors);
    ts_real *params = calloc((size_t)total, sizeof *params),
            *grads = calloc((size_t)total, sizeof *grads);
    assert_true(model.tensors && params && grads);
    for (int i = 0; i < total; i++) params[i] = (ts_real)(0.5 + 0.3 * sin(1.7 * i));
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
    bool gradient_shard = strategy == TS_ZERO2 || strategy == TS_ZERO3;
    if (gradient_shard) { /* the shard and stage stay mapped for the next step, zeroed */
        double stage = p.grad_stage_live ? (double)p.grad_stage_elems : 0;
        assert_true(p.grad_shard_live && p.grad_shard_kept);
        assert_true(p.grads_held == (double)p.owned_count + stage);
        bool shard_zero = true;
        for (long i = 0; i < p.owned_count; i++) shard_zero &= p.grad_shard[i] == 0;
        assert_true(shard_zero);
        assert_true(ts_parallel_stage_is_clear(&p));
    }
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
    if (gradient_shard) { /* that work holds no gradient */
        assert_true(p.grads_held == 0);
        assert_false(p.grad_shard_live || p.grad_stage_live);
    }
    if (strategy == TS_ZERO3 && size > 1)
        assert_true(p.bytes_sent - sent == (double)p.owned_count * sizeof(ts_real) * (size - 1));
    sent = p.bytes_sent;
    assert_int_equal(ts_parallel_gather_model(&p, &model, false), MPI_SUCCESS);
    assert_true(p.bytes_sent == sent);
    assert_true(ts_parallel_model_present(&p, &model));
    memcpy(out->params, model.params, (size_t)total * sizeof *out->params);
    out->total = total;
    ts_optimizer_free(&opt);
    free_adopted(&p, &ctx, &model);
}

static void assert_same_params(const outcome *got, const outcome *want) {
    assert_int_equal(got->total, want->total);
    for (int i = 0; i < want->total; i++)
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
                assert_true(got.peak_grads < got.total);
            if (s == TS_ZERO3 && size > 1) /* nor, in a step, the whole model */
                assert_true(got.peak_params < got.total);
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

static void test_uneven_units_match_ddp(void **state) {
    (void)state;
    static outcome want, got;
    uneven = true;
    run(TS_DDP, false, 0, false, &want);
    const long pieces[] = {0, 1};
    for (int k = 0; k < 2; k++)
        for (ts_parallel_strategy s = TS_ZERO2; s <= TS_ZERO3; s++) {
            run(s, false, pieces[k], false, &got);
            assert_true(got.per_unit);
            assert_same_params(&got, &want);
        }
    uneven = false;
}

/* Where the backward puts a block's gradient under zero2 and zero3: every
 * block leaf's .grad in the one stage, at its offset within its unit (block
 * 0's two intervals one after the other), the stage as long as the largest
 * block; unit 0's leaves in the flat buffer; a write into the stage outside
 * a block's backward is seen (the hook stops the job on it). A model that
 * differentiates its own gradient has no stage (its whole-model path keeps
 * the buffer). */
static void test_block_gradients_accumulate_in_the_stage(void **state) {
    (void)state;
    for (int second_order = 0; second_order < 2; second_order++)
        for (ts_parallel_strategy s = TS_ZERO2; s <= TS_ZERO3; s++) {
            ts_param_table table = make_uneven_table();
            ts_model model = {.table = table, .ops = second_order ? &second_order_ops : &plain_ops};
            char err[256];
            ts_parallel p;
            assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, s, &model, err, sizeof err));
            ts_ctx ctx;
            assert_true(ts_ctx_init(&ctx, 0));
            model.tensors = calloc((size_t)table.count, sizeof *model.tensors);
            ts_real *params = calloc((size_t)table.total, sizeof *params),
                    *grads = calloc((size_t)table.total, sizeof *grads);
            assert_true(model.tensors && params && grads);
            ts_model_set_buffers(&model, params, grads);
            ts_model_bind(&model, &ctx);
            assert_true(ts_parallel_adopt_model(&p, &model, &ctx, err, sizeof err));
            if (second_order) {
                assert_null(p.grad_stage);
                for (int i = 0; i < table.count; i++)
                    assert_ptr_equal(model.tensors[i]->grad->data,
                                     model.grads + table.entries[i].offset);
            } else {
                assert_non_null(p.grad_stage);
                assert_int_equal(p.grad_stage_elems, 9); /* layers.2.w */
                const ts_real *stage = p.grad_stage;
                assert_ptr_equal(ts_model_param(&model, "layers.0.w")->grad->data, stage);
                assert_ptr_equal(ts_model_param(&model, "layers.0.extra")->grad->data,
                                 stage + uneven_sizes[0]);
                /* A write into a block's gradient outside a backward shows. */
                assert_true(ts_parallel_stage_is_clear(&p));
                ts_model_param(&model, "layers.3.w")->grad->data[2] = 0.5;
                assert_false(ts_parallel_stage_is_clear(&p));
                ts_model_param(&model, "layers.3.w")->grad->data[2] = 0;
                for (int l = 1; l < BLOCKS; l++) {
                    char name[32];
                    snprintf(name, sizeof name, "layers.%d.w", l);
                    assert_ptr_equal(ts_model_param(&model, name)->grad->data, stage);
                }
                const char *const whole[] = {"emb", "head"};
                for (int i = 0; i < 2; i++)
                    assert_ptr_equal(
                        ts_model_param(&model, whole[i])->grad->data,
                        model.grads + table.entries[ts_param_table_find(&table, whole[i])].offset);
            }
            free_adopted(&p, &ctx, &model);
        }
}

/* The shard layout of the uneven table under zero2 and zero3: each rank's
 * owned ranges are its slice of every unit interval (ceil(count / N)
 * elements from r * ceil(count / N), clipped), and what the ranks say they
 * own (their own p.owned) covers every element exactly once. */
static void test_every_rank_owns_a_slice_of_every_unit(void **state) {
    (void)state;
    ts_param_table table = make_uneven_table();
    ts_model model = {.table = table, .ops = &plain_ops};
    char err[256];
    for (ts_parallel_strategy s = TS_ZERO2; s <= TS_ZERO3; s++) {
        ts_parallel p;
        assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, s, &model, err, sizeof err));
        /* One piece per unit interval: unit 0 (emb, head) and block 0
         * (layers.0.w, layers.0.extra) two each, the other blocks one. */
        assert_int_equal(p.n_pieces, 2 + 2 + (BLOCKS - 1));
        long owned = 0;
        int owners[MAX_TOTAL] = {0}, rank_sum[MAX_TOTAL] = {0};
        for (int i = 0; i < p.n_pieces; i++) {
            const ts_shard_piece *q = &p.pieces[i];
            if (i > 0) assert_int_equal(q->first, p.pieces[i - 1].first + p.pieces[i - 1].count);
            long slice = (q->count + size - 1) / size;
            long lo = rank * slice < q->count ? rank * slice : q->count;
            long hi = lo + slice < q->count ? lo + slice : q->count;
            assert_int_equal(p.owned[i].first, q->first + lo);
            assert_int_equal(p.owned[i].count, hi - lo);
            assert_int_equal(q->owned_at, owned);
            owned += p.owned[i].count;
            for (long e = 0; e < p.owned[i].count; e++) {
                owners[p.owned[i].first + e] = 1;
                rank_sum[p.owned[i].first + e] = rank + 1;
            }
        }
        assert_int_equal(p.pieces[p.n_pieces - 1].first + p.pieces[p.n_pieces - 1].count,
                         table.total);
        assert_int_equal(owned, p.owned_count);
        MPI_Allreduce(MPI_IN_PLACE, owners, MAX_TOTAL, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, rank_sum, MAX_TOTAL, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        for (long e = 0; e < table.total; e++) {
            assert_int_equal(owners[e], 1);
            /* ts_parallel_slice, asked about any rank, agrees with that rank. */
            int owner = -1;
            for (int r = 0; r < size; r++)
                for (int i = 0; i < p.n_pieces; i++) {
                    long f, c;
                    ts_parallel_slice(&p, i, r, &f, &c);
                    if (e >= f && e < f + c) owner = r;
                }
            assert_int_equal(rank_sum[e], owner + 1);
        }
        /* Units smaller than the rank count leave the last ranks without a
         * part of them; every rank still owns a part of the 9-element block. */
        if (size > 1) assert_false(ts_parallel_owned_is_checkpoint_range(&p));
        ts_parallel_free(&p);
    }
    ts_param_table_free(&table);
}

/* The moments' exchange between the owned order and a checkpoint's
 * contiguous ranges, both ways, in one MPI_Alltoallv and in point-to-point
 * pieces of 2 elements. */
static void test_checkpoint_exchange_round_trip(void **state) {
    (void)state;
    ts_param_table table = make_uneven_table();
    ts_model model = {.table = table, .ops = &plain_ops};
    char err[256];
    for (ts_parallel_strategy s = TS_ZERO1; s <= TS_ZERO3; s++)
        for (long piece = 0; piece <= 2; piece += 2) {
            ts_parallel p;
            assert_true(ts_parallel_init(&p, MPI_COMM_WORLD, s, &model, err, sizeof err));
            if (piece > 0) p.max_piece = piece;
            ts_real owned[MAX_TOTAL], range[MAX_TOTAL];
            long at = 0;
            for (int k = 0; k < p.n_owned; k++)
                for (long e = 0; e < p.owned[k].count; e++)
                    owned[at++] = (ts_real)(p.owned[k].first + e) + (ts_real)0.5;
            long first, count;
            ts_parallel_checkpoint_range(&p, rank, &first, &count);
            assert_int_equal(first, rank * p.shard < table.total ? rank * p.shard : table.total);
            assert_int_equal(ts_parallel_exchange_checkpoint_range(&p, owned, range, true),
                             MPI_SUCCESS);
            for (long j = 0; j < count; j++)
                assert_true(range[j] == (ts_real)(first + j) + (ts_real)0.5);
            ts_real back[MAX_TOTAL] = {0};
            assert_int_equal(ts_parallel_exchange_checkpoint_range(&p, back, range, false),
                             MPI_SUCCESS);
            for (long j = 0; j < p.owned_count; j++) assert_true(back[j] == owned[j]);
            ts_parallel_free(&p);
        }
    ts_param_table_free(&table);
}

/* ts_reals_discard over a range of several pages with ends inside pages:
 * the range reads as zeros, its neighbours keep their values, and the
 * pages given back take new values and give them back again, cycle after
 * cycle (as a unit's gradient every micro-batch). */
static void test_discard_zeroes_whole_and_partial_pages(void **state) {
    (void)state;
    long page = sysconf(_SC_PAGESIZE) / (long)sizeof(ts_real);
    long n = 6 * page, first = page / 2 + 3, count = 4 * page + 5;
    ts_real *buffer = ts_reals_reserve(n);
    assert_non_null(buffer);
    for (long i = 0; i < n; i++) assert_true(buffer[i] == 0); /* reserved reads as zeros */
    for (int cycle = 0; cycle < 3; cycle++) {
        for (long i = 0; i < n; i++) buffer[i] = (ts_real)(cycle * n + i + 1);
        ts_reals_discard(buffer, first, count);
        for (long i = 0; i < n; i++) {
            bool inside = i >= first && i < first + count;
            assert_true(buffer[i] == (inside ? 0 : (ts_real)(cycle * n + i + 1)));
        }
    }
    ts_reals_discard(buffer, 0, 0); /* nothing */
    assert_true(buffer[0] == (ts_real)(2 * n + 1));
    ts_reals_unreserve(buffer, n);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_block_matches_ddp),
        cmocka_unit_test(test_gathers_overlap_and_are_waited_on),
        cmocka_unit_test(test_second_order_model_keeps_units_for_the_step),
        cmocka_unit_test(test_uneven_units_match_ddp),
        cmocka_unit_test(test_block_gradients_accumulate_in_the_stage),
        cmocka_unit_test(test_every_rank_owns_a_slice_of_every_unit),
        cmocka_unit_test(test_checkpoint_exchange_round_trip),
        cmocka_unit_test(test_discard_zeroes_whole_and_partial_pages),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_parallel_units", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
