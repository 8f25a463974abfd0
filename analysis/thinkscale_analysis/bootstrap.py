"""Cluster bootstrap as multiplicity weights.

A resample draws clusters (runs) with replacement; row i then appears as many
times as its cluster was drawn. Estimators take these counts as weights, so a
whole batch of resamples is one vectorised computation and rows of one run can
never be split."""
import numpy as np
from scipy import special

LEVEL = 0.95


def cluster_index(labels):
    """Integer cluster id per row (0..G-1, in order of first appearance) and G."""
    ids = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, label in enumerate(labels):
        out[i] = ids.setdefault(label, len(ids))
    return out, len(ids)


def draws(rng, n_clusters, n_resamples):
    """(n_resamples, n_clusters) cluster indices drawn with replacement."""
    return rng.integers(0, n_clusters, size=(n_resamples, n_clusters))


def counts(drawn, n_clusters):
    """How often each cluster was drawn: (n_resamples, n_clusters)."""
    out = np.zeros((drawn.shape[0], n_clusters))
    np.add.at(out, (np.arange(drawn.shape[0])[:, None], drawn), 1.0)
    return out


def row_weights(cluster_counts, row_cluster):
    """Per-row multiplicities (n_resamples, n_rows) from per-cluster counts."""
    return cluster_counts[:, row_cluster]


def percentile_interval(samples, level=LEVEL, min_valid=0.5):
    """The central `level` interval of the finite samples, or (nan, nan) when
    fewer than `min_valid` of them are finite (the resamples were mostly degenerate)."""
    samples = np.asarray(samples, dtype=float)
    finite = samples[np.isfinite(samples)]
    if samples.size == 0 or finite.size < min_valid * samples.size or finite.size < 2:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def small_sample_factor(n_clusters, level=LEVEL):
    """sqrt(G/(G-1)) * t_{G-1} / z: the small-number-of-clusters correction of
    cluster-robust standard errors (G runs), applied to bootstrap half-widths."""
    z = special.ndtri(0.5 + level / 2)
    t = special.stdtrit(n_clusters - 1, 0.5 + level / 2)
    return float(np.sqrt(n_clusters / (n_clusters - 1)) * t / z)


def small_sample_interval(estimate, samples, n_clusters, level=LEVEL):
    """The percentile interval with each half-width scaled about the estimate by
    small_sample_factor. The plain percentile interval of a pairs bootstrap is
    too narrow with few runs: in simulation it covered 89-93% of true slopes at
    5-12 runs; corrected, 94-98% (docs/scaling-analysis.md)."""
    lo, hi = percentile_interval(samples, level)
    if not np.isfinite(lo) or n_clusters < 2:
        return lo, hi
    factor = small_sample_factor(n_clusters, level)
    return estimate - factor * (estimate - lo), estimate + factor * (hi - estimate)
