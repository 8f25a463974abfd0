#!/usr/bin/env bash
# A campaign with a failed and a cancelled task: the afterany dependant still
# runs and names them, from the tasks' status files (docs/slurm.md, "Task
# status files"); an afterok dependant is cancelled instead of pending forever
# (DependencyParameters=kill_invalid_depend).
#   task 0  trains normally
#   task 1  has an unknown configuration key: train exits non-zero
#   task 2  is cancelled while pending (the throttle %1 keeps it waiting)
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
camp=$tmp/campaign
slurm_make_points "$camp" 3
sed -i 's/^\[train\]$/[train]\nno_such_key = 1/' "$camp/points/task_1.ini"

array=$(slurm_submit --array=0-2%1 --ntasks=1 --output="$camp/task_%a.out" \
    "$repo/tests/slurm/task.sbatch" "$bin" "$camp") || exit 1
check "pending task 2 is cancelled" scancel "${array}_2"
after=$(slurm_submit --dependency=afterany:"$array" --output="$camp/collect.out" \
    "$repo/tests/slurm/collect.sbatch" "$camp" 3) || exit 1
never=$(slurm_submit --dependency=afterok:"$array" --output=/dev/null --wrap true) || exit 1
slurm_wait_gone 90 "$array" "$after" "$never"

check "task 0: exit status 0" [ "$(cat "$camp/status/task_0.exit" 2>/dev/null)" = 0 ]
check "task 1: a non-zero exit status" test -f "$camp/status/task_1.exit" -a "$(cat "$camp/status/task_1.exit" 2>/dev/null)" != 0
check "task 1: its log names the bad key" contains "$camp/task_1.out" "no_such_key"
check "task 2: never ran" [ ! -e "$camp/status/task_2.attempts" ]
check "the afterany dependant ran" [ -f "$camp/status/summary.txt" ]
cat "$camp/collect.out"
check "... saw task 0 done" contains "$camp/status/summary.txt" "^task 0: done$"
check "... named task 1 as failed, with its exit status" contains "$camp/status/summary.txt" "^task 1: missing (exit status [1-9]"
check "... named task 2 as never run" contains "$camp/status/summary.txt" "^task 2: missing (no exit file"
check "... counted 2 of 3 missing" contains "$camp/status/summary.txt" "^missing=2 of 3$"
check "... and failed, so nothing downstream takes half a campaign for whole" \
    [ "$(slurm_job_field "$after" JobState)" = FAILED ]
check "the afterok dependant was cancelled, not left pending" \
    [ "$(slurm_job_field "$never" JobState)" = CANCELLED ]
finish
