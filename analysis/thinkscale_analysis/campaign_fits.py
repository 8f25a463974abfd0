"""All fits of one campaign: one FitRow per (arch, axis) with two or more
usable points, the compute-matched view, and notes on what was skipped."""
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import bootstrap, fits
from .results import ARCHS, AXES, PAPER_REL_RATES, REFERENCE_ARCH, ordered

DEFAULT_RESAMPLES = 2000
SATURATING_RESAMPLES = 400  # the saturating fit's bootstrap uses the first this many


@dataclass
class FitRow:
    arch: str
    axis: str
    n_points: int
    n_runs: int
    complete: bool  # every manifest point of (arch, axis) entered the fit
    power: fits.PowerLaw
    saturating: fits.Saturating
    rel_rate: float = float("nan")
    rel_rate_lo: float = float("nan")
    rel_rate_hi: float = float("nan")
    loo_error: float = float("nan")
    notes: list = field(default_factory=list)

    @property
    def paper_rel_rate(self):
        return PAPER_REL_RATES.get(self.arch, {}).get(self.axis, float("nan"))


@dataclass
class Analysis:
    campaign: str
    rows: list  # FitRow, axes in AXES order, architectures in ARCHS order
    groups: dict  # (arch, axis) -> fits.Group
    compute_matched: fits.ComputeMatched
    skipped: list  # (arch, axis, reason)
    partial: bool
    missing: list
    excluded: list
    resamples: int
    seed: int


def _rng(seed, *labels):
    return np.random.default_rng([seed] + [zlib.crc32(str(s).encode()) for s in labels])


def analyse(campaign, selection, resamples=DEFAULT_RESAMPLES, seed=0):
    c = campaign.columns
    use = selection.usable
    groups, skipped, rows = {}, [], []
    total = {}
    for i in range(campaign.n_points):
        key = (c["arch"][i], c["axis"][i])
        total[key] = total.get(key, 0) + 1
    for axis in ordered(c["axis"], AXES):
        axis_groups = []
        for arch in ordered(c["arch"], ARCHS):
            if (arch, axis) not in total:
                continue
            rows_i = np.nonzero(use & (c["arch"] == arch) & (c["axis"] == axis))[0]
            if len(rows_i) < 2:
                skipped.append((arch, axis, f"{len(rows_i)} usable point(s) of {total[(arch, axis)]}: "
                                "nothing to fit"))
                continue
            # a row without a run name is its own run
            runs = np.where(c["run"][rows_i] == "", c["name"][rows_i], c["run"][rows_i])
            g = fits.make_group(arch, axis, c["name"][rows_i], c["x"][rows_i], c["val_loss"][rows_i],
                                runs, c["seed"][rows_i])
            groups[(arch, axis)] = g
            axis_groups.append(g)
        rows.extend(_fit_axis(axis_groups, total, resamples, seed))
    return Analysis(campaign=campaign.name, rows=rows, groups=groups,
                    compute_matched=_compute_matched(campaign, use),
                    skipped=skipped, partial=bool(selection.missing), missing=selection.missing,
                    excluded=selection.excluded, resamples=resamples, seed=seed)


def _fit_axis(axis_groups, total, resamples, seed):
    """Fits every architecture on one axis. When all have the same number of
    runs they share one set of draws by run rank (a paired bootstrap: resample
    b keeps the same rungs of the ladder for every architecture)."""
    if not axis_groups:
        return []
    axis = axis_groups[0].axis
    sizes = {g.n_clusters for g in axis_groups}
    paired = len(sizes) == 1
    shared = bootstrap.draws(_rng(seed, axis), sizes.pop(), resamples) if paired else None
    rows = []
    for g in axis_groups:
        drawn = shared if paired else bootstrap.draws(_rng(seed, axis, g.arch), g.n_clusters, resamples)
        power = fits.fit_power_law(g, drawn)
        saturating = fits.fit_saturating(g, drawn[:SATURATING_RESAMPLES])
        row = FitRow(arch=g.arch, axis=axis, n_points=g.n_points, n_runs=g.n_clusters,
                     complete=g.n_points == total[(g.arch, axis)], power=power,
                     saturating=saturating, loo_error=fits.loo_error(g))
        row.notes += power.notes + saturating.notes
        if g.n_clusters < 3:
            row.notes.append("leave-one-out needs 3 runs")
        elif g.n_clusters == 3:
            row.notes.append("3 runs: intervals are coarse (about 85% coverage in simulation)")
        rows.append(row)
    reference = next((r for r in rows if r.arch == REFERENCE_ARCH), None)
    for row in rows:
        if row.arch == REFERENCE_ARCH:
            continue
        if reference is None:
            row.notes.append(f"no {REFERENCE_ARCH} fit on this axis: no relative rate")
            continue
        row.rel_rate, row.rel_rate_lo, row.rel_rate_hi = fits.rel_rate(
            row.power, reference.power, min(row.n_runs, reference.n_runs))
        if np.sign(row.power.beta) * np.sign(reference.power.beta) < 0:
            row.notes.append(f"beta and {REFERENCE_ARCH}'s have opposite signs: "
                             "rel_rate compares magnitudes only")
        if not paired and np.isfinite(row.rel_rate_lo):
            row.notes.append("architectures differ in run count: rel_rate bootstrap unpaired")
    return rows


def _compute_matched(campaign, use):
    """From the flops axis if the campaign has one, else from the params axis
    (the same runs), using the executed-FLOPs column."""
    c = campaign.columns
    for axis in ("flops", "params"):
        rows = use & (c["axis"] == axis) & np.isfinite(c["flops"]) & (c["flops"] > 0)
        if rows.any():
            curves = {arch: (c["flops"][rows & (c["arch"] == arch)],
                             c["val_loss"][rows & (c["arch"] == arch)])
                      for arch in ordered(c["arch"][rows], ARCHS)}
            return fits.compute_matched(curves, axis)
    view = fits.ComputeMatched()
    view.notes.append("no done points on the flops or params axis")
    return view
