#include "train/batches.h"

#include "engine/rng.h"

void ts_train_window_offsets(uint64_t seed, long step, long global_batch, long first, long count,
                             int64_t split_len, int window, long align, int64_t *offsets) {
    uint64_t starts = (uint64_t)((split_len - window) / align + 1);
    for (long i = 0; i < count; i++) {
        ts_rng rng;
        ts_rng_seed_stream(&rng, seed ^ 0x64617461ull /* "data" */,
                           (uint64_t)step * (uint64_t)global_batch + (uint64_t)(first + i));
        offsets[i] = (int64_t)ts_rng_below(&rng, starts) * align;
    }
}

void ts_eval_window_offsets(long total, long first, long count, int64_t split_len, int window,
                            long align, int64_t *offsets) {
    int64_t last_start = (split_len - window) / align;
    for (long i = 0; i < count; i++) {
        long k = first + i;
        offsets[i] =
            total > 1 ? (int64_t)((double)last_start * k / (double)(total - 1)) * align : 0;
    }
}
