#!/usr/bin/env bash
# A damaged newest checkpoint (bytes changed, its .complete marker and size
# intact) does not end a resumable run: --resume names the file, the dataset
# and both checksums, then continues from the next older checkpoint that
# verifies, and that continuation is bit-identical to an uninterrupted run.
# --resume-from FILE picks a checkpoint explicitly; a damaged one it names is
# an error, as is a run directory in which no checkpoint verifies. Also: an
# invocation that ran no evaluation reports its validation perplexity as n/a.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
every=(--set train.checkpoint_every=10 --set train.keep_checkpoints=3)

# corrupt FILE DATASET: flips bytes inside DATASET's data, size unchanged.
corrupt() {
    py - "$1" "$2" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    d = f[sys.argv[2]]
    offset, nbytes = d.id.get_offset(), d.id.get_storage_size()
with open(sys.argv[1], "r+b") as f:
    f.seek(offset + nbytes // 2)
    b = f.read(8)
    f.seek(offset + nbytes // 2)
    f.write(bytes(x ^ 0x5A for x in b))
PY
}
same_as_straight() { # same_as_straight DIR [STEP]: checkpoint STEP (30) and the losses equal the straight run's
    py - "$tmp/straight" "$1" "${2:-30}" <<'PY'
import sys, h5py, numpy as np
name = "/checkpoint_%08d.h5" % int(sys.argv[3])
a = h5py.File(sys.argv[1] + name, "r")
b = h5py.File(sys.argv[2] + name, "r")
bad = [k for k in a["params"] if not np.array_equal(a["params"][k][...], b["params"][k][...])]
bad += [k for k in ("m", "v") if not np.array_equal(a["optimizer"][k][...], b["optimizer"][k][...])]
ma, mb = h5py.File(sys.argv[1] + "/metrics.h5", "r"), h5py.File(sys.argv[2] + "/metrics.h5", "r")
if list(mb["train/step"][...]) != list(range(1, 31)): bad.append("metrics steps")
if not np.array_equal(ma["train/loss"][...], mb["train/loss"][...]): bad.append("loss series")
print("differences:", bad)
sys.exit(1 if bad else 0)
PY
}

tiny_train 2 "$bin" "$tmp/straight" "${every[@]}" >"$tmp/straight.log" 2>&1
check "the uninterrupted run succeeds" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/run" "${every[@]}" --set train.stop_at=20 >"$tmp/first.log" 2>&1
check "the first part stops at step 20 with checkpoints 10 and 20" \
    [ -f "$tmp/run/checkpoint_00000010.h5.complete" -a -f "$tmp/run/checkpoint_00000020.h5.complete" ]
# No evaluation ran in the first part (train.stop_at before any eval step):
# its validation perplexity is n/a, not 0.
check "the RESULT line of an invocation without evaluation says val_ppl n/a" \
    contains "$tmp/first.log" "^RESULT .* val_ppl(licenses)=n/a stopped_at=20 VALID"
check "... and so does report.yaml" contains "$tmp/run/report.yaml" "perplexity: n/a"
cp -r "$tmp/run" "$tmp/explicit"
cp -r "$tmp/run" "$tmp/all-bad"
cp -r "$tmp/run" "$tmp/gone"
corrupt "$tmp/run/checkpoint_00000020.h5" optimizer/m
check "the damaged checkpoint keeps its marker" [ -f "$tmp/run/checkpoint_00000020.h5.complete" ]

tiny_train 2 "$bin" "$tmp/run" "${every[@]}" --resume >"$tmp/resume.log" 2>&1
check "--resume past a damaged newest checkpoint succeeds" [ $? -eq 0 ]
check "... naming the file and dataset" \
    contains "$tmp/resume.log" "checkpoint_00000020.h5: optimizer/m does not match its checksum"
check "... with the stored and read checksums" \
    contains "$tmp/resume.log" "(stored [0-9a-f]\{16\}, read [0-9a-f]\{16\})"
check "... and the checkpoint it continues from" \
    contains "$tmp/resume.log" "continuing from the older .*checkpoint_00000010.h5"
check "... which is step 10" contains "$tmp/resume.log" "resumed from .*(step 10"
check "an invocation that evaluates reports a number" \
    contains "$tmp/resume.log" "^RESULT .* val_ppl(licenses)=[0-9][0-9.]* VALID"
check "... in report.yaml too" contains "$tmp/run/report.yaml" "perplexity: [0-9][0-9.]*$"
check "the continuation is bit-identical to the uninterrupted run" same_as_straight "$tmp/run"
check "the damaged checkpoint 20 was replaced by a sound one" same_as_straight "$tmp/run" 20

tiny_train 2 "$bin" "$tmp/explicit" "${every[@]}" \
    --resume-from "$tmp/explicit/checkpoint_00000010.h5" >"$tmp/explicit.log" 2>&1
check "--resume-from an older checkpoint succeeds" [ $? -eq 0 ]
check "... from step 10" contains "$tmp/explicit.log" "resumed from .*checkpoint_00000010.h5 (step 10"
check "... bit-identical to the uninterrupted run" same_as_straight "$tmp/explicit"

# A newest checkpoint deleted by hand, its marker left: the resume falls back
# as for a damaged one, and says so.
rm "$tmp/gone/checkpoint_00000020.h5"
tiny_train 2 "$bin" "$tmp/gone" "${every[@]}" --resume >"$tmp/gone.log" 2>&1
check "--resume past a newest checkpoint that is gone succeeds" [ $? -eq 0 ]
check "... saying it is gone and where it resumes" contains "$tmp/gone.log" \
    "checkpoint_00000020.h5 is marked complete but is gone.*resuming from .* step 10"
check "... bit-identical to the uninterrupted run" same_as_straight "$tmp/gone"

# The only checkpoint gone: the resume starts from step 0, saying why.
mkdir "$tmp/only-gone"
cp "$tmp/gone/checkpoint_00000010.h5.complete" "$tmp/only-gone/"
tiny_train 1 "$bin" "$tmp/only-gone" --set train.steps=2 --resume >"$tmp/only-gone.log" 2>&1
check "a resume whose only marked checkpoint is gone says so" contains "$tmp/only-gone.log" \
    "checkpoint_00000010.h5 is marked complete but is gone.*no older checkpoint is there"

corrupt "$tmp/all-bad/checkpoint_00000020.h5" optimizer/v
cp -r "$tmp/all-bad" "$tmp/bad-explicit"
check "--resume-from a damaged checkpoint fails, naming it" fails_with "$tmp/bad-explicit.log" \
    "checkpoint_00000020.h5: optimizer/v does not match its checksum" \
    tiny_train 2 "$bin" "$tmp/bad-explicit" "${every[@]}" \
    --resume-from "$tmp/bad-explicit/checkpoint_00000020.h5"
check "--resume and --resume-from together are refused" fails_with "$tmp/both.log" \
    "exclude each other" tiny_train 1 "$bin" "$tmp/bad-explicit" --resume \
    --resume-from "$tmp/bad-explicit/checkpoint_00000010.h5"
corrupt "$tmp/all-bad/checkpoint_00000010.h5" optimizer/v
ls -l --time-style=full-iso "$tmp/all-bad" >"$tmp/all-bad.before"
check "--resume when no checkpoint verifies fails" fails_with "$tmp/all-bad.log" \
    "no complete checkpoint in .* verifies" tiny_train 2 "$bin" "$tmp/all-bad" "${every[@]}" --resume
ls -l --time-style=full-iso "$tmp/all-bad" >"$tmp/all-bad.after"
check "... touching no file" cmp -s "$tmp/all-bad.before" "$tmp/all-bad.after"
finish
