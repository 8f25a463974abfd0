/* Checks shared by the tensor-parallel suites (test_tensor_matmul,
 * test_tensor_activations): seeded matrices the same on every rank,
 * relative differences, and bit-identity over a grid's group. */
#ifndef TS_TENSOR_CHECKS_H
#define TS_TENSOR_CHECKS_H

#include <stdint.h>

#include "engine/engine.h"
#include "parallel/tensor_grid.h"

/* [rows, cols] of standard normal values that depend on seed only. */
ts_tensor *random_matrix(ts_ctx *ctx, int rows, int cols, uint64_t seed);
/* max |a - b| / max |b| over a and b of the same shape (fails otherwise). */
double max_rel_diff(const ts_tensor *a, const ts_tensor *b);
/* t is bit-identical to the copy rank 0 of g's group holds (fails otherwise). */
void assert_same_on_group(const ts_tensor_grid *g, const ts_tensor *t);

#endif
