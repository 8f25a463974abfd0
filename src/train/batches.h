/* Which token windows make up a batch. Training windows are drawn from
 * (seed, step, sequence) alone, so the data order needs no state beyond the
 * step, is identical for every rank count, and resumes exactly. Evaluation
 * windows are evenly spaced over the validation split. */
#ifndef TS_BATCHES_H
#define TS_BATCHES_H

#include <stdint.h>

/* Start offsets of `count` windows of `window` tokens: sequences
 * [first, first + count) of the global batch of step `step`. Offsets are
 * multiples of align (1: any offset): token files of fixed-length records,
 * such as a synthetic task's lines, are then never cut mid-record. */
void ts_train_window_offsets(uint64_t seed, long step, long global_batch, long first, long count,
                             int64_t split_len, int window, long align, int64_t *offsets);
/* Windows [first, first + count) of `total` evenly spaced evaluation
 * windows, their starts rounded down to multiples of align (1: anywhere). */
void ts_eval_window_offsets(long total, long first, long count, int64_t split_len, int window,
                            long align, int64_t *offsets);

#endif
