#!/usr/bin/env bash
# bench_machine (bench/bench_machine.c): a row per core with its multiply-add
# and memory-read rates alone and with every core busy, sgemm 768^3 against
# the multiply-add peak, and a MACHINE_BENCH line; bad settings are refused.
# Short measurements: this checks the tool, not the machine. The one bound on
# the rates is physical: sgemm on a core cannot outrun that core's
# multiply-add peak, so a peak probe that reads low (chains that wait on each
# other, FLOPs miscounted) fails it.
source "$(dirname "$0")/lib.sh"
machine=$repo/build/float/bench/bench_machine
cores=$(nproc)
# OpenBLAS on its own choice of kernels (this machine exports a slower set),
# and its own thread count: the sgemm figure is one core's whatever the
# environment says (with a thread per core it read 154% of the peak).
unset OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS OMP_NUM_THREADS
export BENCH_SECONDS=0.05 BENCH_STREAM_MB=64

"$machine" >"$tmp/all.log" 2>&1
check "bench_machine succeeds" [ $? -eq 0 ]
cat "$tmp/all.log"
rows() { grep -cE '^ +[0-9]+( +[0-9]+\.[0-9]){4}$' "$1"; }
check "... with a row for each of the $cores cores" [ "$(rows "$tmp/all.log")" = "$cores" ]
check "... and a summary whose rates are positive, sgemm below the multiply-add peak" \
    py - "$tmp/all.log" "$cores" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("MACHINE_BENCH ")][-1]
v = {k: float(x) for k, x in re.findall(r"(\w+)=([0-9.]+)", line)}
print(v)
names = ("fma_gflops_alone", "fma_gflops_together", "read_gbs_alone", "read_gbs_together",
         "sgemm_gflops")
ok = v["cores"] == float(sys.argv[2]) and all(v[n] > 0 for n in names)
sys.exit(0 if ok and 0 < v["sgemm_of_fma_peak"] <= 1.05 else 1)
PY

BENCH_CORES=1 "$machine" >"$tmp/one.log" 2>&1
check "BENCH_CORES=1 measures one core" [ $? -eq 0 -a "$(rows "$tmp/one.log")" = 1 ]

for bad in "BENCH_CORES=$((cores + 1))" BENCH_CORES=two BENCH_SECONDS=-1 BENCH_STREAM_MB=0; do
    env "$bad" "$machine" >"$tmp/bad.log" 2>&1
    check "$bad is refused" [ $? -ne 0 ]
    check "... naming it" contains "$tmp/bad.log" "bench_machine: ${bad%%=*}="
done
finish
