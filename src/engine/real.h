/* The element type of every tensor, chosen at build time: float for runs,
 * double (-DTS_DOUBLE) for gradient checks. Both builds are compiled and tested. */
#ifndef TS_REAL_H
#define TS_REAL_H

#include <cblas.h>

#ifdef TS_DOUBLE
typedef double ts_real;
#define TS_REAL_NAME "double"
#define ts_cblas_gemm cblas_dgemm
#define TS_EXP exp
#define TS_LOG log
#define TS_SQRT sqrt
#else
typedef float ts_real;
#define TS_REAL_NAME "float"
#define ts_cblas_gemm cblas_sgemm
#define TS_EXP expf
#define TS_LOG logf
#define TS_SQRT sqrtf
#endif

#endif
