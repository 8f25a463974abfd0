#!/usr/bin/env bash
# The job scripts users submit, as they are (jobs/slurm/*.sbatch), on a
# private Slurm: train.sbatch runs 2 ranks with srun (MpiDefault=pmix) and
# stops at step 12 (train.stop_at, as a time-limited job would); resume.sbatch
# continues the same run directory to step 30. Submitted from a directory that
# looks like the repository root (build/ linked), so runs/ lands in $tmp.
# Then mpirun, instead of srun, inside an allocation.
source "$(dirname "$0")/lib.sh"
slurm_start || exit 1
make_license_corpus "$tmp/corpus.h5"
site=$tmp/site
mkdir -p "$site" && ln -s "$repo/build" "$site/build"

first=$(slurm_submit --chdir="$site" --ntasks=2 --output="$site/train.out" \
    "$repo/jobs/slurm/train.sbatch" "$tmp/tiny.ini" --set train.stop_at=12) || exit 1
slurm_wait_gone 60 "$first"
run=runs/thinkscale-$first
cat "$site/train.out"
check "train.sbatch completed" [ "$(slurm_job_field "$first" JobState)" = COMPLETED ]
check "... into runs/NAME-JOBID" [ -f "$site/$run/checkpoint_00000012.h5.complete" ]
check "... as one 2-rank MPI job" contains "$site/train.out" "2 ranks"
check "... stopping at step 12" contains "$site/train.out" "stopped at step 12 of 30"

second=$(slurm_submit --chdir="$site" --ntasks=2 --output="$site/resume.out" \
    "$repo/jobs/slurm/resume.sbatch" "$tmp/tiny.ini" "$run") || exit 1
slurm_wait_gone 60 "$second"
cat "$site/resume.out"
check "resume.sbatch completed" [ "$(slurm_job_field "$second" JobState)" = COMPLETED ]
check "... resuming from step 12" contains "$site/resume.out" "resumed from .*(step 12"
check "... to step 30" [ -f "$site/$run/checkpoint_00000030.h5.complete" ]
check "... with a VALID report" contains "$site/$run/report.yaml" "verdict: VALID"
check "both jobs' ids are in the run's metrics" py - "$site/$run/metrics.h5" "$first" "$second" <<'PY'
import sys, h5py
seen = set()
def look(name, obj):
    seen.update(str(v).strip("b'") for k, v in obj.attrs.items() if k.endswith("SLURM_JOB_ID"))
with h5py.File(sys.argv[1], "r") as f:
    look("/", f)
    f.visititems(look)
print("SLURM_JOB_ID values in metrics.h5:", sorted(seen))
sys.exit(0 if {sys.argv[2], sys.argv[3]} <= seen else 1)
PY

# mpirun inside an allocation is the other launcher (docs/slurm.md).
third=$(slurm_submit --ntasks=2 --output="$tmp/mpirun.out" \
    --wrap "mpirun $bin train $tmp/tiny.ini --set run.dir=$tmp/mpirun-run") || exit 1
slurm_wait_idle 60
check "mpirun inside an sbatch allocation runs one 2-rank job" contains "$tmp/mpirun.out" "ranks=2 .* VALID"
check "... and the job completed" [ "$(slurm_job_field "$third" JobState)" = COMPLETED ]
finish
