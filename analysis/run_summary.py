#!/usr/bin/python3
"""One-screen summary of a run directory: training throughput and MFU from
metrics.h5, checkpoint sizes, and the perplexity per domain from eval.h5 with
its OOD-ness (perplexity on the domain / perplexity on the training domain's
validation split, ../shared/specs/experiments.md section 2).

usage: analysis/run_summary.py RUN_DIR

Exit status: 0 printed; 1 RUN_DIR/metrics.h5 missing, or it or eval.h5 damaged
or not laid out as written by thinkscale (the file and the error named); 2 usage.
"""
import sys
from pathlib import Path

import h5py
import numpy as np


def main(run_dir: Path) -> int:
    metrics_path, eval_path = run_dir / "metrics.h5", run_dir / "eval.h5"
    if not metrics_path.exists():
        print(f"run_summary: error: {metrics_path} does not exist", file=sys.stderr)
        return 1
    try:
        return summarise(run_dir, metrics_path, eval_path)
    except BrokenPipeError:  # the reader went away (| head): not the files' fault
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError,
            StopIteration) as e:
        # a damaged file, or one missing a table or attribute thinkscale writes
        print(f"run_summary: error: {run_dir}: metrics.h5 or eval.h5 is damaged or incomplete "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return 1


def summarise(run_dir, metrics_path, eval_path):
    with h5py.File(metrics_path, "r") as m:
        train = m["train"]
        steps = train["step"][...]
        steady = slice(len(steps) // 10, None)  # skip warm-up steps (first-touch page faults)
        tokens_per_s = np.median(train["tokens_per_s"][steady])
        mfu = np.median(train["mfu"][steady])
        wall = train["wall_time"][-1]
        ranks = int(m.attrs.get("ranks", 0)) if "ranks" in m.attrs else None
        print(f"run              {run_dir}")
        print(f"steps            {steps[-1]} ({train['tokens'][-1]:.3g} tokens) in {wall:.1f} s")
        print(f"final train loss {train['loss'][-1]:.4f} nats/token")
        print(f"throughput       {tokens_per_s:,.0f} tokens/s (median), MFU {100 * mfu:.1f}%"
              + (f" on {ranks} ranks" if ranks else ""))
        if "checkpoint" in m and len(m["checkpoint/step"]):
            ck = m["checkpoint"]
            print(f"checkpoints      {len(ck['step'])} written, {ck['bytes'][-1] / 1e6:.2f} MB each, "
                  f"{np.median(ck['bandwidth']) / 1e6:.0f} MB/s median")
    if not eval_path.exists():
        return 0
    with h5py.File(eval_path, "r") as e:
        sets = e["sets"]
        settings = list(sets[next(iter(sets))])  # HDF5 orders names; "default" if alone
        table = {name: {st: sets[name][st].attrs["perplexity"] for st in sets[name]} for name in sets}
        config = e.attrs["config"]
        config = config.decode() if isinstance(config, bytes) else config
    train_domain = next((line.split("=", 1)[1].strip() for line in config.splitlines()
                         if line.startswith("train =")), "")
    base = settings[0]
    reference = next((row[base] for name, row in table.items() if name in train_domain), None)
    print()
    print("perplexity per domain and inference setting; OOD-ness = perplexity / perplexity on the")
    print(f"training domain, under setting '{base}'; change = perplexity relative to '{base}'")
    header = f"{'domain':<12} {'OOD-ness':>9}" + "".join(f" {st[:28]:>28}" for st in settings)
    print(header)
    for name, row in sorted(table.items(), key=lambda item: item[1][base]):
        ood = f"{row[base] / reference:9.2f}" if reference else f"{'-':>9}"
        cells = "".join(f" {row[st]:12.3f} ({100 * (row[st] / row[base] - 1):+6.2f}%)    "[:29]
                        for st in settings)
        print(f"{name:<12} {ood}{cells}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
