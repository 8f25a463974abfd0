/* The element type of every tensor, chosen at build time: float for runs,
 * double (-DTS_DOUBLE) for gradient checks. Both builds are compiled and tested. */
#ifndef TS_REAL_H
#define TS_REAL_H

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef TS_DOUBLE
typedef double ts_real;
#define TS_REAL_NAME "double"
#define ts_cblas_gemm cblas_dgemm
#define TS_EXP exp
#define TS_LOG log
#define TS_SQRT sqrt
#define TS_REAL_MIN DBL_MIN
#else
typedef float ts_real;
#define TS_REAL_NAME "float"
#define ts_cblas_gemm cblas_sgemm
#define TS_EXP expf
#define TS_LOG logf
#define TS_SQRT sqrtf
#define TS_REAL_MIN FLT_MIN
#endif

/* v, or 0 when v is subnormal (|v| < the smallest normal number). Kernels
 * whose results underflow routinely (the exponentials of a softmax) write 0
 * instead: a subnormal operand makes every later GEMM that reads it run on
 * the CPU's slow microcode path (one such operand cost EBT's second-order
 * pass 2x on its GEMM; docs/performance.md), and values below the normal
 * range carry no useful information for training. */
static inline ts_real ts_flush_subnormal(ts_real v) {
    return v > -TS_REAL_MIN && v < TS_REAL_MIN ? 0 : v;
}

/* exp(x) correctly rounded to ts_real, for the kernels whose exponentials
 * feed a loss (the cross-entropy's log-softmax, its rules, ts_exp). The
 * float build evaluates it inline in double, so its loops vectorise where
 * libm's expf is a call per element (and, below -104, a detour through its
 * underflow handler that costs more than the exponential: tenth round,
 * docs/performance.md): x = k ln 2 + r, |r| <= ln 2 / 2, with ln 2 in two
 * parts (Cody-Waite); exp(r) by its Taylor polynomial to degree 12 in
 * Estrin's order (truncation below 2e-16); 2^k from the exponent bits. The
 * double result is within about 1e-15 of exp(x), so rounding it to float
 * gives the correctly rounded value: checked on every float in [-104, 89]
 * against long double expl, where glibc's expf differs from it on 170,648
 * of those 2.24e9 inputs (eleventh round, docs/performance.md). Below -104
 * the result is +0 (exp(-104) is under half the smallest subnormal); above
 * 89 +inf, as expf; NaN stays NaN. The double build (gradient checks)
 * keeps libm's exp, with the same shortcut to 0 below -746. */
static inline ts_real ts_exp_accurate(ts_real x) {
#ifdef TS_DOUBLE
    return x < -746.0 ? 0 : exp(x);
#else
    /* Clamped, so that 2^k stays a normal double; NaN evaluates 0 and is
     * returned as itself below. */
    double d = x < -104.0f ? -104.0 : x > 100.0f ? 100.0 : x == x ? x : 0.0;
    double k = rint(d * 1.4426950408889634);
    double r = d - k * 0x1.62e42fefa3800p-1;
    r = r - k * 0x1.ef35793c76730p-45;
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4; /* Estrin: c_i = 1 / i! */
    double p01 = 1.0 + r, p23 = 0.5 + r * (1.0 / 6), p45 = 1.0 / 24 + r * (1.0 / 120);
    double p67 = 1.0 / 720 + r * (1.0 / 5040), p89 = 1.0 / 40320 + r * (1.0 / 362880);
    double p10_11 = 1.0 / 3628800 + r * (1.0 / 39916800);
    double p0_3 = p01 + r2 * p23, p4_7 = p45 + r2 * p67, p8_11 = p89 + r2 * p10_11;
    double p8_12 = p8_11 + r4 * (1.0 / 479001600);
    double p = p0_3 + r4 * p4_7 + r8 * p8_12;
    int64_t bits = ((int64_t)k + 1023) << 52;
    double two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    float v = (float)(p * two_k);
    return x < -104.0f ? 0.0f : x == x ? v : x;
#endif
}

/* a b + c for the exponential's polynomial below: one fused multiply-add,
 * rounded once, where the build's target has them (the float build's
 * -march=native, x86-64-v3), else a product and a sum. Written out rather
 * than left to the compiler (-std=c11 contracts nothing outside
 * small_gemm.c), so every kernel that calls the exponential gets the same
 * values from it, whichever file it lies in. */
static inline float ts_mul_add_float(float a, float b, float c) {
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
    return __builtin_fmaf(a, b, c);
#else
    return a * b + c;
#endif
}

/* exp(d) for d <= 0, for the kernels that spend their time in exp (the
 * fused attention's softmax, sigmoid and silu). The float build computes it
 * inline, so that loops over it vectorise (libm's expf is a call per
 * element): Cody-Waite reduction by ln 2 and Cephes' degree-5 polynomial
 * for expf, within 2 ulp of expf (test_engine_forward), and 0 where expf
 * would be subnormal (d < ln FLT_MIN). The polynomial's steps are fused
 * multiply-adds where the target has them: about a third of its vector
 * operations fewer, the exponential ~13% faster and the fused attention's
 * forward 3-6% (ninth and sixteenth rounds, docs/performance.md). The
 * double build (gradient checks) keeps libm's exp. */
static inline ts_real ts_exp_nonpositive(ts_real d) {
#ifdef TS_DOUBLE
    return exp(d);
#else
    /* clamped at ln FLT_MIN, below which the result is 0: 2^k stays normal */
    float c = d < -87.33654475f ? -87.33654475f : d;
    float k = rintf(c * 1.44269504088896341f);
    float r = c - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = ts_mul_add_float(p, r, 1.3981999507e-3f);
    p = ts_mul_add_float(p, r, 8.3334519073e-3f);
    p = ts_mul_add_float(p, r, 4.1665795894e-2f);
    p = ts_mul_add_float(p, r, 1.6666665459e-1f);
    p = ts_mul_add_float(p, r, 5.0000001201e-1f);
    p = ts_mul_add_float(p * r, r, r) + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return d < -87.33654475f ? 0.0f : p * two_k;
#endif
}

/* Row reductions with TS_LANES partial results, for the row kernels whose
 * time goes into them (softmax, the fused attention): a loop with one
 * accumulator is a chain of dependent adds (4 cycles each) that the compiler
 * may not reorder without -ffast-math, so it runs at a quarter of a scalar
 * add per cycle; independent lanes vectorise (fused attention forward at the
 * benchmark shapes, docs/performance.md). The lanes are combined pairwise,
 * then the tail: a fixed order, so a row always gives the same result. */
enum { TS_LANES = 16 };

static inline ts_real ts_combine_lanes(ts_real *lane) {
    for (int w = TS_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

static inline ts_real ts_row_sum(const ts_real *x, long n) {
    ts_real lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES)
        for (int j = 0; j < TS_LANES; j++) lane[j] += x[c + j];
    ts_real sum = ts_combine_lanes(lane);
    for (; c < n; c++) sum += x[c];
    return sum;
}

static inline ts_real ts_row_dot(const ts_real *x, const ts_real *y, long n) {
    ts_real lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES)
        for (int j = 0; j < TS_LANES; j++) lane[j] += x[c + j] * y[c + j];
    ts_real dot = ts_combine_lanes(lane);
    for (; c < n; c++) dot += x[c] * y[c];
    return dot;
}

/* x[c] = exp(x[c] - shift) for x[c] <= shift (ts_exp_nonpositive), in
 * place, and their sum in one pass: the sum in the lanes and order of
 * ts_row_sum, so it equals ts_row_sum of the result bit for bit (the
 * softmax kernels; fifth round, docs/performance.md: one pass over the row
 * fewer). The blocks of TS_LANES entries lying wholly in [skip_lo,
 * skip_hi) are written 0 and left out of the sum: a masked softmax's run
 * of -inf, whose exponentials are 0, so the sum is the same (eighth round,
 * lever 46); ts_exp_shifted_sum skips nothing. */
static inline ts_real ts_exp_shifted_sum_skipping(ts_real *restrict x, long n, ts_real shift,
                                                  long skip_lo, long skip_hi) {
    ts_real lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES) {
        if (c >= skip_lo && c + TS_LANES <= skip_hi) {
            for (int j = 0; j < TS_LANES; j++) x[c + j] = 0;
            continue;
        }
        for (int j = 0; j < TS_LANES; j++) {
            x[c + j] = ts_exp_nonpositive(x[c + j] - shift);
            lane[j] += x[c + j];
        }
    }
    ts_real sum = ts_combine_lanes(lane);
    for (; c < n; c++) {
        x[c] = ts_exp_nonpositive(x[c] - shift);
        sum += x[c];
    }
    return sum;
}

static inline ts_real ts_exp_shifted_sum(ts_real *restrict x, long n, ts_real shift) {
    return ts_exp_shifted_sum_skipping(x, n, shift, 0, 0);
}

/* sum_c a[c] b[c] and sum_c x[c] in double, in TS_LANES independent partial
 * sums combined pairwise, then the tail: a single double accumulator is a
 * chain of dependent adds (4 cycles per element) that the compiler may not
 * reorder, which made RMSNorm's kernels and row sums latency-bound (fifth
 * round, docs/performance.md); the lanes vectorise. A fixed order, so a row
 * always gives the same sum. */
static inline double ts_combine_wide_lanes(double *lane) {
    for (int w = TS_LANES / 2; w > 0; w /= 2)
        for (int j = 0; j < w; j++) lane[j] += lane[j + w];
    return lane[0];
}

static inline double ts_row_dot_wide(const ts_real *restrict a, const ts_real *restrict b, long n) {
    double lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES)
        for (int j = 0; j < TS_LANES; j++) lane[j] += (double)a[c + j] * b[c + j];
    double sum = ts_combine_wide_lanes(lane);
    for (; c < n; c++) sum += (double)a[c] * b[c];
    return sum;
}

static inline double ts_row_sum_wide(const ts_real *restrict x, long n) {
    double lane[TS_LANES] = {0};
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES)
        for (int j = 0; j < TS_LANES; j++) lane[j] += x[c + j];
    double sum = ts_combine_wide_lanes(lane);
    for (; c < n; c++) sum += x[c];
    return sum;
}

/* The largest element, -inf for n = 0 (NaN entries are skipped, as by a
 * scalar `if (x > max) max = x`). Its lanes are one GCC vector, the select
 * a compare and a blend: GCC does not vectorise the select over an array
 * of lanes (it ran as 16 scalar maxss an iteration, ~10% of the fused
 * attention's softmax; seventh round, docs/performance.md). */
#ifdef TS_DOUBLE
typedef int64_t ts_lane_bits __attribute__((vector_size(TS_LANES * sizeof(ts_real))));
#else
typedef int32_t ts_lane_bits __attribute__((vector_size(TS_LANES * sizeof(ts_real))));
#endif
typedef ts_real ts_lane_values __attribute__((vector_size(TS_LANES * sizeof(ts_real))));

/* TS_LANES entries from x (any alignment). */
static inline ts_lane_values ts_load_lanes(const ts_real *x) {
    ts_lane_values v;
    memcpy(&v, x, sizeof v);
    return v;
}

/* Lane by lane, v where it is larger than a, else a (v's NaN lanes never
 * win); and the largest lane, NaN lanes skipped alike. */
static inline ts_lane_values ts_max_lanes(ts_lane_values a, ts_lane_values v) {
    ts_lane_bits greater = v > a;
    return (ts_lane_values)(((ts_lane_bits)v & greater) | ((ts_lane_bits)a & ~greater));
}

static inline ts_real ts_largest_lane(ts_lane_values lane) {
    ts_real max = -INFINITY;
    for (int j = 0; j < TS_LANES; j++) max = lane[j] > max ? lane[j] : max;
    return max;
}

static inline ts_real ts_row_max(const ts_real *x, long n) {
    ts_lane_values lane = (ts_lane_values){0} - INFINITY;
    long c = 0;
    for (; c + TS_LANES <= n; c += TS_LANES) lane = ts_max_lanes(lane, ts_load_lanes(x + c));
    ts_real max = ts_largest_lane(lane);
    for (; c < n; c++) max = x[c] > max ? x[c] : max;
    return max;
}

#endif
