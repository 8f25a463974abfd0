"""The estimators: power-law slope, relative scaling rate, saturating law,
leave-one-run-out forecast error and the compute-matched view.

Every bootstrap is a cluster bootstrap by run (bootstrap.py): estimators take
per-row multiplicity weights so that all resamples are computed at once."""
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from . import bootstrap

HUBER_DELTA = 1e-3
# Exponents searched by the saturating fit, uniform in log(alpha).
ALPHA_GRID = np.logspace(-3, np.log10(3.0), 73)
IRLS_ITERATIONS = 20
MIN_POINTS_SATURATING = 4  # distinct x: three parameters and one degree of freedom
MIN_IDENTIFIABLE_FRACTION = 0.25
MIN_RUNS_INTERVAL = 3  # with two runs every non-degenerate resample is the same fit


@dataclass
class Group:
    """The usable rows of one (arch, axis). Clusters (runs) are numbered by rank
    of (smallest x, smallest seed, run name), so that cluster k of two
    architectures is the same rung of the axis and resamples can be paired."""
    arch: str
    axis: str
    names: np.ndarray
    x: np.ndarray
    loss: np.ndarray
    runs: np.ndarray
    cluster: np.ndarray
    n_clusters: int

    @property
    def n_points(self):
        return len(self.x)

    @property
    def n_distinct_x(self):
        return len(np.unique(self.x))


def make_group(arch, axis, names, x, loss, runs, seeds):
    ids, n_clusters = bootstrap.cluster_index(list(runs))
    key = {}
    for i, c in enumerate(ids):
        k = (float(x[i]), int(seeds[i]), str(runs[i]))
        key[c] = min(key.get(c, k), k)
    rank = {c: r for r, c in enumerate(sorted(key, key=key.get))}
    cluster = np.array([rank[c] for c in ids], dtype=np.int64)
    return Group(arch, axis, np.asarray(names), np.asarray(x, float), np.asarray(loss, float),
                 np.asarray(runs), cluster, n_clusters)


def weighted_slope(lx, ly, w):
    """Weighted least-squares slope and intercept of ly on lx for every row of
    weights w (..., n); nan where the weighted rows have a single distinct lx."""
    w = np.asarray(w, dtype=float)
    sw = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (w * lx).sum(-1) / sw
        my = (w * ly).sum(-1) / sw
        dx = lx - mx[..., None]
        sxx = (w * dx * dx).sum(-1)
        sxy = (w * dx * (ly - my[..., None])).sum(-1)
        scale = max(float(np.ptp(lx)) ** 2, 1e-300)
        ok = sxx > 1e-10 * scale * sw
        beta = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
    return beta, my - beta * mx


@dataclass
class PowerLaw:
    """log(loss) = intercept + beta * log(x)."""
    beta: float = float("nan")
    intercept: float = float("nan")
    lo: float = float("nan")
    hi: float = float("nan")
    beta_boot: np.ndarray = field(default_factory=lambda: np.empty(0))
    intercept_boot: np.ndarray = field(default_factory=lambda: np.empty(0))
    notes: list = field(default_factory=list)


def fit_power_law(group, drawn):
    """OLS slope of log(loss) on log(x); interval from the cluster bootstrap
    whose draws (n_resamples, n_clusters) are given (None: no interval)."""
    fit = PowerLaw()
    if group.n_distinct_x < 2:
        fit.notes.append("all points at one x: no slope")
        return fit
    lx, ly = np.log(group.x), np.log(group.loss)
    beta, intercept = weighted_slope(lx, ly, np.ones_like(lx))
    fit.beta, fit.intercept = float(beta), float(intercept)
    if group.n_clusters < MIN_RUNS_INTERVAL:
        fit.notes.append(f"{group.n_clusters} runs: too few for a bootstrap interval")
        return fit
    if drawn is None:
        return fit
    w = bootstrap.row_weights(bootstrap.counts(drawn, group.n_clusters), group.cluster)
    fit.beta_boot, fit.intercept_boot = weighted_slope(lx, ly, w)
    fit.lo, fit.hi = bootstrap.small_sample_interval(fit.beta, fit.beta_boot, group.n_clusters)
    return fit


def rel_rate(fit, reference, n_clusters):
    """|beta| / |beta_reference| - 1 and its bootstrap interval from the
    resample-by-resample ratio (paired when both fits used the same draws)."""
    if not (np.isfinite(fit.beta) and np.isfinite(reference.beta)) or reference.beta == 0:
        return float("nan"), float("nan"), float("nan")
    rate = abs(fit.beta) / abs(reference.beta) - 1
    if fit.beta_boot.size == 0 or reference.beta_boot.size != fit.beta_boot.size:
        return rate, float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = np.abs(fit.beta_boot) / np.abs(reference.beta_boot) - 1
    lo, hi = bootstrap.small_sample_interval(rate, samples, n_clusters)
    return rate, lo, hi


def huber(r, delta=HUBER_DELTA):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _saturating_profile(x, loss, w, alphas):
    """For every weight row of w (B, n) and every exponent of alphas ((K,) shared
    or (B, K) per row), the best E >= 0 and A of L = E + A z, z = (x/x_ref)^-alpha,
    and the Huber loss of its log residuals. (E, A) come from iteratively
    reweighted least squares on the relative residual (E + A z)/L - 1, which
    equals the log residual to second order and makes the inner problem convex;
    E < 0 falls back to E = 0."""
    x_ref = float(np.exp(np.mean(np.log(x))))
    alphas = np.atleast_2d(alphas)  # (1 or B, K)
    z = (x / x_ref)[None, None, :] ** -alphas[..., None]  # (1 or B, K, n)
    u = 1.0 / loss  # (n,)
    f2 = z * u
    c = np.asarray(w, float)[:, None, :]  # (B, 1, n)
    shape = (c.shape[0], alphas.shape[1], len(x))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        wu = np.broadcast_to(c, shape)
        for _ in range(IRLS_ITERATIONS):
            s11 = (wu * u * u).sum(-1)
            s12 = (wu * u * f2).sum(-1)
            s22 = (wu * f2 * f2).sum(-1)
            b1, b2 = (wu * u).sum(-1), (wu * f2).sum(-1)
            det = s11 * s22 - s12 * s12
            e_free = (s22 * b1 - s12 * b2) / det
            a_free = (s11 * b2 - s12 * b1) / det
            r = e_free[..., None] * u + a_free[..., None] * f2 - 1
            wu = c * np.minimum(1.0, HUBER_DELTA / np.abs(r))
        wc = np.broadcast_to(c, shape)
        for _ in range(IRLS_ITERATIONS):
            a_zero = (wc * f2).sum(-1) / (wc * f2 * f2).sum(-1)
            r = a_zero[..., None] * f2 - 1
            wc = c * np.minimum(1.0, HUBER_DELTA / np.abs(r))
        free = np.isfinite(e_free) & np.isfinite(a_free) & (e_free >= 0)
        e = np.where(free, e_free, 0.0)
        a = np.where(free, a_free, a_zero)
        fitted = e[..., None] + a[..., None] * z
        log_resid = np.log(fitted / loss)
        used = np.broadcast_to(c > 0, shape)
        bad = (~np.isfinite(log_resid) & used).any(-1)
        objective = np.where(used, c * huber(np.nan_to_num(log_resid)), 0.0).sum(-1)
    objective[bad | ~np.isfinite(objective)] = np.inf
    return objective, e, a, x_ref


FINE_STEPS = 17  # the second stage: this many exponents across two coarse steps


def _grid_estimate(x, loss, w):
    """Per weight row: the exponent of least profile objective on ALPHA_GRID,
    then on a grid 8x finer across the neighbouring coarse steps (the profile
    has kinks where E reaches 0, so no interpolation). Returns alpha, E, A, in
    units of x_ref, the objective and x_ref; alpha nan where no exponent fits."""
    coarse, _, _, x_ref = _saturating_profile(x, loss, w, ALPHA_GRID)
    finite = np.isfinite(coarse).any(-1)
    k = np.argmin(coarse, axis=-1)
    log_grid = np.log(ALPHA_GRID)
    step = log_grid[1] - log_grid[0]
    offsets = np.linspace(-step, step, FINE_STEPS)
    fine_alphas = np.exp(np.clip(log_grid[k][:, None] + offsets[None, :], log_grid[0], log_grid[-1]))
    fine, e, a, _ = _saturating_profile(x, loss, w, fine_alphas)
    j = np.argmin(fine, axis=-1)
    rows = np.arange(len(j))
    alpha = np.where(finite, fine_alphas[rows, j], np.nan)
    return alpha, e[rows, j], a[rows, j], fine[rows, j], x_ref


@dataclass
class Saturating:
    """L = E + A x^-alpha (x in its own units)."""
    E: float = float("nan")
    A: float = float("nan")
    alpha: float = float("nan")
    lo: float = float("nan")
    hi: float = float("nan")
    objective: float = float("nan")
    notes: list = field(default_factory=list)

    def predict(self, x):
        return self.E + self.A * np.asarray(x, float) ** -self.alpha


def _huber_objective(params, x, loss, x_ref):
    e, a, log_alpha = params
    fitted = e + a * (x / x_ref) ** -np.exp(log_alpha)
    if np.any(~np.isfinite(fitted)) or np.any(fitted <= 0):
        return 1e30
    return float(huber(np.log(fitted / loss)).sum())


def fit_saturating(group, drawn):
    """Huber fit (delta 1e-3 on log residuals) of L = E + A x^-alpha, E >= 0:
    the two-stage variable-projection grid over alpha, then Nelder-Mead
    polishing from it and from fixed starting exponents (the best objective
    wins); alpha's interval from the grid estimator on the cluster-bootstrap
    resamples."""
    fit = Saturating()
    if group.n_distinct_x < MIN_POINTS_SATURATING:
        fit.notes.append(f"saturating law needs {MIN_POINTS_SATURATING} distinct x, "
                         f"has {group.n_distinct_x}")
        return fit
    x, loss = group.x, group.loss
    alpha, e, a, objective, x_ref = (v[0] if isinstance(v, np.ndarray) else v
                                     for v in _grid_estimate(x, loss, np.ones((1, len(x)))))
    if not np.isfinite(alpha):
        fit.notes.append("saturating law: no exponent gave a positive fit")
        return fit
    starts = [np.array([e, a, np.log(alpha)])]
    fixed_obj, fixed_e, fixed_a, _ = _saturating_profile(x, loss, np.ones((1, len(x))),
                                                          np.array([0.05, 0.2, 0.5, 1.0]))
    starts += [np.array([fixed_e[0, k], fixed_a[0, k], np.log(al)])
               for k, al in enumerate((0.05, 0.2, 0.5, 1.0)) if np.isfinite(fixed_obj[0, k])]
    bounds = [(0.0, None), (None, None), (np.log(ALPHA_GRID[0]), np.log(ALPHA_GRID[-1]))]
    best = (float(objective), starts[0])
    for start in starts:
        result = optimize.minimize(_huber_objective, start, args=(x, loss, x_ref),
                                   method="Nelder-Mead", bounds=bounds,
                                   options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 600})
        if result.fun < best[0]:
            best = (float(result.fun), result.x)
    e, a_scaled, log_alpha = best[1]
    fit.alpha = float(np.exp(log_alpha))
    fit.E, fit.A = float(e), float(a_scaled * x_ref ** fit.alpha)
    fit.objective = best[0]
    edge = np.log(ALPHA_GRID[1]) - np.log(ALPHA_GRID[0])
    if log_alpha < np.log(ALPHA_GRID[0]) + edge or log_alpha > np.log(ALPHA_GRID[-1]) - edge:
        fit.notes.append(f"alpha at the edge of its range [{ALPHA_GRID[0]:g}, "
                         f"{ALPHA_GRID[-1]:g}]: not identified")
    if group.n_clusters < MIN_RUNS_INTERVAL or drawn is None:
        return fit
    w = bootstrap.row_weights(bootstrap.counts(drawn, group.n_clusters), group.cluster)
    _, index_x = np.unique(x, return_inverse=True)
    present = np.zeros((w.shape[0], index_x.max() + 1))
    np.add.at(present, (slice(None), index_x), w)
    identifiable = (present > 0).sum(-1) >= MIN_POINTS_SATURATING
    samples = np.full(w.shape[0], np.nan)
    if identifiable.any():
        samples[identifiable] = _grid_estimate(x, loss, w[identifiable])[0]
    # With few runs many resamples hold fewer than four distinct x; the interval
    # is taken over those that do (a conditional bootstrap) if they are a quarter.
    fit.lo, fit.hi = bootstrap.percentile_interval(samples, min_valid=MIN_IDENTIFIABLE_FRACTION)
    if not np.isfinite(fit.lo):
        fit.notes.append(f"alpha: under {MIN_IDENTIFIABLE_FRACTION:.0%} of resamples have "
                         f"{MIN_POINTS_SATURATING} distinct x, no interval")
    return fit


def loo_error(group):
    """Mean absolute relative error of forecasting each run's points from a
    power law fitted to the other runs (leave-one-point-out when every point
    has its own run); nan with fewer than three runs."""
    if group.n_clusters < 3:
        return float("nan")
    lx, ly = np.log(group.x), np.log(group.loss)
    errors = []
    for k in range(group.n_clusters):
        out = group.cluster == k
        beta, intercept = weighted_slope(lx[~out], ly[~out], np.ones((~out).sum()))
        if np.isfinite(beta):
            errors.extend(np.abs(np.exp(intercept + beta * lx[out]) / group.loss[out] - 1))
    return float(np.mean(errors)) if errors else float("nan")


def log_interpolate(x, loss, at):
    """Loss at `at` by linear interpolation of log(loss) in log(x) over the
    measured range (points at equal x averaged in log); nan outside it."""
    order = np.argsort(x)
    lx, ly = np.log(np.asarray(x, float)[order]), np.log(np.asarray(loss, float)[order])
    ux, inverse = np.unique(lx, return_inverse=True)
    uy = np.bincount(inverse, weights=ly) / np.bincount(inverse)
    la = np.log(np.asarray(at, float))
    out = np.exp(np.interp(la, ux, uy))
    span = 1e-9 * max(1.0, abs(ux[-1]))
    return np.where((la >= ux[0] - span) & (la <= ux[-1] + span), out, np.nan)


@dataclass
class ComputeMatched:
    source_axis: str = ""
    budgets: np.ndarray = field(default_factory=lambda: np.empty(0))
    curves: dict = field(default_factory=dict)  # arch -> (flops, loss) measured
    loss_at: dict = field(default_factory=dict)  # arch -> loss at each budget (nan outside)
    notes: list = field(default_factory=list)


def compute_matched(curves, source_axis, n_budgets=7):
    """Loss of each architecture at common executed-FLOP budgets, log-spaced
    over the union of the measured ranges; an architecture gets a value only
    inside its own measured range (no extrapolation)."""
    view = ComputeMatched(source_axis=source_axis)
    usable = {a: c for a, c in curves.items() if len(np.unique(c[0])) >= 2}
    for arch in sorted(set(curves) - set(usable)):
        view.notes.append(f"{arch}: fewer than two distinct FLOP values, not interpolated")
    view.curves = curves
    if not usable:
        return view
    lo = min(float(np.min(c[0])) for c in usable.values())
    hi = max(float(np.max(c[0])) for c in usable.values())
    view.budgets = np.logspace(np.log10(lo), np.log10(hi), n_budgets)
    view.loss_at = {a: log_interpolate(c[0], c[1], view.budgets) for a, c in usable.items()}
    return view
