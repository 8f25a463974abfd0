#!/usr/bin/env bash
# The MFU's denominator (docs/training.md, "MFU"): measured at start-up by
# default, or given by train.gemm_peak_gflops, and either way named on the
# start-up line and in report.yaml (machine.gemm_peak_source); the report's
# MFU is the executed FLOPs over the step time and that peak. A peak that is
# not a rate is refused before anything runs.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"

field() { # field REPORT KEY: the value of "  KEY: value" in a report.yaml
    sed -n "s/^ *$2: //p" "$1" | head -n 1
}

# tiny.ini gives 100 GFLOP/s (tests/cli/lib.sh); 37.5 here, on 2 ranks.
tiny_train 2 "$bin" "$tmp/given" --set train.gemm_peak_gflops=37.5 --set train.log_every=1 \
    >"$tmp/given.log" 2>&1
check "a run with a configured peak succeeds" [ $? -eq 0 ]
check "... says so on its start-up line" \
    contains "$tmp/given.log" "peak 37.5 GFLOP/s per rank (configured)"
check "... and in report.yaml" [ "$(field "$tmp/given/report.yaml" gemm_peak_source)" = configured ]
check "... with the configured figure" \
    [ "$(field "$tmp/given/report.yaml" gemm_peak_gflops_per_rank)" = 37.50 ]
check "every step's MFU is its executed FLOPs over its time and 2 ranks x 37.5 GFLOP/s" \
    py - "$tmp/given/metrics.h5" 37.5e9 <<'PY'
import sys, h5py, numpy as np
peak = float(sys.argv[2])
with h5py.File(sys.argv[1], "r") as f:
    t = f["train"]
    flops, tokens, rate, mfu = (t[k][...] for k in ("flops", "tokens", "tokens_per_s", "mfu"))
step_tokens = np.diff(tokens, prepend=0)  # tokens is cumulative
expected = flops * rate / step_tokens / (2 * peak)
print("mfu", mfu[:4], "expected", expected[:4])
sys.exit(0 if len(mfu) >= 3 and np.all(mfu > 0) and np.allclose(mfu, expected, rtol=1e-6) else 1)
PY

tiny_train 1 "$bin" "$tmp/measured" --set train.gemm_peak_gflops=0 --set train.steps=2 \
    >"$tmp/measured.log" 2>&1
check "a run with train.gemm_peak_gflops = 0 succeeds" [ $? -eq 0 ]
check "... measures the peak and says so" contains "$tmp/measured.log" "GFLOP/s per rank (measured)"
check "... in report.yaml too" [ "$(field "$tmp/measured/report.yaml" gemm_peak_source)" = measured ]
check "... where the measured peak is a positive rate" \
    py -c "import sys; sys.exit(0 if float('$(field "$tmp/measured/report.yaml" gemm_peak_gflops_per_rank)') > 0 else 1)"

for bad in -1 nan inf; do
    tiny_train 1 "$bin" "$tmp/bad" --set train.gemm_peak_gflops=$bad >"$tmp/bad.log" 2>&1
    check "train.gemm_peak_gflops = $bad is refused" [ $? -ne 0 ]
    check "... naming the key" contains "$tmp/bad.log" "train.gemm_peak_gflops"
    check "... before a run directory is made" [ ! -e "$tmp/bad/report.yaml" ]
done
finish
