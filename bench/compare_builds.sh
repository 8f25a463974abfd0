#!/usr/bin/env bash
# Is build NEW faster than build OLD on this machine? Runs bench_profile
# (BENCH_PROFILE=0) of each, in pairs ordered old-new, new-old, old-new, ...
# so that a drift of the machine's speed (a VM or a shared node: the same
# step read 10% apart within minutes here, docs/performance.md) falls on
# both builds alike, then prints per model and pair the seconds per step of
# each and their ratio, and per model the geometric mean of the ratios with
# a 95% interval (Student's t on the log ratios) and their median (less
# moved by a pair that caught one build in a slow spell). One number from each build
# cannot separate a lever of a few percent from that drift; the interval
# says whether the pairs did.
#
#   bench/compare_builds.sh OLD NEW [PAIRS]
#
# OLD, NEW: a checkout whose build/float/bench/bench_profile is built, or
# that binary itself. PAIRS: default 4. BENCH_ONLY (default tpp,ebt1),
# BENCH_ROUNDS (default 2), BENCH_STEPS (default 2) and BENCH_CLOCK (default
# cpu) are passed to bench_profile. Last line: COMPARE_BUILDS with, per
# model, the mean ratio and the interval's ends (no verdict: a comparison,
# not a target).
set -euo pipefail
usage() {
    echo "usage: $0 OLD NEW [PAIRS] (a checkout with build/float/bench/bench_profile, or that binary)" >&2
    exit 2
}
[ $# -ge 2 ] && [ $# -le 3 ] || usage
binary_of() {
    if [ -f "$1" ] && [ -x "$1" ]; then
        echo "$1"
    elif [ -x "$1/build/float/bench/bench_profile" ]; then
        echo "$1/build/float/bench/bench_profile"
    else
        echo "$0: no bench_profile at $1 (build it with make build)" >&2
        exit 2
    fi
}
old=$(binary_of "$1")
new=$(binary_of "$2")
pairs=${3:-4}
case $pairs in '' | *[!0-9]* | 0) echo "$0: PAIRS must be a positive integer, got '$pairs'" >&2; exit 2 ;; esac
export OPENBLAS_NUM_THREADS=1
export BENCH_PROFILE=0 BENCH_ONLY=${BENCH_ONLY:-tpp,ebt1} BENCH_ROUNDS=${BENCH_ROUNDS:-2}
export BENCH_STEPS=${BENCH_STEPS:-2} BENCH_CLOCK=${BENCH_CLOCK:-cpu}
results=$(mktemp)
trap 'rm -f "$results"' EXIT
echo "old: $old"
echo "new: $new"
echo "load before: $(uptime)"
for pair in $(seq "$pairs"); do
    order="old new"
    [ $((pair % 2)) -eq 0 ] && order="new old"
    for side in $order; do
        bin=$old
        [ "$side" = new ] && bin=$new
        line=$("$bin" | grep '^PROFILE_MODELS ') ||
            { echo "$0: $bin printed no PROFILE_MODELS line" >&2; exit 1; }
        echo "$pair $side $line" >>"$results"
    done
done
echo "load after: $(uptime)"
/usr/bin/python3 - "$results" <<'PY'
import math, sys
from scipy import stats

runs = {}  # (pair, side) -> {key: value}
for line in open(sys.argv[1]):
    pair, side, _tag, *fields = line.split()
    runs[(int(pair), side)] = dict(f.split("=", 1) for f in fields)
pairs = sorted({p for p, _ in runs})
cores = sorted({r.get("blas_core", "?") for r in runs.values()})
print("OpenBLAS kernels:", ", ".join(cores))
if any(r.get("blas_narrower") == "1" for r in runs.values()):
    print("warning: OpenBLAS ran a kernel set narrower than this CPU's (OPENBLAS_CORETYPE in "
          "the environment?): the steps timed are not this machine's")
models = [k[:-2] for k in runs[(pairs[0], "old")] if k.endswith("_s")]
print(f"{'pair':>4} {'model':<8} {'old s/step':>11} {'new s/step':>11} {'new/old':>8}")
summary = []
for m in models:
    logs = []
    for p in pairs:
        o, n = float(runs[(p, "old")][m + "_s"]), float(runs[(p, "new")][m + "_s"])
        logs.append(math.log(n / o))
        print(f"{p:>4} {m:<8} {o:11.4f} {n:11.4f} {n / o:8.3f}")
    mean = sum(logs) / len(logs)
    if len(logs) > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
        half = stats.t.ppf(0.975, len(logs) - 1) * sd / math.sqrt(len(logs))
    else:
        half = math.inf
    ordered = sorted(logs)
    median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
    summary.append((m, math.exp(mean), math.exp(mean - half), math.exp(mean + half),
                    math.exp(median)))
print(f"\n{'model':<8} {'pairs':>5} {'new/old':>8} {'95% interval':>17} {'median':>7}  reading")
for m, ratio, lo, hi, median in summary:
    reading = ("new faster" if hi < 1 else "new slower" if lo > 1
               else "no difference the pairs can separate")
    print(f"{m:<8} {len(pairs):>5} {ratio:8.3f} {lo:8.3f} .. {hi:6.3f} {median:7.3f}  {reading}")
print("COMPARE_BUILDS pairs=%d " % len(pairs) +
      " ".join(f"{m}_ratio={r:.4f} {m}_lo={lo:.4f} {m}_hi={hi:.4f} {m}_median={md:.4f}"
               for m, r, lo, hi, md in summary))
PY
