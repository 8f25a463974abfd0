#!/usr/bin/env bash
# Memory per rank, measured and budgeted. report.yaml's memory_per_rank and
# metrics.h5's memory table hold what one rank allocated: under ddp the
# moments are twice the parameters' bytes; under zero1 on 2 ranks each rank
# holds half of them, and so under zero3, which gathers the parameters block
# by block and never holds more than all of them (the evaluation's gather),
# nor, at its peak, more state than ddp. parallel.memory_limit refuses, before
# allocating, a run whose training state would not fit, naming every
# strategy's estimate and one that fits; that strategy, and zero3, then
# train within the same limit.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
short=(--set train.steps=3 --set train.eval_batches=1)

tiny_train 2 "$bin" "$tmp/ddp" "${short[@]}" >"$tmp/ddp.log" 2>&1
check "ddp on 2 ranks trains" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/zero1" "${short[@]}" --set parallel.strategy=zero1 >"$tmp/zero1.log" 2>&1
check "zero1 on 2 ranks trains" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/zero3" "${short[@]}" --set parallel.strategy=zero3 >"$tmp/zero3.log" 2>&1
check "zero3 on 2 ranks trains" [ $? -eq 0 ]
memory() { # memory DIR KEY: a memory_per_rank value of report.yaml
    sed -n "/^memory_per_rank:/,/^[a-z]/s/^  $2: //p" "$1/report.yaml"
}
for key in parameters_bytes gradients_bytes optimizer_bytes activations_bytes; do
    check "report.yaml has memory_per_rank.$key" [ -n "$(memory "$tmp/ddp" $key)" ]
done
p=$(memory "$tmp/ddp" parameters_bytes)
check "ddp: moments are 2 x the parameters' bytes ($p)" [ "$(memory "$tmp/ddp" optimizer_bytes)" = $((2 * p)) ]
check "zero1 on 2 ranks: moments are 1 x the parameters' bytes" [ "$(memory "$tmp/zero1" optimizer_bytes)" = "$p" ]
check "zero3 on 2 ranks: moments are 1 x the parameters' bytes" [ "$(memory "$tmp/zero3" optimizer_bytes)" = "$p" ]
z3=$(memory "$tmp/zero3" parameters_bytes)
check "zero3 on 2 ranks: at most the full parameters at once ($z3 of $p)" [ "$z3" -gt 0 -a "$z3" -le "$p" ]
state() { echo $(($(memory "$1" parameters_bytes) + $(memory "$1" gradients_bytes) + $(memory "$1" optimizer_bytes))); }
check "zero3 on 2 ranks: less state at its peak than ddp ($(state "$tmp/zero3") < $(state "$tmp/ddp"))" \
    [ "$(state "$tmp/zero3")" -lt "$(state "$tmp/ddp")" ]
check "activations (arena high water) are measured" below 0 "$(memory "$tmp/ddp" activations_bytes)"
py - "$tmp/zero1/metrics.h5" "$p" <<'PY'
import sys, h5py
m = h5py.File(sys.argv[1], "r")["memory"]
ok = list(m["step"][...]) == [3] and m["optimizer_bytes"][0] == float(sys.argv[2])
ok = ok and m["communicated_bytes_per_step"][0] > 0
print("metrics.h5 memory table:", {k: m[k][...].tolist() for k in m})
sys.exit(0 if ok else 1)
PY
check "metrics.h5 has the memory table with the same numbers" [ $? -eq 0 ]

# 16 B/param under ddp; zero1 on 2 ranks needs 12 B/param + a shard of gradient.
limit=$((15 * p / 4))
check "ddp over parallel.memory_limit is refused, naming a strategy that fits" \
    fails_with "$tmp/limit.log" "Use zero1" \
    tiny_train 2 "$bin" "$tmp/limit" "${short[@]}" --set parallel.memory_limit=$limit
check "... with every strategy's estimate" contains "$tmp/limit.log" "ddp [0-9]*, zero1 [0-9]* (fits)"
check "... before creating the run directory" [ ! -e "$tmp/limit" ]
tiny_train 2 "$bin" "$tmp/limit" "${short[@]}" --set parallel.memory_limit=$limit \
    --set parallel.strategy=zero1 >"$tmp/fits.log" 2>&1
check "zero1 trains within the same limit" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/limit3" "${short[@]}" --set parallel.memory_limit=$limit \
    --set parallel.strategy=zero3 >"$tmp/fits3.log" 2>&1
check "zero3 trains within the same limit" [ $? -eq 0 ]
finish
