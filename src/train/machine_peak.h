/* The MFU denominator: what GEMM reaches on this rank's cores, measured at
 * start-up rather than taken from a datasheet, because the suite's claim is
 * "fraction of what this machine's BLAS can do". */
#ifndef TS_MACHINE_PEAK_H
#define TS_MACHINE_PEAK_H

/* Best GFLOP/s of a few 768^3 GEMMs in the build's element type with the
 * BLAS thread count in force. */
double ts_measure_peak_gflops(void);

#endif
