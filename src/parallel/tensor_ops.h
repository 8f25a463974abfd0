/* Engine ops distributed over a tensor-parallel process grid
 * (parallel/tensor_grid.h, docs/parallelism.md "Tensor parallelism").
 *
 * Layout: activations enter and leave every op whole on each rank of the
 * group (replicated); inside the op every operand and the result are 2D
 * block-cyclic over the P x Q grid in blocks of grid->block, each rank
 * taking its blocks (about 1/(PQ) of each matrix) from its replicated copy
 * without communication, the product is one ScaLAPACK p?gemm (SUMMA:
 * broadcasts of panels along process rows and columns), and the result's
 * blocks are all-gathered over the group (each rank reassembles the whole
 * result from every rank's blocks) to be whole again on every rank.
 *
 * The backward rules are again these ops, so gradients of any order are
 * distributed GEMMs too (EBT's second-order training). Every rank of a
 * group must run the same ops on the same values in the same order: the ops
 * are collective over the group. In a counting context they count FLOPs
 * (this rank's 1/(PQ) share) and communicate nothing. */
#ifndef TS_TENSOR_OPS_H
#define TS_TENSOR_OPS_H

#include "engine/engine.h"
#include "models/model.h"
#include "parallel/tensor_grid.h"

/* How an operand or result of a distributed GEMM is held: whole on every
 * rank of the group, or as this rank's blocks (core/block_cyclic.h, the grid's
 * block size and place) of a global [rows, cols] matrix, the tensor then
 * having the local shape. */
typedef struct ts_tensor_dist {
    bool blocks;
    int rows, cols; /* global shape (blocks only; a whole operand's is its own) */
} ts_tensor_dist;

/* Every rank's blocks (core/block_cyclic.h) of the row-major [rows, cols]
 * matrix, this rank's being local, assembled into whole on every rank of the
 * group: one MPI_Allgatherv, booked in g->bytes_sent. Collective. */
void ts_tensor_allgather_blocks(ts_ctx *ctx, ts_tensor_grid *g, const ts_real *local, int rows,
                                int cols, ts_real *whole);

/* A whole 2-D tensor's layout. */
ts_tensor_dist ts_tensor_whole(const ts_tensor *t);

/* op(a) @ op(b) with each operand whole or blocked as da and db say, the
 * result whole (all-gathered) or, with out_blocks, left as this rank's
 * blocks of the global [m, n] product (no communication after p?gemm). The
 * gradient of each operand comes back in that operand's layout: a blocked
 * weight's gradient is this rank's blocks, never gathered. Collective over
 * the group. */
ts_tensor *ts_tensor_matmul_dist(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *a, ts_tensor_dist da,
                                 ts_tensor *b, ts_tensor_dist db, bool transpose_a,
                                 bool transpose_b, bool out_blocks);

/* op(a) @ op(b) for 2-D a [m, k] (or [k, m] transposed) and b, as
 * ts_matmul computes it, on the grid: every operand and the result whole. */
ts_tensor *ts_tensor_matmul(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *a, ts_tensor *b,
                            bool transpose_a, bool transpose_b);

/* What the hooks of a model under tensor parallelism need: the grid and
 * the model, whose layout says which weights are held as blocks; with
 * distributed activations (parallel/tensor_activation_ops.h) also the global
 * shape of the current forward's activations, set by its embedding. */
typedef struct ts_tensor_parallel {
    ts_tensor_grid *grid;
    const ts_model *model;
    int tokens, seq, width; /* [tokens, width] activations of sequences of seq tokens */
    /* This step's tokens are too few to give every process column a block
     * (the engine has no empty tensors): its activations stay whole, as in
     * the replicated mode (parallel/tensor_activation_ops.h). */
    bool whole_step;
} ts_tensor_parallel;

/* The linear layer x W^T of whole x [..., in] and w [out, in] on the grid,
 * y whole; w is this rank's blocks if it is a leaf of tp's model held so
 * (ts_model_distribute), its gradient then too. The signature of
 * models/linear.h's hook (user: a ts_tensor_parallel). */
ts_tensor *ts_tensor_linear(void *tp, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);

/* The same with distributed activations: x is this rank's blocks of the
 * [tp->tokens, in] activations, y this rank's blocks of [tp->tokens, out]
 * (no all-gather: x, w and y are all p?gemm's local operands). */
ts_tensor *ts_tensor_linear_blocks(void *tp, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);

/* Routes the model's linear layers (models/linear.h) through
 * ts_tensor_linear on grid, if grid is enabled (else leaves them local),
 * with *tp (the caller's, living as long as the model's hooks) as its state;
 * with grid->distributed_activations also the ops between them
 * (models/activation_hook.h) and the linear layers in that layout. False
 * with a message naming what is not supported (an architecture or shape
 * distributed activations do not handle). */
bool ts_tensor_parallel_attach(ts_model *model, ts_tensor_parallel *tp, ts_tensor_grid *grid,
                               char *err, size_t errlen);

#endif
