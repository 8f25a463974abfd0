#include "engine/rng.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

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

/* Box-Muller with libm: the normal of u1 in (0, 1], u2 in [0, 1). */
static double box_muller(double u1, double u2) {
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double ts_rng_normal(ts_rng *rng) {
    double u1 = 1.0 - ts_rng_uniform(rng), u2 = ts_rng_uniform(rng);
    return box_muller(u1, u2);
}

#ifdef TS_DOUBLE
void ts_rng_fill_normal(ts_rng *rng, ts_real *x, long n, double mean, double stddev) {
    for (long i = 0; i < n; i++) x[i] = (ts_real)(mean + stddev * ts_rng_normal(rng));
}
#else
/* The float build: the same values as the loop of ts_rng_normal above (bit
 * for bit), without a call to libm's log and cos per element, which made
 * EBT's initial logits ~2% of its training step (docs/performance.md, sixth
 * round). Blocks of uniforms are drawn in the stream's order, then
 * sqrt(-2 log u1) cos(2 pi u2) is approximated in double by loops that
 * vectorise, within APPROX_BOUND of what libm gives. The float result is
 * that of mean + stddev n for every n in [n' - bound, n' + bound] (the double
 * arithmetic and the rounding to float are monotone in n) when both ends
 * round to the same float; only where they do not (a float rounding
 * boundary inside the interval: a few in 10^4 elements) is the element
 * recomputed with libm. The double build keeps the plain loop: there the
 * result is the double itself. */

enum { NORMAL_BLOCK = 64 };

/* Far above the approximations' error against libm (<1e-14 on |n| <= 8.6,
 * from their truncation, a few double roundings and libm's own 1 ulp), far
 * below half a float ulp of all but the smallest values. */
#define APPROX_BOUND 1e-11

/* log(u) for u in [2^-53, 1]: u = m 2^e, m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(s) with s = (m - 1)/(m + 1), |s| <= 0.1716: the series to
 * s^19 (the next term < 5e-16 relative). */
static inline double log_unit(double u) {
    uint64_t bits;
    memcpy(&bits, &u, sizeof bits);
    double e = (double)(int32_t)(bits >> 52) - 1023;
    uint64_t mbits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull;
    double m;
    memcpy(&m, &mbits, sizeof m);
    bool high = m > 1.4142135623730951;
    m = high ? m * 0.5 : m;
    e = high ? e + 1 : e;
    double f = m - 1, s = f / (2 + f), z = s * s;
    double p = 1.0 / 19;
    p = p * z + 1.0 / 17;
    p = p * z + 1.0 / 15;
    p = p * z + 1.0 / 13;
    p = p * z + 1.0 / 11;
    p = p * z + 1.0 / 9;
    p = p * z + 1.0 / 7;
    p = p * z + 1.0 / 5;
    p = p * z + 1.0 / 3;
    double log_m = 2 * s + 2 * s * z * p;
    return e * 0.6931471805599453 + log_m;
}

/* cos(t) for t in [0, 2 pi]: t = q pi/2 + r (pi/2 as a 33-bit head and its
 * tail, q <= 4, so q times the head and t minus that are exact), |r| <= pi/4, and the Taylor series
 * of cos r to r^16 and of sin r to r^17 (the next terms < 1e-17). */
static inline double cos_turn(double t) {
    double q = rint(t * 0.6366197723675814);
    double r = t - q * 1.5707963267341256;
    r = r - q * 6.077100506506192e-11;
    double z = r * r;
    double c = 1.0 / 20922789888000;
    c = c * z - 1.0 / 87178291200;
    c = c * z + 1.0 / 479001600;
    c = c * z - 1.0 / 3628800;
    c = c * z + 1.0 / 40320;
    c = c * z - 1.0 / 720;
    c = c * z + 1.0 / 24;
    c = c * z - 0.5;
    c = c * z + 1;
    double sn = 1.0 / 355687428096000;
    sn = sn * z - 1.0 / 1307674368000;
    sn = sn * z + 1.0 / 6227020800;
    sn = sn * z - 1.0 / 39916800;
    sn = sn * z + 1.0 / 362880;
    sn = sn * z - 1.0 / 5040;
    sn = sn * z + 1.0 / 120;
    sn = sn * z - 1.0 / 6;
    sn = sn * z * r + r;
    /* cos(q pi/2 + r): cos r, -sin r, -cos r, sin r */
    int quadrant = (int)q & 3;
    double v = (quadrant & 1) ? sn : c;
    return (quadrant == 1 || quadrant == 2) ? -v : v;
}

void ts_rng_fill_normal(ts_rng *rng, ts_real *x, long n, double mean, double stddev) {
    double u1[NORMAL_BLOCK], u2[NORMAL_BLOCK], radius2[NORMAL_BLOCK], normal[NORMAL_BLOCK];
    float high[NORMAL_BLOCK];
    for (long i0 = 0; i0 < n; i0 += NORMAL_BLOCK) {
        int len = n - i0 < NORMAL_BLOCK ? (int)(n - i0) : NORMAL_BLOCK;
        for (int i = 0; i < len; i++) { /* the draws of ts_rng_normal, in order */
            u1[i] = 1.0 - ts_rng_uniform(rng);
            u2[i] = ts_rng_uniform(rng);
        }
        for (int i = 0; i < len; i++) { /* vectorises */
            radius2[i] = -2.0 * log_unit(u1[i]);
            normal[i] = cos_turn(6.283185307179586 * u2[i]);
        }
        /* sqrt in a loop of its own: without -fno-math-errno (Makefile) its
         * errno branch keeps the loop around it scalar */
        for (int i = 0; i < len; i++) normal[i] *= sqrt(radius2[i]);
        for (int i = 0; i < len; i++) {
            x[i0 + i] = (float)(mean + stddev * (normal[i] - APPROX_BOUND));
            high[i] = (float)(mean + stddev * (normal[i] + APPROX_BOUND));
        }
        for (int i = 0; i < len; i++)
            if (x[i0 + i] != high[i]) /* a rounding boundary is near: libm decides */
                x[i0 + i] = (float)(mean + stddev * box_muller(u1[i], u2[i]));
    }
}
#endif
