/* The block-cyclic layout of core/block_cyclic.h: extents agree with a
 * count of the indices each process owns (index i of a side belongs to
 * process (i / nb) % nprocs) and so tile the side; copying every process's
 * blocks out of a whole matrix and back reproduces it, each local element
 * being the whole element at its owner's global position; and the rule
 * deciding which matrices are held as blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/block_cyclic.h"

static void extents_count_the_owned_indices(void **state) {
    (void)state;
    const int blocks[] = {1, 4, 32};
    for (int b = 0; b < 3; b++)
        for (int nprocs = 1; nprocs <= 3; nprocs++)
            for (int n = 1; n <= 200; n++) {
                int sum = 0;
                for (int p = 0; p < nprocs; p++) {
                    int owned = 0;
                    for (int i = 0; i < n; i++) owned += (i / blocks[b]) % nprocs == p;
                    int extent = ts_block_cyclic_extent(n, blocks[b], p, nprocs);
                    assert_int_equal(extent, owned);
                    sum += extent;
                }
                assert_int_equal(sum, n);
            }
}

/* Every process's blocks of a whole [out, in] out and back into a zeroed
 * whole: the original, and local (r, c) is whole (global row, global col). */
static void check_round_trip(int block, int rows, int cols, int out, int in) {
    ts_block_cyclic d = {block, rows, cols, 0, 0};
    double *whole = malloc((size_t)out * in * sizeof *whole);
    double *back = calloc((size_t)out * in, sizeof *back);
    double *local = malloc((size_t)out * in * sizeof *local);
    assert_non_null(whole);
    assert_non_null(back);
    assert_non_null(local);
    for (long i = 0; i < (long)out * in; i++) whole[i] = (double)i + 0.5;
    long held = 0;
    for (int row = 0; row < rows; row++)
        for (int col = 0; col < cols; col++) {
            int shape[2];
            ts_block_cyclic_local_shape(&d, row, col, out, in, shape);
            memset(local, 0, (size_t)out * in * sizeof *local);
            ts_block_cyclic_copy(&d, row, col, out, in, local, whole, sizeof *local, true);
            for (int r = 0; r < shape[0]; r++)
                for (int c = 0; c < shape[1]; c++) {
                    long gr = (long)(r / block * cols + col) * block + r % block;
                    long gc = (long)(c / block * rows + row) * block + c % block;
                    assert_true(local[(long)r * shape[1] + c] == whole[gr * in + gc]);
                }
            ts_block_cyclic_copy(&d, row, col, out, in, local, back, sizeof *local, false);
            held += (long)shape[0] * shape[1];
        }
    assert_int_equal(held, (long)out * in);
    assert_memory_equal(back, whole, (size_t)out * in * sizeof *whole);
    free(whole);
    free(back);
    free(local);
}

static void copies_round_trip(void **state) {
    (void)state;
    const int blocks[] = {1, 4, 32};
    const int sizes[] = {1, 3, 31, 32, 33, 64, 70};
    for (int b = 0; b < 3; b++)
        for (int rows = 1; rows <= 3; rows++)
            for (int cols = 1; cols <= 3; cols++)
                for (int o = 0; o < 7; o++)
                    for (int i = 0; i < 7; i++)
                        check_round_trip(blocks[b], rows, cols, sizes[o], sizes[i]);
}

static void fits_needs_a_block_for_every_process(void **state) {
    (void)state;
    ts_block_cyclic one = {32, 1, 1, 0, 0}, two_by_two = {32, 2, 2, 1, 1}, rows = {32, 2, 1, 0, 0};
    assert_true(ts_block_cyclic_fits(&one, 1, 1));
    assert_true(ts_block_cyclic_fits(&two_by_two, 33, 33));
    assert_false(ts_block_cyclic_fits(&two_by_two, 32, 64)); /* column 1 gets no output row */
    assert_false(ts_block_cyclic_fits(&two_by_two, 64, 32)); /* row 1 gets no input column */
    assert_true(ts_block_cyclic_fits(&rows, 1, 64));         /* one process column: any out */
    assert_false(ts_block_cyclic_fits(&rows, 64, 20));
    /* and where it holds, no process's local shape is empty */
    for (int out = 1; out <= 100; out++)
        for (int in = 1; in <= 100; in += 7) {
            bool fits = ts_block_cyclic_fits(&two_by_two, out, in), empty = false;
            for (int r = 0; r < 2; r++)
                for (int c = 0; c < 2; c++) {
                    int shape[2];
                    ts_block_cyclic_local_shape(&two_by_two, r, c, out, in, shape);
                    empty |= shape[0] == 0 || shape[1] == 0;
                }
            assert_true(fits == !empty);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(extents_count_the_owned_indices),
        cmocka_unit_test(copies_round_trip),
        cmocka_unit_test(fits_needs_a_block_for_every_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
