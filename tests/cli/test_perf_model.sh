#!/usr/bin/env bash
# The scaling benchmark's tools and the performance model (docs/scaling-model.md):
# bench_collectives writes one header line and one row per collective and size
# with min <= avg <= max; bench_step_flops' counts add up over ranks; bad
# arguments are refused. The model's own unittest suite (analysis/tests/
# test_perf_model.py) runs with the other analysis tests in run_tests.sh.
source "$(dirname "$0")/lib.sh"
coll=$repo/build/float/bench/bench_collectives
flops=$repo/build/float/bench/bench_step_flops

mpirun -np 2 "$coll" "$tmp/out" --max-bytes 65536 --iterations 5 --warmup 1 >"$tmp/coll.log" 2>&1
check "bench_collectives on 2 ranks succeeds" [ $? -eq 0 ]
check "... writing collectives_np2.csv: a header, 3 collectives x 14 sizes, min <= avg <= max" \
    py - "$tmp/out/collectives_np2.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
rows = list(csv.DictReader(lines))
print(lines[0], len(rows))
ok = lines[0] == "collective,ranks,bytes,iterations,min_us,avg_us,max_us" and len(rows) == 42
ok = ok and {r["collective"] for r in rows} == {"allreduce", "reduce_scatter_block", "allgather"}
ok = ok and all(0 < float(r["min_us"]) <= float(r["avg_us"]) <= float(r["max_us"]) and r["ranks"] == "2" for r in rows)
ok = ok and sorted({int(r["bytes"]) for r in rows}) == [2 ** k for k in range(3, 17)]
sys.exit(0 if ok else 1)
PY
check "bench_collectives without an output directory is a usage error" fails_with "$tmp/u.log" "usage" \
    mpirun -np 1 "$coll"

keys=(model.vocab_size=256 model.width=32 model.depth=2 model.heads=2 model.context=32)
check "bench_step_flops counts the weak-scaling steps" \
    "$flops" "$tmp/weak.csv" --ranks 1,2,4096 --batch-per-rank 4 "${keys[@]}"
check "bench_step_flops counts the strong-scaling steps" \
    "$flops" "$tmp/strong.csv" --ranks 1,3 --batch 8 "${keys[@]}"
check "... the busiest rank's FLOPs: constant under weak scaling, ceil(8/3)/8 of the step under strong" \
    py - "$tmp/weak.csv" "$tmp/strong.csv" <<'PY'
import csv, sys
weak = {int(r["ranks"]): r for r in csv.DictReader(open(sys.argv[1]))}
strong = {int(r["ranks"]): r for r in csv.DictReader(open(sys.argv[2]))}
f = lambda r, k: float(r[k])
ok = abs(f(weak[4096], "flops_max_rank") / f(weak[1], "flops_max_rank") - 1) < 0.01
ok = ok and abs(f(weak[2], "flops_total") / f(weak[1], "flops_total") - 2) < 0.02
ok = ok and weak[4096]["batch"] == "16384" and strong[3]["batch"] == "8"
ok = ok and abs(f(strong[3], "flops_max_rank") / f(strong[3], "flops_total") - 3 / 8) < 1e-6
print({k: (r["flops_total"], r["flops_max_rank"]) for k, r in weak.items()})
sys.exit(0 if ok else 1)
PY
check "bench_step_flops without model.vocab_size is a usage error" fails_with "$tmp/v.log" "usage" \
    "$flops" "$tmp/x.csv" --ranks 1 --batch 8

finish
