#!/usr/bin/env bash
# bench/bench_train.sh, shortened (one pair of 1- and 2-rank runs of 6
# steps): the TRAIN_BENCH line carries the weak-scaling efficiency and its
# split into the compute's efficiency and the collectives' share of the
# 2-rank step, read from metrics.h5's train/collective_seconds. This checks
# the tool, not the machine: the values must be consistent with each other
# (the efficiency is the compute's times the share left to compute, within
# the medians' slack), not meet the target.
source "$(dirname "$0")/lib.sh"

BENCH_STEPS=6 BENCH_PAIRS=1 bash "$repo/bench/bench_train.sh" >"$tmp/train.log" 2>&1
check "bench_train.sh runs" [ $? -eq 0 ]
tail -12 "$tmp/train.log"
check "... its summary splits the efficiency into compute and collectives" \
    py - "$tmp/train.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("TRAIN_BENCH ")][-1]
v = {k: float(x) for k, x in re.findall(r"(\w+)=([0-9.]+)", line)}
print(v)
eff, compute, share = v["weak_efficiency"], v["compute_efficiency"], v["collective_share_2"]
assert 0 < share < 1 and compute > 0 and eff > 0, v
# efficiency = (step_1 / step_2) and compute = (step_1 - c_1) / (step_2 - c_2):
# with c_1 ~ 0, eff ~ compute x (1 - share); medians taken apart, so loosely.
assert abs(eff - compute * (1 - share)) < 0.15 * eff, v
assert re.search(r" (PASSED|FAILED)$", line.strip()), line
PY
finish
