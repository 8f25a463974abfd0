#!/usr/bin/env bash
# Nexus end to end (docs/nexus.md): at order 1 a tiny model trains exactly
# as Transformer++ from the same seed; a tiny model trained at order 2 follows
# the same loss trajectory on 1 and 2 ranks (tolerances as
# test_train_ranks.sh: relative 1e-4 per step in float, 1e-10 in double);
# `thinkscale eval --order 1,2,3` evaluates every order in one call, its
# order-2 row equals the trainer's own final evaluation, 1 and 2 ranks agree,
# each row ran at the order it names, and higher orders execute more FLOPs;
# the unshared and self-refine variants train and evaluate; invalid orders
# and variants are refused with a message.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
nexus=(--set model.arch=nexus --set nexus.order=2)


for build in float double; do
    program=$repo/build/$build/thinkscale
    tiny_train 1 "$program" "$tmp/$build-1" "${nexus[@]}" >"$tmp/$build-1.log" 2>&1
    check "$build: order 2 trains on 1 rank" [ $? -eq 0 ]
    tiny_train 2 "$program" "$tmp/$build-2" "${nexus[@]}" >"$tmp/$build-2.log" 2>&1
    check "$build: order 2 trains on 2 ranks" [ $? -eq 0 ]
    diff=$(max_rel_diff "$tmp/$build-1" "$tmp/$build-2")
    echo "$build: max relative loss difference 1 vs 2 ranks: $diff"
    tol=$([ $build = float ] && echo 1e-4 || echo 1e-10)
    check "$build: 1 and 2 ranks agree within $tol" below "$diff" "$tol"
done
check "the trainer reports the Nexus model" contains "$tmp/float-1.log" "thinkscale train: nexus"

# Order 1 with shared weights is Transformer++: the same seed initialises the
# same table, so training follows the identical trajectory, bit for bit.
tiny_train 1 "$bin" "$tmp/tpp" >"$tmp/tpp.log" 2>&1
tiny_train 1 "$bin" "$tmp/order1" --set model.arch=nexus --set nexus.order=1 >"$tmp/order1.log" 2>&1
py - "$tmp/tpp/metrics.h5" "$tmp/order1/metrics.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r")["train/loss"][...] for p in sys.argv[1:])
print(f"Transformer++ vs Nexus order 1: {len(a)} and {len(b)} steps, final losses {a[-1]:.7f} {b[-1]:.7f}")
sys.exit(0 if len(a) == len(b) == 30 and np.array_equal(a, b) else 1)
PY
check "Nexus order 1 trains exactly as Transformer++ (30 identical losses)" [ $? -eq 0 ]

# The trainer evaluates eval_batches * batch = 16 windows at the training order.
for np in 1 2; do
    mpirun -np $np "$bin" eval --run "$tmp/float-2" --data "$tmp/corpus.h5" --windows 16 \
        --order 1,2,3 --output "$tmp/eval$np.h5" >"$tmp/eval$np.log" 2>&1
    check "eval --order 1,2,3 on $np rank(s) succeeds" [ $? -eq 0 ]
done
check "it prints a row per order" contains "$tmp/eval2.log" "nexus.infer_order=3"
py - "$tmp" <<'PY'
import sys, h5py
tmp = sys.argv[1]
trained = h5py.File(f"{tmp}/float-2/metrics.h5", "r")["eval/licenses/loss"][-1]
rows = {}
for np_ in (1, 2):
    sets = h5py.File(f"{tmp}/eval{np_}.h5", "r")["sets/licenses"]
    rows[np_] = {m: dict(sets[f"nexus.infer_order={m}"].attrs) for m in (1, 2, 3)}
for m in (1, 2, 3):
    print(f"order {m}: loss {rows[2][m]['loss']:.6f} (1 rank {rows[1][m]['loss']:.6f}), "
          f"flops {rows[2][m]['flops']:.4g}, attention_order {rows[2][m]['attention_order']}")
print(f"trainer's final evaluation at order 2: {trained:.6f}")
ok = abs(rows[2][2]["loss"] - trained) < 1e-5 * trained
ok &= all(abs(rows[1][m]["loss"] - rows[2][m]["loss"]) < 1e-5 * rows[2][m]["loss"] for m in (1, 2, 3))
ok &= all(rows[2][m]["attention_order"] == m for m in (1, 2, 3))
ok &= rows[2][1]["loss"] != rows[2][2]["loss"] != rows[2][3]["loss"]
ok &= rows[2][1]["flops"] < rows[2][2]["flops"] < rows[2][3]["flops"]
sys.exit(0 if ok else 1)
PY
check "order 2 equals the trainer's evaluation; ranks agree; each row ran at its order" [ $? -eq 0 ]

for variant in unshared selfrefine; do
    tiny_train 2 "$bin" "$tmp/$variant" "${nexus[@]}" --set nexus.variant=$variant \
        --set train.steps=10 >"$tmp/$variant.log" 2>&1
    status=$?
    [ $status -eq 0 ] || tail -5 "$tmp/$variant.log"
    check "$variant trains" [ $status -eq 0 ]
    mpirun -np 2 "$bin" eval --run "$tmp/$variant" --data "$tmp/corpus.h5" --windows 8 \
        --order 1,3 --output "$tmp/$variant-eval.h5" >"$tmp/$variant-eval.log" 2>&1
    check "$variant evaluates at orders 1 and 3" contains "$tmp/$variant-eval.log" "nexus.infer_order=3"
done
# 2 layers x 1 extra level x (wq, wk) of 32 x 32 over the shared model.
shared_params=$(grep -o '[0-9]* parameters' "$tmp/float-2.log")
unshared_params=$(grep -o '[0-9]* parameters' "$tmp/unshared.log")
check "unshared adds 2 x 2 x 32 x 32 parameters ($shared_params -> $unshared_params)" \
    [ "${unshared_params% *}" -eq $((${shared_params% *} + 4096)) ]

check "order 0 is refused" fails_with "$tmp/e1" "nexus.order must be between 1 and 16" \
    tiny_train 1 "$bin" "$tmp/bad" --set model.arch=nexus --set nexus.order=0
check "an unknown variant is refused" fails_with "$tmp/e2" "not 'both'" \
    tiny_train 1 "$bin" "$tmp/bad" --set model.arch=nexus --set nexus.variant=both
check "a negative inference order is refused" fails_with "$tmp/e3" "nexus.infer_order must be" \
    mpirun -np 1 "$bin" eval --run "$tmp/float-2" --data "$tmp/corpus.h5" --windows 8 \
    --order -1 --output "$tmp/bad.h5"
check "the training order cannot change at evaluation" fails_with "$tmp/e4" "fixed by training" \
    mpirun -np 1 "$bin" eval --run "$tmp/float-2" --data "$tmp/corpus.h5" --windows 8 \
    --setting nexus.order=3 --output "$tmp/bad.h5"
finish
