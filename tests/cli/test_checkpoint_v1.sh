#!/usr/bin/env bash
# A run whose checkpoint was written by the build before checkpoints were
# described by roles (format version 1, tests/fixtures/README.md) resumes:
# parameters, AdamW moments and EBT's per-rank replay buffer load on the 2
# ranks that wrote it, and training continues from step 2.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
cp -r "$repo/tests/fixtures/checkpoint_v1_float" "$tmp/run"
mpirun -np 2 "$bin" train "$repo/tests/fixtures/checkpoint_v1.ini" --set data.train="$tmp/corpus.h5" \
    --set run.dir="$tmp/run" --set train.steps=3 --resume >"$tmp/resume.log" 2>&1
check "resuming a version-1 checkpoint succeeds" [ $? -eq 0 ]
check "... from step 2" contains "$tmp/resume.log" "resumed from .*(step 2"
check "... and writes step 3" [ -f "$tmp/run/checkpoint_00000003.h5.complete" ]
py - "$tmp/run" <<'PY'
import sys, h5py, numpy as np
old = h5py.File(sys.argv[1] + "/checkpoint_00000002.h5", "r")
new = h5py.File(sys.argv[1] + "/checkpoint_00000003.h5", "r")
ok = old.attrs["format_version"] == 1 and new.attrs["format_version"] == 2
# One more step moved the parameters, and left the tensors and the buffer's shape as they were.
ok = ok and sorted(old["params"]) == sorted(new["params"])
ok = ok and not np.array_equal(old["params/embed"][...], new["params/embed"][...])
ok = ok and old["extras/replay_logits"].shape == new["extras/replay_logits"].shape
print("format versions", old.attrs["format_version"], new.attrs["format_version"], "ok", ok)
sys.exit(0 if ok else 1)
PY
check "the new checkpoint (version 2) holds the same tensors, moved by one step" [ $? -eq 0 ]
# A build that reads version 1 must still refuse a future version.
cp -r "$repo/tests/fixtures/checkpoint_v1_float" "$tmp/future"
py - "$tmp/future/checkpoint_00000002.h5" <<'PY'
import sys, os, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f.attrs["format_version"] = 99
size = os.path.getsize(sys.argv[1])
marker = sys.argv[1] + ".complete"
text = open(marker).read().splitlines()
open(marker, "w").write("\n".join(l if not l.startswith("bytes=") else "bytes=%d" % size for l in text) + "\n")
PY
check "a checkpoint of an unknown format version is refused, naming it" fails_with "$tmp/future.log" \
    "format version 99" mpirun -np 2 "$bin" train "$repo/tests/fixtures/checkpoint_v1.ini" \
    --set data.train="$tmp/corpus.h5" --set run.dir="$tmp/future" --set train.steps=3 --resume
finish
