#!/usr/bin/env bash
# The smoke campaign (jobs/campaigns/smoke.ini: 4 architectures x 6 axes) end
# to end on 2 ranks, on the test corpora: plan, manifest, every run, results.h5
# read back with h5py (rows, statuses, shared runs, finite losses per domain),
# the analysis' fits and figures and the allocation report, and a
# second `campaign run` that skips every point without touching a checkpoint.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
cat /usr/include/*.h | head -c 400000 >"$tmp/code.txt"
"$bin" data convert --input "$tmp/code.txt" --output "$tmp/code.h5" --name code >/dev/null
sed -e "s|^data = .*|data = $tmp/corpus.h5|" -e "s|^eval = .*|eval = $tmp/code.h5|" \
    jobs/campaigns/smoke.ini >"$tmp/smoke.ini"

"$bin" campaign plan "$tmp/smoke.ini" >"$tmp/plan.log" 2>&1
check "plan succeeds without mpirun" [ $? -eq 0 ]
check "plan lists 72 points in 48 runs" contains "$tmp/plan.log" "72 points in 48 runs"
check "plan has a total per architecture" [ "$(grep -c '^total ' "$tmp/plan.log")" = 5 ]
check "plan shows the flops axis reusing the params runs" \
    contains "$tmp/plan.log" "ebt-flops-p2-s33 .* ebt-params-p2-s33$"

dir=$tmp/campaign
run_campaign "smoke campaign" "$tmp/smoke.ini" "$dir" 72
check "the manifest has a header and 72 points" [ "$(wc -l <"$dir/manifest.tsv")" = 73 ]
check "48 run directories" [ "$(ls "$dir/runs" | wc -l)" = 48 ]

py - "$dir/results.h5" <<'PY'
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert f.attrs["format"] == "thinkscale-campaign-results" and f.attrs["version"] == 1
assert f.attrs["campaign"] == "smoke" and "[campaign]" in f.attrs["campaign_file"]
p = f["points"]
s = lambda k: [v.decode() for v in p[k][...]]
n = len(p["name"])
assert n == 72, n
for k in p:
    assert p[k].shape[0] == n, k
    assert "units" in p[k].attrs and "description" in p[k].attrs, k
assert set(s("status")) == {"done"}, set(s("status"))
assert set(s("verdict")) <= {"VALID", "INVALID"}
assert sorted(set(s("arch"))) == ["ebt", "free", "nexus", "transformerpp"]
assert sorted(set(s("axis"))) == ["batch", "data", "depth", "flops", "params", "width"]
assert np.all(np.isfinite(p["val_loss"][...])) and np.all(p["val_loss"][...] > 0)
assert np.allclose(p["val_ppl"][...], np.exp(p["val_loss"][...]))
lbd = p["loss_by_domain"][...]
domains = list(p["loss_by_domain"].attrs["domains"])
assert lbd.shape == (72, 2) and np.all(np.isfinite(lbd)), lbd.shape
assert [d if isinstance(d, str) else d.decode() for d in domains] == ["licenses", "code"], domains
assert np.array_equal(lbd[:, 0], p["val_loss"][...])
name, run, axis = s("name"), s("run"), s("axis")
x, flops = p["x"][...], p["flops"][...]
for i in range(n):
    if axis[i] == "flops":  # the params run of the same size, x = its executed FLOPs
        j = name.index(name[i].replace("-flops-", "-params-"))
        assert run[i] == run[j] == name[j] and x[i] == flops[j] > 0, (name[i], run[i])
        assert lbd[i, 0] == lbd[j, 0]
assert run[name.index("ebt-depth-2-s33")] == "ebt-data-6144-s33"  # the base point, shared
assert np.all(p["tokens"][...] == p["steps"][...] * p["batch"][...] * p["context"][...])
assert np.all(p["wall_seconds"][...] > 0) and np.all(p["ranks"][...] == 2)
print("results.h5: 72 rows, all done, finite losses on both domains")
PY
check "results.h5 holds every point with finite per-domain losses" [ $? -eq 0 ]

check "the analysis wrote fits.csv" [ -s "$dir/fits.csv" ]
check "the analysis wrote fits.md" [ -s "$dir/fits.md" ]
check "fits.csv has a row per architecture and axis" \
    [ "$(tail -n +2 "$dir/fits.csv" | wc -l)" -ge 24 ]
check "the figures are not empty" [ -s "$dir/figures/all_axes.png" ]
check "the allocation report is written" [ -s "$dir/allocation_report.md" -a -s "$dir/allocation_report.pdf" ]
check "... with every architecture's node-hours" \
    [ "$(grep -cE 'transformerpp|ebt|free|nexus' "$dir/allocation_report.md")" -ge 4 ]
check "the run says where the fits, figures and report are" \
    contains "$tmp/run.log" "figures.*allocation report"

sums=$(cat "$dir"/runs/*/checkpoint_*.h5 | sha256sum)
mpirun -np 2 "$bin" campaign run "$tmp/smoke.ini" --dir "$dir" --no-analysis >"$tmp/again.log" 2>&1
check "running the finished campaign again succeeds" [ $? -eq 0 ]
check "it skips every run" [ "$(grep -c 'complete, skipped' "$tmp/again.log")" = 48 ]
check "it trains nothing" [ "$(grep -c '^step ' "$tmp/again.log")" = 0 ]
check "no checkpoint changed" [ "$sums" = "$(cat "$dir"/runs/*/checkpoint_*.h5 | sha256sum)" ]
finish
