#!/usr/bin/env bash
# `make run-default` (the default job of earlier versions; `make run` is now a
# scaling campaign, jobs/run.sh): build the default corpora, then for every
# architecture configured in jobs/default/*.ini train a small model on all
# cores, evaluate its final checkpoint on every domain (with the inference
# settings listed in jobs/default/ARCH.eval, if present) and print a summary.
# Each invocation gets its own directory under runs/, so no earlier result is
# touched. Extra arguments (--set k=v ...) go to every training run.
source "$(dirname "$0")/lib.sh"
job_dir=runs/default-$(date +%Y%m%d-%H%M%S)
domains=$(ls data/out/*.h5 | paste -sd, -)

for config in jobs/default/*.ini; do
    arch=$(basename "$config" .ini)
    run_dir=$job_dir/$arch
    echo "== $arch: training on $ranks ranks into $run_dir"
    mpirun -np "$ranks" build/float/thinkscale train "$config" \
        --set run.dir="$run_dir" --set data.eval="$domains" "$@"
    eval_args=()
    [ -f "jobs/default/$arch.eval" ] && read -r -a eval_args <"jobs/default/$arch.eval"
    echo "== $arch: evaluating the final checkpoint on every domain"
    mpirun -np "$ranks" build/float/thinkscale eval --run "$run_dir" --data "$domains" \
        --windows 128 --output "$run_dir/eval.h5" "${eval_args[@]+"${eval_args[@]}"}"
done
for config in jobs/default/*.ini; do
    arch=$(basename "$config" .ini)
    echo "== summary: $arch"
    /usr/bin/python3 analysis/run_summary.py "$job_dir/$arch"
done
