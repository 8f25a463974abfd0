/* The MFU denominator: what GEMM reaches on this rank's cores, measured at
 * start-up rather than taken from a datasheet, because the suite's claim is
 * "fraction of what this machine's BLAS can do". */
#ifndef TS_MACHINE_PEAK_H
#define TS_MACHINE_PEAK_H

/* Best GFLOP/s of 768^3 GEMMs in the build's element type with the BLAS
 * thread count in force: one warm-up, then as many as fit in a quarter of a
 * second (at least 5). 0 when its 7 MB of buffers cannot be allocated. */
double ts_measure_peak_gflops(void);

#endif
