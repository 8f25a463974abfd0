#!/usr/bin/env bash
# Bad input gets a clear message naming the problem and a non-zero exit, and
# never destroys existing results: missing or unknown configuration, missing
# and corrupt HDF5 token files, an unknown key, a model that does not match
# its checkpoint, a corrupt checkpoint, a NaN loss, and a rank that dies.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"

check "a missing configuration file is named" \
    fails_with "$tmp/l1" "cannot open configuration file '$tmp/nope.ini'" "$bin" train "$tmp/nope.ini"
printf '[train]\nstepz = 3\n' >"$tmp/typo.ini"
check "an unknown key in the file is named with its line" \
    fails_with "$tmp/l2" "typo.ini:2: unknown configuration key 'train.stepz'" "$bin" train "$tmp/typo.ini"
check "an unknown --set key is named" \
    fails_with "$tmp/l3" "unknown configuration key 'model.widht'" tiny_train 1 "$bin" "$tmp/r" --set model.widht=3
check "a malformed value is named" \
    fails_with "$tmp/l4" "train.steps: 'ten' is not an integer" tiny_train 1 "$bin" "$tmp/r" --set train.steps=ten
check "a missing token file is named" \
    fails_with "$tmp/l5" "$tmp/missing.h5" tiny_train 2 "$bin" "$tmp/r" --set data.train="$tmp/missing.h5"
head -c 100000 /dev/urandom >"$tmp/garbage.h5"
check "a file that is not HDF5 is reported" \
    fails_with "$tmp/l6" "garbage.h5" tiny_train 2 "$bin" "$tmp/r" --set data.train="$tmp/garbage.h5"
head -c 40000 "$tmp/corpus.h5" >"$tmp/truncated.h5"
check "a truncated token file is reported" \
    fails_with "$tmp/l7" "truncated.h5" tiny_train 2 "$bin" "$tmp/r" --set data.train="$tmp/truncated.h5"
# Every run ends with an evaluation: what would fail there is refused before
# the first step, so no training is lost to it.
"$bin" data convert --input "$tmp/licenses.txt" --output "$tmp/noval.h5" --name noval \
    --val-fraction 0 >/dev/null
check "a training file without a validation split is refused at the start" \
    fails_with "$tmp/l12" "noval.h5: validation split has 0 tokens, fewer than one window" \
    tiny_train 1 "$bin" "$tmp/r" --set data.train="$tmp/noval.h5"
check "... as is such an evaluation file" \
    fails_with "$tmp/l13" "noval.h5: validation split has 0 tokens" \
    tiny_train 1 "$bin" "$tmp/r" --set data.eval="$tmp/noval.h5"
"$bin" data convert --input "$tmp/licenses.txt" --output "$tmp/same-domain.h5" \
    --name licenses >/dev/null
check "an evaluation set of the training data's domain is refused at the start, naming it" \
    fails_with "$tmp/l14" "both of domain 'licenses'" \
    tiny_train 1 "$bin" "$tmp/r" --set data.eval="$tmp/same-domain.h5"
check "the training file named another way is evaluated once, not refused" \
    succeeds_with "$tmp/l14b" "val_ppl(licenses)" \
    tiny_train 1 "$bin" "$tmp/same-file" --set train.steps=2 --set "data.eval=$tmp/./corpus.h5"
check "an optimiser setting out of range is named" \
    fails_with "$tmp/l15" "train.beta2 must be in \[0, 1)" tiny_train 1 "$bin" "$tmp/r" --set train.beta2=-1
check "data.align leaving fewer windows than a batch is warned of" \
    succeeds_with "$tmp/l16" "data.align=100000000 leaves 1 distinct training windows" \
    tiny_train 1 "$bin" "$tmp/align" --set data.align=100000000 --set train.steps=2
check "no run directory was left behind by failed starts" [ ! -e "$tmp/r/metrics.h5" ]
touch "$tmp/a-file"
check "a run directory that cannot be created is named, with the reason" \
    fails_with "$tmp/mkdir1.log" "cannot create directory '$tmp/a-file/run': Not a directory" \
    tiny_train 2 "$bin" "$tmp/a-file/run/deeper"
check "free-letters names a directory it cannot create" \
    fails_with "$tmp/mkdir2.log" "cannot create directory '$tmp/a-file/letters'" \
    "$bin" free-letters --dir "$tmp/a-file/letters/x" --steps 1

# A finished run whose files must survive everything below.
tiny_train 2 "$bin" "$tmp/done" --set train.steps=10 >"$tmp/done.log" 2>&1
check "a reference run succeeds" [ $? -eq 0 ]
before=$(cd "$tmp/done" && sha256sum ./*)
check "a model of another width does not load, naming a tensor and both shapes" \
    fails_with "$tmp/l8" "embed.*\[.*32\].*\[.*48\]\|embed.*\[.*48\].*\[.*32\]" \
    tiny_train 2 "$bin" "$tmp/done" --set model.width=48 --set train.steps=20 --resume
check "a fresh start in a finished run's directory is refused" \
    fails_with "$tmp/l9" "already holds a run" tiny_train 2 "$bin" "$tmp/done"
check "... and the finished run's files are unchanged" [ "$before" = "$(cd "$tmp/done" && sha256sum ./*)" ]

# A second trainer resuming a run directory while one trains there: refused,
# saying why (HDF5 reports the other's lock as a failed open).
cp -r "$tmp/done" "$tmp/busy"
# mpirun itself in the background (not tiny_train, a function: $! would be
# its subshell, and killing that would leave the trainer running).
mpirun -np 1 "$bin" train "$tmp/tiny.ini" --set run.dir="$tmp/busy" --set train.steps=100000 \
    --resume >"$tmp/busy1.log" 2>&1 &
first=$!
for _ in $(seq 1 600); do grep -q "resumed from" "$tmp/busy1.log" && break; sleep 0.1; done
check "the first trainer is running in the directory" contains "$tmp/busy1.log" "resumed from"
check "a second trainer in a busy run directory is told another process has metrics.h5 open" \
    fails_with "$tmp/busy2.log" "metrics.h5 cannot be opened for writing: another process has it open" \
    tiny_train 1 "$bin" "$tmp/busy" --set train.steps=100000 --resume
kill $first
wait $first

# Read-only storage (a finished project space): the finished run's directory
# bind-mounted read-only. Resuming the complete run has nothing to write and
# exits 0; eval refuses before evaluating, naming the file system.
mkdir "$tmp/ro"
check "a read-only view of the finished run can be mounted (root, as the tests run)" \
    bash -c "mount --bind '$tmp/done' '$tmp/ro' && mount -o remount,ro,bind '$tmp/ro'"
trap 'umount "$tmp/ro" 2>/dev/null; rm -rf "$tmp"' EXIT
check "--resume of a complete run on read-only storage exits 0, saying so" \
    succeeds_with "$tmp/ro1.log" "already complete.*read-only" \
    tiny_train 2 "$bin" "$tmp/ro" --set train.steps=10 --resume
check "eval into a read-only directory is refused before evaluating, naming the cause" \
    fails_with "$tmp/ro2.log" "cannot write '$tmp/ro/eval.h5' in '$tmp/ro': Read-only file system" \
    mpirun -np 1 "$bin" eval --run "$tmp/ro" --data "$tmp/corpus.h5"
check "... having scored nothing" [ -z "$(grep '^licenses ' "$tmp/ro2.log")" ]
check "... and the run's files are unchanged" [ "$before" = "$(cd "$tmp/done" && sha256sum ./*)" ]
umount "$tmp/ro"

cp -r "$tmp/done" "$tmp/corrupt"
ckpt=$tmp/corrupt/checkpoint_00000010.h5
size=$(stat -c %s "$ckpt")
printf 'garbage!' | dd of="$ckpt" bs=1 seek=$((size / 2)) conv=notrunc status=none
check "a corrupted checkpoint is rejected on resume" \
    fails_with "$tmp/l10" "checkpoint_00000010.h5" tiny_train 2 "$bin" "$tmp/corrupt" --set train.steps=20 --resume

check "a NaN loss stops training, saying so" \
    fails_with "$tmp/l11" "is nan at step\|is inf at step\|is -nan at step" \
    tiny_train 2 "$bin" "$tmp/nan" --set train.optimizer=sgd --set train.lr=1e12 --set train.clip=0 \
    --set train.warmup=0 --set train.checkpoint_every=1000
check "... with exit status 3" contains "$tmp/l11" "Exit code: *3"
check "... writing no checkpoint" [ -z "$(ls "$tmp/nan" | grep checkpoint_)" ]

# A rank that dies mid-run: mpirun reports it and the job fails; the last
# complete checkpoint still resumes.
tiny_train 2 "$bin" "$tmp/dies" --set train.steps=100000 --set train.checkpoint_every=5 >"$tmp/dies.log" 2>&1 &
job=$!
for _ in $(seq 1 100); do compgen -G "$tmp/dies/*.complete" >/dev/null && break; sleep 0.2; done
victim=$(pgrep -f "thinkscale train $tmp/tiny.ini --set run.dir=$tmp/dies" | tail -1)
kill -9 "$victim"
wait $job
check "a dead rank makes the job fail" [ $? -ne 0 ]
check "... and mpirun names the failure" contains "$tmp/dies.log" "signal 9\|exited on signal\|killed"
latest=$(ls "$tmp/dies" | grep '\.complete$' | sort | tail -1)
step=$(echo "$latest" | sed 's/checkpoint_0*\([0-9]*\)\.h5\.complete/\1/')
tiny_train 2 "$bin" "$tmp/dies" --set train.steps=$((step + 2)) --resume >"$tmp/dies-resume.log" 2>&1
check "the last complete checkpoint ($latest) resumes" contains "$tmp/dies-resume.log" "resumed from"
finish
