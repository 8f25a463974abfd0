#!/usr/bin/env bash
# Runs every benchmark; each prints a table and a summary line with a verdict.
# Results are also kept in build/bench/ for reports.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/bench
export OPENBLAS_NUM_THREADS=1
source bench/blas_kernels.sh
status=0
for bin in build/float/bench/bench_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    # MPI tools with arguments, run by bench_scaling.sh and bench_tensor.sh
    case $name in bench_collectives | bench_overlap | bench_step_flops | bench_tensor_gemm) continue ;; esac
    echo "== $name"
    "$bin" | tee "build/bench/$name.txt" || status=1
done
for script in bench/bench_*.sh; do
    name=$(basename "$script" .sh)
    echo "== $name"
    bash "$script" | tee "build/bench/$name.txt" || status=1
done
echo "== verdicts"
grep -h '_BENCH ' build/bench/*.txt
! grep -h '_BENCH ' build/bench/*.txt | grep -q FAILED && exit $status
exit 1
