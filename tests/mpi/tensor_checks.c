#include "tensor_checks.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

ts_tensor *random_matrix(ts_ctx *ctx, int rows, int cols, uint64_t seed) {
    ts_tensor *t = ts_new(ctx, TS_SHAPE(rows, cols));
    ts_rng rng;
    ts_rng_seed(&rng, seed);
    ts_rng_fill_normal(&rng, t->data, t->numel, 0, 1);
    return t;
}

double max_rel_diff(const ts_tensor *a, const ts_tensor *b) {
    assert_true(ts_same_shape(a, b));
    double scale = 0, diff = 0;
    for (long i = 0; i < a->numel; i++) {
        scale = fmax(scale, fabs((double)b->data[i]));
        diff = fmax(diff, fabs((double)a->data[i] - (double)b->data[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

void assert_same_on_group(const ts_tensor_grid *g, const ts_tensor *t) {
    size_t bytes = (size_t)t->numel * sizeof(ts_real);
    ts_real *root = malloc(bytes ? bytes : 1);
    assert_non_null(root);
    memcpy(root, t->data, bytes);
    assert_int_equal(MPI_Bcast(root, (int)bytes, MPI_BYTE, 0, g->group), MPI_SUCCESS);
    assert_int_equal(memcmp(root, t->data, bytes), 0);
    free(root);
}
