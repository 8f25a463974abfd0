#!/usr/bin/env bash
# The default job of `make run`: build the default corpora, train the small
# default model on all cores, evaluate it on every domain and print a summary.
# Each invocation gets its own run directory, so no earlier result is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
data/build_corpora.sh
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export OPENBLAS_NUM_THREADS=1 # one rank per core
ranks=${THINKSCALE_RANKS:-$(nproc)}
run_dir=runs/default-$(date +%Y%m%d-%H%M%S)
domains=$(ls data/out/*.h5 | paste -sd, -)

echo "== training Transformer++ on $ranks ranks into $run_dir"
mpirun -np "$ranks" build/float/thinkscale train jobs/default.ini \
    --set run.dir="$run_dir" --set data.eval="$domains" "$@"
echo "== evaluating the final checkpoint on every domain"
mpirun -np "$ranks" build/float/thinkscale eval --run "$run_dir" --data "$domains" \
    --windows 128 --output "$run_dir/eval.h5"
echo "== summary"
/usr/bin/python3 analysis/run_summary.py "$run_dir"
