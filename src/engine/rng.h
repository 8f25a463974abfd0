/* A small counter-free PRNG (xoshiro256**, seeded by splitmix64) whose whole
 * state is four words, so checkpoints can store and restore it exactly. */
#ifndef TS_RNG_H
#define TS_RNG_H

#include <stdint.h>

#include "engine/real.h"

typedef struct ts_rng {
    uint64_t s[4];
} ts_rng;

void ts_rng_seed(ts_rng *rng, uint64_t seed);
/* A generator for stream `stream` of `seed`, independent of other streams:
 * used to give every (step, sequence) its own reproducible draws. */
void ts_rng_seed_stream(ts_rng *rng, uint64_t seed, uint64_t stream);
uint64_t ts_rng_next(ts_rng *rng);
double ts_rng_uniform(ts_rng *rng);             /* [0, 1) */
uint64_t ts_rng_below(ts_rng *rng, uint64_t n); /* [0, n), n > 0 */
double ts_rng_normal(ts_rng *rng);
void ts_rng_fill_normal(ts_rng *rng, ts_real *x, long n, double mean, double stddev);

#endif
