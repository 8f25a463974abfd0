#include "splitmix.h"

#include <math.h>

test_rng test_rng_seeded(uint64_t seed) {
    return (test_rng){.state = seed};
}

uint64_t test_rng_u64(test_rng *rng) {
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double test_rng_uniform(test_rng *rng, double lo, double hi) {
    /* The top 53 bits give every double in [0, 1) on the 2^-53 grid. */
    double unit = (double)(test_rng_u64(rng) >> 11) * 0x1.0p-53;
    return lo + (hi - lo) * unit;
}

double test_rng_normal(test_rng *rng) {
    if (rng->has_spare) {
        rng->has_spare = false;
        return rng->spare;
    }
    double u1 = test_rng_uniform(rng, 0, 1), u2 = test_rng_uniform(rng, 0, 1);
    if (u1 < 1e-300) u1 = 1e-300; /* log(0) */
    double radius = sqrt(-2 * log(u1)), angle = 6.283185307179586 * u2;
    rng->spare = radius * sin(angle);
    rng->has_spare = true;
    return radius * cos(angle);
}

int test_rng_below(test_rng *rng, int n) {
    return (int)(test_rng_u64(rng) % (uint64_t)n);
}

void test_rng_fill_uniform(test_rng *rng, ts_real *dst, long n, double lo, double hi) {
    for (long i = 0; i < n; i++) dst[i] = (ts_real)test_rng_uniform(rng, lo, hi);
}

void test_rng_fill_normal(test_rng *rng, ts_real *dst, long n, double stddev) {
    for (long i = 0; i < n; i++) dst[i] = (ts_real)(stddev * test_rng_normal(rng));
}
