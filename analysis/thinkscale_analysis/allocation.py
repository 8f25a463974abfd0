"""The allocation report of a campaign (docs/allocation-report.md).

Gathers what an allocation request asks for -- machine and software, what was
run, node-hours, checkpoint sizes and bandwidth, restart capability, every
run's verdict, and optionally a target campaign's projected cost (a saved
`thinkscale campaign plan`) and the suite's own speedup/efficiency (the
perf model's CSVs) -- into Markdown and a PDF. Reading is separated from
writing: everything wrong with the input raises AllocationError before any
file is touched."""
import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import results

MD_NAME, PDF_NAME = "allocation_report.md", "allocation_report.pdf"

# Which tests prove restart capability; the report names them and nothing else.
RESTART_TESTS = (
    ("tests/cli/test_campaign_resume.sh",
     "a campaign stopped part-way resumes: finished points are skipped, the interrupted one "
     "continues from its checkpoint"),
    ("tests/cli/test_train_resume.sh",
     "a training run resumed from a checkpoint continues where it stopped"),
    ("tests/slurm/test_slurm_requeue.sh",
     "under a real Slurm, a task killed mid-way and requeued resumes its point"),
    ("tests/slurm/test_slurm_signal.sh",
     "SIGTERM/SIGUSR1 (a Slurm time limit) make every rank finish the step, checkpoint and "
     "exit with the status the job script requeues on"),
    ("tests/cli/test_resume_fallback.sh",
     "resume falls back to the newest checkpoint that verifies when the latest is damaged"),
)

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout this analysis belongs to
PLAN_TOTAL = re.compile(r"^(total(?: \S+)?)\s+(\d+) points\s+(\d+) runs\s+.*node-hours\s+(\S+)\s*$")
SCALING_CHECK = "perf_model_check.csv"
SCALING_PREDICTIONS = "perf_model_predictions.csv"
CHECK_COLUMNS = ("mode", "ranks", "oversubscribed", "measured_step_s", "modelled_step_s",
                 "measured_efficiency", "modelled_efficiency")
PREDICTION_COLUMNS = ("strategy", "mode", "ranks", "step_s", "efficiency")
CHECKPOINT_BENCH = "checkpoint_bench.csv"  # bench/bench_checkpoint.sh
CHECKPOINT_BENCH_MACHINE = "checkpoint_bench_machine.txt"  # host and load while it ran
CHECKPOINT_BENCH_COLUMNS = ("ranks", "width", "depth", "parameters", "file_bytes",
                            "write_seconds", "write_bandwidth_bytes_per_second", "read_seconds",
                            "read_bandwidth_bytes_per_second", "read_cache")
TEXT_COLUMNS = ("mode", "strategy", "read_cache")
PROJECTED_RANKS = (1, 2, 8, 64, 512, 4096)


class AllocationError(Exception):
    """An input of the report is missing, unreadable or malformed."""


@dataclass
class Point:
    name: str
    arch: str
    axis: str
    run: str
    status: str
    verdict: str
    ranks: float
    nodes: float
    wall_seconds: float
    node_hours: float
    run_dir: str


@dataclass
class RunReport:
    run: str
    path: Path
    data: dict = None  # parsed report.yaml, None if missing or unreadable
    problem: str = ""  # why data is None


@dataclass
class Plan:
    source: Path
    header: list  # the "campaign ..." and "node rate: ..." lines
    totals: list  # (label, points, runs, node_hours)


@dataclass
class Scaling:
    source: Path
    check: list  # dicts with CHECK_COLUMNS
    predictions: list  # dicts with PREDICTION_COLUMNS


@dataclass
class CheckpointBench:
    source: Path
    rows: list  # dicts with CHECKPOINT_BENCH_COLUMNS
    machine: list = field(default_factory=list)  # lines of checkpoint_bench_machine.txt, if any


@dataclass
class Report:
    campaign_dir: Path
    name: str
    commit: str
    updated: str
    points: list
    runs: dict  # run name -> RunReport (done runs only)
    software: dict
    plan: Plan = None
    scaling: Scaling = None
    checkpoint_bench: CheckpointBench = None
    notes: list = field(default_factory=list)


# ---------------------------------------------------------------- reading


def _optional_numbers(path, names, n):
    """Columns of the contract that results.load does not need; NaN if absent."""
    out = {}
    with h5py.File(path, "r") as f:
        points = f["points"]
        for name in names:
            if name in points and points[name].shape == (n,) and points[name].dtype.kind in "fiu":
                out[name] = points[name][()].astype(np.float64)
            else:
                out[name] = np.full(n, np.nan)
    return out


def _text_attr(path, name):
    with h5py.File(path, "r") as f:
        value = f.attrs.get(name, "")
    return results._text(value) if value is not None else ""


def load_points(campaign_dir):
    path = Path(campaign_dir) / "results.h5"
    try:
        campaign = results.load(path)
        extra = _optional_numbers(path, ("ranks", "nodes", "wall_seconds", "node_hours"),
                                  campaign.n_points)
        updated = _text_attr(path, "updated")
    except results.ResultsError as e:
        raise AllocationError(str(e)) from None
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise AllocationError(f"{path} is damaged or unreadable: {e}") from None
    c = campaign.columns
    run_dirs = c.get("run_dir")
    points = []
    for i in range(campaign.n_points):
        run_dir = run_dirs[i] if run_dirs is not None and run_dirs[i] else f"runs/{c['run'][i]}"
        points.append(Point(name=c["name"][i], arch=c["arch"][i], axis=c["axis"][i],
                            run=c["run"][i], status=c["status"][i], verdict=c["verdict"][i],
                            ranks=extra["ranks"][i], nodes=extra["nodes"][i],
                            wall_seconds=extra["wall_seconds"][i],
                            node_hours=extra["node_hours"][i], run_dir=run_dir))
    return campaign, points, updated


def read_run_report(campaign_dir, run, run_dir):
    import yaml  # Debian's python3-yaml; only needed here

    path = Path(campaign_dir) / run_dir / "report.yaml"
    rep = RunReport(run=run, path=path)
    if not path.is_file():
        rep.problem = "report.yaml missing"
        return rep
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        rep.problem = f"report.yaml unreadable: {str(e).splitlines()[0]}"
        return rep
    if not isinstance(data, dict):
        rep.problem = "report.yaml is not a mapping"
        return rep
    rep.data = data
    return rep


def _get(data, *keys):
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return data


def read_software(campaign_dir, points, runs):
    """Host and versions from the first done run's report.yaml and metrics.h5."""
    info = {}
    for p in points:
        rep = runs.get(p.run)
        if p.status != "done" or rep is None or rep.data is None:
            continue
        machine = rep.data.get("machine") or {}
        for key in ("hostname", "threads_per_rank", "gemm_peak_gflops_per_rank",
                    "gemm_peak_source"):
            if key in machine:
                info[key] = machine[key]
        metrics = Path(campaign_dir) / p.run_dir / "metrics.h5"
        try:
            with h5py.File(metrics, "r") as f:
                for key in ("compiler", "hdf5_version", "mpi_library", "element_type"):
                    if key in f.attrs:
                        info[key] = results._text(f.attrs[key])
        except (OSError, KeyError, ValueError):
            info["metrics_note"] = f"{metrics} not readable: versions of compiler/HDF5/MPI unknown"
        info["source_run"] = p.run
        break
    commits = sorted({str(_get(r.data, "machine", "git_commit")) for r in runs.values()
                      if r.data is not None and _get(r.data, "machine", "git_commit")})
    info["run_commits"] = commits
    return info


def _peak_text(software):
    """The GEMM peak behind every MFU, and whether the run measured it or was
    given it (train.gemm_peak_gflops; reports before that key say neither)."""
    peak = software.get("gemm_peak_gflops_per_rank", "n/a")
    source = software.get("gemm_peak_source")
    return f"{peak} ({source})" if source else peak


def parse_plan(path):
    """The header and the "total" lines of a saved `thinkscale campaign plan`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AllocationError(f"--plan {path} cannot be read: {e}") from None
    header, totals = [], []
    for line in text.splitlines():
        if line.startswith("campaign ") or line.startswith("node rate:"):
            header.append(line.strip())
        m = PLAN_TOTAL.match(line.strip())
        if m:
            try:
                hours = float(m.group(4))
            except ValueError:
                raise AllocationError(f"--plan {path}: node-hours '{m.group(4)}' in "
                                      f"'{line.strip()}' is not a number") from None
            totals.append((m.group(1), int(m.group(2)), int(m.group(3)), hours))
    if not any(label == "total" for label, *_ in totals):
        raise AllocationError(f"--plan {path} has no 'total ... node-hours N' line: "
                              "is it the output of `thinkscale campaign plan`?")
    return Plan(source=path, header=header, totals=totals)


def _read_csv(path, columns, option="--scaling"):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise AllocationError(f"{option}: {path} cannot be read: {e}") from None
    if not rows:
        raise AllocationError(f"{option}: {path} has no rows")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise AllocationError(f"{option}: {path} lacks column(s) {', '.join(missing)}")
    out = []
    for i, r in enumerate(rows, start=2):
        row = {}
        for c in columns:
            if c in TEXT_COLUMNS:
                row[c] = r[c]
                continue
            try:
                row[c] = float(r[c])
            except (TypeError, ValueError):
                raise AllocationError(f"{option}: {path} line {i}: {c} '{r[c]}' is not a number") \
                    from None
        out.append(row)
    return out


def read_scaling(scaling_dir):
    """perf_model.py's outputs (docs/scaling-model.md): measured and modelled at the
    measured rank counts, and the modelled projection."""
    d = Path(scaling_dir)
    if not d.is_dir():
        raise AllocationError(f"--scaling {d} is not a directory")
    return Scaling(source=d, check=_read_csv(d / SCALING_CHECK, CHECK_COLUMNS),
                   predictions=_read_csv(d / SCALING_PREDICTIONS, PREDICTION_COLUMNS))


def read_checkpoint_bench(bench_dir):
    """bench/bench_checkpoint.sh's table: write and (cold) read bandwidth of
    checkpoints written and restored through the training path, by size."""
    d = Path(bench_dir)
    if not d.is_dir():
        raise AllocationError(f"--checkpoints {d} is not a directory")
    rows = _read_csv(d / CHECKPOINT_BENCH, CHECKPOINT_BENCH_COLUMNS, "--checkpoints")
    for i, r in enumerate(rows, start=2):
        if not (r["file_bytes"] > 0 and r["write_seconds"] > 0 and r["read_seconds"] > 0):  # NaN too
            raise AllocationError(f"--checkpoints: {d / CHECKPOINT_BENCH} line {i}: sizes and "
                                  "times must be positive")
    machine_file = d / CHECKPOINT_BENCH_MACHINE
    try:
        machine = machine_file.read_text(encoding="utf-8").splitlines() if machine_file.is_file() \
            else []
    except (OSError, UnicodeDecodeError) as e:
        raise AllocationError(f"--checkpoints: {machine_file} cannot be read: {e}") from None
    return CheckpointBench(source=d, rows=rows, machine=[m.strip() for m in machine if m.strip()])


def gather(campaign_dir, plan_path=None, scaling_dir=None, checkpoint_dir=None):
    campaign_dir = Path(campaign_dir)
    if not campaign_dir.is_dir():
        raise AllocationError(f"{campaign_dir} is not a directory")
    campaign, points, updated = load_points(campaign_dir)
    runs = {}
    for p in points:
        if p.status == "done" and p.run not in runs:
            runs[p.run] = read_run_report(campaign_dir, p.run, p.run_dir)
    report = Report(campaign_dir=campaign_dir, name=campaign.name, commit=campaign.commit,
                    updated=updated, points=points, runs=runs,
                    software=read_software(campaign_dir, points, runs))
    if plan_path is not None:
        report.plan = parse_plan(plan_path)
    if scaling_dir is not None:
        report.scaling = read_scaling(scaling_dir)
    if checkpoint_dir is not None:
        report.checkpoint_bench = read_checkpoint_bench(checkpoint_dir)
    return report


# ---------------------------------------------------------------- summarising


def node_hours_by_arch(points):
    """arch -> (done runs, node-hours, wall hours), each run counted once (the
    flops axis reuses the params runs); plus the same over all architectures."""
    seen, per_arch = set(), {}
    for p in points:
        per_arch.setdefault(p.arch, [0, 0.0, 0.0])
        if p.status != "done" or p.run in seen or not math.isfinite(p.node_hours):
            continue
        seen.add(p.run)
        entry = per_arch[p.arch]
        entry[0] += 1
        entry[1] += p.node_hours
        entry[2] += p.wall_seconds / 3600.0 if math.isfinite(p.wall_seconds) else 0.0
    total = [sum(v[0] for v in per_arch.values()), sum(v[1] for v in per_arch.values()),
             sum(v[2] for v in per_arch.values())]
    return {a: tuple(v) for a, v in per_arch.items()}, tuple(total)


def checkpoint_rows(report):
    """(run, size, write bandwidth, read bandwidth, problem) per done run. The
    read is the restore at the start of the run's last invocation: None when
    that invocation started from step 0 (read_bytes 0) or the report predates
    the read fields."""
    rows = []
    for run, rep in report.runs.items():
        size = _get(rep.data, "checkpoint", "bytes")
        bw = _get(rep.data, "checkpoint", "write_bandwidth_bytes_per_second")
        read_bytes = _get(rep.data, "checkpoint", "read_bytes")
        read_bw = _get(rep.data, "checkpoint", "read_bandwidth_bytes_per_second")
        try:
            restored = read_bytes is not None and float(read_bytes) > 0
        except (TypeError, ValueError):
            restored = False
        rows.append((run, size, bw, read_bw if restored else None, rep.problem))
    return rows


def _num(value, fmt):
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return fmt.format(v) if math.isfinite(v) else "n/a"


def _counts(points):
    table = {}
    for p in points:
        row = table.setdefault((p.arch, p.axis), {"done": 0, "pending": 0, "failed": 0})
        row[p.status] = row.get(p.status, 0) + 1
    archs = results.ordered([k[0] for k in table], results.ARCHS)
    axes = results.ordered([k[1] for k in table], results.AXES)
    return [(a, x, table[(a, x)]) for a in archs for x in axes if (a, x) in table]


def not_done(points):
    return [p for p in points if p.status != "done"]


def markdown(report):
    pts = report.points
    pending = not_done(pts)
    lines = [f"# Allocation report: campaign {report.name or '(unnamed)'}", "",
             f"From `{report.campaign_dir / 'results.h5'}` (written {report.updated or 'n/a'}).", ""]
    if pending:
        lines += [f"**PARTIAL campaign: {len(pending)} of {len(pts)} points are not done** "
                  "(listed under \"Points not done\"); the totals cover the done points only.", ""]
    else:
        lines += [f"Complete: all {len(pts)} points are done.", ""]

    sw = report.software
    lines += ["## Machine and software", "", "| item | value |", "|---|---|"]
    done = [p for p in pts if p.status == "done"]
    ranks = sorted({int(p.ranks) for p in done if math.isfinite(p.ranks)})
    nodes = sorted({int(p.nodes) for p in done if math.isfinite(p.nodes)})
    for label, value in (("hostname", sw.get("hostname", "n/a")),
                         ("nodes per run", ", ".join(map(str, nodes)) or "n/a"),
                         ("MPI ranks per run", ", ".join(map(str, ranks)) or "n/a"),
                         ("threads per rank", sw.get("threads_per_rank", "n/a")),
                         ("GEMM peak per rank (GFLOP/s)", _peak_text(sw)),
                         ("element type", sw.get("element_type", "n/a")),
                         ("compiler", sw.get("compiler", "n/a")),
                         ("HDF5", sw.get("hdf5_version", "n/a")),
                         ("MPI library", sw.get("mpi_library", "n/a")),
                         ("commit (results.h5)", report.commit or "n/a"),
                         ("commits of the runs", ", ".join(sw.get("run_commits", [])) or "n/a")):
        lines.append(f"| {label} | {value} |")
    if "source_run" in sw:
        lines += ["", f"Host and versions as recorded by run `{sw['source_run']}` "
                  "(report.yaml and metrics.h5 provenance)."]
    if "metrics_note" in sw:
        lines += ["", sw["metrics_note"]]
    lines.append("")

    lines += ["## What was run", "", "| architecture | axis | points | done | pending | failed |",
              "|---|---|---|---|---|---|"]
    for arch, axis, n in _counts(pts):
        lines.append(f"| {arch} | {axis} | {sum(n.values())} | {n.get('done', 0)} | "
                     f"{n.get('pending', 0)} | {n.get('failed', 0)} |")
    lines.append("")

    per_arch, total = node_hours_by_arch(pts)
    lines += ["## Node-hours", "", "Per point (from results.h5 `node_hours` = wall_seconds x nodes "
              "/ 3600). Points that share a run (the flops axis reuses the params runs) show the "
              "run's hours on each row; the sums count every run once.", "",
              "| point | arch | axis | status | ranks | nodes | wall s | node-hours | run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in pts:
        lines.append(f"| {p.name} | {p.arch} | {p.axis} | {p.status} | {_num(p.ranks, '{:.0f}')} | "
                     f"{_num(p.nodes, '{:.0f}')} | {_num(p.wall_seconds, '{:.1f}')} | "
                     f"{_num(p.node_hours, '{:.6f}')} | {p.run} |")
    lines += ["", "| architecture | runs done | node-hours | wall hours |", "|---|---|---|---|"]
    for arch in results.ordered(per_arch, results.ARCHS):
        runs_done, hours, wall = per_arch[arch]
        lines.append(f"| {arch} | {runs_done} | {hours:.6f} | {wall:.4f} |")
    lines.append(f"| **total** | {total[0]} | {total[1]:.6f} | {total[2]:.4f} |")
    lines.append("")

    lines += ["## Checkpoints and I/O", "", "From each done run's report.yaml: `checkpoint.bytes` "
              "and `checkpoint.write_bandwidth_bytes_per_second` of the last checkpoint written, "
              "`checkpoint.read_bandwidth_bytes_per_second` of the restore at the start of the "
              "run's last invocation (n/a when that invocation started from step 0, as most do). "
              "Both are file bytes over the slowest rank's HDF5 time.", "",
              "| run | checkpoint MB | write MB/s | read MB/s | note |", "|---|---|---|---|---|"]
    ck = checkpoint_rows(report)
    for run, size, bw, read_bw, problem in ck:
        lines.append(f"| {run} | {_mb(size, '{:.3f}')} | {_mb(bw, '{:.1f}')} | "
                     f"{_mb(read_bw, '{:.1f}')} | {problem} |")
    sizes = [float(s) for _, s, _, _, _ in ck if s is not None]
    bws = [float(b) for _, _, b, _, _ in ck if b is not None]
    reads = [float(r) for _, _, _, r, _ in ck if r is not None]
    if sizes and bws:
        lines += ["", f"Checkpoint size: {min(sizes) / 1e6:.3f} .. {max(sizes) / 1e6:.3f} MB over "
                  f"{len(sizes)} runs; write bandwidth {min(bws) / 1e6:.1f} .. "
                  f"{max(bws) / 1e6:.1f} MB/s (median {np.median(bws) / 1e6:.1f}); read bandwidth "
                  + (f"{min(reads) / 1e6:.1f} .. {max(reads) / 1e6:.1f} MB/s over the {len(reads)} "
                     "runs whose last invocation resumed." if reads else
                     "not measured by any run (no last invocation resumed).")]
    lines += [""] + checkpoint_bench_markdown(report.checkpoint_bench) + [""]

    lines += ["## Restart capability as tested", "",
              "Checkpoint/restart exists. These tests of `make test` prove it (what each "
              "one checks):", ""]
    for test, what in RESTART_TESTS:
        absent = "" if (SOURCE_ROOT / test).is_file() else " (NOT in this source tree)"
        lines.append(f"- `{test}`{absent}: {what}.")
    lines += ["", "This report does not run them; it names them. Their results are those of the "
              "`make test` run of the commit above.", ""]

    lines += ["## Verdicts", "", "| point | status | verdict | reason |", "|---|---|---|---|"]
    for p in pts:
        rep = report.runs.get(p.run) if p.status == "done" else None
        reason = ""
        if rep is not None:
            reason = _get(rep.data, "validation", "reason") or rep.problem
        verdict = p.verdict or ("-" if p.status != "done" else "(none recorded)")
        lines.append(f"| {p.name} | {p.status} | {verdict} | {reason} |")
    lines.append("")

    lines += ["## Points not done", ""]
    if pending:
        lines += [f"- {p.name} ({p.arch}/{p.axis}): {p.status}" for p in pending]
    else:
        lines.append("None.")
    lines.append("")

    lines += ["## Projected target campaign", ""]
    if report.plan is None:
        lines += ["Not included: pass `--plan FILE` with the saved output of "
                  "`thinkscale campaign plan TARGET.ini`.", ""]
    else:
        lines += [f"From `{report.plan.source}`:", ""]
        lines += [f"    {h}" for h in report.plan.header]
        lines += ["", "| scope | points | runs | projected node-hours |", "|---|---|---|---|"]
        lines += [f"| {label} | {pn} | {rn} | {hours:.4g} |"
                  for label, pn, rn, hours in report.plan.totals]
        lines += ["", "Projected: executed FLOPs of each run divided by the node rate the plan "
                  "states; not measured.", ""]

    lines += ["## Speedup and efficiency of the suite", ""]
    if report.scaling is None:
        lines += ["Not included: pass `--scaling DIR` with the outputs of "
                  "`analysis/perf_model.py DIR` (docs/scaling-model.md).", ""]
    else:
        lines += scaling_markdown(report.scaling)
    return "\n".join(lines) + "\n"


def _mb(value, fmt):
    return _num(None if value is None else float(value) / 1e6, fmt)


def checkpoint_bench_markdown(bench):
    if bench is None:
        return ["Checkpoint bandwidth by size is not included: pass `--checkpoints DIR` with the "
                "output of `bench/bench_checkpoint.sh` (docs/allocation-report.md)."]
    lines = [f"### Checkpoint write and read by size (`{bench.source / CHECKPOINT_BENCH}`)", "",
             "Written and restored through the training path (`bench/bench_checkpoint.sh`: one "
             "step, a checkpoint, `--resume`; parameters and both AdamW moments). `cold`: the "
             "page cache was dropped before the read, so it came from the disk."
             + (" Machine while it ran: " + "; ".join(bench.machine) + "." if bench.machine
                else ""), "",
             "| ranks | model (D x L) | parameters | file MB | write MB/s | read MB/s | read |",
             "|---|---|---|---|---|---|---|"]
    for r in bench.rows:
        lines.append(f"| {r['ranks']:.0f} | {r['width']:.0f} x {r['depth']:.0f} | "
                     f"{r['parameters']:,.0f} | {r['file_bytes'] / 1e6:.1f} | "
                     f"{r['write_bandwidth_bytes_per_second'] / 1e6:.1f} | "
                     f"{r['read_bandwidth_bytes_per_second'] / 1e6:.1f} | {r['read_cache']} |")
    return lines


def _speedup(row):
    # strong: t1 / tN = efficiency * N; weak: scaled speedup, also efficiency * N
    return row["measured_efficiency"] * row["ranks"], row["modelled_efficiency"] * row["ranks"]


def scaling_markdown(scaling):
    lines = [f"From `{scaling.source / SCALING_CHECK}` and `{SCALING_PREDICTIONS}`. Measured on "
             "this machine; rank counts above its cores are oversubscribed (marked). Speedup = "
             "efficiency x ranks (strong: t1/tN at a fixed global batch; weak: scaled speedup).",
             "", "| mode | ranks | oversubscribed | measured step s | modelled step s | "
             "measured speedup | modelled speedup | measured efficiency | modelled efficiency |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in scaling.check:
        ms, mo = _speedup(r)
        lines.append(f"| {r['mode']} | {r['ranks']:.0f} | {'yes' if r['oversubscribed'] else 'no'} | "
                     f"{r['measured_step_s']:.4g} | {r['modelled_step_s']:.4g} | {ms:.3f} | "
                     f"{mo:.3f} | {r['measured_efficiency']:.3f} | "
                     f"{r['modelled_efficiency']:.3f} |")
    lines += ["", "Modelled (not measured) parallel efficiency:", "",
              "| strategy | mode | " + " | ".join(str(n) for n in PROJECTED_RANKS) + " |",
              "|---|---|" + "---|" * len(PROJECTED_RANKS)]
    table = {}
    for r in scaling.predictions:
        table.setdefault((r["strategy"], r["mode"]), {})[int(r["ranks"])] = r["efficiency"]
    for (strategy, mode), eff in table.items():
        cells = [f"{eff[n]:.3f}" if n in eff else "-" for n in PROJECTED_RANKS]
        lines.append(f"| {strategy} | {mode} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


# ---------------------------------------------------------------- PDF


def _text_pages(pdf, plt, text, lines_per_page=70):
    rows = text.splitlines()
    for start in range(0, max(len(rows), 1), lines_per_page):
        fig = plt.figure(figsize=(8.27, 11.69))
        chunk = [r if len(r) <= 130 else r[:127] + "..." for r in rows[start:start + lines_per_page]]
        fig.text(0.04, 0.98, "\n".join(chunk), va="top", ha="left", family="monospace", fontsize=5.5)
        pdf.savefig(fig)
        plt.close(fig)


def write_pdf(path, report, md_text):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    with PdfPages(path) as pdf:
        _text_pages(pdf, plt, md_text)
        done = [p for p in report.points if p.status == "done" and math.isfinite(p.node_hours)]
        if done:
            fig, ax = plt.subplots(figsize=(11.69, 8.27))
            archs = results.ordered([p.arch for p in done], results.ARCHS)
            colours = {a: f"C{i}" for i, a in enumerate(archs)}
            ax.bar(range(len(done)), [p.node_hours for p in done],
                   color=[colours[p.arch] for p in done])
            ax.set_xticks(range(len(done)))
            ax.set_xticklabels([p.name for p in done], rotation=90, fontsize=5)
            ax.set_ylabel("node-hours")
            ax.set_title(f"Node-hours per done point ({len(done)} of {len(report.points)})")
            for a in archs:
                ax.bar([], [], color=colours[a], label=results.ARCH_LABELS.get(a, a))
            ax.legend()
            fig.tight_layout()
            pdf.savefig(fig)
            plt.close(fig)
        rows = checkpoint_rows(report)
        ck = [(float(s), float(b)) for _, s, b, _, _ in rows if s is not None and b is not None]
        restored = [(float(s), float(r)) for _, s, _, r, _ in rows if s is not None and r is not None]
        bench = report.checkpoint_bench.rows if report.checkpoint_bench else []
        if ck or bench:
            fig, ax = plt.subplots(figsize=(8.27, 6))
            series = [("write, campaign runs", ck, "o"), ("read (restore), campaign runs", restored, "s"),
                      ("write, bench_checkpoint", [(r["file_bytes"], r["write_bandwidth_bytes_per_second"])
                                                   for r in bench], "^"),
                      ("read, bench_checkpoint", [(r["file_bytes"], r["read_bandwidth_bytes_per_second"])
                                                  for r in bench], "v")]
            for label, pts, marker in series:
                if pts:
                    ax.scatter([s / 1e6 for s, _ in pts], [b / 1e6 for _, b in pts], marker=marker,
                               label=label)
            ax.set_xscale("log")
            ax.set_xlabel("checkpoint size (MB)")
            ax.set_ylabel("bandwidth (MB/s)")
            ax.legend()
            ax.set_title("Checkpoint size and write/read bandwidth")
            fig.tight_layout()
            pdf.savefig(fig)
            plt.close(fig)
        if report.scaling is not None:
            fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(11.69, 6))
            for i, mode in enumerate(sorted({r["mode"] for r in report.scaling.check})):
                rows = sorted((r for r in report.scaling.check if r["mode"] == mode),
                              key=lambda r: r["ranks"])
                n = [r["ranks"] for r in rows]
                ax_s.plot(n, [_speedup(r)[0] for r in rows], "o-", color=f"C{i}",
                          label=f"{mode} measured")
                ax_s.plot(n, [_speedup(r)[1] for r in rows], "x--", color=f"C{i}",
                          label=f"{mode} modelled")
                ax_e.plot(n, [r["measured_efficiency"] for r in rows], "o-", color=f"C{i}",
                          label=f"{mode} measured")
                ax_e.plot(n, [r["modelled_efficiency"] for r in rows], "x--", color=f"C{i}",
                          label=f"{mode} modelled")
            ax_s.set_xlabel("MPI ranks")
            ax_s.set_ylabel("speedup")
            ax_s.set_title("Speedup (measured and modelled)")
            ax_e.set_xlabel("MPI ranks")
            ax_e.set_ylabel("parallel efficiency")
            ax_e.set_ylim(0, 1.1)
            ax_e.set_title("Efficiency (measured and modelled)")
            ax_s.legend()
            ax_e.legend()
            fig.tight_layout()
            pdf.savefig(fig)
            plt.close(fig)
            ddp = [r for r in report.scaling.predictions if r["strategy"] == "ddp"]
            if ddp:
                fig, ax = plt.subplots(figsize=(8.27, 6))
                for i, mode in enumerate(sorted({r["mode"] for r in ddp})):
                    rows = sorted((r for r in ddp if r["mode"] == mode), key=lambda r: r["ranks"])
                    ax.plot([r["ranks"] for r in rows], [r["efficiency"] for r in rows], "-",
                            color=f"C{i}", label=f"ddp {mode} (modelled)")
                ax.set_xscale("log", base=2)
                ax.set_xlabel("MPI ranks")
                ax.set_ylabel("parallel efficiency (modelled)")
                ax.set_title("Projected efficiency, data parallel (modelled, not measured)")
                ax.legend()
                fig.tight_layout()
                pdf.savefig(fig)
                plt.close(fig)
