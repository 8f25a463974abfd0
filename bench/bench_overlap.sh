#!/usr/bin/env bash
# The gradient all-reduce overlapped with compute, or not (bench/bench_overlap.c),
# on 2 ranks with one BLAS thread each: whether issue 16's overlap lever would
# pay on this machine and MPI. No verdict (OVERLAP_BENCH). BENCH_RANKS: other
# than 2; the program's own settings (BENCH_BUCKETS, ...) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1
echo "load before: $(uptime)"
mpirun -np "${BENCH_RANKS:-2}" build/float/bench/bench_overlap
echo "load after: $(uptime)"
