/* The MFU denominator: what GEMM reaches on this rank's cores, measured at
 * start-up rather than taken from a datasheet, because the suite's claim is
 * "fraction of what this machine's BLAS can do". */
#ifndef TS_MACHINE_PEAK_H
#define TS_MACHINE_PEAK_H

#include <stdbool.h>
#include <stddef.h>

/* Best GFLOP/s of 768^3 GEMMs in the build's element type with the BLAS
 * thread count in force: one warm-up, then as many as fit in a quarter of a
 * second (at least 5). 0 when its 7 MB of buffers cannot be allocated. */
double ts_measure_peak_gflops(void);

/* OpenBLAS picks its kernels from the CPU model it recognises; on a CPU
 * newer than its tables (or a VM hiding the model) it falls back to old SSE
 * kernels that reach a fraction of the vector units' rate, and every MFU is
 * then measured against that slow peak. True, with advice in `advice`, when
 * `core` (openblas_get_corename()) is such a pre-AVX kernel set while the CPU
 * has AVX2 or AVX-512. */
bool ts_blas_core_advice(const char *core, bool cpu_avx2, bool cpu_avx512f, char *advice,
                         size_t len);

/* The same for this process's OpenBLAS and CPU (x86-64; elsewhere false). */
bool ts_blas_core_advice_here(char *advice, size_t len);

#endif
