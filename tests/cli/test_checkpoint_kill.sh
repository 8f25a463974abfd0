#!/usr/bin/env bash
# A process killed while writing a checkpoint leaves the previous one intact
# and resumable: rank 0 is SIGKILLed just before the data file is renamed into
# place, and again (another run) just before the completion marker is. Either
# way --resume continues from the previous complete checkpoint and reproduces
# the uninterrupted run bit for bit.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
gcc -shared -fPIC -O1 -o "$tmp/kill_on_rename.so" "$repo/tests/cli/kill_on_rename.c" -ldl
check "the kill shim builds" [ -f "$tmp/kill_on_rename.so" ]

common=(--set train.checkpoint_every=10 --set train.keep_checkpoints=5)
tiny_train 2 "$bin" "$tmp/straight" "${common[@]}" >"$tmp/straight.log" 2>&1
check "the uninterrupted run succeeds" [ $? -eq 0 ]

same_params() { # same_params CKPT_A CKPT_B: bit-identical parameters
    py - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert sorted(a["params"]) == sorted(b["params"])
sys.exit(0 if all(np.array_equal(a["params"][k][...], b["params"][k][...]) for k in a["params"]) else 1)
PY
}
rows_of() { py -c "import h5py; print(len(h5py.File('$1/metrics.h5','r')['train/step']))"; }

for stage in data marker; do
    dir=$tmp/killed-$stage
    target=checkpoint_00000020.h5
    [ $stage = marker ] && target=checkpoint_00000020.h5.complete
    TS_KILL_RENAME_TO=$target LD_PRELOAD=$tmp/kill_on_rename.so \
        tiny_train 2 "$bin" "$dir" -x TS_KILL_RENAME_TO -x LD_PRELOAD "${common[@]}" \
        >"$tmp/$stage.log" 2>&1
    check "$stage: the killed run exits non-zero" [ $? -ne 0 ]
    check "$stage: the kill happened at the rename" contains "$tmp/$stage.log" "killing pid before renaming"
    check "$stage: checkpoint 10 is still complete" [ -f "$dir/checkpoint_00000010.h5.complete" ]
    check "$stage: step 20 has no completion marker" [ ! -f "$dir/checkpoint_00000020.h5.complete" ]
    sum_before=$(sha256sum "$dir/checkpoint_00000010.h5")
    tiny_train 2 "$bin" "$dir" "${common[@]}" --resume >"$tmp/$stage-resume.log" 2>&1
    check "$stage: --resume succeeds" [ $? -eq 0 ]
    check "$stage: it resumed from step 10" contains "$tmp/$stage-resume.log" "resumed from .*checkpoint_00000010.h5 (step 10"
    check "$stage: checkpoint 10 was not modified" [ "$sum_before" = "$(sha256sum "$dir/checkpoint_00000010.h5")" ]
    check "$stage: the final parameters equal the uninterrupted run's" \
        same_params "$tmp/straight/checkpoint_00000030.h5" "$dir/checkpoint_00000030.h5"
    check "$stage: metrics hold 30 training rows, none twice" [ "$(rows_of "$dir")" = 30 ]
done
finish
