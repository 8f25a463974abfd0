#!/usr/bin/env bash
# Peer benchmark (issue 16): the same training step by thinkscale and by
# PyTorch CPU (bench/peer_torch.py, Debian's python3-torch; `make bench`
# installs it), at the size of lib.sh (D = 256, L = 4, 4 heads, T = 256,
# FFN = D, V = 256, 8 sequences, AdamW, clip 1.0, one thread each:
# OPENBLAS_NUM_THREADS=1 and torch.set_num_threads(1)), on the same corpus.
#   - Transformer++: whole training steps (data, forward, backward, clip,
#     AdamW); tokens/s of each and their ratio.
#   - EBT S1 with 1 MCMC step: PyTorch runs the official code's path (the
#     doubled sequence through the whole backbone, autograd.grad with
#     create_graph=True), thinkscale its two-stream energy (the same
#     function; see peer_torch.py).
# Runs alternate thinkscale and PyTorch (BENCH_ROUNDS rounds, default 2, of
# BENCH_STEPS steps, default 8), so load from other processes hits both;
# each side's seconds per step is its fastest round's median step after the
# first two. Both print parameter counts, which must be equal.
# Target: Transformer++ tokens/s at least 1.2x PyTorch's.
source "$(dirname "$0")/lib.sh"
steps=${BENCH_STEPS:-8}
rounds=${BENCH_ROUNDS:-2}
ebt=(--set model.arch=ebt --set ebt.preset=s1 --set ebt.step_size=10 --set ebt.step_size_lr_mult=100
    --set ebt.steps=1)
torch_run() { # torch_run NAME ARCH [args]: the PEER line into $tmp/NAME.peer
    local name=$1
    shift
    /usr/bin/python3 bench/peer_torch.py "$@" --corpus "$tmp/text.txt" --steps "$steps" \
        >"$tmp/$name.peer" 2>&1 || { cat "$tmp/$name.peer"; exit 1; }
}
echo "load before: $(uptime)"
for round in $(seq 1 "$rounds"); do
    bench_run tpp.$round 1
    torch_run torch_tpp.$round transformerpp
    bench_run ebt.$round 1 "${ebt[@]}"
    torch_run torch_ebt.$round ebt --ebt-steps 1 --step-size 10
done
echo "load after: $(uptime)"
/usr/bin/python3 - "$tmp" "$rounds" "$steps" <<'PY'
import re, sys, h5py, numpy as np
tmp, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tokens_per_step = 8 * 256
def ours(name):
    best = np.inf
    for r in range(1, rounds + 1):
        with h5py.File(f"{tmp}/{name}.{r}/metrics.h5", "r") as m:
            best = min(best, np.median(np.diff(m["train"]["wall_time"][...])[1:]))
    log = open(f"{tmp}/{name}.1.log").read()
    return best, int(re.search(r"(\d+) parameters", log).group(1))
def theirs(name):
    best, params = np.inf, None
    for r in range(1, rounds + 1):
        line = [l for l in open(f"{tmp}/{name}.{r}.peer") if l.startswith("PEER ")][-1]
        kv = dict(f.split("=", 1) for f in line.split()[1:])
        best, params, version = min(best, float(kv["seconds_per_step"])), int(kv["params"]), kv["torch"]
    return best, params, version
rows = []
for label, a, b in (("Transformer++ training step", "tpp", "torch_tpp"),
                    ("EBT S1 training step, 1 MCMC step", "ebt", "torch_ebt")):
    s_ours, p_ours = ours(a)
    s_torch, p_torch, version = theirs(b)
    rows.append((label, s_ours, s_torch, p_ours, p_torch))
print(f"PyTorch {version} CPU, one thread; fastest of {rounds} alternating rounds of {steps} steps")
print(f"{'step':<36} {'params ours':>12} {'params torch':>12} {'ours tok/s':>11} {'torch tok/s':>11} {'ours/torch':>10}")
for label, s_ours, s_torch, p_ours, p_torch in rows:
    print(f"{label:<36} {p_ours:12d} {p_torch:12d} {tokens_per_step / s_ours:11.0f} "
          f"{tokens_per_step / s_torch:11.0f} {s_torch / s_ours:10.2f}")
tpp, ebt = rows
same_params = all(r[3] == r[4] for r in rows)
speedup_tpp, speedup_ebt = tpp[2] / tpp[1], ebt[2] / ebt[1]
ok = same_params and speedup_tpp >= 1.2
print(f"PEER_BENCH tpp_tokens_per_s={tokens_per_step / tpp[1]:.0f} torch_tpp_tokens_per_s="
      f"{tokens_per_step / tpp[2]:.0f} tpp_speedup={speedup_tpp:.2f} ebt_s1_speedup={speedup_ebt:.2f} "
      f"params_equal={int(same_params)} targets=tpp_speedup>=1.2,params_equal "
      f"{'PASSED' if ok else 'FAILED'}")
PY
