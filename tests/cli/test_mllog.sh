#!/usr/bin/env bash
# MLPerf-style ":::MLLOG {json}" lines (docs/slurm.md): every line rank 0
# prints or appends to RUN_DIR/mllog.txt is one JSON object with the MLPerf
# fields, intervals open and close in order (init, then run, blocks and
# evaluations inside the run), the submission, system and hyperparameter
# keys come before run_start with the configured values, and run_stop says
# "success" for a run that completed, "aborted" (with the exit status) for
# one that failed (a NaN loss) or was stopped by a signal. A resumed run
# appends a second block; `thinkscale eval` prints its own evaluation
# interval.
source "$(dirname "$0")/lib.sh"
make_license_corpus "$tmp/corpus.h5"

# check_mllog FILE KIND [KEY=VALUE ...]: KIND is success, aborted, init_failed
# (no run started) or eval; the expected values of POINT_IN_TIME keys follow.
# A file of training blocks (mllog.txt after a resume) has each block checked.
check_mllog() {
    py - "$@" <<'PY'
import json, sys
path, kind, expected = sys.argv[1], sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:])
lines = [l.rstrip("\n") for l in open(path) if l.startswith(":::MLLOG")]
assert lines, "no :::MLLOG line in " + path
events = []
for l in lines:
    e = json.loads(l[len(":::MLLOG "):])
    assert set(e) == {"namespace", "time_ms", "event_type", "key", "value", "metadata"}, e
    assert isinstance(e["time_ms"], int) and e["time_ms"] > 1.5e12, e
    assert isinstance(e["metadata"]["file"], str) and isinstance(e["metadata"]["lineno"], int), e
    want = ("INTERVAL_START" if e["key"].endswith("_start") else
            "INTERVAL_END" if e["key"].endswith("_stop") else "POINT_IN_TIME")
    assert e["event_type"] == want, e
    events.append(e)
assert [e["time_ms"] for e in events] == sorted(e["time_ms"] for e in events), "time goes back"

def intervals(block):
    """Start/stop pairs alternate and nest: init, then run around blocks and evaluations."""
    open_ = []
    for e in block:
        name = e["key"].rsplit("_", 1)[0]
        if e["event_type"] == "INTERVAL_START":
            assert name not in open_, f"{name} started twice"
            assert name not in ("block", "eval") or open_[-1:] == ["run"] or kind == "eval", \
                f"{name} outside run_start..run_stop (open: {open_})"
            assert name != "run" or not open_, f"run_start inside {open_}"
            open_.append(name)
        elif e["event_type"] == "INTERVAL_END":
            assert open_ and open_[-1] == name, f"{name}_stop while {open_} open"
            open_.pop()
        else:
            assert kind == "eval" or open_, f"{e['key']} outside every interval"
            if e["key"] == "eval_accuracy": assert open_[-1] == "eval", e
    assert not open_, f"left open: {open_}"

def keys(block): return [e["key"] for e in block]

if kind == "eval":
    intervals(events)
    assert keys(events)[0] == "eval_start" and keys(events)[-1] == "eval_stop", keys(events)
    assert keys(events).count("eval_accuracy") == 1 and "eval_loss" in keys(events), keys(events)
    sys.exit(0)

# Split into invocations: each begins with init_start.
blocks = []
for e in events:
    if e["key"] == "init_start": blocks.append([])
    assert blocks, "the first line is not init_start"
    blocks[-1].append(e)
for n, block in enumerate(blocks):
    k = keys(block)
    last = n == len(blocks) - 1
    if kind == "init_failed":
        assert k == ["init_start", "init_stop"], k
        assert block[-1]["metadata"]["status"] == "aborted", block[-1]
        continue
    intervals(block)
    order = [k.index(x) for x in ("init_start", "init_stop", "run_start", "run_stop")]
    assert order == sorted(order) and k[-1] == "run_stop", k
    before_run = set(k[:k.index("run_start")])
    required = {"submission_benchmark", "submission_division", "submission_org",
                "submission_platform", "submission_status", "number_of_nodes",
                "global_batch_size", "opt_base_learning_rate", "seed"}
    assert required <= before_run, required - before_run
    assert "train_samples" in k[k.index("run_start"):], k
    values = {e["key"]: e["value"] for e in block if e["event_type"] == "POINT_IN_TIME"}
    for key, value in expected.items():
        assert str(values[key]) == value, (key, values[key], value)
    stop = block[-1]["metadata"]
    status = "success" if not last else kind
    assert stop["status"] == status, (stop, status)
    assert (stop["exit_status"] == 0) == (status == "success"), stop
    assert values["train_samples"] == stop["samples_count"], (values["train_samples"], stop)
print(f"{path}: {len(lines)} lines, {len(blocks)} invocation(s), valid")
PY
}
mllog_of() { grep '^:::MLLOG' "$1"; }
checker_rejects() { ! check_mllog "$@" >/dev/null 2>&1; }

# A 2-rank run evaluating every 10 steps, stopped at step 20, then resumed.
run=(tiny_train 2 "$bin" "$tmp/run" --set train.eval_every=10 --set train.seed=7)
"${run[@]}" --set train.stop_at=20 >"$tmp/first.log" 2>&1
check "a run stopped at train.stop_at succeeds" [ $? -eq 0 ]
check "its log's MLLOG lines are valid, with the configured values" \
    check_mllog "$tmp/first.log" success global_batch_size=8 seed=7 number_of_nodes=1 \
    opt_base_learning_rate=0.003 train_samples=160 submission_benchmark=transformerpp
check "rank 0 alone writes them: one run_start" [ "$(grep -c '"key": "run_start"' "$tmp/first.log")" -eq 1 ]
check "mllog.txt holds the same lines as the log" \
    cmp <(mllog_of "$tmp/first.log") "$tmp/run/mllog.txt"
check "... with an evaluation at steps 10 and 20" \
    [ "$(grep '"key": "eval_accuracy"' "$tmp/run/mllog.txt" | grep -c '"step": [12]0[,}]')" -eq 2 ]

"${run[@]}" --resume >"$tmp/resumed.log" 2>&1
check "the resumed run completes" [ $? -eq 0 ]
check "its log's MLLOG lines are valid" check_mllog "$tmp/resumed.log" success train_samples=240
check "it starts at samples 160" contains "$tmp/resumed.log" '"run_start".*"samples_count": 160'
check "mllog.txt now holds both invocations, each valid" check_mllog "$tmp/run/mllog.txt" success
check "... two runs" [ "$(grep -c '"key": "run_stop"' "$tmp/run/mllog.txt")" -eq 2 ]

# A run that fails mid-way (a NaN loss, exit 3) is aborted.
tiny_train 2 "$bin" "$tmp/nan" --set train.optimizer=sgd --set train.lr=1e12 --set train.clip=0 \
    --set train.warmup=0 >"$tmp/nan.log" 2>&1
check "a NaN loss fails the run" [ $? -ne 0 ]
check "its run_stop says aborted" check_mllog "$tmp/nan.log" aborted
check "... with exit status 3" contains "$tmp/nan/mllog.txt" '"run_stop".*"status": "aborted", "exit_status": 3'

# A run stopped by SIGUSR1 (a Slurm time limit) checkpoints and exits 75:
# aborted, as far as this invocation goes.
mpirun -np 2 "$bin" train "$tmp/tiny.ini" --set run.dir="$tmp/signal" --set train.steps=100000 \
    --set train.log_every=1 >"$tmp/signal.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do grep -q '^step *5/' "$tmp/signal.log" && break; sleep 0.05; done
kill -USR1 "$pid"
wait "$pid"
check "a signalled run exits 75" [ $? -eq 75 ]
check "its run_stop says aborted" check_mllog "$tmp/signal.log" aborted
check "... with exit status 75" contains "$tmp/signal/mllog.txt" '"run_stop".*"status": "aborted", "exit_status": 75'

# A run that cannot start (missing data): init is closed as aborted, no run.
tiny_train 1 "$bin" "$tmp/nodata" --set data.train="$tmp/missing.h5" >"$tmp/nodata.log" 2>&1
check "a run without its data fails" [ $? -ne 0 ]
check "its init interval ends aborted and no run starts" check_mllog "$tmp/nodata.log" init_failed

# thinkscale eval: an evaluation interval with the checkpoint's step.
mpirun -np 2 "$bin" eval --run "$tmp/run" --data "$tmp/corpus.h5" --windows 16 \
    --output "$tmp/eval.h5" >"$tmp/eval.log" 2>&1
check "eval succeeds" [ $? -eq 0 ]
check "its MLLOG lines are valid" check_mllog "$tmp/eval.log" eval
check "... at the checkpoint's step" contains "$tmp/eval.log" '"eval_accuracy".*"step": 30[,}]'

# The checker itself rejects what it must: an unclosed run, bad JSON.
mllog_of "$tmp/first.log" | grep -v '"run_stop"' >"$tmp/unclosed.txt"
check "the checker rejects a run without run_stop" checker_rejects "$tmp/unclosed.txt" success
{ mllog_of "$tmp/first.log"; echo ':::MLLOG {"key": '; } >"$tmp/broken.txt"
check "the checker rejects a line that is not JSON" checker_rejects "$tmp/broken.txt" success
check "the checker rejects a wrong status" checker_rejects "$tmp/first.log" aborted
finish
