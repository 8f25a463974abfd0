#!/usr/bin/env bash
# thinkscale free-letters, reduced to CI size: two kappas, a tiny model and
# 20 steps on 2 ranks, so the pipeline and not the learning is under test
# (the statistic itself is unit-tested in test_free_letters.c on built lines;
# the full experiment is in docs/free-transformer.md). Checks the token file
# it writes, the layout of samples.h5 and of the text files, that lines of a
# shared-Z group share every latent while independent lines do not, that
# each group keeps its prompt, and recomputes the statistics from the stored
# lines with an independent parser. A second invocation resumes (trains
# nothing more) and reproduces the samples exactly.
source "$(dirname "$0")/lib.sh"
args=(--dir "$tmp/letters" --kappa-bits 0.125,8 --steps 20 --groups 3 --samples 4
      --train-lines 2000 --eval-lines 16 --set model.width=32 --set model.depth=2
      --set model.heads=2 --set train.batch=8 --set train.warmup=5)
mpirun -np 2 "$bin" free-letters "${args[@]}" >"$tmp/run1.log" 2>&1
check "free-letters runs on 2 ranks" [ $? -eq 0 ]
check "it prints the table" contains "$tmp/run1.log" "same position"
"$bin" data info "$tmp/letters/letters_seed1_2000.h5" >"$tmp/info.log" 2>&1
check "its token file is valid (data info)" [ $? -eq 0 ]

py - "$tmp/letters" <<'PY'
import sys, itertools, h5py, numpy as np
d = sys.argv[1]
f = h5py.File(f"{d}/samples.h5", "r")
assert set(f) == {"kappa_bits_0.125", "kappa_bits_8"}, set(f)
assert all(f[k].attrs["groups"] == 3 and f[k].attrs["samples_per_group"] == 4 for k in f)

def parse(letter, body):
    """Independent of the C parser: the valid run positions, by regular structure."""
    best, best_count = -1, 0
    for p in range(57):
        want = ["_"] * 64
        want[p:p + 8] = [letter] * 8
        if all(c == "!" or c == w for c, w in zip(body, want)):
            count = body[p:p + 8].count(letter)
            if count > best_count:
                best, best_count = p, count
    return best, {i for i, c in enumerate(body) if c == "!"}

for name, k in f.items():
    assert np.isfinite(k.attrs["prior_loss"]) and np.isfinite(k.attrs["posterior_loss_leaks"])
    assert k.attrs["kl_nats_per_token"] > 0
    for mode in ("shared", "independent"):
        m = k[mode]
        lines, latents = m["lines"][...], m["latents"][...]
        assert lines.shape == latents.shape == (3, 4, 66), (lines.shape, latents.shape)
        for g in range(3):
            same = all((latents[g, s] == latents[g, 0]).all() for s in range(4))
            assert same == (mode == "shared"), (name, mode, g)
            assert len({bytes(lines[g, s, :2]) for s in range(4)}) == 1  # the group's prompt
            assert chr(lines[g, 0, 1]) == ">" and "A" <= chr(lines[g, 0, 0]) <= "Z"
        valid, agree, distance, jaccard, pairs, clusters = [], 0.0, 0.0, 0.0, 0, []
        for g in range(3):
            before = (agree, distance, jaccard, pairs)
            parsed = []
            for s in range(4):
                text = bytes(lines[g, s]).decode("latin-1")
                pos, noise = parse(text[0], text[2:])
                assert pos == m["position"][g, s], (text, pos, m["position"][g, s])
                assert (pos >= 0) == bool(m["valid"][g, s])
                valid.append(pos >= 0)
                parsed.append((pos, noise))
            for (pa, na), (pb, nb) in itertools.combinations(parsed, 2):
                if pa < 0 or pb < 0:
                    continue
                pairs += 1
                agree += pa == pb
                distance += abs(int(pa) - int(pb))
                jaccard += len(na & nb) / len(na | nb) if na | nb else 1.0
            sums = (agree - before[0], distance - before[1], jaccard - before[2], pairs - before[3])
            if sums[3]:
                clusters.append(sums)
        assert abs(m.attrs["valid_fraction"] - np.mean(valid)) < 1e-12
        assert m.attrs["valid_pairs"] == pairs
        if pairs:
            assert abs(m.attrs["position_agreement"] - agree / pairs) < 1e-12
            assert abs(m.attrs["noise_jaccard"] - jaccard / pairs) < 1e-12
            for stat, total, col in (("position_agreement", agree, 0), ("position_distance", distance, 1),
                                     ("noise_jaccard", jaccard, 2)):
                mean, n = total / pairs, len(clusters)
                assert abs(m.attrs[stat] - mean) < 1e-12, (stat, m.attrs[stat], mean)
                se = (np.sqrt(n / (n - 1) * sum((c[col] - mean * c[3]) ** 2 for c in clusters)) / pairs
                      if n >= 2 else np.nan)
                got = m.attrs[stat + "_se"]
                assert (np.isnan(se) and np.isnan(got)) or abs(got - se) < 1e-12, (stat, got, se)
        else:
            assert np.isnan(m.attrs["position_agreement"])
        print(f"{name} {mode}: valid {np.mean(valid):.2f}, {pairs} valid pairs")
    config = h5py.File(f"{d}/{name}/metrics.h5", "r").attrs["config"]
    config = config.decode() if isinstance(config, bytes) else config
    assert "align = 67" in config  # one line per training sequence, as in the paper
    text = open(f"{d}/samples_{name}.txt").read().splitlines()
    body = [l for l in text if l and not l.startswith("#")]
    assert len(body) == 2 * 3 * 4 and all(len(l) == 66 for l in body)
PY
check "samples.h5 and text: layout, shared latents, prompts, statistics recomputed" [ $? -eq 0 ]

cp "$tmp/letters/samples.h5" "$tmp/first.h5"
mpirun -np 2 "$bin" free-letters "${args[@]}" >"$tmp/run2.log" 2>&1
check "a second invocation succeeds" [ $? -eq 0 ]
check "it resumes instead of training again" bash -c "! grep -q '^step ' '$tmp/run2.log'"
py - "$tmp/first.h5" "$tmp/letters/samples.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for k in a:
    for mode in ("shared", "independent"):
        assert (a[k][mode]["lines"][...] == b[k][mode]["lines"][...]).all()
PY
check "and reproduces the samples" [ $? -eq 0 ]

# Sampling one kappa again, with other settings, keeps the other kappa's samples.
cp "$tmp/letters/samples.h5" "$tmp/second.h5"
mpirun -np 2 "$bin" free-letters "${args[@]}" --kappa-bits 8 --groups 2 >"$tmp/run3.log" 2>&1
check "sampling one kappa again succeeds" [ $? -eq 0 ]
py - "$tmp/second.h5" "$tmp/letters/samples.h5" <<'PY'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert set(b) == {"kappa_bits_0.125", "kappa_bits_8"}, set(b)
kept, new = b["kappa_bits_0.125"], b["kappa_bits_8"]
assert kept.attrs["groups"] == 3 and new.attrs["groups"] == 2
assert new["shared/lines"].shape == (2, 4, 66), new["shared/lines"].shape
for mode in ("shared", "independent"):
    assert (a["kappa_bits_0.125"][mode]["lines"][...] == kept[mode]["lines"][...]).all()
    assert a["kappa_bits_0.125"][mode].attrs["valid_fraction"] == kept[mode].attrs["valid_fraction"]
PY
check "... and keeps the other kappa's samples in samples.h5" [ $? -eq 0 ]
printf 'not hdf5' >"$tmp/letters/samples.h5"
mpirun -np 2 "$bin" free-letters "${args[@]}" --kappa-bits 8 >"$tmp/run4.log" 2>&1
check "a damaged samples.h5 stops the command" [ $? -ne 0 ]
check "... with a message naming it" contains "$tmp/run4.log" "cannot read the existing '.*samples.h5'"
check "... and is left as it was" [ "$(cat "$tmp/letters/samples.h5")" = "not hdf5" ]
finish
