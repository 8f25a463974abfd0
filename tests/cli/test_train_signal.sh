#!/usr/bin/env bash
# Graceful stops (docs/slurm.md): SIGUSR1 or SIGTERM, to mpirun or to one
# rank only, once the run has logged step $k, makes every rank finish its
# step, write the checkpoint of that step and exit with 75; no completed step
# is lost (checkpoint, metrics and the last logged step agree), the RESULT
# line and report.yaml say the invocation was interrupted, and --resume ends
# bit-identical to an uninterrupted run (parameters, moments, losses).
# train.checkpoint_minutes adds checkpoints on wall time without changing
# the training.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
steps=300
k=20
common=(--set train.steps=$steps --set train.log_every=1 --set train.eval_batches=1)

tiny_train 2 "$bin" "$tmp/straight" "${common[@]}" >"$tmp/straight.log" 2>&1
check "the uninterrupted run succeeds" [ $? -eq 0 ]

logged_step() { sed -n 's/^step *\([0-9]*\)\/.*/\1/p' "$1" | tail -n 1; }
rank_pid() { # rank_pid MPIRUN_PID RANK: the pid of that rank among mpirun's children
    local p
    for p in $(ps -o pid= --ppid "$1"); do
        grep -qzx "OMPI_COMM_WORLD_RANK=$2" "/proc/$p/environ" 2>/dev/null && { echo "$p"; return 0; }
    done
    return 1
}

# interrupt NAME SIGNAL TARGET: TARGET is mpirun, rank0, rank1 or ranks (both)
interrupt() {
    local name=$1 signal=$2 target=$3 dir=$tmp/$1 log=$tmp/$1.log pid victim seen status
    mpirun -np 2 "$bin" train "$tmp/tiny.ini" --set run.dir="$dir" "${common[@]}" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        seen=$(logged_step "$log")
        [ "${seen:-0}" -ge "$k" ] && break
        sleep 0.05
    done
    case $target in
    mpirun) victim=$pid ;;
    rank0 | rank1) victim=$(rank_pid "$pid" "${target#rank}") ;;
    ranks) victim="$(rank_pid "$pid" 0) $(rank_pid "$pid" 1)" ;;
    esac
    check "$name: the run reached step $k (at ${seen:-none}) and $target (pid ${victim:-none}) is found" \
        test "${seen:-0}" -ge "$k" -a -n "${victim// /}"
    kill "-$signal" $victim
    wait "$pid"
    status=$?
    local stopped
    stopped=$(sed -n 's/^interrupted by SIG[A-Z0-9]* at step \([0-9]*\) .*/\1/p' "$log")
    echo "$name: signal sent after step $seen was logged; stopped at step ${stopped:-none}, exit $status"
    check "$name: exit status 75" [ "$status" -eq 75 ]
    check "$name: every rank stopped at the same step, after the signal, before the end" \
        test -n "$stopped" -a "${stopped:-0}" -ge "$seen" -a "${stopped:-0}" -lt "$steps"
    check "$name: the log names the signal" contains "$log" "^interrupted by SIG$signal at step"
    check "$name: the RESULT line says so" contains "$log" "^RESULT .* interrupted=SIG$signal exit=75 VALID$"
    check "$name: report.yaml says so" contains "$dir/report.yaml" "ended: interrupted"
    check "$name: ... with the signal" contains "$dir/report.yaml" "signal: \"SIG$signal\""
    check "$name: the checkpoint of step $stopped is complete" \
        [ -f "$dir/$(printf 'checkpoint_%08d.h5.complete' "${stopped:-0}")" ]
    check "$name: no completed step lost: metrics hold steps 1..$stopped, the last one logged" \
        py - "$dir/metrics.h5" "${stopped:-0}" "$(logged_step "$log")" <<'PY'
import sys, h5py
steps, stopped, logged = h5py.File(sys.argv[1], "r")["train/step"][...], int(sys.argv[2]), int(sys.argv[3])
print("metrics rows", len(steps), "last", steps[-1] if len(steps) else None, "logged", logged)
sys.exit(0 if list(steps) == list(range(1, stopped + 1)) and logged == stopped else 1)
PY
    check "$name: report.yaml of the fresh start records no checkpoint read" \
        contains "$dir/report.yaml" "^  read_bytes: 0$"
    tiny_train 2 "$bin" "$dir" "${common[@]}" --resume >"$tmp/$name-resume.log" 2>&1
    check "$name: --resume succeeds" [ $? -eq 0 ]
    check "$name: report.yaml of the resumed run gives the restored checkpoint's size and read bandwidth" \
        py - "$dir/report.yaml" "$dir/$(printf 'checkpoint_%08d.h5' "${stopped:-0}")" <<'PY'
import os, re, sys
text, size = open(sys.argv[1]).read(), os.path.getsize(sys.argv[2])
read_bytes = int(re.search(r"^  read_bytes: (\d+)$", text, re.M).group(1))
seconds = float(re.search(r"^  read_seconds: (\S+)$", text, re.M).group(1))
bandwidth = float(re.search(r"^  read_bandwidth_bytes_per_second: (\S+)$", text, re.M).group(1))
print("read_bytes", read_bytes, "file", size, "seconds", seconds, "bandwidth", bandwidth)
sys.exit(0 if read_bytes == size and seconds > 0 and abs(bandwidth - size / seconds) <= 1e-3 * bandwidth else 1)
PY
    check "$name: ... from step $stopped" contains "$tmp/$name-resume.log" "resumed from .*(step ${stopped:-x},"
    check "$name: ... bit-identical to the uninterrupted run" \
        same_as_uninterrupted "$tmp/straight" "$dir" "$steps"
}

# mpirun forwards SIGUSR1 to every rank; a signal to one rank reaches the
# others through the step's reduction; srun at a time limit signals every
# task. (SIGTERM to mpirun itself is not graceful: Open MPI 4.1 kills the
# ranks at once, measured here; the job scripts send SIGUSR1 instead.)
interrupt usr1-mpirun USR1 mpirun
interrupt usr1-rank0 USR1 rank0
interrupt term-rank1 TERM rank1
interrupt term-ranks TERM ranks

tiny_train 2 "$bin" "$tmp/timed" --set train.checkpoint_minutes=0.0002 --set train.keep_checkpoints=1000 \
    "${common[@]}" >"$tmp/timed.log" 2>&1
check "a run with train.checkpoint_minutes succeeds" [ $? -eq 0 ]
check "... checkpointing on wall time, not only at the end" \
    test "$(ls "$tmp/timed"/checkpoint_*.h5.complete | wc -l)" -ge 3
check "... with the same losses as without" py - "$tmp/straight" "$tmp/timed" <<'PY'
import sys, h5py, numpy as np
a, b = (h5py.File(d + "/metrics.h5", "r")["train/loss"][...] for d in sys.argv[1:3])
sys.exit(0 if np.array_equal(a, b) else 1)
PY
check "a negative train.checkpoint_minutes is refused" fails_with "$tmp/neg.log" "checkpoint_minutes" \
    tiny_train 1 "$bin" "$tmp/neg" --set train.checkpoint_minutes=-1
finish
