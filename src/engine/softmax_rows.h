/* The masked softmax's row kernel and its node, for an op that forms a
 * softmax's input itself a few rows at a time (op_context_attention.c: the
 * scores of a strip, in cache) instead of writing it to memory for
 * ts_softmax to read back. Computed so, the result is ts_softmax's bit for
 * bit and its graph the same two nodes. */
#ifndef TS_SOFTMAX_ROWS_H
#define TS_SOFTMAX_ROWS_H

#include "engine/context.h"

/* Each mask row's longest run of -inf columns, as lo, hi pairs in ctx's
 * arena (the columns the softmax and its rules skip); NULL without a mask
 * and in a counting context. */
const int32_t *ts_softmax_masked_runs(ts_ctx *ctx, const ts_tensor *mask);

/* One row of ts_softmax(x, mask): x's row xr, the mask's row mr, the row's
 * run [run_lo, run_hi) from ts_softmax_masked_runs (nothing of xr is read
 * there; an empty run: the whole row), written to o. */
void ts_softmax_row(const ts_real *xr, const ts_real *mr, ts_real *o, long cols, long run_lo,
                    long run_hi);

/* Records out as ts_softmax(x, mask) that the caller computed row by row
 * with ts_softmax_row under runs: the node, its FLOPs and runs, as
 * ts_softmax's. Its rules read only out, never x, so x need hold no values
 * (its data may be NULL). Returns out. */
ts_tensor *ts_softmax_recorded(ts_ctx *ctx, ts_tensor *x, const ts_tensor *mask,
                               const int32_t *runs, ts_tensor *out);

#endif
