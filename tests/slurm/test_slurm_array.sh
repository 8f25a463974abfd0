#!/usr/bin/env bash
# A campaign-shaped job array on a private Slurm (tests/slurm/lib.sh): four
# 2-rank training tasks throttled to two at a time (--array=0-3%2), each
# launched by srun --mpi=pmix into its own run directory, then a job chained
# with --dependency=afterany that finds every task's result.
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
camp=$tmp/campaign
slurm_make_points "$camp" 4

array=$(slurm_submit --array=0-3%2 --ntasks=2 --output="$camp/task_%a.out" \
    "$repo/tests/slurm/task.sbatch" "$bin" "$camp") || exit 1
after=$(slurm_submit --dependency=afterany:"$array" --output="$camp/collect.out" \
    "$repo/tests/slurm/collect.sbatch" "$camp" 4) || exit 1
check "the array and its dependant are accepted" test -n "$array" -a -n "$after"
slurm_wait_gone 120 "$array" "$after"
check "the dependent job completed" [ "$(slurm_job_field "$after" JobState)" = COMPLETED ]

for id in 0 1 2 3; do
    check "task $id: exit status 0" [ "$(cat "$camp/status/task_$id.exit" 2>/dev/null)" = 0 ]
    check "task $id: report.yaml says VALID" contains "$camp/runs/task_$id/report.yaml" "verdict: VALID"
    check "task $id: one MPI job of 2 ranks" contains "$camp/runs/task_$id/report.yaml" "^  ranks: 2$"
    check "task $id: trained to step 30" contains "$camp/task_$id.out" "step     30/30"
done
check "the dependant found all 4 tasks done" contains "$camp/status/summary.txt" "^missing=0 of 4$"
most=$(slurm_max_concurrent "$camp")
echo "tasks running at once, at most: $most"
check "the throttle let exactly 2 tasks run at once" [ "$most" = 2 ]
last_end=$(cat "$camp"/status/task_*.end | sort -n | tail -n 1)
collected=$(sed -n 's/^collected_at=\([0-9.]*\).*/\1/p' "$camp/status/summary.txt")
check "the dependant started after the last task ended" below "$last_end" "$collected"
check "each run recorded its array task id" py - "$camp" <<'PY'
import sys, h5py
bad = []
for i in range(4):
    with h5py.File(f"{sys.argv[1]}/runs/task_{i}/metrics.h5", "r") as f:
        found = []
        f.visititems(lambda name, obj: found.extend(
            str(v) for k, v in obj.attrs.items() if "SLURM_ARRAY_TASK_ID" in k))
        found += [str(v) for k, v in f.attrs.items() if "SLURM_ARRAY_TASK_ID" in k]
        if not any(s.strip("b'") == str(i) for s in found): bad.append((i, found))
print("runs without their task id:", bad)
sys.exit(1 if bad else 0)
PY
finish
