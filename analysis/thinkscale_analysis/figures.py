"""Figures: axis_AXIS, all_axes (the EBT paper's Fig. 4-5 layout) and
compute_matched, each as PNG and PDF."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402
import numpy as np  # noqa: E402

from . import bootstrap  # noqa: E402
from .results import ARCH_LABELS, AXES, AXIS_LABELS, REFERENCE_ARCH  # noqa: E402

COLOURS = {"transformerpp": "#1f77b4", "ebt": "#d62728", "free": "#2ca02c", "nexus": "#9467bd"}
OTHER_COLOURS = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _colour(arch, archs):
    if arch in COLOURS:
        return COLOURS[arch]
    others = [a for a in archs if a not in COLOURS]
    return OTHER_COLOURS[others.index(arch) % len(OTHER_COLOURS)]


def _save(fig, out_dir, name):
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=150, metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(fig)
    return paths


def _band(power, lgrid, n_runs):
    """Pointwise 95% bootstrap band of the fitted line, corrected as beta's interval."""
    if power.beta_boot.size == 0:
        return None
    ok = np.isfinite(power.beta_boot)
    if ok.sum() < max(2, 0.5 * ok.size):
        return None
    preds = power.intercept_boot[ok, None] + power.beta_boot[ok, None] * lgrid[None, :]
    centre = power.intercept + power.beta * lgrid
    tail = 100 * (1 - bootstrap.LEVEL) / 2
    lo, hi = np.percentile(preds, [tail, 100 - tail], axis=0)
    factor = bootstrap.small_sample_factor(n_runs)
    return np.exp(centre - factor * (centre - lo)), np.exp(centre + factor * (hi - centre))


def _compact(value, _position=None):
    if value >= 1e4:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def _readable_log_ticks(axis, span):
    """Over less than two decades (losses, depths, widths) default log ticks
    leave an axis nearly unlabelled: label 1-2-5 steps, or below a factor 5 a
    few round linear values."""
    if span >= 100:
        return
    if span >= 5:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    else:
        axis.set_major_locator(ticker.MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(ticker.FuncFormatter(_compact))
    axis.set_minor_formatter(ticker.NullFormatter())


def _log_loss_axis(ax, losses):
    ax.set_yscale("log")
    losses = np.concatenate([np.ravel(v) for v in losses])
    losses = losses[np.isfinite(losses) & (losses > 0)]
    _readable_log_ticks(ax.yaxis, losses.max() / losses.min() if losses.size else 1.0)


def draw_axis(ax, analysis, axis, legend=True):
    rows = [r for r in analysis.rows if r.axis == axis]
    archs = [r.arch for r in rows]
    if not rows:
        ax.text(0.5, 0.5, "no fit on this axis", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(axis)
        ax.set_xticks([]), ax.set_yticks([])
        return
    for r in rows:
        g = analysis.groups[(r.arch, axis)]
        colour = _colour(r.arch, archs)
        label = ARCH_LABELS.get(r.arch, r.arch)
        if np.isfinite(r.power.beta):
            label += f" ($\\beta$={r.power.beta:.3g})"
        ax.scatter(g.x, g.loss, s=18, color=colour, zorder=3, label=label)
        if not np.isfinite(r.power.beta):
            continue
        lo, hi = np.log(g.x.min()), np.log(g.x.max())
        pad = 0.05 * (hi - lo)
        lgrid = np.linspace(lo - pad, hi + pad, 60)
        ax.plot(np.exp(lgrid), np.exp(r.power.intercept + r.power.beta * lgrid), color=colour, lw=1.2)
        band = _band(r.power, lgrid, g.n_clusters)
        if band is not None:
            ax.fill_between(np.exp(lgrid), band[0], band[1], color=colour, alpha=0.15, lw=0)
        if np.isfinite(r.saturating.alpha):
            ax.plot(np.exp(lgrid), r.saturating.predict(np.exp(lgrid)), color=colour, lw=0.8, ls="--")
    ax.set_xscale("log")
    groups = [analysis.groups[(r.arch, axis)] for r in rows]
    xs = np.concatenate([g.x for g in groups])
    _readable_log_ticks(ax.xaxis, xs.max() / xs.min())
    _log_loss_axis(ax, [g.loss for g in groups])
    ax.set_xlabel(AXIS_LABELS.get(axis, axis))
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(axis)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    if legend:
        ax.legend(fontsize=7)


def _caption(analysis):
    text = f"campaign {analysis.campaign}" if analysis.campaign else ""
    return text + ("  (PARTIAL: not every point is done)" if analysis.partial else "")


def axis_figure(analysis, axis, out_dir):
    fig, ax = plt.subplots(figsize=(5.5, 4.2), layout="constrained")
    draw_axis(ax, analysis, axis)
    fig.suptitle(_caption(analysis) or " ", fontsize=8)
    return _save(fig, out_dir, f"axis_{axis}")


def all_axes_figure(analysis, out_dir):
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5), layout="constrained")
    for ax, axis in zip(axes.flat, AXES):
        draw_axis(ax, analysis, axis)
    fig.suptitle("Learning scalability: lines are least-squares power laws with 95% bootstrap "
                 "bands, dashes the saturating law. " + _caption(analysis), fontsize=9)
    return _save(fig, out_dir, "all_axes")


def compute_matched_figure(analysis, out_dir):
    view = analysis.compute_matched
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    archs = list(view.curves)
    if not archs:
        for ax in (left, right):
            ax.text(0.5, 0.5, "; ".join(view.notes) or "no data", ha="center", va="center",
                    transform=ax.transAxes, wrap=True)
            ax.set_xticks([]), ax.set_yticks([])
        return _save(fig, out_dir, "compute_matched")
    reference = view.loss_at.get(REFERENCE_ARCH)
    for arch, (flops, loss) in view.curves.items():
        colour = _colour(arch, archs)
        order = np.argsort(flops)
        left.plot(np.asarray(flops)[order], np.asarray(loss)[order], "o-", color=colour, ms=4, lw=1,
                  label=ARCH_LABELS.get(arch, arch))
        if reference is not None and arch in view.loss_at and arch != REFERENCE_ARCH:
            diff = 100 * (view.loss_at[arch] / reference - 1)
            right.plot(view.budgets, diff, "o-", color=colour, ms=4, lw=1,
                       label=ARCH_LABELS.get(arch, arch))
    left.set_xscale("log")
    _log_loss_axis(left, [c[1] for c in view.curves.values()])
    left.set_xlabel("executed training FLOPs")
    left.set_ylabel("validation loss (nats/token)")
    left.set_title(f"loss against compute ({view.source_axis} axis runs)")
    left.grid(True, which="both", lw=0.3, alpha=0.5)
    left.legend(fontsize=8)
    right.axhline(0, color=COLOURS[REFERENCE_ARCH], lw=1)
    right.set_xscale("log")
    right.set_xlabel("executed training FLOPs")
    right.set_ylabel(f"loss relative to {ARCH_LABELS[REFERENCE_ARCH]} (%)")
    right.set_title("at equal FLOPs (log-log interpolation, no extrapolation)")
    right.grid(True, which="both", lw=0.3, alpha=0.5)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.suptitle(_caption(analysis) or " ", fontsize=8)
    return _save(fig, out_dir, "compute_matched")


def render(analysis, out_dir):
    """Writes every figure into out_dir; returns the paths written."""
    paths = []
    present = {r.axis for r in analysis.rows} | {axis for _, axis, _ in analysis.skipped}
    for axis in [a for a in AXES if a in present]:
        paths += axis_figure(analysis, axis, out_dir)
    paths += all_axes_figure(analysis, out_dir)
    paths += compute_matched_figure(analysis, out_dir)
    return paths
