#!/usr/bin/env bash
# Stop-and-resume reproduces an uninterrupted run exactly: 30 steps straight
# against 12 steps (train.stop_at), then --resume to 30. On the same rank
# count parameters, optimiser moments and the loss series are bit-identical;
# resumed on another rank count they agree within the float tolerance of
# test_train_ranks.sh (1e-4 relative). metrics.h5 must not repeat rows.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"

tiny_train 2 "$bin" "$tmp/straight" >"$tmp/straight.log" 2>&1
check "the uninterrupted run succeeds" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/resumed" --set train.stop_at=12 >"$tmp/first.log" 2>&1
check "the first half stops at step 12" contains "$tmp/first.log" "stopped at step 12 of 30"
check "... having written checkpoint 12" [ -f "$tmp/resumed/checkpoint_00000012.h5.complete" ]
tiny_train 2 "$bin" "$tmp/resumed" >"$tmp/again.log" 2>&1
check "starting again without --resume is refused" [ $? -ne 0 ]
check "... with a message naming the run directory" contains "$tmp/again.log" "already holds a run"
cp -r "$tmp/resumed" "$tmp/resumed-1rank"
rm "$tmp/resumed-1rank/metrics.h5" # a fresh metrics file is created on resume
tiny_train 2 "$bin" "$tmp/resumed" --resume >"$tmp/second.log" 2>&1
check "--resume succeeds" [ $? -eq 0 ]
check "... from step 12" contains "$tmp/second.log" "resumed from .*(step 12"
tiny_train 1 "$bin" "$tmp/resumed-1rank" --resume >"$tmp/one.log" 2>&1
check "--resume on 1 rank succeeds" [ $? -eq 0 ]
py - "$tmp/straight" "$tmp/resumed-1rank" <<'PY'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1] + "/metrics.h5", "r")["train/loss"][12:]
b = h5py.File(sys.argv[2] + "/metrics.h5", "r")["train/loss"][...]
print("1-rank resumption, max relative loss difference:", np.max(np.abs(a - b) / a))
sys.exit(0 if len(b) == 18 and np.max(np.abs(a - b) / a) < 1e-4 else 1)
PY
check "resumed on 1 rank, losses agree within 1e-4" [ $? -eq 0 ]

py - "$tmp/straight" "$tmp/resumed" <<'PY'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1] + "/checkpoint_00000030.h5", "r")
b = h5py.File(sys.argv[2] + "/checkpoint_00000030.h5", "r")
bad = [k for k in a["params"] if not np.array_equal(a["params"][k][...], b["params"][k][...])]
bad += [k for k in ("m", "v") if not np.array_equal(a["optimizer"][k][...], b["optimizer"][k][...])]
ma, mb = h5py.File(sys.argv[1] + "/metrics.h5", "r"), h5py.File(sys.argv[2] + "/metrics.h5", "r")
steps = mb["train/step"][...]
if list(steps) != list(range(1, 31)): bad.append("metrics steps %s" % list(steps))
if not np.array_equal(ma["train/loss"][...], mb["train/loss"][...]): bad.append("loss series")
print("differences:", bad)
sys.exit(1 if bad else 0)
PY
check "parameters, moments and losses are bit-identical" [ $? -eq 0 ]

# Resubmitting a finished run (a Slurm chain's last link) changes nothing.
cp "$tmp/straight/report.yaml" "$tmp/report.before"
ls -l --time-style=full-iso "$tmp/straight"/checkpoint_* >"$tmp/checkpoints.before"
tiny_train 2 "$bin" "$tmp/straight" --resume >"$tmp/done.log" 2>&1
check "--resume of a complete run succeeds" [ $? -eq 0 ]
check "... saying it is complete" contains "$tmp/done.log" "already complete (step 30"
check "... leaving report.yaml as it was" cmp -s "$tmp/report.before" "$tmp/straight/report.yaml"
ls -l --time-style=full-iso "$tmp/straight"/checkpoint_* >"$tmp/checkpoints.after"
check "... and its checkpoints untouched" cmp -s "$tmp/checkpoints.before" "$tmp/checkpoints.after"
finish
