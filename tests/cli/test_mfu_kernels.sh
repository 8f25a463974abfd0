#!/usr/bin/env bash
# The MFU denominator is the best GEMM rate of this build, whichever kernel
# reaches it: with OpenBLAS held to the AVX2 kernel set (OPENBLAS_CORETYPE=
# Haswell, which one machine here exports on an AVX-512 CPU), the step's own
# products into fresh outputs (ts_small_gemm, built for the CPU) ran faster
# than OpenBLAS's 768^3, and a peak from OpenBLAS alone gave MFU 1.21 at the
# benchmark size (docs/performance.md, thirteenth round). At that size every
# step's MFU must stay below 1. (On a CPU without AVX-512 both kernels run
# AVX2 and the run checks the same bound.)
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
export OPENBLAS_CORETYPE=Haswell
tiny_train 1 "$bin" "$tmp/run" -x OPENBLAS_CORETYPE \
    --set model.width=256 --set model.depth=2 --set model.heads=4 --set model.context=256 \
    --set model.ffn_mult=1.0 --set train.batch=8 --set train.steps=8 --set train.log_every=1 \
    --set train.eval_batches=1 --set train.gemm_peak_gflops=0 >"$tmp/train.log" 2>&1
check "training with OpenBLAS's Haswell kernels succeeds" [ $? -eq 0 ]
check "report.yaml names the Haswell kernel set behind the GEMM peak" \
    contains "$tmp/run/report.yaml" 'blas_core: "Haswell"'
py - "$tmp/run/metrics.h5" <<'PY'
import sys, h5py
mfu = h5py.File(sys.argv[1], "r")["train/mfu"][2:]  # after the first steps' page faults
print("MFU per step:", " ".join(f"{x:.3f}" for x in mfu))
sys.exit(0 if len(mfu) and 0 < mfu.min() and mfu.max() < 1 else 1)
PY
check "every step's MFU is below 1" [ $? -eq 0 ]
finish
