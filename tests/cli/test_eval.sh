#!/usr/bin/env bash
# thinkscale eval: perplexity of a checkpoint on several token sets, to stdout
# and HDF5 (by default RUN/eval.h5, which analysis/run_summary.py reads). The loss on the training domain must equal the trainer's own final
# evaluation over the same windows (same model, same windows, any rank count),
# and a missing checkpoint, a wrong vocabulary or an existing output without
# --force fail with a message.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
for i in $(seq 1 2000); do echo "int f$i(int x) { return x * $i + $((i % 7)); }"; done >"$tmp/code.c"
"$bin" data convert --input "$tmp/code.c" --output "$tmp/code.h5" --name code --val-fraction 0.2 >/dev/null
tiny_train 2 "$bin" "$tmp/run" --set train.steps=20 --set train.eval_batches=2 >"$tmp/train.log" 2>&1
check "training succeeds" [ $? -eq 0 ]

# The trainer evaluates eval_batches * batch = 16 windows per set.
mpirun -np 2 "$bin" eval --run "$tmp/run" --data "$tmp/corpus.h5,$tmp/code.h5" --windows 16 \
    --output "$tmp/eval.h5" >"$tmp/eval.log" 2>&1
check "eval on 2 ranks succeeds" [ $? -eq 0 ]
check "it prints a row per set" contains "$tmp/eval.log" "^code "
mpirun -np 1 "$bin" eval --run "$tmp/run" --data "$tmp/corpus.h5" --windows 16 \
    --output "$tmp/eval1.h5" >"$tmp/eval1.log" 2>&1
check "eval on 1 rank succeeds" [ $? -eq 0 ]
py - "$tmp" <<'PY'
import sys, h5py, numpy as np
tmp = sys.argv[1]
trained = h5py.File(f"{tmp}/run/metrics.h5", "r")["eval/licenses/loss"][-1]
e2 = h5py.File(f"{tmp}/eval.h5", "r")
e1 = h5py.File(f"{tmp}/eval1.h5", "r")
l2 = e2["sets/licenses/default"].attrs["loss"]
l1 = e1["sets/licenses/default"].attrs["loss"]
code = e2["sets/code/default"].attrs
print(f"trainer {trained:.6f}, eval 2 ranks {l2:.6f}, 1 rank {l1:.6f}, code {code['loss']:.4f}")
ok = abs(l2 - trained) < 1e-5 * trained and abs(l1 - l2) < 1e-5 * l2
ok &= abs(code["perplexity"] - np.exp(code["loss"])) < 1e-9 * code["perplexity"]
ok &= e2.attrs["step"] == 20 and code["tokens"] == 16 * 32
sys.exit(0 if ok else 1)
PY
check "eval agrees with the trainer and across rank counts; perplexity = exp(loss)" [ $? -eq 0 ]

check "an existing output is not replaced without --force" \
    fails_with "$tmp/l1" "exists: pass --force" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/corpus.h5" --output "$tmp/eval.h5"
# What would refuse the results is refused before the evaluation, and
# --force replaces only an earlier eval result.
newest=$(ls "$tmp/run"/checkpoint_*.h5 | sort | tail -1)
before=$(sha256sum "$newest" "$tmp/corpus.h5")
check "--force does not replace a checkpoint" \
    fails_with "$tmp/l4" "is not a thinkscale-eval file" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/corpus.h5" --output "$newest" --force
check "... nor the token file it reads" \
    fails_with "$tmp/l5" "is not a thinkscale-eval file" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/corpus.h5" --output "$tmp/corpus.h5" --force
check "... which are unchanged" [ "$before" = "$(sha256sum "$newest" "$tmp/corpus.h5")" ]
check "--force replaces an earlier eval result" \
    succeeds_with "$tmp/l6" "^results: $tmp/eval1.h5$" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/corpus.h5" --windows 2 --output "$tmp/eval1.h5" --force
py -c "import h5py; del h5py.File('$tmp/eval1.h5', 'r+').attrs['format']"  # as written before
check "--force replaces an eval result written before files carried format" \
    succeeds_with "$tmp/l6b" "^results: $tmp/eval1.h5$" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/corpus.h5" --windows 2 --output "$tmp/eval1.h5" --force
check "... which now says what it is" \
    py -c "import h5py, sys; sys.exit(h5py.File('$tmp/eval1.h5', 'r').attrs['format'] != 'thinkscale-eval')"
"$bin" data convert --input "$tmp/code.c" --output "$tmp/code2.h5" --name code --val-fraction 0.2 >/dev/null
check "two sets of one domain are refused before evaluating, naming the domain" \
    fails_with "$tmp/l7" "both of domain 'code'" mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/code.h5,$tmp/code2.h5" --output "$tmp/eval_dup.h5"
check "... with exit status 1, not that of a failed write" [ "$(mpirun -np 1 "$bin" eval --run "$tmp/run" \
    --data "$tmp/code.h5,$tmp/code2.h5" --output "$tmp/eval_dup.h5" >/dev/null 2>&1; echo $?)" = 1 ]
check "an output directory that does not exist is refused before evaluating" \
    fails_with "$tmp/l8" "its directory '$tmp/nodir' does not exist" mpirun -np 1 "$bin" eval \
    --run "$tmp/run" --data "$tmp/corpus.h5" --output "$tmp/nodir/e.h5"
check "none of the refusals evaluated a set" \
    [ -z "$(grep -l '^licenses \|^code ' "$tmp"/l[14578])" ]
check "another architecture's inference knob is refused, naming it" \
    fails_with "$tmp/l9" "is a setting of the ebt architecture; this model is transformerpp" \
    mpirun -np 1 "$bin" eval --run "$tmp/run" --data "$tmp/corpus.h5" --think steps=2,samples=2 \
    --output "$tmp/eval_think.h5"
check "a run without checkpoints is reported" \
    fails_with "$tmp/l2" "no complete checkpoint" mpirun -np 1 "$bin" eval --run "$tmp" --data "$tmp/corpus.h5"
check "a missing checkpoint file is reported" \
    fails_with "$tmp/l3" "nope.h5" mpirun -np 1 "$bin" eval --checkpoint "$tmp/nope.h5" --data "$tmp/corpus.h5"

# Without --output the results go to eval.h5 in the run directory, where
# analysis/run_summary.py looks for them.
mpirun -np 1 "$bin" eval --run "$tmp/run" --data "$tmp/corpus.h5,$tmp/code.h5" --windows 16 \
    >"$tmp/eval_default.log" 2>&1
check "eval's default output is RUN/eval.h5" contains "$tmp/eval_default.log" "^results: $tmp/run/eval.h5$"
py analysis/run_summary.py "$tmp/run" >"$tmp/summary.log" 2>&1
check "run_summary.py reads it: a row per domain" contains "$tmp/summary.log" "^code "
mkdir "$tmp/damaged" && cp "$tmp/run/metrics.h5" "$tmp/damaged/" && : >"$tmp/damaged/eval.h5"
check "run_summary.py names a damaged eval.h5 (exit 1), without a traceback" \
    fails_with "$tmp/summary-bad.log" "damaged or incomplete" py analysis/run_summary.py "$tmp/damaged"
check "... (no traceback)" [ -z "$(grep Traceback "$tmp/summary-bad.log")" ]
check "... and no other eval file was written beside the checkpoints" \
    [ -z "$(ls "$tmp/run" | grep -v '^eval.h5$' | grep eval)" ]
finish
