#!/usr/bin/env bash
# A full file system (or an exceeded quota, or an I/O error) during a
# checkpoint write on 2 ranks never hangs the job: every case runs under a
# hard timeout and must end with exit status 4 (TS_EXIT_WRITE_FAILED), a
# message naming the file, what failed and the free space, no partial .tmp
# left, the earlier complete checkpoints intact, and a --resume, once space
# is free again, bit-identical to an uninterrupted run. The fault comes from
# build/fault/write_fault.so (tests/fault/write_fault.c), preloaded: the
# checkpoint files live on a pretend file system of N bytes.
# With TS_RELIABILITY_DIR=DIR, each case's observed outcome is written to
# DIR/checkpoint.md as a Markdown table (docs/reliability.md holds one such
# run; tests/fault/update_reliability_doc.sh puts it there).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fault_lib.sh"
fault_setup checkpoint write_fault 3
cat >"$table" <<'MD'
| fault (2 ranks, checkpoints every 10 of 30 steps) | exit | time | .tmp left | complete checkpoints after | --resume with space freed | message (first line, abridged) |
|---|---|---|---|---|---|---|
MD

# faulty NAME BYTES FALLOCATE [ERRNO]: trains in $tmp/NAME with checkpoints on
# a BYTES-byte file system; the exit status goes to $tmp/NAME.status.
faulty() {
    local name=$1 bytes=$2 reserve=$3 error=${4:-ENOSPC}
    mkdir -p "$tmp/$name"
    local start=$SECONDS
    TS_FAULT_DIR=$tmp/$name TS_FAULT_NAME=checkpoint_ TS_FAULT_AFTER_BYTES=$bytes \
        TS_FAULT_FALLOCATE=$reserve TS_FAULT_ERRNO=$error LD_PRELOAD=$shim \
        timeout $limit bash -c "$(declare -f tiny_train); tmp=$tmp; tiny_train 2 $bin $tmp/$name \
        -x LD_PRELOAD -x TS_FAULT_DIR -x TS_FAULT_NAME -x TS_FAULT_AFTER_BYTES \
        -x TS_FAULT_FALLOCATE -x TS_FAULT_ERRNO ${every[*]}" >"$tmp/$name.log" 2>&1
    echo $? >"$tmp/$name.status"
    echo $((SECONDS - start)) >"$tmp/$name.seconds"
    snapshot "$name"
}
# row NAME FAULT RESUME-OUTCOME: one line of the outcome table (the
# checkpoints listed are those of NAME.after, taken before any resume).
snapshot() { (cd "$tmp/$1" && ls) >"$tmp/$1.after"; }
row() {
    local name=$1 fault=$2
    local left=none
    grep -q '\.tmp$' "$tmp/$name.after" && left=$(grep '\.tmp$' "$tmp/$name.after")
    local complete
    complete=$(grep '^checkpoint_.*\.complete$' "$tmp/$name.after" | sed 's/checkpoint_0*\([0-9]*\).h5.complete/\1/' | tr '\n' ' ')
    local message
    message=$(grep -o 'error: .*' "$tmp/$name.log" | head -1 | sed "s|$tmp/||g; s/[0-9]\{6,\} bytes free/N bytes free/" | cut -c8-160)
    echo "| $fault | $(cat "$tmp/$name.status") | $(cat "$tmp/$name.seconds") s | $left | ${complete:-none} | $3 | $message... |" >>"$table"
}

intact() { # intact NAME STEP...: those checkpoints are complete and load (h5py, checksums)
    local name=$1
    shift
    py - "$tmp/$name" "$@" <<'PY'
import sys, os, h5py, numpy as np
d = sys.argv[1]
for step in sys.argv[2:]:
    f = "%s/checkpoint_%08d.h5" % (d, int(step))
    marker = dict(l.split("=", 1) for l in open(f + ".complete").read().split("\n") if "=" in l)
    assert int(marker["bytes"]) == os.path.getsize(f), f
    h5py.File(f, "r")["optimizer/v"][...]
PY
}
resumes_identically() { # resumes_identically NAME: --resume without the fault matches the straight run
    tiny_train 2 "$bin" "$tmp/$1" "${every[@]}" --resume >"$tmp/$1.resume.log" 2>&1 || return 1
    py - "$tmp/straight" "$tmp/$1" <<'PY'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1] + "/checkpoint_00000030.h5", "r")
b = h5py.File(sys.argv[2] + "/checkpoint_00000030.h5", "r")
bad = [k for k in a["params"] if not np.array_equal(a["params"][k][...], b["params"][k][...])]
bad += [k for k in ("m", "v") if not np.array_equal(a["optimizer"][k][...], b["optimizer"][k][...])]
ma, mb = h5py.File(sys.argv[1] + "/metrics.h5", "r"), h5py.File(sys.argv[2] + "/metrics.h5", "r")
if not np.array_equal(ma["train/loss"][...], mb["train/loss"][...]): bad.append("loss series")
print("differences:", bad)
sys.exit(1 if bad else 0)
PY
}
resumed() { resumes_identically "$1" >"$tmp/$1.resume.out" 2>&1; }

# 1. The reservation (fallocate) meets the full disk: an agreed, early failure.
faulty reserve 1000000 supported
check "reservation on a full disk: exit status 4, no hang" status_is reserve 4
check "... naming the file, the reservation and the free space" contains "$tmp/reserve.log" \
    "checkpoint_00000030.h5.tmp: reserving [0-9]* bytes failed: No space left on device; the file system of .* bytes free"
check "... no partial file left" no_tmp reserve
check "... checkpoints 10 and 20 intact" intact reserve 10 20
row reserve "ENOSPC at checkpoint 30, fallocate works (1,000,000-byte disk)" "$(resumed reserve && echo bit-identical || echo DIFFERENT)"
check "... --resume once space is free is bit-identical" grep -q "differences: \[\]" "$tmp/reserve.resume.out"

# 2. No reservation possible: the collective data write meets the full disk.
faulty write 700000 unsupported
check "data write on a full disk: exit status 4, no hang" status_is write 4
check "... naming the file, the dataset and the free space" contains "$tmp/write.log" \
    "checkpoint_00000020.h5.tmp: cannot write .*; the file system of .* bytes free"
check "... no partial file left" no_tmp write
check "... checkpoint 10 intact" intact write 10
row write "ENOSPC in the data writes of checkpoint 20, no fallocate (700,000 bytes)" "$(resumed write && echo bit-identical || echo DIFFERENT)"
check "... --resume once space is free is bit-identical" grep -q "differences: \[\]" "$tmp/write.resume.out"

# 3. The same with EIO instead of ENOSPC.
faulty eio 700000 unsupported EIO
check "an I/O error: exit status 4, no hang" status_is eio 4
check "... naming the file" contains "$tmp/eio.log" "checkpoint_00000020.h5.tmp: cannot write"
check "... no partial file left" no_tmp eio
check "... checkpoint 10 intact" intact eio 10
row eio "EIO in the data writes of checkpoint 20, no fallocate" "not tried"

# 4. Full from the first byte, no reservation: HDF5's own metadata writes
# fail inside its collective close on one rank. Either that rank returns and
# ends the job (MPI_Abort), or, if it is stuck inside the close with the
# other, the close watch ends it after 30 s; exit status 4 either way.
faulty full 5000 unsupported
check "a disk full from the start: exit status 4, no hang" status_is full 4
check "... naming the file and the close" contains "$tmp/full.log" \
    "checkpoint_00000010.h5.tmp.*\(H5Fclose\|closing it after a failed write\)"
check "... no partial file left" no_tmp full
row full "ENOSPC from the first byte, no fallocate (5,000 bytes): fails inside HDF5's collective close" "not tried"
finish
