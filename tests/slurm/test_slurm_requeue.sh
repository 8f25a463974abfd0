#!/usr/bin/env bash
# A task killed mid-way and requeued resumes its run from its newest
# checkpoint and ends exactly where an uninterrupted task does. Three 1-rank
# tasks of the same point (1-rank float runs are bit-reproducible on resume):
#   task 0  runs straight through: the reference
#   task 1  `scontrol requeue` while it trains (SIGTERM, as at preemption)
#   task 2  its training process SIGKILLed (a crash: scancel --signal=KILL
#           would cancel the whole task), the task fails, and `scontrol
#           requeue` runs the finished task again
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
camp=$tmp/campaign
steps=600
slurm_make_points "$camp" 3
sed -i "s/^steps = 30$/steps = $steps\ncheckpoint_every = 100/; s/^log_every = 10$/log_every = 100/" "$camp"/points/*.ini
check "the points train $steps steps, checkpointing every 100" contains "$camp/points/task_1.ini" "^checkpoint_every = 100$"

array=$(slurm_submit --array=0-2 --ntasks=1 --requeue --open-mode=append \
    --output="$camp/task_%a.out" "$repo/tests/slurm/task.sbatch" "$bin" "$camp") || exit 1
first_checkpoint() { [ -f "$camp/runs/task_$1/checkpoint_00000100.h5.complete" ]; }

slurm_wait_until 60 "task 1's first checkpoint" first_checkpoint 1 || exit 1
check "task 1 is still training when requeued" [ ! -f "$camp/runs/task_1/checkpoint_00000$steps.h5.complete" ]
check "scontrol requeue of running task 1 succeeds" scontrol requeue "${array}_1"

slurm_wait_until 60 "task 2's first checkpoint" first_checkpoint 2 || exit 1
check "task 2 is still training when killed" [ ! -f "$camp/runs/task_2/checkpoint_00000$steps.h5.complete" ]
trainer=$(slurm_step_pids "${array}_2" 0)
check "task 2's training process is found" test -n "$trainer"
check "SIGKILL to task 2's training process succeeds" kill -KILL $trainer
task2_failed() { [ "$(slurm_job_field "${array}_2" JobState)" = FAILED ]; }
slurm_wait_until 30 "task 2 to fail" task2_failed
check "killed task 2 left a non-zero exit status" test "$(cat "$camp/status/task_2.exit" 2>/dev/null)" != 0 -a -f "$camp/status/task_2.exit"
check "scontrol requeue of failed task 2 succeeds" scontrol requeue "${array}_2"

slurm_wait_gone 120 "$array"
for id in 0 1 2; do
    check "task $id: exit status 0 in the end" [ "$(cat "$camp/status/task_$id.exit" 2>/dev/null)" = 0 ]
    check "task $id: report.yaml says VALID" contains "$camp/runs/task_$id/report.yaml" "verdict: VALID"
done
check "task 0 ran once" [ "$(wc -l <"$camp/status/task_0.attempts")" = 1 ]
for id in 1 2; do
    check "task $id: ran twice, the second time as restart 1" contains "$camp/status/task_$id.attempts" "restart=1 "
    resumed=$(sed -n 's/.*resumed from .*(step \([0-9]*\).*/\1/p' "$camp/task_$id.out" | head -n 1)
    echo "task $id resumed from step ${resumed:-none}"
    check "task $id: the second run resumed from a checkpoint mid-way" \
        test "${resumed:-0}" -ge 100 -a "${resumed:-0}" -lt "$steps"
    check "task $id: same parameters, losses and steps as the uninterrupted task 0" \
        py - "$camp/runs/task_0" "$camp/runs/task_$id" "$steps" <<'PY'
import sys, h5py, numpy as np
ref, run, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
bad = []
with h5py.File(f"{ref}/checkpoint_{steps:08d}.h5", "r") as a, h5py.File(f"{run}/checkpoint_{steps:08d}.h5", "r") as b:
    bad += [k for k in a["params"] if not np.array_equal(a["params"][k][...], b["params"][k][...])]
with h5py.File(f"{ref}/metrics.h5", "r") as a, h5py.File(f"{run}/metrics.h5", "r") as b:
    if list(b["train/step"][...]) != list(range(1, steps + 1)): bad.append("steps are not 1..%d" % steps)
    if not np.array_equal(a["train/loss"][...], b["train/loss"][...]): bad.append("loss series")
    print("final loss: uninterrupted %.7f, requeued %.7f" % (a["train/loss"][-1], b["train/loss"][-1]))
print("differences:", bad)
sys.exit(1 if bad else 0)
PY
done
finish
