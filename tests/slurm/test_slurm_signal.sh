#!/usr/bin/env bash
# Graceful time limits under Slurm with the job script users submit,
# jobs/slurm/train.sbatch (#SBATCH --signal=B:USR1@300 --requeue): the signal
# Slurm sends to the batch shell before a time limit (here on demand:
# `scancel --signal=USR1 --batch`, what --signal=B:USR1@N does at T-N) is
# passed on to the 2 srun-launched ranks, which finish their step, checkpoint
# and exit 75; the script requeues the job, whose second start resumes from
# that step and ends bit-identical to an uninterrupted run.
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
site=$tmp/site
mkdir -p "$site" && ln -s "$repo/build" "$site/build" && ln -s "$repo/jobs" "$site/jobs"
steps=400
k=20
sed -i "s/^steps = 30$/steps = $steps/; s/^log_every = 10$/log_every = 1/" "$tmp/tiny.ini"
check "the configuration trains $steps steps, logging each" contains "$tmp/tiny.ini" "^steps = $steps$"

mpirun -np 2 "$bin" train "$tmp/tiny.ini" --set run.dir="$tmp/straight" >"$tmp/straight.log" 2>&1
check "the uninterrupted reference run succeeds" [ $? -eq 0 ]

# The job's run directory sits on a pretend slow file system
# (slurm_slow_writes), so its 400 logged steps last seconds whatever the CPU:
# an AMD EPYC trained them all in 0.4 s, before the test could signal it
# (1 Dec 2026).
mkdir -p "$site/runs"
job=$(slurm_slow_writes "$site/runs" slurm_submit --chdir="$site" --ntasks=2 \
    --output="$site/train.out" "$repo/jobs/slurm/train.sbatch" "$tmp/tiny.ini") || exit 1
run=$site/runs/thinkscale-$job
logged_step() { sed -n 's/^step *\([0-9]*\)\/.*/\1/p' "$site/train.out" 2>/dev/null | tail -n 1; }
reached() { [ "$(logged_step)" -ge "$k" ] 2>/dev/null; }
slurm_wait_until 60 "the job to log step $k" reached || exit 1
seen=$(logged_step)
check "the job is still training when signalled (step $seen)" test "$seen" -lt "$steps"
check "scancel --signal=USR1 --batch succeeds" scancel --signal=USR1 --batch "$job"
slurm_wait_gone 120 "$job"
cat "$site/train.out"
stopped=$(sed -n 's/^interrupted by SIGUSR1 at step \([0-9]*\) .*/\1/p' "$site/train.out" | head -n 1)
echo "signalled after step $seen was logged; the ranks stopped at step ${stopped:-none}"
check "the batch shell passed the signal on" contains "$site/train.out" "signal received: asking the ranks"
check "the ranks stopped at the step reached, not before it" \
    test -n "$stopped" -a "${stopped:-0}" -ge "$seen" -a "${stopped:-0}" -lt "$steps"
check "... with exit status 75, and the script requeued the job" contains "$site/train.out" "(exit 75): requeueing job $job"
check "the job ran twice" [ "$(slurm_job_field "$job" Restarts)" = 1 ]
check "... and completed" [ "$(slurm_job_field "$job" JobState)" = COMPLETED ]
check "the second start resumed from step $stopped" contains "$site/train.out" "resumed from .*(step ${stopped:-x},"
check "... and finished the run, VALID" contains "$run/report.yaml" "verdict: VALID"
check "... its report saying it ended complete" contains "$run/report.yaml" "ended: complete"
check "same parameters, moments and losses as the uninterrupted run" \
    same_as_uninterrupted "$tmp/straight" "$run" "$steps"
finish
