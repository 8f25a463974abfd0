#!/usr/bin/env bash
# A task killed mid-way and requeued resumes its run from its newest
# checkpoint and ends exactly where an uninterrupted task does. Three 1-rank
# tasks of the same point (1-rank float runs are bit-reproducible on resume):
#   task 0  runs straight through: the reference
#   task 1  `scontrol requeue` while it trains (SIGTERM, as at preemption)
#   task 2  its training process SIGKILLed (a crash: scancel --signal=KILL
#           would cancel the whole task), the task fails, and `scontrol
#           requeue` runs the finished task again
# A point trains its 600 steps in under a second, faster than the test can act
# (CI once found task 2 finished, its step-100 checkpoint already rotated
# away), so every attempt of every task holds its write of the step-200
# checkpoint for $stall s (slurm_stall_checkpoint), and the test requeues or
# kills a task while it waits there, after its step-100 checkpoint is complete.
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
camp=$tmp/campaign
steps=600
stall=5 # within the private Slurm's KillWait (10 s): a requeued task ends in time
slurm_make_points "$camp" 3
sed -i "s/^steps = 30$/steps = $steps\ncheckpoint_every = 100/; s/^log_every = 10$/log_every = 100/" "$camp"/points/*.ini
check "the points train $steps steps, checkpointing every 100" contains "$camp/points/task_1.ini" "^checkpoint_every = 100$"

array=$(slurm_stall_checkpoint 200 "$stall" slurm_submit --array=0-2 --ntasks=1 --requeue \
    --open-mode=append --output="$camp/task_%a.out" "$repo/tests/slurm/task.sbatch" "$bin" "$camp") || exit 1
held_mid_run() { grep -q "stall_write: rank .* stalls" "$camp/task_$1.out" 2>/dev/null; }

slurm_wait_until 60 "task 1 to hold its step-200 checkpoint" held_mid_run 1 || exit 1
check "task 1's step-100 checkpoint is complete" [ -f "$camp/runs/task_1/checkpoint_00000100.h5.complete" ]
check "task 1 is still training when requeued" [ ! -f "$camp/runs/task_1/checkpoint_00000$steps.h5.complete" ]
check "scontrol requeue of running task 1 succeeds" scontrol requeue "${array}_1"

slurm_wait_until 60 "task 2 to hold its step-200 checkpoint" held_mid_run 2 || exit 1
check "task 2's step-100 checkpoint is complete" [ -f "$camp/runs/task_2/checkpoint_00000100.h5.complete" ]
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
    # Task 1 stopped on SIGTERM after its held step-200 checkpoint went through;
    # task 2 was killed inside that write, so its newest whole one is step 100.
    least=$([ "$id" = 1 ] && echo 200 || echo 100)
    check "task $id: the second run resumed from a checkpoint mid-way (step $least or later)" \
        test "${resumed:-0}" -ge "$least" -a "${resumed:-0}" -lt "$steps"
    check "task $id: same parameters, losses and steps as the uninterrupted task 0" \
        same_as_uninterrupted "$camp/runs/task_0" "$camp/runs/task_$id" "$steps" 0
done
finish
