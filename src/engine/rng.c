#include "engine/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ts_rng_seed(ts_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

void ts_rng_seed_stream(ts_rng *rng, uint64_t seed, uint64_t stream) {
    uint64_t mixed = seed ^ splitmix64(&stream);
    ts_rng_seed(rng, mixed);
}

static uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t ts_rng_next(ts_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ts_rng_uniform(ts_rng *rng) {
    return (double)(ts_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t ts_rng_below(ts_rng *rng, uint64_t n) {
    /* Rejection removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = ts_rng_next(rng);
    while (x >= limit);
    return x % n;
}

double ts_rng_normal(ts_rng *rng) {
    double u1 = 1.0 - ts_rng_uniform(rng), u2 = ts_rng_uniform(rng);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void ts_rng_fill_normal(ts_rng *rng, ts_real *x, long n, double mean, double stddev) {
    for (long i = 0; i < n; i++) x[i] = (ts_real)(mean + stddev * ts_rng_normal(rng));
}
