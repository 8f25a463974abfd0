/* The 2D block-cyclic layout of a row-major [out, in] matrix over a P x Q
 * process grid, as tensor parallelism's p?gemm reads it (parallel/tensor_ops.h):
 * ScaLAPACK sees the row-major [out, in] array as the column-major in x out
 * matrix, whose in side lies in blocks of `block` over the P process rows and
 * whose out side over the Q process columns, starting at process 0. The
 * blocks process (row, col) holds are then exactly a row-major local array
 * [extent(out, col, Q), extent(in, row, P)], so a weight held that way is
 * directly a p?gemm operand and its gradient directly a p?gemm result.
 *
 * Pure index arithmetic and copies (no MPI, no ScaLAPACK), so that models,
 * checkpoints and tests can use it; elements are opaque (elem bytes each). */
#ifndef TS_BLOCK_CYCLIC_H
#define TS_BLOCK_CYCLIC_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ts_block_cyclic {
    int block;          /* block size of both sides */
    int rows, cols;     /* P x Q processes */
    int my_row, my_col; /* this process's place */
} ts_block_cyclic;

/* How many of an n-long side split into blocks of nb over nprocs processes
 * process iproc holds (ScaLAPACK's numroc with source process 0). */
int ts_block_cyclic_extent(int n, int nb, int iproc, int nprocs);

/* The global index of local index i of a side in blocks of nb over nprocs
 * processes, on process iproc. */
long ts_block_cyclic_global(long i, int nb, int iproc, int nprocs);

/* Whether every process of the grid gets a non-empty part of an [out, in]
 * matrix: out > block * (cols - 1) and in > block * (rows - 1). Depends on
 * the shape and the grid only, so every process decides alike. */
bool ts_block_cyclic_fits(const ts_block_cyclic *d, int out, int in);

/* The local shape {lo, li} of process (row, col)'s blocks of [out, in]. */
void ts_block_cyclic_local_shape(const ts_block_cyclic *d, int row, int col, int out, int in,
                                 int local[2]);

/* Copies process (row, col)'s blocks between the whole row-major [out, in]
 * matrix and its local row-major [lo, li] array (to_local: whole -> local).
 * Elements are elem bytes each. */
void ts_block_cyclic_copy(const ts_block_cyclic *d, int row, int col, int out, int in, void *local,
                          void *whole, size_t elem, bool to_local);

#endif
