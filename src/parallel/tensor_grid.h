/* Tensor parallelism's process grids (parallel.tensor_grid = PxQ,
 * docs/parallelism.md "Tensor parallelism"). The ranks of a job form groups of
 * P*Q consecutive ranks; each group is one BLACS grid of P process rows and Q
 * process columns (row-major: group rank r sits at row r / Q, column r % Q),
 * on which the linear layers' GEMMs run as ScaLAPACK p?gemm
 * (parallel/tensor_ops.h). Data parallelism runs across groups: the ranks at
 * the same position of every group form the data-parallel communicator, over
 * which the trainer's strategy (parallel/strategy.h) reduces gradients and
 * shares batches, so every rank of a group runs the same sequences. */
#ifndef TS_TENSOR_GRID_H
#define TS_TENSOR_GRID_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/block_cyclic.h"
#include "core/parallel_config.h"

typedef struct ts_tensor_grid {
    bool enabled;   /* false: no tensor parallelism, data = the whole job */
    int rows, cols; /* P x Q */
    MPI_Comm group; /* this rank's P*Q ranks (MPI_COMM_NULL when not enabled) */
    MPI_Comm data;  /* one rank per group, at this rank's position */
    /* Within the group: the ranks on this rank's process row (ordered by
     * column) and on its process column (ordered by row); MPI_COMM_NULL when
     * not enabled. Distributed activations (parallel/tensor_activation_ops.h)
     * reduce and gather over them. */
    MPI_Comm same_row, same_col;
    int group_rank;
    int my_row, my_col;           /* this rank's place on the BLACS grid */
    int blacs_handle;             /* Csys2blacs_handle of group */
    int blacs_context;            /* the grid (Cblacs_gridinit) */
    int block;                    /* block-cyclic block size of every distributed matrix */
    double bytes_sent;            /* payload this rank sent in the grid's collectives, cumulative */
    bool data_owned;              /* data is a communicator of our own, to free */
    bool distributed_activations; /* parallel.tensor_activations = distributed */
} ts_tensor_grid;

/* The default block size: p?gemm works on panels of it, and a matrix whose
 * side is at most block stays on one process row or column. */
enum { TS_TENSOR_BLOCK = 32 };

/* Splits world into groups of rows * cols ranks and builds the BLACS grid of
 * this rank's group. False with a message if rows * cols does not divide the
 * number of ranks or MPI fails. Collective over world. */
bool ts_tensor_grid_init(ts_tensor_grid *g, MPI_Comm world, int rows, int cols, char *err,
                         size_t errlen);
/* No tensor parallelism: data is world itself (not duplicated). */
void ts_tensor_grid_disabled(ts_tensor_grid *g, MPI_Comm world);
void ts_tensor_grid_free(ts_tensor_grid *g);

/* The grid parallel.tensor_grid asks for (disabled for "off"), or false with
 * a message naming what is not supported with it. Collective over world. */
bool ts_tensor_grid_from_config(ts_tensor_grid *g, MPI_Comm world, const ts_parallel_config *c,
                                char *err, size_t errlen);

/* How many rows (or columns) of an n-long side split into blocks of nb over
 * nprocs processes process iproc holds (ScaLAPACK's numroc). */
int ts_tensor_local_extent(int n, int nb, int iproc, int nprocs);

/* The block-cyclic layout of g's matrices at this rank's place (a 1x1 grid
 * at (0, 0) when g is not enabled). */
ts_block_cyclic ts_tensor_grid_layout(const ts_tensor_grid *g);

#endif
