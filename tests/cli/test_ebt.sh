#!/usr/bin/env bash
# The Energy-Based Transformer end to end (src/models/ebt*.c, docs/ebt.md):
# - 1 and 2 ranks follow the same loss trajectory, as Transformer++ does
#   (test_train_ranks.sh): S1 in the float build (1e-4 relative), and the S2
#   randomness (Langevin noise, random step size and step count) in the
#   double build (1e-6: those runs amplify rounding faster). The replay
#   buffer is off here: it is per-rank state, so ranks legitimately differ.
# - with the replay buffer on, a run stopped and resumed on the same rank
#   count is bit-identical to an uninterrupted one (the buffer is in the
#   checkpoint, one row per rank); resuming on another rank count is refused.
# - eval --think writes a row per setting with NFEs = samples x (steps + 1);
#   --energies writes per-token energies, and on a briefly trained model the
#   energy falls along the inner steps.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
ebt=(--set model.arch=ebt --set ebt.preset=s1 --set ebt.step_size=10 --set ebt.step_size_lr_mult=100)


# --- rank counts
for np in 1 2; do
    tiny_train $np "$bin" "$tmp/s1-$np" "${ebt[@]}" >"$tmp/s1-$np.log" 2>&1
    check "S1 trains on $np rank(s)" [ $? -eq 0 ]
done
diff=$(max_rel_diff "$tmp/s1-1" "$tmp/s1-2" 30)
check "S1, float: 1 and 2 ranks agree within 1e-4 ($diff)" below "$diff" 1e-4
s2=(--set ebt.preset=s2 --set ebt.replay_size=0 --set train.steps=20)
for np in 1 2; do
    tiny_train $np "$bin_double" "$tmp/s2-$np" "${ebt[@]}" "${s2[@]}" >"$tmp/s2-$np.log" 2>&1
    check "S2 without replay trains on $np rank(s) (double build)" [ $? -eq 0 ]
done
diff=$(max_rel_diff "$tmp/s2-1" "$tmp/s2-2" 20)
check "S2 (noise, random alpha and steps), double: 1 and 2 ranks agree within 1e-6 ($diff)" \
    below "$diff" 1e-6

# --- the replay buffer is part of the checkpoint
replay=(--set ebt.replay_size=6 --set ebt.replay_fraction=0.5 --set ebt.langevin_noise=1)
tiny_train 2 "$bin" "$tmp/straight" "${ebt[@]}" "${replay[@]}" >"$tmp/straight.log" 2>&1
check "training with a replay buffer succeeds" [ $? -eq 0 ]
tiny_train 2 "$bin" "$tmp/resumed" "${ebt[@]}" "${replay[@]}" --set train.stop_at=12 \
    >"$tmp/first.log" 2>&1
cp -r "$tmp/resumed" "$tmp/other-ranks"
tiny_train 2 "$bin" "$tmp/resumed" "${ebt[@]}" "${replay[@]}" --resume >"$tmp/second.log" 2>&1
check "resuming with the replay buffer succeeds" [ $? -eq 0 ]
py - "$tmp" <<'PY'
import sys, h5py, numpy as np
tmp = sys.argv[1]
a = h5py.File(f"{tmp}/straight/metrics.h5", "r")["train/loss"][...]
b = h5py.File(f"{tmp}/resumed/metrics.h5", "r")["train/loss"][...]
c = h5py.File(f"{tmp}/resumed/checkpoint_00000012.h5", "r")
logits, state = c["extras/replay_logits"], c["extras/replay_state"][...]
print("losses equal:", np.array_equal(a, b), "buffer", logits.shape, "state", state.tolist())
# 12 steps x (4 fresh + 2 replayed) rows per rank filled the 6 slots of each rank.
ok = np.array_equal(a, b) and logits.shape == (2, 6 * 32 * 256) and state[:, 0].tolist() == [6, 6]
ok &= np.abs(logits[...]).max() > 0 and not np.array_equal(logits[0], logits[1])
sys.exit(0 if ok else 1)
PY
check "... bit-identical to the uninterrupted run; each rank's buffer is stored" [ $? -eq 0 ]
tiny_train 1 "$bin" "$tmp/other-ranks" "${ebt[@]}" "${replay[@]}" --resume >"$tmp/one.log" 2>&1
check "resuming a replay buffer on another rank count is refused" [ $? -ne 0 ]
check "... naming the per-rank buffer" contains "$tmp/one.log" "replay"

# --- thinking at evaluation, and the energies
tiny_train 2 "$bin" "$tmp/trained" "${ebt[@]}" --set train.steps=150 --set train.lr=3e-3 \
    >"$tmp/trained.log" 2>&1
check "a briefly trained model" [ $? -eq 0 ]
mpirun -np 2 "$bin" eval --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 16 \
    --think steps=1,samples=1 --think steps=4,samples=1 --think steps=4,samples=3 \
    --output "$tmp/eval.h5" --energies "$tmp/energies.h5" >"$tmp/eval.log" 2>&1
check "eval with three thinking settings and --energies succeeds" [ $? -eq 0 ]
cat "$tmp/eval.log"
py - "$tmp" <<'PY'
import sys, h5py, numpy as np
tmp = sys.argv[1]
sets = h5py.File(f"{tmp}/eval.h5", "r")["sets/licenses"]
energies = h5py.File(f"{tmp}/energies.h5", "r")["sets/licenses"]
ok = True
for name, steps, samples in [("ebt.infer_steps=1,ebt.infer_samples=1", 1, 1),
                             ("ebt.infer_steps=4,ebt.infer_samples=1", 4, 1),
                             ("ebt.infer_steps=4,ebt.infer_samples=3", 4, 3)]:
    row, e = sets[name].attrs, energies[name]
    energy, loss = e["energy"][...], e["token_loss"][...]
    print(name, "ppl", row["perplexity"], "nfe", row["nfe"], "flops", row["flops"],
          "mean energy per point", energy.mean(axis=(0, 2)).round(4))
    ok &= row["nfe"] == samples * (steps + 1) and energy.shape == (16, steps + 1, 32)
    ok &= abs(row["perplexity"] - np.exp(row["loss"])) < 1e-9 * row["perplexity"]
    ok &= abs(loss.mean() - row["loss"]) < 1e-4 * row["loss"]          # the scored predictions
    ok &= abs(energy[:, -1].mean() - row["energy_final"]) < 1e-4 * max(1, abs(row["energy_final"]))
    ok &= e["tokens"].shape == (16, 33) and (e["tokens"][...] > 0).all()  # every window filled
flops = [sets[n].attrs["flops"] for n in ("ebt.infer_steps=1,ebt.infer_samples=1",
                                          "ebt.infer_steps=4,ebt.infer_samples=1",
                                          "ebt.infer_steps=4,ebt.infer_samples=3")]
ok &= flops[0] < flops[1] < flops[2]
sys.exit(0 if ok else 1)
PY
check "a row per setting: NFEs, FLOPs growing with them, energies matching the scored loss" \
    [ $? -eq 0 ]
py - "$tmp/energies.h5" <<'PY'
import sys, h5py, numpy as np
e = h5py.File(sys.argv[1], "r")["sets/licenses/ebt.infer_steps=4,ebt.infer_samples=1/energy"][...]
mean = e.mean(axis=(0, 2))
fell = (e[:, -1] < e[:, 0]).mean()
print("mean energy along the steps", mean.round(4), "share of positions whose energy fell", fell)
sys.exit(0 if mean[1] < mean[0] and mean[-1] < mean[0] and fell > 0.9 else 1)
PY
check "on the briefly trained model the energy falls along the inner steps" [ $? -eq 0 ]
check "an inference knob out of range is refused before evaluating, by the model's own check" \
    fails_with "$tmp/bad-think.log" "ebt.infer_steps must not be negative" mpirun -np 1 "$bin" \
    eval --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 4 --think steps=-1,samples=1 \
    --output "$tmp/bad-think.h5"
check "... and samples=0 too" \
    fails_with "$tmp/bad-think0.log" "ebt.infer_samples must be at least 1" mpirun -np 1 "$bin" \
    eval --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 4 --think steps=2,samples=0 \
    --output "$tmp/bad-think.h5"
mpirun -np 1 "$bin" eval --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 2 \
    --output "$tmp/legacy-eval.h5" >/dev/null 2>&1
py -c "import h5py; del h5py.File('$tmp/legacy-eval.h5', 'r+').attrs['format']"  # as written before
check "--energies --force does not replace an eval result written before files carried format" \
    fails_with "$tmp/legacy.log" "is not a thinkscale-energies file" mpirun -np 1 "$bin" eval \
    --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 2 --output "$tmp/eval-l.h5" \
    --energies "$tmp/legacy-eval.h5" --force
check "--output and --energies naming one file are refused before evaluating" \
    fails_with "$tmp/same.log" "both name $tmp/same.h5" mpirun -np 1 "$bin" eval \
    --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 2 --output "$tmp/same.h5" \
    --energies "$tmp/same.h5"
check "--force does not replace a file that is not an energies file" \
    fails_with "$tmp/bad-energies.log" "is not a thinkscale-energies file" mpirun -np 1 "$bin" \
    eval --run "$tmp/trained" --data "$tmp/corpus.h5" --windows 4 --output "$tmp/eval-e.h5" \
    --energies "$tmp/corpus.h5" --force

tiny_train 1 "$bin" "$tmp/tpp" --set train.steps=2 >"$tmp/tpp.log" 2>&1
mpirun -np 1 "$bin" eval --run "$tmp/tpp" --data "$tmp/corpus.h5" --windows 4 \
    --energies "$tmp/no.h5" >"$tmp/tpp-eval.log" 2>&1
check "--energies on a Transformer++ checkpoint is refused" [ $? -ne 0 ]
check "... with a message" contains "$tmp/tpp-eval.log" "needs an EBT checkpoint"
check "... leaving no file behind" [ ! -e "$tmp/no.h5" ] && [ ! -e "$tmp/no.h5.tmp" ]
finish
