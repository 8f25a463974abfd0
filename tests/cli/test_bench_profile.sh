#!/usr/bin/env bash
# bench_profile (bench/bench_profile.c) on Transformer++, one round of one
# step: the per-op profile carries each op's tensor bytes and their rate,
# the read rate from memory it is set against, and a line for the ops that
# are not GEMM-bearing; the per-round figures' medians and the arena's high
# water are printed; bad settings are refused. This checks the tool,
# not the machine: the bounds below hold on any machine. The forward reads
# every weight at least once, so its tensor bytes are at least the
# parameters' bytes; the "at the read rate" time is the other ops' bytes
# over the printed read rate.
source "$(dirname "$0")/lib.sh"
profile=$repo/build/float/bench/bench_profile
unset OPENBLAS_CORETYPE
export OPENBLAS_NUM_THREADS=1 BENCH_ONLY=tpp BENCH_ROUNDS=1 BENCH_STEPS=1 BENCH_STREAM_MB=64
export BENCH_CLOCK=cpu

"$profile" >"$tmp/tpp.log" 2>&1
check "bench_profile succeeds" [ $? -eq 0 ]
cat "$tmp/tpp.log"
check "... with MB and GB/s columns" grep -qE '^ +pass +op +calls +ms .*%sgemm +MB +GB/s$' \
    "$tmp/tpp.log"
check "... the read rate, the other ops' line and the figures' line" py - "$tmp/tpp.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
read = float(re.search(r"^read rate from memory: ([0-9.]+) GB/s", text, re.M).group(1))
other = re.search(r"other ops: ([0-9.]+) ms \(.*\) over ([0-9]+) MB of tensors, ([0-9.]+) GB/s = "
                  r"([0-9]+)% of the read rate \(([0-9.]+) GB/s\); at the read rate they would "
                  r"take ([0-9.]+) ms and the step execute ([0-9.]+)% of sgemm", text)
ms, mb, gbs, pct, rate, at_rate, sgemm = (float(x) for x in other.groups())
forward = re.search(r"^  forward +\(all\) +([0-9.]+) +[0-9.]+% +([0-9.]+) +[0-9.]+ +[0-9.]+% +"
                    r"([0-9]+) +([0-9.]+)$", text, re.M)
forward_mb = float(forward.group(3))
params = int(re.search(r"optimiser \(Transformer\+\+, ([0-9]+) parameters\)", text).group(1))
arena = float(re.search(r"^arena high water \(Transformer\+\+\): ([0-9]+) MiB", text, re.M).group(1))
one_round = re.search(r"^  Transformer\+\+ +([0-9.]+)% +median +([0-9.]+)%$", text, re.M)
figures = dict(kv.split("=") for kv in re.search(r"^PROFILE_MODELS (.*)$", text, re.M).group(1).split())
checks = {
    "read rate positive and the one the line uses": read > 0 and rate == read,
    "other ops move bytes": ms > 0 and mb > 0 and gbs > 0,
    "their rate is bytes over time": abs(gbs - mb / ms) <= 0.05 * gbs + 0.1,
    "their time at the read rate is bytes over the rate": abs(at_rate - mb / read) <= 0.01 * at_rate + 0.1,
    "the step's rate at that time is a fraction of sgemm": 0 < sgemm < 200,
    "the forward reads every weight": forward_mb * 1e6 >= params * 4,
    "a subset prints its figures": "PROFILE_MODELS " in text,
    "the arena holds more than the parameters": arena * 2**20 > params * 4,
    "one round: its fraction is the median": one_round and one_round.group(1) == one_round.group(2),
    "the medians on the figures' line": abs(float(figures["tpp_sgemm_median"]) * 100
                                            - float(one_round.group(2))) <= 0.051
                                        and figures["tpp_time_per_flop_median"] == "1.000",
    "OpenBLAS's own choice of kernels is not flagged": figures["blas_narrower"] == "0",
}
print(checks)
sys.exit(0 if all(checks.values()) else 1)
PY

# OpenBLAS held to SSE kernels (Nehalem: narrower than any AVX2 or AVX-512
# CPU, and obeyed as a user's setting is): the %sgemm figures would be
# against a rate the step's own kernel outruns, so the run says so and its
# line flags it.
OPENBLAS_CORETYPE=Nehalem BENCH_PROFILE=0 "$profile" >"$tmp/narrow.log" 2>"$tmp/narrow.err"
check "with OpenBLAS's Nehalem kernels bench_profile runs" [ $? -eq 0 ]
cat "$tmp/narrow.err"
check "... and says they are narrower than the CPU's" contains "$tmp/narrow.err" "Nehalem kernels"
check "... and that no target is met by the run" contains "$tmp/narrow.err" "no target is met"
check "... and its line flags them" grep -qE '^PROFILE_MODELS .* blas_core=Nehalem blas_narrower=1 ' \
    "$tmp/narrow.log"

for bad in BENCH_STREAM_MB=0 BENCH_ROUNDS=two BENCH_STEPS=-1; do
    env "$bad" "$profile" >"$tmp/bad.log" 2>&1
    check "$bad is refused" [ $? -ne 0 ]
    check "... naming it" contains "$tmp/bad.log" "bench_profile: ${bad%%=*}="
done
finish
