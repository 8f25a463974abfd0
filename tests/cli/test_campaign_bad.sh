#!/usr/bin/env bash
# Bad campaign files stop with a message naming the problem before anything
# runs, and never touch an existing campaign directory's results: an unknown
# run-configuration key, an empty axis, a duplicate point, a value giving an
# invalid model, a missing data file (plan still works there when the
# vocabulary is given), a bad --points selection.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"
good() { tiny_campaign /dev/stdout bad; }
good >"$tmp/good.ini"
dir=$tmp/campaign
mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis >"$tmp/good.log" 2>&1
check "the good campaign runs" [ $? -eq 0 ]
snapshot() { (cd "$dir" && find . -type f | sort | xargs sha256sum); }
before=$(snapshot)

bad_case() { # bad_case LABEL PATTERN: the campaign in $tmp/bad.ini must fail naming PATTERN
    check "$1: run refuses it" fails_with "$tmp/bad.log" "$2" \
        mpirun -np 2 "$bin" campaign run "$tmp/bad.ini" --dir "$dir"
    check "$1: nothing ran" [ "$(grep -c '^step ' "$tmp/bad.log")" = 0 ]
    check "$1: the directory is untouched" [ "$before" = "$(snapshot)" ]
}

good | sed 's/^train.steps = 4$/train.stepz = 4/' >"$tmp/bad.ini"
bad_case "unknown key" "bad.ini:.*\[base\] unknown configuration key 'train.stepz'"
check "unknown key: plan refuses it too" fails_with "$tmp/plan.log" "unknown configuration key" \
    "$bin" campaign plan "$tmp/bad.ini"

good | sed 's/^values = 8, 16, 32$/values =/' >"$tmp/bad.ini"
bad_case "empty axis" "axis width is empty"

good | sed 's/^values = 8, 16, 32$/values = 8, 16, 8/' >"$tmp/bad.ini"
bad_case "duplicate point" "'8' listed twice (a duplicate point)"

good | sed 's/^architectures = transformerpp$/architectures = transformerpp, transformerpp/' \
    >"$tmp/bad.ini"
bad_case "architecture listed twice" "'transformerpp' listed twice"

good | sed 's/^values = 8, 16, 32$/values = 8, 15/' >"$tmp/bad.ini"
bad_case "invalid model" "point transformerpp-width-15-s33 .*invalid model sizes.*width 15, heads 2"

tiny_campaign "$tmp/bad.ini" bad "[axis.depth]" "values = 1, 2"
bad_case "values of an axis not in axes" "\[axis.depth\] gives values for an axis that \[campaign\] axes does not list"

good | sed 's/^\[base\]$/[base]\nrun.dir = elsewhere/' >"$tmp/bad.ini"
bad_case "[base] run.dir" "\[base\] run.dir: the campaign sets it for every point (--dir)"
good | sed 's/^\[base\]$/[base]\ntrain.seed = 7/' >"$tmp/bad.ini"
bad_case "[base] train.seed" "\[base\] train.seed: the campaign sets it for every point (\[campaign\] seeds)"
tiny_campaign "$tmp/bad.ini" bad "[arch.transformerpp]" "data.train = $tmp/corpus.h5"
bad_case "[arch.NAME] data.train" "\[arch.transformerpp\] data.train: the campaign sets it"

good | sed "s|^data = .*|data = $tmp/nowhere.h5|" >"$tmp/bad.ini"
bad_case "missing data" "nowhere.h5' does not exist"
sed -i 's/^\[base\]$/[base]\nmodel.vocab_size = 256/' "$tmp/bad.ini"
"$bin" campaign plan "$tmp/bad.ini" >"$tmp/plan.log" 2>&1
check "missing data: plan works when model.vocab_size is given" [ $? -eq 0 ]
check "missing data: plan says the data is not here" contains "$tmp/plan.log" "not found here"
bad_case "missing data, vocabulary given" "nowhere.h5' does not exist: cannot run"

cp "$tmp/good.ini" "$tmp/bad.ini"
check "a selection matching nothing is refused" fails_with "$tmp/bad.log" \
    "'ebt-\*' matches no point" mpirun -np 2 "$bin" campaign run "$tmp/bad.ini" --dir "$dir" \
    --points 'ebt-*'
check "an index beyond the manifest is refused" fails_with "$tmp/bad.log" "points 0-2" \
    mpirun -np 2 "$bin" campaign run "$tmp/bad.ini" --dir "$dir" --points 0-5
check "after all that, the directory is untouched" [ "$before" = "$(snapshot)" ]

# A damaged manifest.tsv is named as damaged, with what to do.
cp "$dir/manifest.tsv" "$tmp/manifest.good"
head -c 100 "$tmp/manifest.good" >"$dir/manifest.tsv"
check "a manifest.tsv cut short is called damaged" fails_with "$tmp/manifest.log" \
    "manifest.tsv is damaged (it ends in the middle of a line: cut short): if .* remove the file" \
    mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis
head -n 2 "$tmp/manifest.good" >"$dir/manifest.tsv"
check "... one cut at a line end says what it may be" fails_with "$tmp/manifest.log" \
    "manifest.tsv stops after point 0 of this campaign's 3: a campaign of fewer points, or the file cut short" \
    mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis
: >"$dir/manifest.tsv"
check "... and an empty one" fails_with "$tmp/manifest.log" \
    "manifest.tsv is damaged (not a manifest this program wrote, or empty)" \
    mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis
rm "$dir/manifest.tsv"
mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis >"$tmp/manifest.log" 2>&1
check "... removed as it says, the rerun skips the complete runs" \
    [ "$(grep -c 'complete, skipped' "$tmp/manifest.log")" = 3 ]
check "... and writes the same manifest" cmp -s "$dir/manifest.tsv" "$tmp/manifest.good"
before=$(snapshot)

# A finished point whose metrics.h5 was damaged afterwards: the rerun names
# the file and what to do, counts the point failed (not pending, which no
# rerun would change), and leaves the run directory as it is.
run=$(ls -d "$dir"/runs/*-width-16-* | head -1)
name=${run##*/}
: >"$run/metrics.h5"
run_files() { (cd "$run" && sha256sum ./*); }
run_before=$(run_files)
check "a finished point's damaged metrics.h5 is named, with what to do" \
    fails_with "$tmp/damaged.log" "$run/metrics.h5 cannot be read as HDF5.*mv $run $run.damaged" \
    mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis
check "... the point is not reported as skipped" [ -z "$(grep "$name: complete, skipped" "$tmp/damaged.log")" ]
check "... results.h5 counts it failed, the others done" py - "$dir/results.h5" "$name" <<'PY'
import sys, h5py
t = h5py.File(sys.argv[1], "r")["points"]
text = lambda v: v.decode() if isinstance(v, bytes) else v
status = {text(n): text(s) for n, s in zip(t["name"][...], t["status"][...])}
print(status)
sys.exit(0 if status.pop(sys.argv[2]) == "failed" and set(status.values()) == {"done"} else 1)
PY
check "... and its run directory is as it was" [ "$run_before" = "$(run_files)" ]
mv "$run" "$run.damaged"
mpirun -np 2 "$bin" campaign run "$tmp/good.ini" --dir "$dir" --no-analysis >"$tmp/retrain.log" 2>&1
check "after the suggested mv, the rerun retrains the point" [ $? -eq 0 ]
finish
