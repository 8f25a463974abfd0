/* A small deterministic random number generator for the tests: splitmix64 for
 * the bits, Box-Muller for normals. Every test seeds its own generator, so a
 * test's inputs do not depend on which other tests ran before it. */
#ifndef TS_TEST_SPLITMIX_H
#define TS_TEST_SPLITMIX_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/real.h"

typedef struct test_rng {
    uint64_t state;
    bool has_spare; /* Box-Muller makes normals in pairs */
    double spare;
} test_rng;

test_rng test_rng_seeded(uint64_t seed);
uint64_t test_rng_u64(test_rng *rng);
/* Uniform in [lo, hi). */
double test_rng_uniform(test_rng *rng, double lo, double hi);
double test_rng_normal(test_rng *rng);
/* Uniform integer in [0, n). */
int test_rng_below(test_rng *rng, int n);
void test_rng_fill_uniform(test_rng *rng, ts_real *dst, long n, double lo, double hi);
void test_rng_fill_normal(test_rng *rng, ts_real *dst, long n, double stddev);

#endif
