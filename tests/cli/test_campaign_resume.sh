#!/usr/bin/env bash
# A campaign killed in the middle of a point and started again gives the
# results of one run straight through: rank 0 is SIGKILLed as it is about to
# mark the second run's step-18 checkpoint complete (tests/cli/kill_on_rename.c);
# the restart leaves the finished first run alone (checksums and mtimes of its
# checkpoints), resumes the second from step 12, runs the rest, and results.h5
# holds the same losses, bit for bit, as an uninterrupted campaign.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
gcc -shared -fPIC -O1 -o "$tmp/kill_on_rename.so" "$repo/tests/cli/kill_on_rename.c" -ldl
cat >"$tmp/c.ini" <<INI
[campaign]
name = resume
architectures = transformerpp, ebt
axes = depth
data = $tmp/corpus.h5
checkpoints = 4
ranks = 2
[base]
model.context = 32
model.width = 32
model.heads = 2
train.batch = 8
train.steps = 24
train.lr = 3e-3
train.eval_batches = 2
[arch.ebt]
ebt.preset = s2
ebt.step_size = 10
[axis.depth]
values = 1, 2
INI

mpirun -np 2 "$bin" campaign run "$tmp/c.ini" --dir "$tmp/straight" --no-analysis \
    >"$tmp/straight.log" 2>&1
check "the uninterrupted campaign succeeds" [ $? -eq 0 ]

dir=$tmp/killed
TS_KILL_RENAME_TO=transformerpp-depth-2-s33/checkpoint_00000018.h5.complete \
    LD_PRELOAD=$tmp/kill_on_rename.so mpirun -x TS_KILL_RENAME_TO -x LD_PRELOAD -np 2 \
    "$bin" campaign run "$tmp/c.ini" --dir "$dir" --no-analysis >"$tmp/killed.log" 2>&1
check "the killed campaign exits non-zero" [ $? -ne 0 ]
check "the kill hit the second point's step-18 checkpoint" \
    contains "$tmp/killed.log" "killing pid before renaming .*transformerpp-depth-2-s33/checkpoint_00000018.h5.complete"
check "the first point had finished" [ -f "$dir/runs/transformerpp-depth-1-s33/checkpoint_00000024.h5.complete" ]
py - "$dir/results.h5" <<'PY'
import sys, h5py
p = h5py.File(sys.argv[1], "r")["points"]
assert [s.decode() for s in p["status"][...]] == ["done", "pending", "pending", "pending"]
PY
check "results.h5 of the killed campaign: first point done, the others pending" [ $? -eq 0 ]

first=$dir/runs/transformerpp-depth-1-s33
before=$(cd "$first" && sha256sum checkpoint_* && stat -c '%n %Y' checkpoint_*)
sleep 1 # an mtime that changed would show
mpirun -np 2 "$bin" campaign run "$tmp/c.ini" --dir "$dir" --no-analysis >"$tmp/restart.log" 2>&1
check "the restarted campaign succeeds" [ $? -eq 0 ]
check "it skips the finished point" contains "$tmp/restart.log" "point 0 transformerpp-depth-1-s33: complete, skipped"
check "it resumes the interrupted point from step 12" \
    contains "$tmp/restart.log" "resumed from .*transformerpp-depth-2-s33/checkpoint_00000012.h5 (step 12"
check "the finished point's checkpoints are untouched" \
    [ "$before" = "$(cd "$first" && sha256sum checkpoint_* && stat -c '%n %Y' checkpoint_*)" ]

py - "$tmp/straight/results.h5" "$dir/results.h5" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(f, "r")["points"] for f in sys.argv[1:])
assert [s.decode() for s in b["status"][...]] == ["done"] * 4
for k in ("loss_by_domain", "ppl_by_domain", "val_loss", "flops", "x", "tokens"):
    assert np.array_equal(a[k][...], b[k][...]), (k, a[k][...], b[k][...])
assert np.all(np.isfinite(a["val_loss"][...]))
PY
check "results.h5 losses equal the uninterrupted campaign's bit for bit" [ $? -eq 0 ]

# A different campaign file is refused in this directory, naming the point.
sed 's/^values = 1, 2$/values = 1, 3/' "$tmp/c.ini" >"$tmp/other.ini"
sum=$(sha256sum <"$dir/results.h5")
check "another campaign is refused in the same directory" fails_with "$tmp/other.log" \
    "belongs to another campaign: point 1 differs" \
    mpirun -np 2 "$bin" campaign run "$tmp/other.ini" --dir "$dir"
check "results.h5 is untouched by the refusal" [ "$sum" = "$(sha256sum <"$dir/results.h5")" ]
finish
