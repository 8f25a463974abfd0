#!/usr/bin/env bash
# A full file system (or an I/O error) while writing metrics.h5, eval.h5 or a
# campaign's results.h5 never hangs the job and loses nothing complete: every
# case runs under a hard timeout and must end with exit status 4
# (TS_EXIT_WRITE_FAILED) on every rank, a message naming the file, what
# failed and the free space, no partial temporary file, the earlier results
# intact and, for training, a --resume once space is free that is
# bit-identical to an uninterrupted run. The fault comes from
# build/fault/write_fault.so (tests/fault/write_fault.c), preloaded.
# With TS_RELIABILITY_DIR=DIR the observed outcomes are written to
# DIR/writers.md as a Markdown table (docs/reliability.md holds one such run;
# tests/fault/update_reliability_doc.sh puts it there).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fault_lib.sh"
fault_setup writers write_fault 3
cat >"$table" <<'MD'
| writer and fault (2 ranks) | exit | time | temporary file left | earlier results after | resumed / rerun with space freed | message (first line, abridged) |
|---|---|---|---|---|---|---|
MD

# faulty NAME FILE-PART BYTES FALLOCATE ERRNO COMMAND...: runs COMMAND (a
# function or program, given $tmp/NAME as its directory) with the files
# under $tmp/NAME whose names contain FILE-PART on a BYTES-byte file system,
# under the hard timeout; status and seconds go to $tmp/NAME.status/.seconds.
faulty() {
    local name=$1 part=$2 bytes=$3 reserve=$4 error=$5
    shift 5
    mkdir -p "$tmp/$name"
    local start=$SECONDS
    TS_FAULT_DIR=$tmp/$name TS_FAULT_NAME=$part TS_FAULT_AFTER_BYTES=$bytes \
        TS_FAULT_FALLOCATE=$reserve TS_FAULT_ERRNO=$error LD_PRELOAD=$shim \
        timeout $limit bash -c "$(declare -f tiny_train); tmp=$tmp; $*" >"$tmp/$name.log" 2>&1
    echo $? >"$tmp/$name.status"
    echo $((SECONDS - start)) >"$tmp/$name.seconds"
    (cd "$tmp/$name" && ls) >"$tmp/$name.after"
}
env_args="-x LD_PRELOAD -x TS_FAULT_DIR -x TS_FAULT_NAME -x TS_FAULT_AFTER_BYTES -x TS_FAULT_FALLOCATE -x TS_FAULT_ERRNO"
row() { # row NAME DESCRIPTION LEFT EARLIER RESUMED
    local message
    message=$(grep -o 'error: .*' "$tmp/$1.log" | head -1 | sed "s|$tmp/||g; s/[0-9]\{6,\} bytes free/N bytes free/" | cut -c8-160)
    echo "| $2 | $(cat "$tmp/$1.status") | $(cat "$tmp/$1.seconds") s | $3 | $4 | $5 | $message... |" >>"$table"
}
no_crash() { ! grep -q "Segmentation fault\|signal 11\|Signal: \|infinite loop closing library" "$tmp/$1.log"; }

# --- metrics.h5 (rank 0, serial HDF5) ---------------------------------------
metrics_rows() { # metrics_rows DIR: prints the train steps metrics.h5 holds
    py - "$1/metrics.h5" <<'PY'
import sys, h5py
print(" ".join(str(s) for s in h5py.File(sys.argv[1], "r")["train/step"][...]))
PY
}
intact10() { # checkpoint 10 complete and loadable
    py - "$tmp/$1/checkpoint_00000010.h5" <<'PY'
import sys, os, h5py
f = sys.argv[1]
marker = dict(l.split("=", 1) for l in open(f + ".complete").read().split("\n") if "=" in l)
assert int(marker["bytes"]) == os.path.getsize(f), f
h5py.File(f, "r")["optimizer/v"][...]
PY
}
resumes_identically() { # --resume without the fault: the straight run's state and losses
    tiny_train 2 "$bin" "$tmp/$1" "${every[@]}" --resume >"$tmp/$1.resume.log" 2>&1 &&
        same_as_uninterrupted "$tmp/straight" "$tmp/$1" 30 >"$tmp/$1.resume.out" 2>&1
}
metrics_case() { # metrics_case NAME FALLOCATE ERRNO DESCRIPTION
    local name=$1
    # 222,000 bytes written: steps 1-10 and checkpoint 10's row fit, the flush
    # after step 20's rows does not. The window moves with the file's layout:
    # 206,000-238,000 once the train table gained collective_seconds, where
    # 200,000 fell short of step 10.
    faulty "$name" metrics 222000 "$2" "$3" tiny_train 2 "$bin" "$tmp/$name" $env_args "${every[*]}"
    check "metrics.h5, $4: exit status 4 on every rank, no hang" status_is "$name" 4
    check "... no crash in HDF5's shutdown" no_crash "$name"
    check "... the message names metrics.h5, what failed and the free space" contains \
        "$tmp/$name.log" "metrics: 10 row(s) up to step 20 not written .*metrics.h5: reserving [0-9]* bytes.* failed: .*the file system of .* bytes free"
    check "... metrics.h5 still holds steps 1-10" [ "$(metrics_rows "$tmp/$name")" = "1 2 3 4 5 6 7 8 9 10" ]
    check "... checkpoint 10 intact" intact10 "$name"
    local resumed=DIFFERENT
    resumes_identically "$name" && resumed=bit-identical
    check "... --resume once space is free is bit-identical" [ $resumed = bit-identical ]
    row "$name" "metrics.h5, $4" none "checkpoint 10, metrics steps 1-10" "$resumed"
}
metrics_case metrics_reserve supported ENOSPC "ENOSPC at step 20, fallocate works (222,000 bytes)"
metrics_case metrics_probe unsupported ENOSPC "ENOSPC at step 20, no fallocate (222,000 bytes)"
metrics_case metrics_eio unsupported EIO "EIO at step 20, no fallocate"

# --- eval.h5 (rank 0, written whole, then renamed) --------------------------
mkdir -p "$tmp/eval_nospace" "$tmp/eval_eio"
for name in eval_nospace eval_eio; do
    mpirun -np 2 "$bin" eval --run "$tmp/straight" --data "$tmp/corpus.h5" --windows 8 \
        --output "$tmp/$name/eval.h5" >"$tmp/$name.first.log" 2>&1
    sha256sum "$tmp/$name/eval.h5" >"$tmp/$name.sum"
done
check "a first eval.h5 is written" [ -s "$tmp/eval_nospace/eval.h5" ]
eval_case() { # eval_case NAME ERRNO DESCRIPTION
    local name=$1
    faulty "$name" eval.h5 30000 unsupported "$2" mpirun $env_args -np 2 "$bin" eval --run \
        "$tmp/straight" --data "$tmp/corpus.h5" --windows 8 --output "$tmp/$name/eval.h5" --force
    check "eval.h5, $3: exit status 4, no hang" status_is "$name" 4
    check "... no crash in HDF5's shutdown" no_crash "$name"
    check "... the message names eval.h5.tmp, what failed and the free space" contains \
        "$tmp/$name.log" "eval.h5.tmp: reserving [0-9]* bytes .*failed: .*the file system of .* bytes free"
    check "... no eval.h5.tmp left" no_tmp "$name"
    check "... the earlier eval.h5 is unchanged" sha256sum -c --quiet "$tmp/$name.sum"
    mpirun -np 2 "$bin" eval --run "$tmp/straight" --data "$tmp/corpus.h5" --windows 8 \
        --output "$tmp/$name/eval.h5" --force >"$tmp/$name.again.log" 2>&1
    local again=$?
    check "... with space freed the same command succeeds" [ $again -eq 0 ]
    row "$name" "eval.h5 (--force over an earlier one), $3" none "the earlier eval.h5, unchanged" \
        "$([ $again -eq 0 ] && echo "rerun succeeds" || echo "rerun FAILED")"
}
eval_case eval_nospace ENOSPC "ENOSPC, no fallocate (30,000 bytes)"
eval_case eval_eio EIO "EIO, no fallocate"

# --- a campaign's results.h5 (rank 0, written whole, then renamed) ----------
tiny_campaign "$tmp/c.ini" faults
dir=$tmp/campaign_full
mpirun -np 2 "$bin" campaign run "$tmp/c.ini" --dir "$dir" --points 0 --no-analysis \
    >"$tmp/campaign.first.log" 2>&1
check "a campaign's first point trains and results.h5 is written" [ -s "$dir/results.h5" ]
sha256sum "$dir/results.h5" >"$tmp/results.sum"
statuses() {
    py - "$dir/results.h5" <<'PY'
import sys, h5py
print(" ".join(s.decode() for s in h5py.File(sys.argv[1], "r")["points/status"][...]))
PY
}
# The campaign directory is the faulty one: its results.h5 temporary files
# (results.h5.tmp.HOST.PID) are on a 20,000-byte file system.
faulty campaign_full results.h5 20000 supported ENOSPC mpirun $env_args -np 2 "$bin" campaign \
    run "$tmp/c.ini" --dir "$dir" --points 1 --no-analysis
check "results.h5 on a full disk: campaign run exits 4 on every rank, no hang" status_is campaign_full 4
check "... no crash in HDF5's shutdown" no_crash campaign_full
check "... the message names results.h5's temporary file and the free space" contains \
    "$tmp/campaign_full.log" "results.h5.tmp.*: reserving [0-9]* bytes failed: No space left on device; the file system of .* bytes free"
check "... no temporary file left" no_tmp campaign_full
check "... the earlier results.h5 is unchanged" sha256sum -c --quiet "$tmp/results.sum"
check "... point 1 stays pending (not failed)" [ "$(statuses)" = "done pending pending" ]
mpirun -np 2 "$bin" campaign run "$tmp/c.ini" --dir "$dir" --points 1 --no-analysis \
    >"$tmp/campaign.again.log" 2>&1
again=$?
continued() { [ $again -eq 0 ] && [ "$(statuses)" = "done done pending" ]; }
check "... with space freed the campaign continues: point 1 done" continued
row campaign_full "a campaign's results.h5, ENOSPC, fallocate works (20,000 bytes)" none \
    "results.h5 unchanged, point 1 pending" "$([ "$(statuses)" = "done done pending" ] && echo "rerun trains point 1" || echo "rerun FAILED")"

# A point whose training meets a full disk (its checkpoint): the campaign
# stops with the trainer's status 4 on every rank, the point stays pending
# (not failed), and running the campaign again trains it.
point=$dir/runs/transformerpp-width-32-s33
mkdir -p "$tmp/campaign_point"
start=$SECONDS
TS_FAULT_DIR=$point TS_FAULT_NAME=checkpoint_ TS_FAULT_AFTER_BYTES=10000 TS_FAULT_FALLOCATE=supported \
    TS_FAULT_ERRNO=ENOSPC LD_PRELOAD=$shim timeout $limit mpirun $env_args -np 2 "$bin" campaign run \
    "$tmp/c.ini" --dir "$dir" --points 2 --no-analysis >"$tmp/campaign_point.log" 2>&1
echo $? >"$tmp/campaign_point.status"
echo $((SECONDS - start)) >"$tmp/campaign_point.seconds"
check "a point's checkpoint on a full disk: campaign run exits 4 on every rank, no hang" status_is campaign_point 4
check "... it was that point's checkpoint" contains "$tmp/campaign_point.log" \
    "transformerpp-width-32-s33/checkpoint_00000004.h5.tmp: reserving [0-9]* bytes failed"
check "... the campaign says it stops" contains "$tmp/campaign_point.log" \
    "point transformerpp-width-32-s33 could not write its files; stopping the campaign"
check "... the point is not marked failed" [ ! -e "$point/campaign_failed" ]
mpirun -np 2 "$bin" campaign run "$tmp/c.ini" --dir "$dir" --points 2 --no-analysis \
    >"$tmp/campaign_point.again.log" 2>&1
again=$?
trained() { [ $again -eq 0 ] && [ "$(statuses)" = "done done done" ]; }
check "... with space freed the campaign trains it: every point done" trained
row campaign_point "a campaign point's checkpoint, ENOSPC, fallocate works (10,000 bytes)" none \
    "results.h5 unchanged, the point pending, not failed" "$(trained && echo "rerun trains the point" || echo "rerun FAILED")"
finish
