# Shared by the training benchmarks (sourced, not run): the environment, a
# scratch directory holding the licence-text corpus, and bench_run, which
# trains the common benchmark size (D = 256, L = 4, 4 heads, T = 256,
# FFN = D, byte vocabulary, 8 sequences per rank, one BLAS thread per rank)
# for $steps steps; extra --set options come last and win.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OPENBLAS_NUM_THREADS=1
bin=${BENCH_BIN:-build/float/thinkscale} # BENCH_BIN: a copy, while others rebuild
source bench/blas_kernels.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat /usr/share/common-licenses/* >"$tmp/text.txt"
"$bin" data convert --input "$tmp/text.txt" --output "$tmp/corpus.h5" --name licenses >/dev/null

bench_run() { # bench_run NAME RANKS [--set k=v ...]: writes $tmp/NAME/metrics.h5
    local name=$1 ranks=$2
    shift 2
    mpirun -np "$ranks" "$bin" train /dev/null \
        --set model.width=256 --set model.depth=4 --set model.heads=4 --set model.context=256 \
        --set model.ffn_mult=1.0 --set train.steps="$steps" --set train.batch=$((8 * ranks)) \
        --set train.warmup=2 --set train.log_every=5 --set train.eval_batches=1 \
        --set data.train="$tmp/corpus.h5" --set run.dir="$tmp/$name" "$@" >"$tmp/$name.log" 2>&1 ||
        { cat "$tmp/$name.log"; exit 1; }
}
