#!/usr/bin/env bash
# A rank that stops, hangs or dies, and signals at checkpoint time, on 2
# ranks: every case runs under a hard timeout, ends non-zero within a bound,
# and leaves the complete checkpoints intact (no torn file: every marked
# checkpoint verifies), from which --resume is bit-identical to an
# uninterrupted run.
#   * a rank stopped (SIGSTOP) mid-run: the watchdog (train.watchdog_seconds)
#     ends the job with exit status 5, naming the step and what it waited in;
#   * a rank whose checkpoint write hangs (build/fault/stall_write.so): the
#     same, naming the checkpoint;
#   * a rank killed (SIGKILL) mid-run: mpirun ends the job;
#   * SIGTERM while a checkpoint is being written (a slow write): the run
#     finishes that checkpoint, writes one more and exits 75;
#   * SIGINT while a checkpoint is being written: the job dies, the partial
#     checkpoint is never marked complete.
# With TS_RELIABILITY_DIR=DIR the observed outcomes are written to
# DIR/signals.md as a Markdown table (docs/reliability.md holds one such run;
# tests/fault/update_reliability_doc.sh puts it there).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/fault_lib.sh"
fault_setup signals stall_write 10
# Slower steps (an evaluation after each, which leaves the training as it
# is), so a rank can be stopped mid-run at a step the test does not choose.
# 60 batches: on OpenBLAS's vector kernels a step is about 4x shorter than
# when this was 20, and a stop meant for mid-run landed as late as step 17
# (checkpoint 20 is three steps further); with 60 it lands at step 11-12.
slow=(--set train.eval_every=1 --set train.eval_batches=60)
cat >"$table" <<'MD'
| fault (2 ranks, checkpoints every 10 steps) | exit | time after the fault | complete checkpoints after (all verify) | --resume | message (first line, abridged) |
|---|---|---|---|---|---|
MD

# start NAME [ENV=VALUE ...] -- ARGS...: tiny_train in $tmp/NAME in the
# background under the hard timeout; its pid in $job.
start() {
    local name=$1
    shift
    local envs=() xs=()
    while [ "$1" != -- ]; do envs+=("$1"); xs+=(-x "${1%%=*}"); shift; done
    shift
    mkdir -p "$tmp/$name"
    env "${envs[@]}" timeout $limit bash -c "$(declare -f tiny_train); tmp=$tmp; tiny_train 2 $bin \
        $tmp/$name ${xs[*]} $*" >"$tmp/$name.log" 2>&1 &
    job=$!
}
# rank_pid NAME RANK: the pid of that rank of the run in $tmp/NAME.
rank_pid() {
    local p
    for p in $(pgrep -f "run.dir=$tmp/$1( |$)"); do
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && echo "$p" && return
    done
}
wait_for() { # wait_for FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
finish_job() { # finish_job NAME: waits for $job; status, seconds since $fault_at, complete checkpoints
    wait "$job"
    echo $? >"$tmp/$1.status"
    echo $((SECONDS - fault_at)) >"$tmp/$1.seconds"
    cleanup_ranks "$1"
    complete "$1" >"$tmp/$1.complete"
}
ended_within() { [ "$(cat "$tmp/$1.seconds")" -le "$2" ]; }
complete() { # the steps of the complete checkpoints of NAME
    (cd "$tmp/$1" && ls checkpoint_*.h5.complete 2>/dev/null) | sed 's/checkpoint_0*\([0-9]*\).h5.complete/\1/' | tr '\n' ' '
}
all_verify() { # every checkpoint marked complete has its recorded size and loads
    py - "$tmp/$1" <<'PY'
import sys, os, glob, h5py
for marker in glob.glob(sys.argv[1] + "/checkpoint_*.h5.complete"):
    f = marker[: -len(".complete")]
    fields = dict(l.split("=", 1) for l in open(marker).read().split("\n") if "=" in l)
    assert int(fields["bytes"]) == os.path.getsize(f), f
    with h5py.File(f, "r") as h:
        h["optimizer/v"][...], h["params"]
PY
}
resumes_identically() { # --resume matches the straight run
    tiny_train 2 "$bin" "$tmp/$1" "${every[@]}" --resume >"$tmp/$1.resume.log" 2>&1 &&
        same_as_uninterrupted "$tmp/straight" "$tmp/$1" 30 >"$tmp/$1.resume.out" 2>&1
}
row() { # row NAME DESCRIPTION RESUMED
    local message
    message=$(grep -o 'error: .*\|interrupted by .*\|mpirun noticed .*' "$tmp/$1.log" | head -1 | sed "s|$tmp/||g" | cut -c1-150)
    echo "| $2 | $(cat "$tmp/$1.status") | $(cat "$tmp/$1.seconds") s | $(cat "$tmp/$1.complete") | $3 | $message... |" >>"$table"
}
cleanup_ranks() { # a stopped rank left behind by a failed case
    local p
    for p in $(pgrep -f "run.dir=$tmp/$1( |$)"); do kill -CONT "$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; done
}
# signal_mid_run NAME SIGNAL ARGS...: starts a slow run in $tmp/NAME, sends
# SIGNAL to rank 1 once checkpoint 10 is written, and waits for the job.
# Rank 1 is looked up once the run has started, before checkpoint 10: the
# lookup (pgrep, /proc) took several steps, and on fast kernels the signal
# could land in checkpoint 20 instead of mid-run.
signal_mid_run() {
    local name=$1 signal=$2 victim
    shift 2
    start "$name" -- "${every[@]}" "${slow[@]}" "$@"
    wait_for "$tmp/$name.log" "thinkscale train: " 60
    victim=$(rank_pid "$name" 1)
    wait_for "$tmp/$name.log" "checkpoint step 10" 60
    check "SIG$signal: found rank 1" [ -n "$victim" ]
    kill "-$signal" "$victim"
    fault_at=$SECONDS
    finish_job "$name"
}
# close_case NAME DESCRIPTION: what every case checks last (each complete
# checkpoint verifies; --resume is bit-identical), then its table row.
close_case() {
    local resumed=DIFFERENT
    check "... every complete checkpoint verifies" all_verify "$1"
    resumes_identically "$1" && resumed=bit-identical
    check "... --resume is bit-identical" [ $resumed = bit-identical ]
    row "$1" "$2" "$resumed"
}

# names_stall NAME: rank 0's watchdog message in $tmp/NAME.log names a step
# after checkpoint 10 (the stop came after it) and what it waited in; else
# the log's error lines are shown. Where the stop lands is not chosen: on a
# loaded machine it can land in checkpoint 20's write, and the message then
# names that checkpoint, which is as right as naming a step or evaluation.
names_stall() {
    local step
    step=$(sed -n 's/.*rank 0: error: watchdog: no progress for [0-9]* s in the \(training step\|evaluation\|checkpoint\) of step \([0-9]*\), waiting in .*(limit 4 s: train.watchdog_seconds).*/\2/p' \
        "$tmp/$1.log" | head -1)
    [ -n "$step" ] && [ "$step" -ge 10 ] && [ "$step" -le 30 ] ||
        { grep -h 'error\|checkpoint step' "$tmp/$1.log" | cut -c1-240 | sed 's/^/    /'; false; }
}

# 1. A rank stopped between steps: the other waits in a collective, its
# watchdog (4 s here) ends the job.
signal_mid_run stopped STOP --set train.watchdog_seconds=4
check "SIGSTOP of rank 1 mid-run: the watchdog ends the job with exit status 5" status_is stopped 5
check "... within 30 s" ended_within stopped 30
check "... naming the rank, the step and what it waited in" names_stall stopped
close_case stopped "rank 1 stopped (SIGSTOP) mid-run, train.watchdog_seconds=4"

# 2. A rank's checkpoint write hangs (a stuck file system).
start stuck TS_STALL_NAME=checkpoint_00000020 TS_STALL_RANK=0 LD_PRELOAD=$shim -- \
    "${every[@]}" --set train.watchdog_seconds=4
wait_for "$tmp/stuck.log" "stall_write: rank 0 stalls" 60
fault_at=$SECONDS
finish_job stuck
check "a checkpoint write that hangs on rank 0: exit status 5" status_is stuck 5
check "... within 30 s" ended_within stuck 30
check "... naming the checkpoint of step 20" contains "$tmp/stuck.log" \
    "error: watchdog: no progress for [0-9]* s in the checkpoint of step 20, waiting in the checkpoint write"
check "... checkpoint 10 complete, 20 not" [ "$(cat "$tmp/stuck.complete")" = "10 " ]
close_case stuck "rank 0's write of checkpoint 20 hangs (stall_write.so), train.watchdog_seconds=4"

# 3. A rank killed mid-run: mpirun ends the job.
signal_mid_run killed KILL
check "SIGKILL of rank 1 mid-run: the job ends non-zero" [ "$(cat "$tmp/killed.status")" != 0 ]
check "... not by the hard timeout" [ "$(cat "$tmp/killed.status")" != 124 ]
check "... within 30 s" ended_within killed 30
close_case killed "rank 1 killed (SIGKILL) mid-run"

# 4. SIGTERM to both ranks while checkpoint 20 is being written (rank 0's
# write takes 3 s): the checkpoint completes, the next step checkpoints
# again and the run exits 75.
start term TS_STALL_NAME=checkpoint_00000020 TS_STALL_RANK=0 TS_STALL_SECONDS=3 \
    LD_PRELOAD=$shim -- "${every[@]}"
wait_for "$tmp/term.log" "stall_write: rank 0 stalls" 60
for r in 0 1; do kill -TERM "$(rank_pid term $r)"; done
fault_at=$SECONDS
finish_job term
check "SIGTERM during a checkpoint write: exit status 75" status_is term 75
check "... checkpoint 20 and the one after it complete" [ "$(cat "$tmp/term.complete")" = "10 20 21 " ]
check "... no partial file left" no_tmp term
close_case term "SIGTERM to both ranks while checkpoint 20 is written (3 s write)"

# 5. SIGINT to rank 0 while checkpoint 20 is being written: no handler, the
# job dies; checkpoint 20 is never marked complete.
start int TS_STALL_NAME=checkpoint_00000020 TS_STALL_RANK=0 TS_STALL_SECONDS=3 \
    LD_PRELOAD=$shim -- "${every[@]}"
wait_for "$tmp/int.log" "stall_write: rank 0 stalls" 60
kill -INT "$(rank_pid int 0)"
fault_at=$SECONDS
finish_job int
check "SIGINT during a checkpoint write: the job ends non-zero" [ "$(cat "$tmp/int.status")" != 0 ]
check "... not by the hard timeout" [ "$(cat "$tmp/int.status")" != 124 ]
check "... checkpoint 10 complete, 20 not" [ "$(cat "$tmp/int.complete")" = "10 " ]
close_case int "SIGINT to rank 0 while checkpoint 20 is written"
finish
