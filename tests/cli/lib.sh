# Shared by the end-to-end scripts (sourced, not run): a scratch directory, a
# real-text token file, mpirun as the test machine needs it, h5py through
# Debian's python, and check() that counts expectations.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD
bin=$repo/build/float/thinkscale
bin_double=$repo/build/double/thinkscale
[ -x "$bin" ] || { echo "missing $bin: run make build first"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

check() { # check DESCRIPTION COMMAND...: one expectation, counted
    local what=$1
    shift
    if "$@"; then echo "ok:   $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
contains() { grep -q -- "$2" "$1"; }
finish() {
    echo "$fails expectation(s) failed"
    [ "$fails" -eq 0 ]
}
py() { /usr/bin/python3 "$@"; }
fails_with() { # fails_with LOG PATTERN COMMAND...: non-zero exit and PATTERN in LOG (else shows LOG)
    local log=$1 pattern=$2
    shift 2
    "$@" >"$log" 2>&1 && { echo "  expected a failure; got:"; sed 's/^/    /' "$log"; return 1; }
    grep -q -- "$pattern" "$log" || { echo "  expected '$pattern' in:"; sed 's/^/    /' "$log"; return 1; }
}
succeeds_with() { # succeeds_with LOG PATTERN COMMAND...: exit 0 and PATTERN in LOG (else shows LOG)
    local log=$1 pattern=$2
    shift 2
    "$@" >"$log" 2>&1 || { echo "  expected success; got:"; sed 's/^/    /' "$log"; return 1; }
    grep -q -- "$pattern" "$log" || { echo "  expected '$pattern' in:"; sed 's/^/    /' "$log"; return 1; }
}
below() { py -c "import sys; sys.exit(0 if float('$1') < float('$2') else 1)"; }
max_rel_diff() { # max_rel_diff DIR_A DIR_B [STEPS]: of the train/loss series (STEPS long, default 30)
    py - "$1/metrics.h5" "$2/metrics.h5" "${3:-30}" <<'PY'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1], "r")["train/loss"][...]
b = h5py.File(sys.argv[2], "r")["train/loss"][...]
assert len(a) == len(b) == int(sys.argv[3]), (len(a), len(b))
print(float(np.max(np.abs(a - b) / np.abs(a))))
PY
}

# Real English text that every Debian system has: the common licences.
make_license_corpus() { # make_license_corpus OUT.h5
    cat /usr/share/common-licenses/* >"$tmp/licenses.txt"
    "$bin" data convert --input "$tmp/licenses.txt" --output "$1" --name licenses >/dev/null
}

# A campaign of three tiny transformerpp runs along the width axis (seconds on
# 2 ranks), on $tmp/corpus.h5; extra lines (more sections) follow the file.
tiny_campaign() { # tiny_campaign OUT.ini NAME [EXTRA_LINE ...]
    local out=$1 name=$2
    shift 2
    printf '%s\n' "[campaign]" "name = $name" "architectures = transformerpp" "axes = width" \
        "data = $tmp/corpus.h5" "ranks = 2" "checkpoints = 1" "[base]" "model.context = 16" \
        "model.depth = 1" "model.width = 16" "model.heads = 2" "train.batch = 4" \
        "train.steps = 4" "train.eval_batches = 1" "train.gemm_peak_gflops = 100" \
        "[axis.width]" "values = 8, 16, 32" "$@" >"$out"
}

# The --set arguments that make tiny_train's model one of ARCH (for the
# scripts that run every architecture).
run_campaign() { # run_campaign LABEL INI DIR N: campaign run on 2 ranks, timed; it succeeds and has N of N points done
    local start status
    start=$(date +%s)
    mpirun -np 2 "$bin" campaign run "$2" --dir "$3" >"$tmp/run.log" 2>&1
    status=$?
    echo "$1: $(($(date +%s) - start)) s on 2 ranks"
    check "the $1 succeeds" [ $status -eq 0 ]
    [ $status -eq 0 ] || tail -30 "$tmp/run.log"
    check "every point is done" contains "$tmp/run.log" "$4 of $4 points done"
}
arch_args() { # arch_args ARCH
    case $1 in
    transformerpp) ;;
    ebt) echo --set model.arch=ebt --set ebt.preset=s1 --set ebt.step_size=10 --set ebt.step_size_lr_mult=100 ;;
    free) echo --set model.arch=free ;;
    nexus) echo --set model.arch=nexus --set nexus.order=2 ;;
    esac
}

# A tiny model that trains in seconds; extra --set arguments follow.
tiny_train() { # tiny_train NP BINARY RUN_DIR [-x ENV_VAR ...] [--set k=v ...] [--resume]
    local np=$1 program=$2 dir=$3
    shift 3
    local mpi_args=()
    while [ "${1:-}" = -x ]; do mpi_args+=(-x "$2"); shift 2; done
    mpirun "${mpi_args[@]}" -np "$np" "$program" train "$tmp/tiny.ini" --set run.dir="$dir" "$@"
}
# tiny.ini gives the MFU's GEMM peak (train.gemm_peak_gflops) rather than
# measuring it: the probe is about half a second of every start, more than
# the training of most of the suite's runs, and several minutes of `make test`
# over all of them. Tests of the measured peak set it back to 0.
cat >"$tmp/tiny.ini" <<INI
[model]
context = 32
depth = 2
width = 32
heads = 2
[train]
steps = 30
batch = 8
lr = 3e-3
warmup = 5
log_every = 10
eval_batches = 2
gemm_peak_gflops = 100
[data]
train = $tmp/corpus.h5
INI

# Whether a resumed (interrupted, requeued) run ended exactly as an
# uninterrupted one: parameters, AdamW moments (MOMENTS=0 skips them) of the
# final checkpoint, the steps 1..STEPS and the loss series of metrics.h5.
same_as_uninterrupted() { # same_as_uninterrupted REF_DIR RUN_DIR STEPS [MOMENTS]
    py - "$@" <<'PY'
import sys, h5py, numpy as np
ref, run, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
moments = len(sys.argv) < 5 or sys.argv[4] != "0"
bad = []
with h5py.File(f"{ref}/checkpoint_{steps:08d}.h5", "r") as a, h5py.File(f"{run}/checkpoint_{steps:08d}.h5", "r") as b:
    bad += [k for k in a["params"] if not np.array_equal(a["params"][k][...], b["params"][k][...])]
    if moments:
        bad += [k for k in ("m", "v") if not np.array_equal(a["optimizer"][k][...], b["optimizer"][k][...])]
with h5py.File(f"{ref}/metrics.h5", "r") as a, h5py.File(f"{run}/metrics.h5", "r") as b:
    if list(b["train/step"][...]) != list(range(1, steps + 1)): bad.append("steps are not 1..%d" % steps)
    if not np.array_equal(a["train/loss"][...], b["train/loss"][...]): bad.append("loss series")
    print("final loss: uninterrupted %.7f, resumed %.7f" % (a["train/loss"][-1], b["train/loss"][-1]))
print("differences:", bad)
sys.exit(1 if bad else 0)
PY
}
