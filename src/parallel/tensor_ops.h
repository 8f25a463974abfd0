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

/* op(a) @ op(b) for 2-D a [m, k] (or [k, m] transposed) and b, as
 * ts_matmul computes it, on the grid. */
ts_tensor *ts_tensor_matmul(ts_ctx *ctx, ts_tensor_grid *grid, ts_tensor *a, ts_tensor *b,
                            bool transpose_a, bool transpose_b);

/* The linear layer x W^T of x [..., in] and w [out, in] on the grid; the
 * signature of models/linear.h's hook (user: the ts_tensor_grid). */
ts_tensor *ts_tensor_linear(void *grid, ts_ctx *ctx, ts_tensor *x, ts_tensor *w);

/* Routes the model's linear layers (models/linear.h) through
 * ts_tensor_linear on grid, if grid is enabled; else leaves them local. */
void ts_tensor_parallel_attach(ts_model *model, ts_tensor_grid *grid);

#endif
