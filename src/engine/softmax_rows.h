/* The masked softmax's row kernel and its node, for an op that forms a
 * softmax's input itself a few rows at a time (op_context_attention.c: the
 * scores of a strip, in cache) instead of writing it to memory for
 * ts_softmax to read back, and its backward's row kernel and op for such
 * an op's own rule. Computed so, the results are ts_softmax's and
 * ts_softmax_backward's bit for bit. */
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

/* FLOPs per element of a softmax and of its first-order backward
 * y (g - rowsum(g y)), as the primitives they replace. */
enum { TS_SOFTMAX_FLOPS = 5, TS_SOFTMAX_BACKWARD_FLOPS = 4 };

/* One row of ts_softmax_backward(y, g) under the row's masked run [run_lo,
 * run_hi): y's row yr, g's gr, written to o (0 in the run, g unread there). */
void ts_softmax_backward_row(const ts_real *yr, const ts_real *gr, ts_real *o, long cols,
                             long run_lo, long run_hi);

/* ts_softmax_backward(y, g) of a softmax taken under a mask with these runs
 * (ts_softmax_masked_runs; n_runs: the mask's rows): the recorded op whose
 * rules skip the same columns, as a softmax node's own rule makes it. */
ts_tensor *ts_softmax_backward_masked(ts_ctx *ctx, ts_tensor *y, ts_tensor *g, const int32_t *runs,
                                      long n_runs);

/* Records out as ts_softmax_backward_masked(y, g, runs, n_runs) that the
 * caller computed row by row with ts_softmax_backward_row under the same
 * runs: the node, its FLOPs and runs, as the op's. Returns out. */
ts_tensor *ts_softmax_backward_recorded(ts_ctx *ctx, ts_tensor *y, ts_tensor *g,
                                        const int32_t *runs, long n_runs, ts_tensor *out);

#endif
