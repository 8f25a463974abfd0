#!/usr/bin/env bash
# Checkpoints reshard: the AdamW moments of a ZeRO run are one sharded array
# per moment in the shared file (each rank its range), and restore under any
# rank count and strategy. A chain zero2 on 2 ranks (steps 1-4), resumed as
# ddp on 1 rank (5-8), resumed as zero1 on 3 ranks (9-12) ends with the
# parameters and moments of an uninterrupted ddp run on 1 rank: double build,
# within 1e-12 relative to the largest element of each (only the order of
# gradient sums differs between rank counts). On one rank count a stop and
# resume under zero1 is bit-identical to the uninterrupted zero1 run.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
run=(--set train.steps=12 --set train.checkpoint_every=4 --set train.eval_batches=1)

tiny_train 1 "$bin_double" "$tmp/straight" "${run[@]}" >"$tmp/straight.log" 2>&1
check "the uninterrupted ddp run succeeds" [ $? -eq 0 ]
tiny_train 2 "$bin_double" "$tmp/chain" "${run[@]}" --set parallel.strategy=zero2 \
    --set train.stop_at=4 >"$tmp/chain1.log" 2>&1
check "zero2 on 2 ranks stops at step 4" contains "$tmp/chain1.log" "stopped at step 4 of 12"
py - "$tmp/chain/checkpoint_00000004.h5" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
ok = all(f["optimizer"][k].attrs["layout"] in (b"sharded", "sharded") for k in "mv")
ok = ok and len(f["optimizer/m"].attrs["shard_bounds"]) == 3
print("moments sharded over 2 ranks:", ok)
sys.exit(0 if ok else 1)
PY
check "... its checkpoint holds the moments as 2 shards" [ $? -eq 0 ]
tiny_train 1 "$bin_double" "$tmp/chain" "${run[@]}" --set train.stop_at=8 --resume >"$tmp/chain2.log" 2>&1
check "resumed as ddp on 1 rank, it stops at step 8" contains "$tmp/chain2.log" "stopped at step 8 of 12"
tiny_train 3 "$bin_double" "$tmp/chain" "${run[@]}" --set parallel.strategy=zero1 --resume \
    >"$tmp/chain3.log" 2>&1
check "resumed as zero1 on 3 ranks, it completes" [ $? -eq 0 ]
check "... from step 8" contains "$tmp/chain3.log" "resumed from .*(step 8"

same() { # same A.h5 B.h5 TOLERANCE: parameters and moments agree
    py - "$1" "$2" "$3" <<'PY'
import sys, h5py, numpy as np
a, b, tol = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r"), float(sys.argv[3])
worst = 0.0
pairs = [(a["params"][k][...], b["params"][k][...]) for k in a["params"]]
pairs += [(a["optimizer"][k][...], b["optimizer"][k][...]) for k in ("m", "v")]
for x, y in pairs:
    if x.shape != y.shape: sys.exit("shapes differ")
    worst = max(worst, float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-300)))
print("largest relative difference:", worst)
sys.exit(0 if worst <= tol else 1)
PY
}
check "parameters and moments equal the uninterrupted run's within 1e-12" \
    same "$tmp/straight/checkpoint_00000012.h5" "$tmp/chain/checkpoint_00000012.h5" 1e-12

tiny_train 2 "$bin" "$tmp/z1" "${run[@]}" --set parallel.strategy=zero1 >"$tmp/z1.log" 2>&1
tiny_train 2 "$bin" "$tmp/z1r" "${run[@]}" --set parallel.strategy=zero1 --set train.stop_at=6 \
    >"$tmp/z1r-a.log" 2>&1
tiny_train 2 "$bin" "$tmp/z1r" "${run[@]}" --set parallel.strategy=zero1 --resume >"$tmp/z1r-b.log" 2>&1
check "zero1 stopped and resumed on 2 ranks is bit-identical (float)" \
    same "$tmp/z1/checkpoint_00000012.h5" "$tmp/z1r/checkpoint_00000012.h5" 0
finish
