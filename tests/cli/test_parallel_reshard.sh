#!/usr/bin/env bash
# Checkpoints reshard: the AdamW moments of a ZeRO run are one sharded array
# per moment in the shared file (each rank its range), and restore under any
# rank count and strategy; zero3's sharded parameters are gathered and
# written as every strategy writes them. A chain zero3 on 2 ranks (steps
# 1-4), resumed as ddp on 1 rank (5-8), resumed as zero1 on 3 ranks (9-12)
# ends with the parameters and moments of an uninterrupted ddp run on 1 rank:
# double build, within 1e-12 relative to the largest element of each (only
# the order of gradient sums differs between rank counts). The same chain
# starting with zero2 does too, and so does zero3 on 2 ranks resumed as
# zero3 on 3 ranks, then as zero2 on 2 (restoring into the sliced layout,
# parallel/strategy.h). On one rank count a stop and resume under
# zero1, zero2 and zero3 is bit-identical to the uninterrupted run.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
run=(--set train.steps=12 --set train.checkpoint_every=4 --set train.eval_batches=1)

tiny_train 1 "$bin_double" "$tmp/straight" "${run[@]}" >"$tmp/straight.log" 2>&1
check "the uninterrupted ddp run succeeds" [ $? -eq 0 ]
chain() { # chain FIRST_STRATEGY: FIRST on 2 ranks, ddp on 1, zero1 on 3 into $tmp/chain-FIRST
    local first=$1 dir=$tmp/chain-$1
    tiny_train 2 "$bin_double" "$dir" "${run[@]}" --set parallel.strategy="$first" \
        --set train.stop_at=4 >"$dir-1.log" 2>&1
    check "$first on 2 ranks stops at step 4" contains "$dir-1.log" "stopped at step 4 of 12"
    py - "$dir/checkpoint_00000004.h5" <<'PY'
import sys, h5py
f = h5py.File(sys.argv[1], "r")
ok = all(f["optimizer"][k].attrs["layout"] in (b"sharded", "sharded") for k in "mv")
ok = ok and len(f["optimizer/m"].attrs["shard_bounds"]) == 3
print("moments sharded over 2 ranks:", ok)
sys.exit(0 if ok else 1)
PY
    check "... its checkpoint holds the moments as 2 shards" [ $? -eq 0 ]
    tiny_train 1 "$bin_double" "$dir" "${run[@]}" --set train.stop_at=8 --resume >"$dir-2.log" 2>&1
    check "resumed as ddp on 1 rank, it stops at step 8" contains "$dir-2.log" "stopped at step 8 of 12"
    tiny_train 3 "$bin_double" "$dir" "${run[@]}" --set parallel.strategy=zero1 --resume \
        >"$dir-3.log" 2>&1
    check "resumed as zero1 on 3 ranks, it completes" [ $? -eq 0 ]
    check "... from step 8" contains "$dir-3.log" "resumed from .*(step 8"
}
chain zero3
chain zero2

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
# Into the sliced layouts (each rank a slice of every unit, the moments
# exchanged with the checkpoint's contiguous ranges) on other rank counts:
# zero3 on 2 ranks (steps 1-4), zero3 on 3 ranks (5-8), zero2 on 2 ranks
# (9-12).
sliced=$tmp/chain-sliced
tiny_train 2 "$bin_double" "$sliced" "${run[@]}" --set parallel.strategy=zero3 \
    --set train.stop_at=4 >"$sliced-1.log" 2>&1
tiny_train 3 "$bin_double" "$sliced" "${run[@]}" --set parallel.strategy=zero3 \
    --set train.stop_at=8 --resume >"$sliced-2.log" 2>&1
check "zero3 on 2 ranks resumed as zero3 on 3 ranks stops at step 8" \
    contains "$sliced-2.log" "stopped at step 8 of 12"
tiny_train 2 "$bin_double" "$sliced" "${run[@]}" --set parallel.strategy=zero2 --resume \
    >"$sliced-3.log" 2>&1
check "... resumed as zero2 on 2 ranks, it completes" [ $? -eq 0 ]
check "zero3 (2) -> zero3 (3) -> zero2 (2): parameters and moments equal the uninterrupted run's \
within 1e-12" same "$tmp/straight/checkpoint_00000012.h5" "$sliced/checkpoint_00000012.h5" 1e-12
for first in zero3 zero2; do
    check "$first -> ddp -> zero1: parameters and moments equal the uninterrupted run's within 1e-12" \
        same "$tmp/straight/checkpoint_00000012.h5" "$tmp/chain-$first/checkpoint_00000012.h5" 1e-12
done

for s in zero1 zero2 zero3; do
    tiny_train 2 "$bin" "$tmp/$s" "${run[@]}" --set parallel.strategy=$s >"$tmp/$s.log" 2>&1
    tiny_train 2 "$bin" "$tmp/$s-r" "${run[@]}" --set parallel.strategy=$s --set train.stop_at=6 \
        >"$tmp/$s-r-a.log" 2>&1
    tiny_train 2 "$bin" "$tmp/$s-r" "${run[@]}" --set parallel.strategy=$s --resume >"$tmp/$s-r-b.log" 2>&1
    check "$s stopped and resumed on 2 ranks is bit-identical (float)" \
        same "$tmp/$s/checkpoint_00000012.h5" "$tmp/$s-r/checkpoint_00000012.h5" 0
done
finish
