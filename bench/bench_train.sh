#!/usr/bin/env bash
# Training benchmark (issue 3): Transformer++ at D = 256, L = 4, T = 256,
# 8 sequences per rank per step (weak scaling), 1 and 2 ranks, one BLAS
# thread per rank. Reads per-step throughput and MFU from metrics.h5 (median
# over steps after the first 3, which pay first-touch page faults).
# Targets: MFU >= 40% of the measured sgemm peak on one rank; 2-rank weak
# scaling efficiency (per-rank throughput on 2 ranks / on 1) >= 95% (issue
# 16; it was 85% in issue 3). Two ranks need two free cores: on a shared
# machine the efficiency measures the neighbours too (print `uptime`).
# 30 steps: at 15 (4 s a run on the AVX-512 kernels) two back-to-back runs
# on an idle machine read 86% and 125%; at 30, 97-100%.
# BENCH_PAIRS (default 3) pairs of 1- and 2-rank runs alternate, and each
# figure is the median over its runs' steps: one pair on a VM whose speed
# drifts between runs read 83-105% efficiency in five tries (2026-12-01),
# while two 1-rank runs on the two cores at once ran at the solo rate.
# The step splits into compute and the time inside the data-parallel
# collectives (metrics.h5 train/collective_seconds, waiting for the slower
# rank included): the efficiency of the compute alone (1-rank compute time
# over 2-rank) and the collectives' share of the 2-rank step say whether a
# loss is communication or each rank computing slower (a host that runs two
# busy vCPUs slower than one: frequency, memory bandwidth). Printed, not
# judged.
source "$(dirname "$0")/lib.sh"
steps=${BENCH_STEPS:-30}
pairs=${BENCH_PAIRS:-3}
echo "load before: $(uptime)"
for pair in $(seq "$pairs"); do
    bench_run "np1_$pair" 1
    bench_run "np2_$pair" 2
done
echo "load after: $(uptime)"
/usr/bin/python3 - "$tmp" "$pairs" <<'PY'
import sys, h5py, numpy as np
tmp, pairs = sys.argv[1], int(sys.argv[2])
def stats(ranks):
    columns = {"tokens_per_s": [], "mfu": [], "flops": [], "step": [], "collective": []}
    for pair in range(1, pairs + 1):
        with h5py.File(f"{tmp}/np{ranks}_{pair}/metrics.h5", "r") as m:
            t = m["train"]
            sl = slice(3, None)
            for name in ("tokens_per_s", "mfu", "flops"):
                columns[name].extend(t[name][sl])
            wall = t["wall_time"][:]
            columns["step"].extend((wall[1:] - wall[:-1])[2:])
            columns["collective"].extend(t["collective_seconds"][sl])
    return tuple(np.median(columns[k]) for k in ("tokens_per_s", "mfu", "flops", "step",
                                                  "collective"))
tps1, mfu1, fl1, st1, co1 = stats(1)
tps2, mfu2, fl2, st2, co2 = stats(2)
eff = (tps2 / 2) / tps1
compute_eff = (st1 - co1) / (st2 - co2)
share2 = co2 / st2
print(f"{'measurement':<48} {'1 rank':>12} {'2 ranks':>12}")
print(f"{'tokens/s (median)':<48} {tps1:12,.0f} {tps2:12,.0f}")
print(f"{'step time [s]':<48} {st1:12.3f} {st2:12.3f}")
print(f"{'executed GFLOP per step (all ranks)':<48} {fl1 / 1e9:12.2f} {fl2 / 1e9:12.2f}")
print(f"{'MFU vs measured sgemm peak':<48} {100 * mfu1:11.1f}% {100 * mfu2:11.1f}%")
print(f"{'in data-parallel collectives [s] (median)':<48} {co1:12.4f} {co2:12.4f}")
print(f"{'compute per step [s] (step - collectives)':<48} {st1 - co1:12.3f} {st2 - co2:12.3f}")
print(f"{'weak-scaling efficiency (target >= 95%)':<48} {'':>12} {100 * eff:11.1f}%")
print(f"{'  of the compute alone (1-rank / 2-rank time)':<48} {'':>12} {100 * compute_eff:11.1f}%")
print(f"{'  collectives share of the 2-rank step':<48} {'':>12} {100 * share2:11.1f}%")
ok = mfu1 >= 0.40 and eff >= 0.95
print(f"TRAIN_BENCH tokens_per_s_1={tps1:.0f} tokens_per_s_2={tps2:.0f} mfu_1={mfu1:.3f} "
      f"mfu_2={mfu2:.3f} weak_efficiency={eff:.3f} compute_efficiency={compute_eff:.3f} "
      f"collective_share_2={share2:.3f} targets=mfu_1>=0.40,efficiency>=0.95 "
      f"{'PASSED' if ok else 'FAILED'}")
PY
