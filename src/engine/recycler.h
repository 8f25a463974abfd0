/* Reuse of gradient buffers inside a plain gradient pass (no create_graph).
 *
 * The arena is a bump allocator: every tensor a pass creates lands in memory
 * no earlier op of the step touched, so each one's first write misses every
 * cache and reads its lines from memory before writing them. Yet in a plain
 * pass a node's incoming gradient is dead once its rule has run (nothing
 * is recorded, so nothing keeps it), and the next layer's rules ask for
 * tensors of the very same sizes. The recycler hands a dead buffer to the
 * pass's next ts_new of the same size, most recently freed first: memory
 * still in cache (eighteenth round, docs/performance.md). Values are
 * unchanged: ts_new's data is uninitialised either way.
 *
 * A buffer is given back only when nothing can reach it again: the pass
 * itself created it whole for one tensor (own_buffer), the accumulation
 * alone held it (acc_owned), it is no target of the pass, and no input's
 * gradient shares it (autodiff.c decides; this file keeps the lists). The
 * lists are emptied when the pass ends, before anything may release the
 * arena. */
#ifndef TS_RECYCLER_H
#define TS_RECYCLER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/context.h"

/* A plain pass of an executing context begins or ends; a counting context
 * never recycles. */
void ts_recycler_begin(ts_ctx *ctx);
void ts_recycler_end(ts_ctx *ctx);
/* A node's rule is about to run: buffers taken from now on count as its own. */
void ts_recycler_rule_start(ts_ctx *ctx);
/* A free buffer of exactly bytes (removed from the list), or NULL. */
ts_real *ts_recycler_take(ts_ctx *ctx, size_t bytes);
/* Whether data is a buffer taken since the running rule began. */
bool ts_recycler_taken_by_rule(const ts_ctx *ctx, const ts_real *data);
/* t's buffer is dead: kept for a later ts_new of its size (if there is
 * room; otherwise it stays unused until the arena is released). t no
 * longer owns it (own_buffer cleared), so it is given at most once. */
void ts_recycler_give(ts_ctx *ctx, ts_tensor *t);

#endif
