/* Tensor parallelism's parameter layout (models/model.h ts_model_distribute,
 * parallel/tensor_layout.h): for every architecture, which tensors are held
 * as blocks (the linear weights that give every grid position a block, not
 * Free's post_sampler, not a weight too small for the grid), that the local
 * table keeps names, roles, decay and learning-rate scales with local shapes,
 * that each position's buffers hold exactly its blocks of the 1-rank
 * initialisation and the positions together hold every element once; and on
 * the grids that fit the ranks, that gathering the local buffers gives the
 * 1-rank flat array bit for bit and scattering it back gives the local one;
 * and the gradient norm of a distributed model is the whole gradient's. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "core/config.h"
#include "models/model.h"
#include "mpi_cmocka.h"
#include "parallel/tensor_grid.h"
#include "parallel/strategy.h"
#include "parallel/tensor_layout.h"

static int rank, size;

static const char *const archs[] = {"transformerpp", "ebt", "free", "nexus"};

/* A small model of arch, width 64 (two blocks of 32 per side). */
static ts_model_config config_of(const char *arch) {
    ts_run_config c;
    ts_config_defaults(&c);
    char err[256] = "", set[64];
    snprintf(set, sizeof set, "model.arch=%s", arch);
    const char *sets[] = {set,
                          "model.width=64",
                          "model.depth=2",
                          "model.heads=2",
                          "model.context=16",
                          "nexus.order=2",
                          "nexus.variant=unshared"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (!ts_config_set(&c, sets[i], err, sizeof err)) fail_msg("%s: %s", sets[i], err);
    c.model.vocab_size = 256; /* the data's, byte-level */
    return c.model;
}

static ts_model *initialised(const ts_model_config *c) {
    char err[256] = "";
    ts_model *m = ts_model_create(c, err, sizeof err);
    if (!m) fail_msg("%s: %s", c->arch, err);
    ts_model_init_params(m, 5);
    return m;
}

static bool is_blocked(const ts_model *m, const char *name) {
    return ts_model_param_blocked(m, ts_param_table_find(&m->table, name));
}

/* Every position of a 2x2 grid of blocks of 32 (arithmetic only). */
static void test_distribute_each_architecture(void **state) {
    (void)state;
    for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
        ts_model_config c = config_of(archs[a]);
        ts_model *whole = initialised(&c);
        const ts_param_table *g = &whole->table;
        long *held = calloc((size_t)g->count, sizeof *held);
        assert_non_null(held);
        for (int pos = 0; pos < 4; pos++) {
            ts_block_cyclic d = {32, 2, 2, pos / 2, pos % 2};
            ts_model *m = initialised(&c);
            char err[256] = "";
            assert_true(ts_model_distribute(m, &d, err, sizeof err));
            assert_false(ts_model_distribute(m, &d, err, sizeof err)); /* only once */
            assert_non_null(strstr(err, "already"));
            const ts_param_table *t = &m->table, *mg = ts_model_global_table(m);
            assert_int_equal(t->count, g->count);
            assert_int_equal(mg->total, g->total);
            assert_int_equal(ts_model_non_embedding_params(m),
                             ts_model_non_embedding_params(whole));
            int blocked = 0;
            for (int i = 0; i < g->count; i++) {
                const ts_param_entry *e = &g->entries[i], *l = &t->entries[i];
                assert_string_equal(l->name, e->name);
                assert_string_equal(mg->entries[i].name, e->name);
                assert_int_equal(mg->entries[i].offset, e->offset);
                assert_true(l->decay == e->decay && l->lr_scale == e->lr_scale);
                assert_true(l->role.init == e->role.init && l->role.draw == e->role.draw &&
                            l->role.decay == e->role.decay &&
                            l->role.embedding == e->role.embedding &&
                            l->role.linear == e->role.linear);
                bool expect = e->role.linear && ts_block_cyclic_fits(&d, e->shape[0], e->shape[1]);
                assert_true(ts_model_param_blocked(m, i) == expect);
                ts_real *mine = m->params + l->offset, *all = whole->params + e->offset;
                if (!expect) {
                    assert_memory_equal(l->shape, e->shape, sizeof l->shape);
                    assert_memory_equal(mine, all, (size_t)e->numel * sizeof *mine);
                    continue;
                }
                blocked++;
                ts_real *expected = malloc((size_t)l->numel * sizeof *expected);
                assert_non_null(expected);
                ts_block_cyclic_copy(&d, d.my_row, d.my_col, e->shape[0], e->shape[1], expected,
                                     all, sizeof *expected, true);
                assert_memory_equal(mine, expected, (size_t)l->numel * sizeof *mine);
                free(expected);
                held[i] += l->numel;
                assert_true(l->numel < e->numel);
            }
            assert_true(blocked > 0);
            assert_true(t->total < g->total);
            /* the tensors the architectures read directly stay whole */
            if (!strcmp(archs[a], "free")) {
                assert_false(is_blocked(m, "post_sampler"));
                assert_false(is_blocked(m, "encoder.readout")); /* 8 latent bits < 2 blocks */
                assert_true(is_blocked(m, "encoder.attention.wq"));
            }
            if (!strcmp(archs[a], "ebt")) {
                assert_true(is_blocked(m, "vocab_to_embed"));
                assert_false(is_blocked(m, "energy_head")); /* [1, D] on 2 columns */
                assert_false(is_blocked(m, "step_size"));
                assert_false(is_blocked(m, "time_embed"));
            } else {
                assert_true(is_blocked(m, "head"));
            }
            if (!strcmp(archs[a], "nexus"))
                assert_true(is_blocked(m, "layers.0.attention.level2.wq"));
            assert_false(is_blocked(m, "embed"));
            assert_true(is_blocked(m, "layers.1.mlp.w2"));
            ts_model_destroy(m);
        }
        for (int i = 0; i < g->count; i++)
            if (held[i]) assert_int_equal(held[i], g->entries[i].numel);
        free(held);
        ts_model_destroy(whole);
    }
}

/* A counting model distributes its tables only. */
static void test_distribute_counting_model(void **state) {
    (void)state;
    ts_model_config c = config_of("transformerpp");
    char err[256] = "";
    ts_model *m = ts_model_create_counting(&c, err, sizeof err);
    assert_non_null(m);
    long total = m->table.total;
    ts_block_cyclic d = {32, 1, 2, 0, 1};
    assert_true(ts_model_distribute(m, &d, err, sizeof err));
    assert_null(m->params);
    assert_true(m->table.total < total);
    assert_int_equal(ts_model_global_table(m)->total, total);
    ts_model_destroy(m);
}

static void check_gather_scatter(int rows, int cols, int block, const char *arch) {
    ts_tensor_grid g;
    char err[256] = "";
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, rows, cols, err, sizeof err));
    g.block = block;
    ts_model_config c = config_of(arch);
    ts_model *whole = initialised(&c), *m = initialised(&c);
    ts_block_cyclic d = ts_tensor_grid_layout(&g);
    assert_true(ts_model_distribute(m, &d, err, sizeof err));
    long total = whole->table.total;
    ts_real *gathered = malloc((size_t)total * sizeof *gathered);
    ts_real *back = malloc((size_t)m->table.total * sizeof *back);
    assert_non_null(gathered);
    assert_non_null(back);
    assert_int_equal(ts_tensor_gather_flat(&g, m, m->params, gathered), MPI_SUCCESS);
    assert_memory_equal(gathered, whole->params, (size_t)total * sizeof *gathered);
    ts_tensor_scatter_flat(m, gathered, back);
    assert_memory_equal(back, m->params, (size_t)m->table.total * sizeof *back);
    free(gathered);
    free(back);
    ts_model_destroy(whole);
    ts_model_destroy(m);
    ts_tensor_grid_free(&g);
}

static void test_gather_scatter_flat(void **state) {
    (void)state;
    static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        if (size % (grids[i][0] * grids[i][1])) continue;
        for (size_t a = 0; a < sizeof archs / sizeof archs[0]; a++) {
            check_gather_scatter(grids[i][0], grids[i][1], 4, archs[a]);
            check_gather_scatter(grids[i][0], grids[i][1], TS_TENSOR_BLOCK, archs[a]);
        }
    }
}

/* ts_parallel_clip over a distributed model: the norm of the whole gradient
 * (each tensor once), bit-identical on every rank of the group, and the
 * clipped local gradient the blocks of the clipped whole one. */
static void check_clip(int rows, int cols, int block) {
    ts_tensor_grid g;
    char err[256] = "";
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, rows, cols, err, sizeof err));
    g.block = block;
    ts_model_config c = config_of("transformerpp");
    ts_model *m = initialised(&c);
    long total = m->table.total;
    ts_real *whole = malloc((size_t)total * sizeof *whole);
    assert_non_null(whole);
    ts_rng rng;
    ts_rng_seed(&rng, 99);
    ts_rng_fill_normal(&rng, whole, total, 0, 1);
    double expected = 0;
    for (long i = 0; i < total; i++) expected += (double)whole[i] * whole[i];
    expected = sqrt(expected);
    ts_block_cyclic d = ts_tensor_grid_layout(&g);
    assert_true(ts_model_distribute(m, &d, err, sizeof err));
    ts_tensor_scatter_flat(m, whole, m->grads);
    ts_parallel p;
    assert_true(ts_parallel_init(&p, g.data, TS_DDP, m, err, sizeof err));
    assert_true(ts_parallel_set_tensor_group(&p, g.group, m, err, sizeof err));
    assert_true(p.n_blocked > 0);
    double norm = 0, clip = expected / 2;
    assert_int_equal(ts_parallel_clip(&p, m->grads, clip, &norm), MPI_SUCCESS);
    if (!(fabs(norm - expected) < 1e-12 * expected))
        fail_msg("%dx%d: norm %.17g, whole gradient's %.17g", rows, cols, norm, expected);
    double root = norm;
    assert_int_equal(MPI_Bcast(&root, 1, MPI_DOUBLE, 0, g.group), MPI_SUCCESS);
    assert_true(root == norm);
    ts_real scale = (ts_real)(clip / (norm + 1e-6));
    for (long i = 0; i < total; i++) whole[i] *= scale;
    ts_real *mine = malloc((size_t)m->table.total * sizeof *mine);
    assert_non_null(mine);
    ts_tensor_scatter_flat(m, whole, mine);
    assert_memory_equal(mine, m->grads, (size_t)m->table.total * sizeof *mine);
    free(mine);
    free(whole);
    ts_parallel_free(&p);
    ts_model_destroy(m);
    ts_tensor_grid_free(&g);
}

static void test_clip_norm_blocked(void **state) {
    (void)state;
    static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        if (size % (grids[i][0] * grids[i][1])) continue;
        check_clip(grids[i][0], grids[i][1], 4);
        check_clip(grids[i][0], grids[i][1], TS_TENSOR_BLOCK);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distribute_each_architecture),
        cmocka_unit_test(test_distribute_counting_model),
        cmocka_unit_test(test_gather_scatter_flat),
        cmocka_unit_test(test_clip_norm_blocked),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_tensor_layout", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
