/* The read rate from memory of the calling process: sums over a buffer far
 * larger than the caches, in the widest vectors the build has. bench_machine
 * measures it per core, alone and all at once (and its multiply-add peak
 * with the same best-of loop, bench_best_rate); bench_profile sets every
 * op's tensor bytes per second against it (fifteenth round,
 * docs/performance.md). */
#ifndef BENCH_STREAM_H
#define BENCH_STREAM_H

#include <stdio.h>
#include <stdlib.h>

#include "engine/clock.h"
#include "engine/real.h"

#if defined(__AVX512F__)
#define BENCH_VECTOR_BYTES 64
#elif defined(__AVX__)
#define BENCH_VECTOR_BYTES 32
#else
#define BENCH_VECTOR_BYTES 16
#endif
typedef ts_real bench_vec __attribute__((vector_size(BENCH_VECTOR_BYTES)));

/* A block of work: runs once, returns its work (FLOPs or bytes). */
typedef double bench_block_fn(void *state);

/* Best rate of `block` (work per second / 1e9) over repeated calls within
 * `seconds` of wall time, and at least 3. */
static inline double bench_best_rate(bench_block_fn *block, void *state, double seconds) {
    double best = 0, start = ts_monotonic_seconds();
    for (int r = 0;; r++) {
        double t0 = ts_monotonic_seconds();
        double work = block(state);
        double t = ts_monotonic_seconds() - t0;
        if (t > 0 && work / t > best) best = work / t;
        if (r >= 2 && ts_monotonic_seconds() - start >= seconds) break;
    }
    return best / 1e9;
}

typedef struct bench_read_state {
    const bench_vec *data;
    size_t n;
} bench_read_state;

static volatile ts_real bench_read_sink;

/* One pass over the state's n vectors, four sums at a time; the bytes read. */
static inline double bench_read_pass(void *state) {
    const bench_read_state *r = state;
    bench_vec s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    size_t i = 0;
    for (; i + 4 <= r->n; i += 4) {
        s0 += r->data[i], s1 += r->data[i + 1], s2 += r->data[i + 2], s3 += r->data[i + 3];
    }
    bench_vec s = s0 + s1 + s2 + s3;
    bench_read_sink = s[0];
    return (double)i * sizeof(bench_vec);
}

/* GB/s of the fastest pass over a buffer of `bytes` (touched first, so no
 * pass pays its page faults), repeated for `seconds` of wall time and at
 * least 3 times; exits naming the problem when the buffer cannot be had. */
static inline double bench_read_gbs(size_t bytes, double seconds) {
    size_t n = bytes / sizeof(bench_vec);
    bench_vec *data = n ? aligned_alloc(sizeof(bench_vec), n * sizeof(bench_vec)) : NULL;
    if (!data) {
        fprintf(stderr, "read rate: no buffer of %zu bytes to read (out of memory, or too small)\n",
                bytes);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) data[i] = (bench_vec){0} + (ts_real)(i & 7);
    bench_read_state state = {data, n};
    double rate = bench_best_rate(bench_read_pass, &state, seconds);
    free(data);
    return rate;
}

#endif
