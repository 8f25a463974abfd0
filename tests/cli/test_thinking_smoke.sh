#!/usr/bin/env bash
# The thinking smoke campaign (jobs/campaigns/thinking-smoke.ini: 4 architectures, the 4 EBT
# ablations, the subword row) end to end on 2 ranks, on the test corpora: every run trained and
# evaluated at every knob level into its thinking.h5, results.h5 pointing at them,
# analysis/thinking.py's csv files (columns, finite values, NFEs and FLOPs growing with the knob,
# the byte vs subword comparison) and figures, a rerun that skips everything, and a lost
# thinking.h5 re-evaluated without retraining. The subword row trains Transformer++ and EBT on a
# 400-piece SentencePiece model of the same corpus and evaluates them on the same sets in it.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
"$bin" data dyck --output "$tmp/dyck.h5" --train 400 --validation 200 --seed 5 >/dev/null
"$bin" data arith --output "$tmp/arith.h5" --train 400 --validation 200 --seed 5 >/dev/null
# The shipped file names the Brown corpus as the real-text OOD set; the test stands in C
# headers (present on every Debian system) so it needs no download.
cat /usr/include/*.h | head -c 200000 >"$tmp/code.txt"
"$bin" data convert --input "$tmp/code.txt" --output "$tmp/code.h5" --name code >/dev/null
# The subword row's data: a model trained on the corpus's train split, every set encoded with it.
mkdir "$tmp/spm"
"$bin" data convert --input "$tmp/licenses.txt" --output "$tmp/spm/corpus.h5" --name licenses \
    --spm-model "$tmp/spm/spm.model" --spm-vocab 400 >/dev/null
"$bin" data dyck --output "$tmp/spm/dyck.h5" --train 400 --validation 200 --seed 5 \
    --spm-model "$tmp/spm/spm.model" >/dev/null
"$bin" data arith --output "$tmp/spm/arith.h5" --train 400 --validation 200 --seed 5 \
    --spm-model "$tmp/spm/spm.model" >/dev/null
"$bin" data convert --input "$tmp/code.txt" --output "$tmp/spm/code.h5" --name code \
    --spm-model "$tmp/spm/spm.model" >/dev/null
check "the subword data is made" [ -s "$tmp/spm/corpus.h5" ] && [ -s "$tmp/spm/dyck.h5" ] && \
    [ -s "$tmp/spm/arith.h5" ] && [ -s "$tmp/spm/code.h5" ]
sed -e "s|^data = .*|data = $tmp/corpus.h5|" \
    -e "s|^eval = .*|eval = $tmp/dyck.h5, $tmp/arith.h5, $tmp/code.h5|" \
    -e "s|^data.train = .*|data.train = $tmp/spm/corpus.h5|" \
    -e "s|^data.eval = .*|data.eval = $tmp/spm/dyck.h5, $tmp/spm/arith.h5, $tmp/spm/code.h5|" \
    -e "s|^model.vocab_size = .*|model.vocab_size = 401|" \
    jobs/campaigns/thinking-smoke.ini >"$tmp/smoke.ini"

"$bin" campaign plan "$tmp/smoke.ini" >"$tmp/plan.log" 2>&1
check "plan succeeds" [ $? -eq 0 ]
check "plan lists 10 points: 4 architectures + 4 EBT ablations + 2 subword" contains "$tmp/plan.log" "10 points in 10 runs"
check "an ablation is its own point" contains "$tmp/plan.log" "ebt-thinking-no_langevin-s33"
check "the subword row is its own point" contains "$tmp/plan.log" "ebt-thinking-subword-s33"

dir=$tmp/campaign
run_campaign "thinking smoke campaign" "$tmp/smoke.ini" "$dir" 10
check "the thinking analysis ran" contains "$tmp/run.log" "thinking.py"

py - "$dir" <<'PY'
import csv, math, sys, h5py, numpy as np
d = sys.argv[1]
f = h5py.File(f"{d}/results.h5", "r")
p = f["points"]
s = lambda k: [v.decode() for v in p[k][...]]
assert set(s("axis")) == {"thinking"} and set(s("status")) == {"done"}, (s("axis"), s("status"))
files = s("thinking_file")
assert all(x == f"runs/{n}/thinking.h5" for x, n in zip(files, s("run"))), files
e = h5py.File(f"{d}/runs/ebt-thinking-base-s33/thinking.h5", "r")
assert sorted(e["sets"]) == ["arith", "code", "dyck", "licenses"], list(e["sets"])
assert len(e["sets/dyck"]) == 9, list(e["sets/dyck"])  # default + 4 steps x 2 samples
g = e["sets/dyck/ebt.infer_steps=8,ebt.infer_samples=4"]
assert g.attrs["nfe"] == 4 * (8 + 1), g.attrs["nfe"]
assert g["window_tokens"].shape == (8,) and g["window_tokens"][...].sum() == g.attrs["tokens"]
assert abs(g["window_loss"][...].sum() / g.attrs["tokens"] - g.attrs["loss"]) < 1e-6
assert g["window_answer_tokens"][...].sum() == g.attrs["answer_tokens"] > 0
# The subword run: trained and evaluated on the SentencePiece files, the same domains.
w = h5py.File(f"{d}/runs/ebt-thinking-subword-s33/thinking.h5", "r")
config = w.attrs["config"]
config = config.decode() if isinstance(config, bytes) else config
assert "vocab_size = 401" in config and "tokenizer = sentencepiece:" in config, config
assert "spm/corpus.h5" in config and "step_size = 5" in config, config
assert sorted(w["sets"]) == ["arith", "code", "dyck", "licenses"], list(w["sets"])
assert w["sets/dyck/default"].attrs["answer_tokens"] > 0

cols = "arch,set,knob,setting,ood,gain,gain_lo,gain_hi,nfe_per_token,flops_per_token,vocab".split(",")
rows = list(csv.DictReader(open(f"{d}/thinking.csv")))
assert list(rows[0].keys()) == cols, list(rows[0].keys())
# 4 sets x (1 + 5 x 9 + 5 + 4) settings, and the subword row's 4 sets x (1 + 9)
assert len(rows) == 4 * (1 + 5 * 9 + 5 + 4) + 4 * (1 + 9), len(rows)
for r in rows:
    for k in ("ood", "gain", "nfe_per_token", "flops_per_token"):
        assert math.isfinite(float(r[k])), (r, k)
    assert float(r["ood"]) > 0 and float(r["flops_per_token"]) > 0
    if r["setting"] == "default":
        assert float(r["gain"]) == 0, r
assert {r["arch"] for r in rows} == {"transformerpp", "ebt", "free", "nexus", "ebt/no_random_step_size",
                                     "ebt/no_random_steps", "ebt/no_langevin", "ebt/no_replay",
                                     "transformerpp/subword", "ebt/subword"}
assert {r["vocab"] for r in rows if r["arch"].endswith("/subword")} == {"sentencepiece:" + config.split("sentencepiece:")[1].split()[0] + " (401)"}
assert {r["vocab"] for r in rows if not r["arch"].endswith("/subword")} == {"byte (256)"}
assert {r["knob"] for r in rows} == {"none", "steps,samples", "K", "order"}
by = {(r["arch"], r["set"], r["setting"]): r for r in rows}
for arch, lo, hi in (("ebt", "steps=1,samples=1", "steps=8,samples=4"), ("free", "K=1", "K=64"),
                     ("nexus", "order=1", "order=3")):
    a, b = by[(arch, "dyck", lo)], by[(arch, "dyck", hi)]
    assert float(b["flops_per_token"]) > float(a["flops_per_token"]), (a, b)
    assert float(b["nfe_per_token"]) >= float(a["nfe_per_token"]), (a, b)
assert float(by[("ebt", "licenses", "default")]["ood"]) == 1.0
fits = list(csv.DictReader(open(f"{d}/thinking_fits.csv")))
assert list(fits[0].keys()) == ["arch", "slope", "slope_lo", "slope_hi", "n_sets", "vocab", "setting"]
assert len(fits) == 10 and all(int(x["n_sets"]) == 4 for x in fits), fits
by_setting = list(csv.DictReader(open(f"{d}/thinking_fits_by_setting.csv")))
assert list(by_setting[0].keys()) == list(fits[0].keys())
# every non-default knob level of every run with a knob, and the top level's
# line is the one in thinking_fits.csv
levels = {(r["arch"], r["setting"]) for r in rows if r["setting"] != "default"}
assert {(x["arch"], x["setting"]) for x in by_setting} == levels, by_setting
for x in fits:
    if x["setting"] != "default":
        assert [y for y in by_setting if (y["arch"], y["setting"]) == (x["arch"], x["setting"])][0]["slope"] == x["slope"], x
for x in fits:
    assert math.isfinite(float(x["slope"])), x
    assert float(x["slope_lo"]) <= float(x["slope"]) <= float(x["slope_hi"]), x
assert [x for x in fits if x["arch"] == "transformerpp"][0]["slope"] == "0"
assert [x for x in fits if x["arch"] == "transformerpp/subword"][0]["slope"] == "0"
energy = list(csv.DictReader(open(f"{d}/thinking_energy.csv")))
assert len(energy) == 6 * 4 and all(-1 <= float(x["spearman"]) <= 1 for x in energy), energy
vocab = list(csv.DictReader(open(f"{d}/thinking_vocab.csv")))
# Transformer++ and EBT, each in two vocabularies, 4 sets each
assert len(vocab) == 2 * 2 * 4, vocab
assert {(x["arch"], x["run"]) for x in vocab} == {("transformerpp", "transformerpp"), ("transformerpp", "transformerpp/subword"), ("ebt", "ebt"), ("ebt", "ebt/subword")}
assert all(math.isfinite(float(x["ood"])) and float(x["ood"]) > 0 for x in vocab), vocab
md = open(f"{d}/thinking.md").read()
assert "Vocabulary: byte (256), sentencepiece:" in md and "Table 2" in md, md
assert "## Byte vs subword vocabulary" in md, md
ablation = md.split("Table 2")[1].split("##")[0]
assert "subword" not in ablation, ablation  # another vocabulary is not an ablation
PY
check "results.h5, thinking.h5 and the analysis' csv files hold the documented rows" [ $? -eq 0 ]
sed -n '/^## Byte vs subword/,$p' "$dir/thinking.md" # for the log: the byte vs subword table
for fig in thinking_ood thinking_flops thinking_ablation; do
    check "figure $fig as PNG and PDF" [ -s "$dir/figures/$fig.png" ] && [ -s "$dir/figures/$fig.pdf" ]
done

# A rerun trains and evaluates nothing.
mpirun -np 2 "$bin" campaign run "$tmp/smoke.ini" --dir "$dir" --no-analysis >"$tmp/again.log" 2>&1
check "a rerun succeeds" [ $? -eq 0 ]
check "... skipping all 10 points" [ "$(grep -c 'complete, skipped' "$tmp/again.log")" = 10 ]
check "... without a thinking evaluation" [ "$(grep -c 'thinking evaluation' "$tmp/again.log")" = 0 ]

# A lost thinking.h5 makes its point pending; the next run evaluates it again without training.
rm "$dir/runs/nexus-thinking-base-s33/thinking.h5"
"$bin" campaign analyse "$tmp/smoke.ini" --dir "$dir" >"$tmp/analyse.log" 2>&1
check "campaign analyse then reports the point not done" contains "$tmp/analyse.log" "not done: nexus-thinking-base-s33 (pending)"
checkpoint=$(ls "$dir"/runs/nexus-thinking-base-s33/checkpoint_*.h5)
before=$(stat -c %Y "$checkpoint")
mpirun -np 2 "$bin" campaign run "$tmp/smoke.ini" --dir "$dir" --no-analysis >"$tmp/redo.log" 2>&1
check "the next run succeeds" [ $? -eq 0 ]
check "... evaluating only that point" [ "$(grep -c 'thinking evaluation' "$tmp/redo.log")" = 1 ]
check "... without training it again" [ "$(stat -c %Y "$checkpoint")" = "$before" ]
check "... and thinking.h5 is back" [ -s "$dir/runs/nexus-thinking-base-s33/thinking.h5" ]
finish
