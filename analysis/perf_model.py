#!/usr/bin/python3
"""Performance model of training: predicted step time and parallel efficiency
of ddp, zero1, zero2 and zero3 from 1 to 4096 ranks, fitted to what
bench/bench_scaling.sh measured here and checked against it
(docs/scaling-model.md).

usage: analysis/perf_model.py DIR [--cores N] [--element-bytes B] [--units U]
                              [--alpha-us A --beta-gbps G]

Reads DIR/scaling.csv, DIR/collectives_np*.csv, DIR/step_flops_{strong,weak}.csv;
writes DIR/perf_model_fit.csv (rate and alpha-beta per collective),
DIR/perf_model_predictions.csv (every row labelled "modelled"),
DIR/perf_model_check.csv (measured against modelled at the measured points)
and DIR/perf_model.md. --alpha-us/--beta-gbps replace the fitted network by
a cluster's (e.g. 2 us, 12.5 GB/s) for all collectives. --units: the model's
blocks + 1, the units zero2 reduces and zero3 gathers one by one (default 5,
the benchmark size's 4 blocks).

exit status: 0 done, 2 usage, 3 bad input (nothing written), 6 outputs not
written (the previous ones are left as they were)
"""
import argparse
import csv
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from thinkscale_analysis import perf_model as pm  # noqa: E402

EXIT_BAD_INPUT, EXIT_WRITE_FAILED = 3, 6


def parse_args(argv):
    p = argparse.ArgumentParser(prog="perf_model.py", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--cores", type=int, default=os.cpu_count(),
                   help="cores of the measuring machine: more ranks were oversubscribed")
    p.add_argument("--element-bytes", type=int, default=4, help="4 (float build) or 8")
    p.add_argument("--units", type=int, default=5,
                   help="blocks + 1: the units zero2 and zero3 reduce and gather one by one")
    p.add_argument("--alpha-us", type=float, help="latency per message step for a target cluster")
    p.add_argument("--beta-gbps", type=float, help="bandwidth in GB/s for a target cluster")
    a = p.parse_args(argv)
    if (a.alpha_us is None) != (a.beta_gbps is None):
        p.error("--alpha-us and --beta-gbps go together")
    if a.cores < 1 or a.element_bytes not in (4, 8):
        p.error("--cores must be positive, --element-bytes 4 or 8")
    return a


def csv_text(header, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def build(args):
    d = args.dir
    scaling = pm.read_rows(d / "scaling.csv", "scaling")
    flops = {m: pm.read_rows(d / f"step_flops_{m}.csv", "step_flops") for m in ("strong", "weak")}
    links = pm.fit_links(pm.load_collectives(d), args.cores)
    if args.alpha_us is not None:
        links = {c: pm.AlphaBeta(args.alpha_us * 1e-6, 1 / (args.beta_gbps * 1e9)) for c in links}
    params = int(flops["weak"][0]["params"])
    # The check replays the measured machine (ranks beyond its cores share
    # them); the predictions are for a cluster, a core per rank.
    replay = pm.StepModel(pm.fit_rate(scaling), args.cores, params, args.element_bytes, links,
                          args.units)
    model = pm.StepModel(replay.rate, 0, params, args.element_bytes, links, args.units)

    flops_at = {m: {int(r["ranks"]): float(r["flops_max_rank"]) for r in rows}
                for m, rows in flops.items()}
    predictions = []
    for strategy in pm.STRATEGIES:
        for mode in ("strong", "weak"):
            t1 = model.step_seconds(strategy, 1, flops_at[mode][1])[2]
            for ranks in sorted(flops_at[mode]):
                compute, comm, step = model.step_seconds(strategy, ranks, flops_at[mode][ranks])
                predictions.append([strategy, mode, ranks,
                                    f"{compute:.6g}", f"{comm:.6g}", f"{step:.6g}",
                                    f"{pm.efficiency(mode, t1, step, ranks):.4f}", "modelled"])
    check = []
    measured_t1 = {r["mode"]: float(r["step_seconds"]) for r in scaling if int(r["ranks"]) == 1}
    for r in scaling:
        mode, ranks = r["mode"], int(r["ranks"])
        if ranks not in flops_at[mode]:
            continue
        step = replay.step_seconds("ddp", ranks, flops_at[mode][ranks])[2]
        t1 = replay.step_seconds("ddp", 1, flops_at[mode][1])[2]
        measured = float(r["step_seconds"])
        check.append([mode, ranks, r["oversubscribed"], f"{measured:.6g}", f"{step:.6g}",
                      f"{(step - measured) / measured:+.3f}",
                      f"{pm.efficiency(mode, measured_t1[mode], measured, ranks):.4f}",
                      f"{pm.efficiency(mode, t1, step, ranks):.4f}"])
    fit = [["compute", "", "", f"{model.rate:.6g}", "", "", "FLOP/s per rank (1-rank runs)"]]
    for c, ab in links.items():
        fit.append([c, f"{ab.alpha * 1e6:.4g}", f"{1 / ab.beta / 1e9 if ab.beta else float('inf'):.4g}",
                    "", f"{ab.rms_rel_error:.3f}", ab.points,
                    "fitted" if args.alpha_us is None else "given (--alpha-us, --beta-gbps)"])
    return model, predictions, check, fit


def markdown(args, model, predictions, check, fit):
    lines = ["# Performance model (modelled unless marked measured)", "",
             f"Compute rate per rank {model.rate / 1e9:.2f} GFLOP/s (measured at 1 rank); "
             f"{model.params} parameters x {args.element_bytes} B per collective. "
             f"The check below replays this machine ({args.cores} cores: more ranks share "
             "them, rate x cores/ranks); the predictions assume a core per rank.", "",
             "| collective | alpha [us] | bandwidth [GB/s] | rms rel. error | points | source |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[4]} | {r[5]} | {r[6]} |" for r in fit[1:]]
    lines += ["", "## Measured against modelled (ddp, the trainer's strategy)", "",
              "| mode | ranks | oversubscribed | measured step [s] | modelled step [s] | rel. error "
              "| measured eff. | modelled eff. |", "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(x) for x in r) + " |" for r in check]
    lines += ["", "## Modelled efficiency", "",
              "| strategy | mode | " + " | ".join(str(n) for n in (1, 2, 8, 64, 512, 4096)) + " |",
              "|---|---|" + "---|" * 6]
    for strategy in pm.STRATEGIES:
        for mode in ("strong", "weak"):
            eff = {int(r[2]): r[6] for r in predictions if r[0] == strategy and r[1] == mode}
            lines.append(f"| {strategy} | {mode} | " +
                         " | ".join(eff.get(n, "-") for n in (1, 2, 8, 64, 512, 4096)) + " |")
    lines += ["", "All efficiencies in the last table are modelled (label `modelled` in "
              "perf_model_predictions.csv). Strong scaling keeps the global batch of the "
              "benchmark: beyond it, ranks idle.", ""]
    return "\n".join(lines)


def write_all(outputs):
    """Every file through a temporary one; on failure none is replaced."""
    written = []
    try:
        for path, text in outputs:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            written.append((tmp, path))
        for tmp, path in written:
            os.replace(tmp, path)
    except OSError as e:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise e


def main(argv):
    args = parse_args(argv)
    try:
        model, predictions, check, fit = build(args)
    except pm.ModelInputError as e:
        print(f"perf_model: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    d = args.dir
    outputs = [
        (d / "perf_model_fit.csv", csv_text(["what", "alpha_us", "bandwidth_gbps", "flops_per_s",
                                             "rms_rel_error", "points", "source"], fit)),
        (d / "perf_model_predictions.csv", csv_text(
            ["strategy", "mode", "ranks", "compute_s", "comm_s", "step_s",
             "efficiency", "label"], predictions)),
        (d / "perf_model_check.csv", csv_text(
            ["mode", "ranks", "oversubscribed", "measured_step_s", "modelled_step_s", "rel_error",
             "measured_efficiency", "modelled_efficiency"], check)),
        (d / "perf_model.md", markdown(args, model, predictions, check, fit)),
    ]
    try:
        write_all(outputs)
    except OSError as e:
        print(f"perf_model: error: cannot write the outputs in {d}: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"perf_model: wrote {', '.join(p.name for p, _ in outputs)} in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
