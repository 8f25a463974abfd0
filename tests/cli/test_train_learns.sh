#!/usr/bin/env bash
# Training learns real text: after a short run on the Debian licence texts,
# the validation loss is well below the unigram entropy of the training split
# (the best any model that ignores context can do): at most 75% of it.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
tiny_train 2 "$bin" "$tmp/run" --set train.steps=200 --set model.context=64 \
    --set model.width=64 --set train.batch=16 --set train.warmup=20 \
    --set train.gemm_peak_gflops=0 >"$tmp/train.log" 2>&1
check "training succeeds" [ $? -eq 0 ]
py - "$tmp/corpus.h5" "$tmp/run/metrics.h5" <<'PY'
import sys, h5py, numpy as np
tokens = h5py.File(sys.argv[1], "r")["train/tokens"][...]
p = np.bincount(tokens, minlength=256) / len(tokens)
unigram = -np.sum(p[p > 0] * np.log(p[p > 0]))
m = h5py.File(sys.argv[2], "r")
val = m["eval/licenses/loss"][-1]
print(f"unigram entropy {unigram:.3f} nats, first train loss {m['train/loss'][0]:.3f}, "
      f"final validation loss {val:.3f} ({val / unigram:.1%} of unigram)")
sys.exit(0 if val < 0.75 * unigram else 1)
PY
check "validation loss is below 75% of the unigram entropy" [ $? -eq 0 ]
check "the run ends with a RESULT line marked VALID" contains "$tmp/train.log" "^RESULT arch=transformerpp ranks=2 steps=0-200 .* VALID$"
check "report.yaml gives the verdict" contains "$tmp/run/report.yaml" "verdict: VALID"
check "report.yaml gives node-hours and the checkpoint size" \
    py -c "import re,sys; t=open('$tmp/run/report.yaml').read(); sys.exit(0 if float(re.search(r'node_hours: (\S+)', t).group(1)) > 0 and int(re.search(r'  bytes: (\d+)', t).group(1)) > 0 else 1)"
# The MFU denominator is the best GEMM rate the probe saw: a small model's
# training steps reach only a fraction of it, so an MFU of 1 or more means a
# probe that read low (as the earlier four-GEMM one did on a shared machine).
check "report.yaml names the OpenBLAS kernel set behind the GEMM peak" \
    py -c "import re,sys; m=re.search(r'  blas_core: \"([^\"]+)\"', open('$tmp/run/report.yaml').read()); print(m and m.group(1)); sys.exit(0 if m and m.group(1) not in ('', 'unknown') else 1)"
check "report.yaml gives a GEMM peak under which the measured MFU is below 1" \
    py -c "import re,sys; t=open('$tmp/run/report.yaml').read(); peak=float(re.search(r'gemm_peak_gflops_per_rank: (\S+)', t).group(1)); mfu=float(re.search(r'  mfu: (\S+)', t).group(1)); print('peak', peak, 'mfu', mfu); sys.exit(0 if peak > 0 and 0 < mfu < 1 else 1)"
finish
