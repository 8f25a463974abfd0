/* The element type of every tensor, chosen at build time: float for runs,
 * double (-DTS_DOUBLE) for gradient checks. Both builds are compiled and tested. */
#ifndef TS_REAL_H
#define TS_REAL_H

#include <cblas.h>
#include <float.h>

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

#endif
