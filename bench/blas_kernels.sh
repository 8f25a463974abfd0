# Sourced by bench/lib.sh and bench/run_bench.sh: the OpenBLAS kernel set for
# PyTorch in bench_peer and anything else that is not ours, so every side of
# a comparison runs the kernels thinkscale and the C benchmarks restart
# themselves with (src/train/machine_peak.c, ts_blas_prefer_vector_kernels:
# the vector set when OpenBLAS picks an SSE one on an AVX2/AVX-512 CPU).
# OPENBLAS_CORETYPE set by the caller wins, as it does for thinkscale.
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    blas_kernels=$("${BENCH_BIN:-build/float/thinkscale}" version |
        sed -n 's/.*OpenBLAS kernels \([A-Za-z0-9_]*\)).*/\1/p')
    if [ -n "$blas_kernels" ] && [ "$blas_kernels" != unknown ]; then
        export OPENBLAS_CORETYPE=$blas_kernels
    fi
fi
