#!/usr/bin/env bash
# bench_overlap (bench/bench_overlap.c) on 2 ranks: a row for each way of
# reducing (blocking, MPI_Iallreduce, persistent), a summary line whose
# times hang together, and bad settings refused by name. Tiny buckets and
# compute: this checks the tool, not the machine. Every step's sums are
# checked by the program itself (it exits naming the way on a wrong one).
source "$(dirname "$0")/lib.sh"
overlap=$repo/build/float/bench/bench_overlap
export BENCH_BUCKETS=3000,1000,500 BENCH_COMPUTE_MS=1 BENCH_STEPS=3

mpirun -np 2 "$overlap" >"$tmp/run.log" 2>&1
check "bench_overlap runs on 2 ranks" [ $? -eq 0 ]
cat "$tmp/run.log"
check "... with a row for each way" [ "$(grep -cE '^(blocking|MPI_Iallreduce|persistent)' "$tmp/run.log")" = 3 ]
check "... and a summary that hangs together" py - "$tmp/run.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("OVERLAP_BENCH ")][-1]
v = {k: float(x) for k, x in re.findall(r"(\w+)=([0-9.]+)", line)}
print(v)
ways = ("blocking", "iallreduce", "persistent")
ok = v["ranks"] == 2 and v["buckets"] == 3 and v["elements"] == 4500
for w in ways:
    step, mpi, after = v[w + "_step_ms"], v[w + "_mpi_ms"], v[w + "_after_ms"]
    # the time after the last compute is spent in MPI, and both inside the step
    ok = ok and 0 < after <= mpi + 1e-3 and mpi < step
# blocking makes one call after the compute: its MPI time is that call
ok = ok and abs(v["blocking_mpi_ms"] - v["blocking_after_ms"]) <= 1e-3
sys.exit(0 if ok else 1)
PY

# By default the buckets are the benchmark Transformer++'s gradient units,
# taken from its parameter table: its 4 blocks (equal), last first, then
# unit 0 (embeddings, final norm, head), smaller at this size.
env -u BENCH_BUCKETS BENCH_COMPUTE_MS=0 BENCH_STEPS=1 mpirun -np 2 "$overlap" >"$tmp/units.log" 2>&1
check "the default buckets run" [ $? -eq 0 ]
check "... one per unit of the model, blocks first" py - "$tmp/units.log" <<'PY'
import sys
line = [l for l in open(sys.argv[1]) if l.startswith("buckets, in the order reduced")][-1]
b = [int(x) for x in line.split(":")[1].split()]
print(b)
sys.exit(0 if len(b) == 5 and len(set(b[:4])) == 1 and b[4] < b[0] else 1)
PY

for bad in BENCH_BUCKETS=abc BENCH_BUCKETS=0 BENCH_BUCKETS=10,,20 BENCH_BUCKETS=10, \
    BENCH_BUCKETS=268435456,268435456,268435456,268435456,268435456,268435456,268435456,268435456 \
    BENCH_COMPUTE_MS=-1 BENCH_STEPS=0 BENCH_STEPS=2.5; do
    env "$bad" "$overlap" >"$tmp/bad.log" 2>&1
    check "$bad is refused" [ $? -ne 0 ]
    check "... naming it" contains "$tmp/bad.log" "bench_overlap: ${bad%%=*}="
done
finish
