/* The MFU denominator: what GEMM reaches on this rank's cores, measured at
 * start-up rather than taken from a datasheet, because the suite's claim is
 * "fraction of what this machine's BLAS can do". */
#ifndef TS_MACHINE_PEAK_H
#define TS_MACHINE_PEAK_H

#include <stdbool.h>
#include <stddef.h>

/* Best GFLOP/s of 768^3 GEMMs in the build's element type with the BLAS
 * thread count in force, on OpenBLAS and on the engine's own kernel
 * (ts_small_gemm, which runs the step's products into fresh outputs:
 * op_matmul.c), whichever is faster: each kernel one warm-up, then as many
 * as fit in a quarter of a second (at least 5), each timed by
 * ts_peak_probe_seconds. OpenBLAS's own choice of kernels is the faster
 * where it fits the CPU (Cooperlake on this AMD EPYC: 170-179 against
 * 144-161 GFLOP/s); held to a narrower set (OPENBLAS_CORETYPE=Haswell: 93
 * against 159) its rate alone was below what the step's own products ran
 * at, and the trainer reported an MFU of 1.21 (docs/performance.md,
 * thirteenth round). 0 when its 7 MB of buffers cannot be allocated. */
double ts_measure_peak_gflops(void);

/* How a run's GEMM peak was obtained, as the start-up line and report.yaml
 * (gemm_peak_source) name it: "configured" (train.gemm_peak_gflops) or
 * "measured" (ts_measure_peak_gflops). */
const char *ts_peak_source_name(bool configured);

/* The time one probe GEMM is charged: the shorter of its wall time and this
 * process's CPU time, so neither time slices lost to other processes (wall
 * longer) nor several BLAS threads (CPU time longer) lower the peak. */
double ts_peak_probe_seconds(double wall, double process_cpu);

/* OpenBLAS picks its kernels from the CPU model it recognises; on a CPU
 * newer than its tables (or a VM hiding the model) it falls back to an older
 * set: SSE kernels at a fifth of the vector units' rate (Debian's 0.3.21 on
 * an unrecognised Xeon). An environment can also impose an older set: one
 * machine here exports OPENBLAS_CORETYPE=Haswell on an AVX-512 AMD EPYC, whose
 * sgemm then runs at half the rate OpenBLAS's own choice (Cooperlake) gives.
 * Every MFU is then measured against that slow peak. True, with advice in
 * `advice`, when `core` (openblas_get_corename()) is a set for narrower
 * vectors than the CPU has. `cpu_avx512` means AVX-512 F, BW, DQ and VL,
 * which OpenBLAS's AVX-512 kernels use. */
bool ts_blas_core_advice(const char *core, bool cpu_avx2, bool cpu_avx512, char *advice,
                         size_t len);

/* The same for this process's OpenBLAS and CPU (x86-64; elsewhere false). */
bool ts_blas_core_advice_here(char *advice, size_t len);

/* The kernel set to ask OpenBLAS for instead of `core`: "SkylakeX" on an
 * AVX-512 CPU when `core` is an SSE, AVX or AVX2 set; "Haswell" on an AVX2
 * CPU when it is an SSE or AVX set; else NULL (the choice fits the CPU, or
 * `core` is a set this function does not know, which it leaves alone). */
const char *ts_blas_better_core(const char *core, bool cpu_avx2, bool cpu_avx512);

/* Called first thing in main, before MPI_Init: when OPENBLAS_CORETYPE is
 * unset and OpenBLAS chose a kernel set for narrower vectors than the CPU has,
 * re-executes this program (/proc/self/exe, same argv and pid) with
 * OPENBLAS_CORETYPE set to ts_blas_better_core's answer, so every run, job
 * and benchmark gets the vector kernels without its launcher knowing.
 * Returns when there is nothing to do, or, with a message on stderr, when the
 * exec failed. */
void ts_blas_prefer_vector_kernels(char **argv);

#endif
