/* The distributed GEMM of tensor parallelism (parallel/tensor_ops.h) on
 * every grid that fits the ranks (1 rank: 1x1; 2 ranks: two 1x1 groups, 1x2,
 * 2x1), with ScaLAPACK's block size both tiny (many partial blocks per rank)
 * and the default: for all four transpose combinations the product, the
 * gradients of a scalar of it with respect to both operands and a
 * second-order gradient (the gradient of a function of a gradient, the path
 * EBT's training takes) equal those of the local ts_matmul, and are
 * bit-identical on every rank of a group; the same with either operand held
 * as this rank's blocks (tensor parallelism's weight layout), whose
 * gradients then come back as blocks, and a blocked-weight linear layer
 * sends only the all-gathers of y and dx; ScaLAPACK's numroc_ agrees with
 * core/block_cyclic.h; a counting context books this
 * rank's share of the FLOPs; a grid that does not divide the ranks is
 * refused with a message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "engine/engine.h"
#include "mpi_cmocka.h"
#include "tensor_checks.h"
#include "parallel/tensor_grid.h"
#include "parallel/tensor_ops.h"

#ifdef TS_DOUBLE
#define TOLERANCE 1e-12
#else
#define TOLERANCE 2e-5
#endif

static int rank, size;

enum { M = 37, K = 45, N = 23 };

/* The product, d/da and d/db of sum(C * R), and d/db of sum((d/da)^2),
 * computed by the local op (grid NULL) or the distributed one, the latter
 * with a and/or b held as this rank's blocks (blocks_a, blocks_b): their
 * gradients then come back as this rank's blocks too. A blocked gradient's
 * sum of squares over this rank's blocks is its share of the global one,
 * and the ops are collective, so the second-order result is still that of
 * the whole. */
typedef struct results {
    ts_tensor *product, *grad_a, *grad_b, *second_b;
} results;

/* This rank's blocks of the whole 2-D t (a new leaf when leaf). */
static ts_tensor *blocks_of(ts_ctx *ctx, const ts_tensor_grid *g, ts_tensor *t, bool leaf) {
    ts_block_cyclic d = ts_tensor_grid_layout(g);
    int local[2];
    ts_block_cyclic_local_shape(&d, g->my_row, g->my_col, t->shape[0], t->shape[1], local);
    ts_tensor *l = ts_new(ctx, TS_SHAPE(local[0], local[1]));
    ts_block_cyclic_copy(&d, g->my_row, g->my_col, t->shape[0], t->shape[1], l->data, t->data,
                         sizeof(ts_real), true);
    if (leaf) ts_set_requires_grad(ctx, l, true);
    return l;
}

static results run(ts_ctx *ctx, ts_tensor_grid *g, bool ta, bool tb, bool blocks_a, bool blocks_b) {
    ts_tensor *a = ta ? random_matrix(ctx, K, M, 1) : random_matrix(ctx, M, K, 1);
    ts_tensor *b = tb ? random_matrix(ctx, N, K, 2) : random_matrix(ctx, K, N, 2);
    ts_tensor *r = random_matrix(ctx, M, N, 3);
    ts_tensor_dist da = ts_tensor_whole(a), db = ts_tensor_whole(b);
    da.blocks = blocks_a;
    db.blocks = blocks_b;
    if (blocks_a) a = blocks_of(ctx, g, a, false);
    if (blocks_b) b = blocks_of(ctx, g, b, false);
    ts_set_requires_grad(ctx, a, true);
    ts_set_requires_grad(ctx, b, true);
    results out;
    out.product = g ? ts_tensor_matmul_dist(ctx, g, a, da, b, db, ta, tb, false)
                    : ts_matmul(ctx, a, b, ta, tb);
    ts_tensor *f = ts_sum_all(ctx, ts_mul(ctx, out.product, r));
    ts_tensor *grads[2];
    ts_grad(ctx, 1, &f, NULL, 2, (ts_tensor *[]){a, b}, grads, true);
    out.grad_a = grads[0];
    out.grad_b = grads[1];
    ts_tensor *h = ts_sum_all(ctx, ts_square(ctx, out.grad_a));
    ts_grad(ctx, 1, &h, NULL, 1, &b, &out.second_b, false);
    return out;
}

static void check_grid_layouts(int rows, int cols, int block, bool blocks_a, bool blocks_b) {
    ts_tensor_grid g;
    char err[256];
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, rows, cols, err, sizeof err));
    g.block = block;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            ts_ctx ctx;
            assert_true(ts_ctx_init(&ctx, 0));
            results local = run(&ctx, NULL, ta, tb, false, false);
            results dist = run(&ctx, &g, ta, tb, blocks_a, blocks_b);
            const bool blocked[] = {false, blocks_a, blocks_b, blocks_b};
            ts_tensor *const pairs[][2] = {{local.product, dist.product},
                                           {local.grad_a, dist.grad_a},
                                           {local.grad_b, dist.grad_b},
                                           {local.second_b, dist.second_b}};
            for (int i = 0; i < 4; i++) {
                ts_tensor *expected =
                    blocked[i] ? blocks_of(&ctx, &g, pairs[i][0], false) : pairs[i][0];
                double d = max_rel_diff(pairs[i][1], expected);
                if (!(d < TOLERANCE))
                    fail_msg("grid %dx%d block %d ta %d tb %d blocks %d%d result %d differs by %g",
                             rows, cols, block, ta, tb, blocks_a, blocks_b, i, d);
                if (!blocked[i]) assert_same_on_group(&g, pairs[i][1]);
            }
            ts_ctx_free(&ctx);
        }
    ts_tensor_grid_free(&g);
}

static void check_grid(int rows, int cols, int block) {
    check_grid_layouts(rows, cols, block, false, false);
}

static void test_matches_local_gemm(void **state) {
    (void)state;
    static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        if (size % (grids[i][0] * grids[i][1])) continue; /* grids that fit these ranks */
        check_grid(grids[i][0], grids[i][1], 4);
        check_grid(grids[i][0], grids[i][1], TS_TENSOR_BLOCK);
    }
}

/* The linear layer x W^T over [B, T, in] inputs, and its weight gradient. */
static void test_linear_matches_local(void **state) {
    (void)state;
    ts_tensor_grid g;
    char err[256];
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, 1, size, err, sizeof err));
    ts_ctx ctx;
    assert_true(ts_ctx_init(&ctx, 0));
    ts_tensor *x = ts_reshape(&ctx, random_matrix(&ctx, 2 * 5, 12, 7), TS_SHAPE(2, 5, 12));
    ts_tensor *w = random_matrix(&ctx, 9, 12, 8);
    ts_set_requires_grad(&ctx, w, true);
    ts_model model_hook = {0};
    ts_tensor_parallel tp;
    assert_true(ts_tensor_parallel_attach(&model_hook, &tp, &g, err, sizeof err));
    ts_tensor *y = ts_linear(&ctx, &model_hook.linear, x, w);
    ts_tensor *y_local = ts_linear(&ctx, NULL, x, w);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], 9);
    assert_true(max_rel_diff(y, y_local) < TOLERANCE);
    ts_tensor *gw, *gw_local;
    ts_tensor *f = ts_sum_all(&ctx, ts_square(&ctx, y));
    ts_tensor *f_local = ts_sum_all(&ctx, ts_square(&ctx, y_local));
    ts_grad(&ctx, 1, &f, NULL, 1, &w, &gw, false);
    ts_grad(&ctx, 1, &f_local, NULL, 1, &w, &gw_local, false);
    assert_true(max_rel_diff(gw, gw_local) < TOLERANCE);
    ts_ctx_free(&ctx);
    ts_tensor_grid_free(&g);
}

static void test_counting_books_this_ranks_share(void **state) {
    (void)state;
    ts_tensor_grid g;
    char err[256];
    assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, size, 1, err, sizeof err));
    ts_ctx ctx;
    assert_true(ts_ctx_init_counting(&ctx, 0));
    ts_tensor *a = ts_new(&ctx, TS_SHAPE(M, K)), *b = ts_new(&ctx, TS_SHAPE(K, N));
    ts_tensor *c = ts_tensor_matmul(&ctx, &g, a, b, false, false);
    assert_null(c->data);
    assert_int_equal(c->shape[0], M);
    assert_int_equal(c->shape[1], N);
    assert_true(ts_flops_total(&ctx) == 2.0 * M * N * K / size);
    assert_true(g.bytes_sent == 0);
    ts_ctx_free(&ctx);
    ts_tensor_grid_free(&g);
}

/* core/block_cyclic.h's extent in C is ScaLAPACK's numroc_. */
static void test_extent_is_numroc(void **state) {
    (void)state;
    for (int nb = 1; nb <= 33; nb += 8)
        for (int nprocs = 1; nprocs <= 4; nprocs++)
            for (int n = 0; n <= 150; n++)
                for (int p = 0; p < nprocs; p++)
                    assert_int_equal(ts_block_cyclic_extent(n, nb, p, nprocs),
                                     ts_tensor_local_extent(n, nb, p, nprocs));
}

/* Either operand, or both, held as blocks: results as the local GEMM's. */
static void test_blocked_operands_match_local(void **state) {
    (void)state;
    static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (size_t i = 0; i < sizeof grids / sizeof grids[0]; i++) {
        if (size % (grids[i][0] * grids[i][1])) continue;
        for (int blocks = 1; blocks < 4; blocks++)
            for (int nb = 4; nb <= TS_TENSOR_BLOCK; nb *= 8) {
                /* only layouts that give every process a block (the trainer's rule) */
                ts_block_cyclic d = {nb, grids[i][0], grids[i][1], 0, 0};
                if ((blocks & 1) &&
                    !(ts_block_cyclic_fits(&d, M, K) && ts_block_cyclic_fits(&d, K, M)))
                    continue;
                if ((blocks & 2) &&
                    !(ts_block_cyclic_fits(&d, N, K) && ts_block_cyclic_fits(&d, K, N)))
                    continue;
                check_grid_layouts(grids[i][0], grids[i][1], nb, blocks & 1, blocks & 2);
            }
    }
}

/* A linear layer with its weight held as blocks (tensor parallelism's
 * layout): y, dx and the second-order d/dW sum(dx^2) as the local ones, dW
 * as the blocks of the local dW, and the only bytes sent are the all-gathers
 * of y and dx (the weight gradient is not gathered). */
static void test_blocked_weight_linear(void **state) {
    (void)state;
    enum { ROWS = 10, IN = 45, OUT = 37 };
    static const int grids[][2] = {{1, 1}, {1, 2}, {2, 1}};
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
        if (size % (grids[gi][0] * grids[gi][1])) continue;
        for (int bi = 0; bi < 2; bi++) {
            ts_tensor_grid g;
            char err[256];
            assert_true(ts_tensor_grid_init(&g, MPI_COMM_WORLD, grids[gi][0], grids[gi][1], err,
                                            sizeof err));
            g.block = bi ? TS_TENSOR_BLOCK : 4;
            ts_ctx ctx;
            assert_true(ts_ctx_init(&ctx, 0));
            ts_tensor *w = random_matrix(&ctx, OUT, IN, 11),
                      *r = random_matrix(&ctx, ROWS, OUT, 12);
            ts_set_requires_grad(&ctx, w, true);
            ts_tensor *wl = blocks_of(&ctx, &g, w, true);
            ts_tensor *xs[2], *dx[2], *dw[2], *second[2], *y[2];
            for (int dist = 0; dist < 2; dist++) {
                xs[dist] = random_matrix(&ctx, ROWS, IN, 13);
                ts_set_requires_grad(&ctx, xs[dist], true);
                double bytes0 = g.bytes_sent;
                ts_tensor *weight = dist ? wl : w;
                y[dist] =
                    dist
                        ? ts_tensor_matmul_dist(&ctx, &g, xs[dist], ts_tensor_whole(xs[dist]), wl,
                                                (ts_tensor_dist){true, OUT, IN}, false, true, false)
                        : ts_matmul(&ctx, xs[dist], w, false, true);
                ts_tensor *f = ts_sum_all(&ctx, ts_mul(&ctx, y[dist], r));
                ts_tensor *grads[2];
                ts_grad(&ctx, 1, &f, NULL, 2, (ts_tensor *[]){xs[dist], weight}, grads, true);
                dx[dist] = grads[0];
                dw[dist] = grads[1];
                if (dist) {
                    int n = g.rows * g.cols;
                    double gathers =
                        (double)(ROWS * OUT + ROWS * IN) * sizeof(ts_real) * (n - 1) / n;
                    assert_true(fabs(g.bytes_sent - bytes0 - gathers) < 0.5);
                }
                ts_tensor *h = ts_sum_all(&ctx, ts_square(&ctx, dx[dist]));
                ts_grad(&ctx, 1, &h, NULL, 1, &weight, &second[dist], false);
            }
            assert_true(max_rel_diff(y[1], y[0]) < TOLERANCE);
            assert_true(max_rel_diff(dx[1], dx[0]) < TOLERANCE);
            assert_true(max_rel_diff(dw[1], blocks_of(&ctx, &g, dw[0], false)) < TOLERANCE);
            assert_true(max_rel_diff(second[1], blocks_of(&ctx, &g, second[0], false)) < TOLERANCE);
            assert_same_on_group(&g, y[1]);
            assert_same_on_group(&g, dx[1]);
            ts_ctx_free(&ctx);
            ts_tensor_grid_free(&g);
        }
    }
}

static void test_grid_must_divide_ranks(void **state) {
    (void)state;
    ts_tensor_grid g;
    char err[256] = "";
    assert_false(ts_tensor_grid_init(&g, MPI_COMM_WORLD, 3, size, err, sizeof err));
    assert_non_null(strstr(err, "do not divide"));
    ts_tensor_grid_free(&g);
}

/* parallel.tensor_grid: off, PxQ, or malformed (rows -1). */
static void test_grid_key(void **state) {
    (void)state;
    static const struct {
        const char *text;
        bool enabled;
        int rows, cols;
    } cases[] = {{"off", false, 0, 0},    {"2x3", true, 2, 3},    {"1X1", true, 1, 1},
                 {"0x2", false, -1, 0},   {"2x", false, -1, 0},   {"x2", false, -1, 0},
                 {"2x2x", false, -1, 0},  {"2by2", false, -1, 0}, {"", false, -1, 0},
                 {"4097x1", false, -1, 0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ts_parallel_config c = {.strategy = "ddp"};
        snprintf(c.tensor_grid, sizeof c.tensor_grid, "%s", cases[i].text);
        int rows = 99, cols = 99;
        bool enabled = ts_parallel_tensor_grid(&c, &rows, &cols);
        if (enabled != cases[i].enabled || rows != cases[i].rows || cols != cases[i].cols)
            fail_msg("'%s' gave %d, %d x %d", cases[i].text, enabled, rows, cols);
    }
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_local_gemm),
        cmocka_unit_test(test_linear_matches_local),
        cmocka_unit_test(test_counting_books_this_ranks_share),
        cmocka_unit_test(test_extent_is_numroc),
        cmocka_unit_test(test_blocked_operands_match_local),
        cmocka_unit_test(test_blocked_weight_linear),
        cmocka_unit_test(test_grid_must_divide_ranks),
        cmocka_unit_test(test_grid_key),
    };
    return ts_mpi_cmocka_main(argc, argv, "test_tensor_matmul", tests,
                              sizeof tests / sizeof tests[0], &rank, &size, NULL, NULL);
}
