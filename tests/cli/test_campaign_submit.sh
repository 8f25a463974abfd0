#!/usr/bin/env bash
# campaign submit: the generated sbatch scripts checked for content (one array
# task per run with a throttle, a time limit from the plan, each task running
# its point with --points $SLURM_ARRAY_TASK_ID and threads from
# SLURM_CPUS_PER_TASK; an analysis job chained with --dependency=afterany),
# --dry-run, a clear error without sbatch, the two sbatch calls through a
# stand-in sbatch, and the scripts themselves executed as Slurm would run them
# (array tasks, then the analysis job) on a tiny campaign. Running them under
# a real Slurm is a separate issue.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
sed -e "s|^data = .*|data = $tmp/corpus.h5|" -e "s|^eval = .*|eval =|" \
    jobs/campaigns/smoke.ini >"$tmp/smoke.ini"
dir=$tmp/smoke
"$bin" campaign submit "$tmp/smoke.ini" --dir "$dir" --dry-run >"$tmp/dry.log" 2>&1
check "submit --dry-run succeeds" [ $? -eq 0 ]
array=$dir/slurm/array.sbatch analysis=$dir/slurm/analysis.sbatch
check "it wrote array.sbatch" [ -s "$array" ]
check "it wrote analysis.sbatch" [ -s "$analysis" ]
check "it printed both scripts" [ "$(grep -c '^==> .*sbatch <==' "$tmp/dry.log")" = 2 ]
check "it printed the chained sbatch command" \
    contains "$tmp/dry.log" "sbatch --parsable --dependency=afterany:\$ARRAY_JOB_ID '$analysis'"
check "the array is throttled to the campaign's 4" contains "$array" '^#SBATCH --array=[0-9,-]*%4$'
py - "$array" "$dir/manifest.tsv" <<'PY'
import sys, re
line = next(l for l in open(sys.argv[1]) if l.startswith("#SBATCH --array="))
spec = line.split("=", 1)[1].strip().split("%")[0]
indices = []
for part in spec.split(","):
    lo, _, hi = part.partition("-")
    indices += range(int(lo), int(hi or lo) + 1)
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])][1:]
owners = [int(r[0]) for r in rows if r[1] == r[2]]
assert indices == owners and len(owners) == 48, (spec, owners)
PY
check "one array task per run: the indices of the 48 points that own a run" [ $? -eq 0 ]
check "every task has a time limit" contains "$array" '^#SBATCH --time=0:10:00$'
check "each task runs its own point" \
    contains "$array" "campaign run '.*smoke.ini' --dir '$dir' --points \"\$SLURM_ARRAY_TASK_ID\" --no-analysis"
check "tasks start ranks with srun --mpi=pmix, through ts_train_step (signal forwarding, requeue on 75)" \
    contains "$array" '^ts_train_step srun --mpi=pmix'
check "... which the script sources" contains "$array" '^source jobs/slurm/lib.sh$'
check "a task is requeueable and asked to checkpoint before its limit" \
    contains "$array" '^#SBATCH --signal=B:USR1@120$'
check "... with --requeue" contains "$array" '^#SBATCH --requeue$'
check "BLAS threads come from SLURM_CPUS_PER_TASK" \
    contains "$array" 'OPENBLAS_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"'
check "the analysis job rebuilds results and analyses" contains "$analysis" "campaign analyse '.*smoke.ini' --dir '$dir'"

mkdir -p "$tmp/nosbatch" # a PATH without sbatch (this machine may have Slurm's client)
mpirun -np 1 -x PATH="$tmp/nosbatch" "$bin" campaign submit "$tmp/smoke.ini" --dir "$dir" \
    >"$tmp/nosbatch.log" 2>&1
check "without sbatch, submit fails" [ $? -ne 0 ]
check "and says why" contains "$tmp/nosbatch.log" "sbatch is not on PATH"

# A stand-in sbatch records its arguments and answers like --parsable.
mkdir -p "$tmp/fakebin"
cat >"$tmp/fakebin/sbatch" <<SH
#!/bin/sh
echo "\$*" >>"$tmp/sbatch.calls"
n=\$(wc -l <"$tmp/sbatch.calls")
echo "\$((1000 + n));cluster"
SH
chmod +x "$tmp/fakebin/sbatch"
PATH=$tmp/fakebin:$PATH "$bin" campaign submit "$tmp/smoke.ini" --dir "$dir" >"$tmp/submit.log" 2>&1
check "submit with sbatch succeeds" [ $? -eq 0 ]
check "it submits the array first" [ "$(sed -n 1p "$tmp/sbatch.calls")" = "--parsable $array" ]
check "then the analysis after the array" \
    [ "$(sed -n 2p "$tmp/sbatch.calls")" = "--parsable --dependency=afterany:1001 $analysis" ]
check "it prints the job ids" contains "$tmp/submit.log" "analysis: job 1002, after job 1001"

# The scripts as Slurm runs them, on a tiny campaign with mpirun as launcher.
tiny_campaign "$tmp/tiny.ini" tiny "[slurm]" "launcher = mpirun" "throttle = 2"
tdir=$tmp/tiny
"$bin" campaign submit "$tmp/tiny.ini" --dir "$tdir" --dry-run >/dev/null 2>&1
check "tiny: --array lists its 3 points, throttled to 2" contains "$tdir/slurm/array.sbatch" '^#SBATCH --array=0-2%2$'
for task in 2 0; do
    SLURM_ARRAY_TASK_ID=$task SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 SLURM_JOB_ID=77 \
        bash "$tdir/slurm/array.sbatch" >"$tmp/task$task.log" 2>&1
    check "tiny: array task $task succeeds" [ $? -eq 0 ]
done
check "tiny: tasks 2 and 0 trained points 2 and 0 only" \
    [ "$(ls "$tdir/runs")" = "$(printf 'transformerpp-width-32-s33\ntransformerpp-width-8-s33')" ]
check "tiny: task 0 ran its point and left the rest" \
    contains "$tmp/task0.log" "2 of 3 points done (1 selected, 1 of them done)"
check "tiny: the tasks leave the analysis to the analysis job" \
    [ "$(grep -c 'analysis' "$tmp/task0.log" "$tmp/task2.log" | grep -c ':0$')" = 2 ]
py -c "
import h5py; f = h5py.File('$tdir/runs/transformerpp-width-32-s33/metrics.h5', 'r')
assert f['provenance/slurm'].attrs['SLURM_ARRAY_TASK_ID'] == '2'"
check "tiny: the task's SLURM_* variables are recorded with its run" [ $? -eq 0 ]
bash "$tdir/slurm/analysis.sbatch" >"$tmp/analysis.log" 2>&1
check "tiny: the analysis job fails while a point is pending" [ $? -ne 0 ]
check "tiny: and lists what is pending" contains "$tmp/analysis.log" "2 of 3 points done"
finish
