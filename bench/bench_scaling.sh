#!/usr/bin/env bash
# How the suite itself scales (issue 15; docs/scaling-model.md):
#   bench/bench_scaling.sh [OUT_DIR]       (default build/bench/scaling)
# 1. Training at the common benchmark size (bench/lib.sh: D = 256, L = 4,
#    T = 256, one BLAS thread per rank), $BENCH_STEPS steps, median step time
#    over the steps after the first 3: strong scaling (global batch 16) and
#    weak scaling (8 sequences per rank) on 1..R ranks, R = the cores here,
#    then R+1..2R ranks oversubscribed (marked: they share cores).
# 2. bench_collectives (OSU-style Allreduce, Reduce_scatter_block, Allgather)
#    on 2..2R ranks.
# 3. bench_step_flops: the engine's FLOPs per step of both configurations at
#    1..4096 ranks.
# 4. analysis/perf_model.py fits the model to these files and writes its
#    predictions (labelled modelled) and the check against the measurements.
# Outputs (CSV): OUT_DIR/scaling.csv, collectives_npP.csv, step_flops_{strong,weak}.csv,
# perf_model_*.csv and perf_model.md. Timings on a shared machine are
# indicative: the load at the start is recorded in OUT_DIR/machine.txt.
source "$(dirname "$0")/lib.sh"
out=${1:-build/bench/scaling}
mkdir -p "$out"
steps=${BENCH_STEPS:-10}
cores=$(nproc)
strong_batch=16
{
    echo "host=$(hostname) cores=$cores date=$(date -u +%FT%TZ)"
    echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest processes before (what else was running):"
    ps -eo pcpu=,comm= --sort=-pcpu | head -n 8
} >"$out/machine.txt"
model_keys=(model.vocab_size=256 model.width=256 model.depth=4 model.heads=4 model.context=256 model.ffn_mult=1.0)

echo "mode,ranks,oversubscribed,batch,step_seconds,tokens_per_s,flops_per_step" >"$tmp/scaling.csv"
for ranks in $(seq 1 $((2 * cores))); do
    over=$([ "$ranks" -gt "$cores" ] && echo 1 || echo 0)
    bench_run "strong$ranks" "$ranks" --set train.batch=$strong_batch
    bench_run "weak$ranks" "$ranks"
    for mode in strong weak; do
        /usr/bin/python3 - "$tmp/$mode$ranks/metrics.h5" "$mode" "$ranks" "$over" >>"$tmp/scaling.csv" <<'PY'
import sys, h5py, numpy as np
path, mode, ranks, over = sys.argv[1:5]
with h5py.File(path, "r") as m:
    t = m["train"]
    wall = t["wall_time"][...]
    dt = np.diff(wall)[2:]  # steps 4.. : past first-touch page faults
    tokens = (t["tokens"][1] - t["tokens"][0])
    batch = tokens / 256
    print(f"{mode},{ranks},{over},{batch:.0f},{np.median(dt):.6f},{tokens / np.median(dt):.1f},"
          f"{np.median(t['flops'][3:]):.6e}")
PY
    done
    echo "trained on $ranks rank(s)$([ "$over" = 1 ] && echo ", oversubscribed")" >&2
done
cp "$tmp/scaling.csv" "$out/scaling.csv"
for ranks in $(seq 2 $((2 * cores))); do
    mpirun -np "$ranks" build/float/bench/bench_collectives "$out" --max-bytes $((16 << 20)) >/dev/null
done
rank_list=1,2,3,4,8,16,32,64,128,256,512,1024,2048,4096
build/float/bench/bench_step_flops "$out/step_flops_strong.csv" --ranks "$rank_list" --batch $strong_batch "${model_keys[@]}"
build/float/bench/bench_step_flops "$out/step_flops_weak.csv" --ranks "$rank_list" --batch-per-rank 8 "${model_keys[@]}"
echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
/usr/bin/python3 analysis/perf_model.py "$out" --cores "$cores"
cat "$out/perf_model.md"
