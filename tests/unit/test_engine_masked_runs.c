/* The masked softmax's skipped runs (op_softmax.c; eighth round, lever 46,
 * docs/performance.md): the softmax, its backward and the backward's own
 * gradient skip each mask row's longest run of -inf columns. Against the
 * reference of whole rows (the masked entries of x set to -inf, no mask),
 * the values, the first-order gradient (plain and recorded) and the
 * second-order gradient are the same bit for bit, while garbage (NaN, inf)
 * in the skipped entries of x and of the gradient fed to the softmax's
 * output, which would make the whole-row computation NaN, is never read. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "engine/engine.h"
#include "engine_fixture.h"
#include "splitmix.h"

typedef engine_fixture fixture;

static int setup(void **state) {
    return engine_fixture_setup(state, 1 << 22, 0x9B05688C2B3E6C1Full);
}
static int teardown(void **state) {
    return engine_fixture_teardown(state);
}

/* 40 columns: two blocks of the row kernels' 16 lanes and a tail of 8. */
enum { BATCH = 3, ROWS = 5, COLS = 40 };

/* Each mask row's masked columns, and its longest run [lo, hi): a context
 * row (visible head and tail, the run across blocks into the tail), a run
 * from column 0, two runs (the second the longest), none, and one visible
 * column at the end. A run ends one short of a block's end (31) and in the
 * tail (37), so the blocks it covers whole and those across its edges are
 * both met. */
static const struct {
    int lo, hi;             /* the longest run */
    int other_lo, other_hi; /* a shorter one, or none */
} mask_rows[ROWS] = {{1, 37, 0, 0}, {0, 31, 0, 0}, {10, 30, 3, 5}, {0, 0, 0, 0}, {0, 39, 0, 0}};

static bool masked(int r, int c) {
    return (c >= mask_rows[r].lo && c < mask_rows[r].hi) ||
           (c >= mask_rows[r].other_lo && c < mask_rows[r].other_hi);
}

static bool in_longest_run(long i) {
    int r = (int)(i / COLS % ROWS), c = (int)(i % COLS);
    return c >= mask_rows[r].lo && c < mask_rows[r].hi;
}

static ts_tensor *mask_tensor(ts_ctx *ctx) {
    ts_tensor *mask = ts_new(ctx, TS_SHAPE(ROWS, COLS));
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) mask->data[r * COLS + c] = masked(r, c) ? -INFINITY : 0;
    return mask;
}

static ts_tensor *uniform(fixture *fx, double lo, double hi) {
    ts_tensor *t = ts_new(&fx->ctx, TS_SHAPE(BATCH, ROWS, COLS));
    test_rng_fill_uniform(&fx->rng, t->data, t->numel, lo, hi);
    return t;
}

/* A copy of t with NaN and inf alternating in the longest runs. */
static ts_tensor *with_garbage(ts_ctx *ctx, const ts_tensor *t) {
    ts_tensor *g = ts_new_like(ctx, t);
    for (long i = 0; i < t->numel; i++)
        g->data[i] = in_longest_run(i) ? (i % 2 ? NAN : INFINITY) : t->data[i];
    return g;
}

static void expect_identical(const ts_tensor *a, const ts_tensor *b, const char *what) {
    for (long i = 0; i < a->numel; i++)
        if (memcmp(&a->data[i], &b->data[i], sizeof a->data[i]) != 0)
            fail_msg("%s: entry %ld is %.9g, the whole rows give %.9g", what, i, (double)a->data[i],
                     (double)b->data[i]);
}

/* y = softmax(x), dx = y's gradient against the seed g (recorded when
 * `recorded`), and with it the second order d<dx, u>/dx. */
typedef struct passes {
    ts_tensor *y, *dx, *dx2;
} passes;

static passes run(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask, ts_tensor *g, ts_tensor *u,
                  bool recorded) {
    ts_set_requires_grad(ctx, x, true);
    passes p = {ts_softmax(ctx, x, mask), NULL, NULL};
    ts_grad(ctx, 1, &p.y, &g, 1, &x, &p.dx, recorded);
    if (recorded) ts_grad(ctx, 1, &p.dx, &u, 1, &x, &p.dx2, false);
    return p;
}

static void test_masked_runs_match_whole_rows(void **state) {
    fixture *fx = *state;
    ts_ctx *ctx = &fx->ctx;
    ts_tensor *mask = mask_tensor(ctx);
    ts_tensor *x = uniform(fx, -3, 3), *g = uniform(fx, -1, 1), *u = uniform(fx, -1, 1);
    /* The reference: whole rows, x -inf where the mask is. */
    ts_tensor *x_whole = ts_new_like(ctx, x);
    for (long i = 0; i < x->numel; i++)
        x_whole->data[i] = masked((int)(i / COLS % ROWS), (int)(i % COLS)) ? -INFINITY : x->data[i];
    for (int recorded = 0; recorded <= 1; recorded++) {
        passes whole = run(ctx, x_whole, NULL, g, u, recorded);
        passes skipping = run(ctx, with_garbage(ctx, x), mask, with_garbage(ctx, g), u, recorded);
        expect_identical(skipping.y, whole.y, "softmax");
        expect_identical(skipping.dx, whole.dx, recorded ? "recorded gradient" : "gradient");
        if (recorded) expect_identical(skipping.dx2, whole.dx2, "second-order gradient");
        for (long i = 0; i < x->numel; i++)
            if (in_longest_run(i))
                assert_true(skipping.y->data[i] == 0 && skipping.dx->data[i] == 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_masked_runs_match_whole_rows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
