"""fits.csv, fits.md and compute_matched.csv as text."""
import csv
import io
import math

from .results import ARCH_LABELS, AXIS_LABELS, REFERENCE_ARCH

CSV_COLUMNS = ("arch", "axis", "n_points", "beta", "beta_lo", "beta_hi", "rel_rate", "rel_rate_lo",
               "rel_rate_hi", "paper_rel_rate", "E", "A", "alpha", "alpha_lo", "alpha_hi",
               "loo_error", "n_runs", "complete", "notes")


def _num(value):
    """Empty for nan, otherwise enough digits to round-trip a fit."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, (bool, int)):
        return str(int(value))
    return f"{value:.10g}"


def fits_csv(analysis):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in analysis.rows:
        p, s = r.power, r.saturating
        writer.writerow([r.arch, r.axis, r.n_points] + [_num(v) for v in (
            p.beta, p.lo, p.hi, r.rel_rate, r.rel_rate_lo, r.rel_rate_hi, r.paper_rel_rate,
            s.E, s.A, s.alpha, s.lo, s.hi, r.loo_error)] + [r.n_runs, int(r.complete),
                                                            "; ".join(r.notes)])
    return out.getvalue()


def compute_matched_csv(analysis):
    view = analysis.compute_matched
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("flops", "arch", "val_loss", "source_axis"))
    for arch, losses in view.loss_at.items():
        for budget, loss in zip(view.budgets, losses):
            writer.writerow((_num(float(budget)), arch, _num(float(loss)), view.source_axis))
    return out.getvalue()


def _pct(value):
    return "" if not math.isfinite(value) else f"{100 * value:+.2f}%"


def _interval(lo, hi, fmt):
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _g(value):
    return "" if not math.isfinite(value) else f"{value:.4g}"


def fits_md(analysis):
    lines = [f"# Scaling fits: campaign {analysis.campaign or '(unnamed)'}", ""]
    if analysis.partial:
        lines += [f"**PARTIAL**: {len(analysis.missing)} point(s) of the campaign are not done "
                  "(listed below); these fits use only the done points.", ""]
    lines += [
        "beta: least-squares slope of log(val_loss) on log(x), 95% cluster-bootstrap interval "
        "(by run). rel_rate = |beta| / |beta_Transformer++| - 1 on the same axis: positive means "
        "the architecture's loss falls faster with x than Transformer++'s. paper: the EBT "
        "paper's printed rate. alpha: exponent of L = E + A x^-alpha (Huber fit). LOO: mean "
        "absolute relative error of leave-one-run-out forecasts of the power law. "
        f"{analysis.resamples} bootstrap resamples, seed {analysis.seed}; method in "
        "docs/scaling-analysis.md.", "",
        "| axis | arch | points | beta | beta 95% | rel_rate | rel_rate 95% | paper | E | alpha "
        "| alpha 95% | LOO | notes |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|---|---:|---|"]
    for r in analysis.rows:
        p, s = r.power, r.saturating
        points = f"{r.n_points}" + ("" if r.complete else " (incomplete)")
        rel = "ref" if r.arch == REFERENCE_ARCH else _pct(r.rel_rate)
        lines.append("| " + " | ".join([
            r.axis, ARCH_LABELS.get(r.arch, r.arch), points, _g(p.beta),
            _interval(p.lo, p.hi, _g), rel, _interval(r.rel_rate_lo, r.rel_rate_hi, _pct),
            _pct(r.paper_rel_rate), _g(s.E), _g(s.alpha), _interval(s.lo, s.hi, _g),
            _pct(r.loo_error).lstrip("+"), "; ".join(r.notes)]) + " |")
    lines += ["", "## Compute-matched view", ""]
    view = analysis.compute_matched
    if len(view.budgets):
        archs = list(view.loss_at)
        lines += [f"Validation loss (nats/token) of each architecture at equal executed training "
                  f"FLOPs, interpolated in log-log between its measured points of the "
                  f"`{view.source_axis}` axis (blank outside its measured range); in brackets the "
                  f"difference to {ARCH_LABELS[REFERENCE_ARCH]}.", "",
                  "| FLOPs | " + " | ".join(ARCH_LABELS.get(a, a) for a in archs) + " |",
                  "|---:|" + "---:|" * len(archs)]
        for j, budget in enumerate(view.budgets):
            ref = view.loss_at.get(REFERENCE_ARCH)
            cells = []
            for a in archs:
                loss = float(view.loss_at[a][j])
                cell = _g(loss)
                if cell and a != REFERENCE_ARCH and ref is not None and math.isfinite(ref[j]):
                    cell += f" ({_pct(loss / float(ref[j]) - 1)})"
                cells.append(cell)
            lines.append(f"| {budget:.3g} | " + " | ".join(cells) + " |")
    lines += [f"- {n}" for n in view.notes]
    if not len(view.budgets) and not view.notes:
        lines.append("- nothing to show")
    lines += ["", "## Points not in the fits", ""]
    if not (analysis.missing or analysis.excluded or analysis.skipped):
        lines += ["None: every point of the campaign is done and used.", ""]
    if analysis.missing:
        lines += ["Not done:", "", "| point | arch | axis | status |", "|---|---|---|---|"]
        lines += [f"| {n} | {a} | {x} | {s} |" for n, a, x, s in analysis.missing]
        lines.append("")
    if analysis.excluded:
        lines += ["Done but unusable:", "", "| point | arch | axis | reason |", "|---|---|---|---|"]
        lines += [f"| {n} | {a} | {x} | {s} |" for n, a, x, s in analysis.excluded]
        lines.append("")
    if analysis.skipped:
        lines += ["Not fitted:", ""]
        lines += [f"- {a} / {x}: {why}" for a, x, why in analysis.skipped]
        lines.append("")
    lines += ["## Axes", ""] + [f"- {k}: x = {v}" for k, v in AXIS_LABELS.items()]
    return "\n".join(lines).rstrip() + "\n"
