"""Performance model of a data-parallel training step (docs/scaling-model.md).

step time(N) = FLOPs of the busiest rank / compute rate per rank
             + the step's collectives, each an alpha-beta cost

The compute rate comes from the 1-rank measurements (bench/bench_scaling.sh),
the FLOPs from the engine's count (bench_step_flops), and alpha, beta per
collective from the OSU-style micro-benchmark (bench_collectives), fitted to
the usual algorithm costs for P ranks and a vector of n bytes:

  allreduce             2 ceil(log2 P) alpha + 2 (P-1)/P n beta   (Rabenseifner)
  reduce_scatter_block    ceil(log2 P) alpha +   (P-1)/P n beta   (recursive halving)
  allgather               ceil(log2 P) alpha +   (P-1)/P n beta   (recursive doubling)

Strategies by their communication per step (n = parameters x element bytes),
as src/parallel/strategy.c issues it, for a model of U units (its blocks and
unit 0: embeddings, final norm, head; U = 1 when the whole model is one unit,
as for EBT, whose loss differentiates its own gradient):
  ddp     one allreduce of the gradients              (2 n per rank moved)
  zero1   reduce_scatter + allgather of the parameters (2 n; optimiser sharded)
  zero2   U reduce_scatters of n/U each inside the backward pass, U allgathers
          of n/U (each rank owns a slice of every unit; 2 n, 2 U calls)
  zero3   per block: U allgathers of n/U for the forward, U - 2 for the
          backward (the last block and unit 0 stay gathered), U reduce_scatters
          (3 n - 2 n/U, 3 U - 2 calls; U = 1: 2 n, zero1's)
(units are taken as equal, n/U each; one micro-batch per step)
plus the trainer's two small allreduces (loss and statistics; FLOPs and stop
flags) of at most SMALL_BYTES each. Everything this module predicts is
modelled, not measured; callers label it so.
"""
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

COLLECTIVES = ("allreduce", "reduce_scatter_block", "allgather")
STRATEGIES = ("ddp", "zero1", "zero2", "zero3")


def strategy_calls(strategy, units=1):
    """The collectives of one step as (collective, fraction of the parameter
    bytes) per call, for a model of `units` units (module docstring)."""
    u = max(int(units), 1)
    if strategy == "ddp":
        return [("allreduce", 1.0)]
    if strategy == "zero1":
        return [("reduce_scatter_block", 1.0), ("allgather", 1.0)]
    if strategy == "zero2":
        return [("reduce_scatter_block", 1 / u)] * u + [("allgather", 1 / u)] * u
    if strategy == "zero3":
        gathers = u + max(u - 2, 0)
        return [("allgather", 1 / u)] * gathers + [("reduce_scatter_block", 1 / u)] * u
    raise ValueError(f"unknown strategy {strategy}")
SMALL_BYTES = 64
SMALL_REDUCTIONS = 2


class ModelInputError(Exception):
    """A benchmark file is missing or malformed."""


def algorithm_terms(collective, ranks, nbytes):
    """(latency multiplier, bandwidth bytes) of one call: cost = a alpha + b beta."""
    p = np.asarray(ranks, float)
    n = np.asarray(nbytes, float)
    steps = np.ceil(np.log2(np.maximum(p, 1)))
    share = (p - 1) / p
    if collective == "allreduce":
        return 2 * steps, 2 * share * n
    if collective in ("reduce_scatter_block", "allgather"):
        return steps, share * n
    raise ValueError(f"unknown collective {collective}")


@dataclass
class AlphaBeta:
    alpha: float  # seconds per message step
    beta: float   # seconds per byte
    rms_rel_error: float = float("nan")
    points: int = 0

    def cost(self, collective, ranks, nbytes):
        a, b = algorithm_terms(collective, ranks, nbytes)
        return a * self.alpha + b * self.beta


def fit_alpha_beta(collective, ranks, nbytes, seconds):
    """Non-negative least squares of seconds = a alpha + b beta, relative
    weighting (each row divided by its time) so small messages count."""
    ranks, nbytes, seconds = (np.asarray(x, float) for x in (ranks, nbytes, seconds))
    keep = ranks > 1
    if keep.sum() < 2:
        raise ModelInputError(f"{collective}: fewer than two measurements on more than one rank")
    a, b = algorithm_terms(collective, ranks[keep], nbytes[keep])
    t = seconds[keep]
    design = np.column_stack([a / t, b / t])
    (alpha, beta), _ = nnls(design, np.ones_like(t))
    fitted = a * alpha + b * beta
    rms = float(np.sqrt(np.mean(((fitted - t) / t) ** 2)))
    return AlphaBeta(float(alpha), float(beta), rms, int(keep.sum()))


@dataclass
class StepModel:
    rate: float              # FLOP/s per rank, from the 1-rank runs
    cores: int               # ranks beyond this share cores (oversubscribed); 0: a core each
    params: int
    element_bytes: int
    links: dict              # collective -> AlphaBeta
    units: int = 1           # blocks + 1: what zero2 and zero3 reduce and gather one by one

    def rate_at(self, ranks):
        return self.rate * (min(1.0, self.cores / ranks) if self.cores else 1.0)

    def comm_seconds(self, strategy, ranks):
        if ranks <= 1:
            return 0.0
        n = self.params * self.element_bytes
        total = sum(self.links[c].cost(c, ranks, n * share)
                    for c, share in strategy_calls(strategy, self.units))
        return float(total + SMALL_REDUCTIONS * self.links["allreduce"].cost("allreduce", ranks, SMALL_BYTES))

    def step_seconds(self, strategy, ranks, flops_max_rank):
        compute = flops_max_rank / self.rate_at(ranks)
        comm = self.comm_seconds(strategy, ranks)
        return compute, comm, compute + comm


def efficiency(mode, t1, tn, ranks):
    """Parallel efficiency: strong t1 / (N tN), weak t1 / tN."""
    return t1 / (ranks * tn) if mode == "strong" else t1 / tn


# ---------------------------------------------------------------- files
REQUIRED = {
    "scaling": ("mode", "ranks", "oversubscribed", "step_seconds", "flops_per_step"),
    "step_flops": ("ranks", "flops_max_rank", "params"),
    "collectives": ("collective", "ranks", "bytes", "avg_us"),
}


def read_rows(path, kind):
    """The rows of a benchmark CSV with the columns REQUIRED[kind], each a number
    where one is expected; ModelInputError naming the file and column otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelInputError(f"{path} is missing (run bench/bench_scaling.sh)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ModelInputError(f"{path} has no rows")
    for name in REQUIRED[kind]:
        if name not in ("mode", "collective"):
            column(rows, name, path)
        elif any(not r.get(name) for r in rows):
            raise ModelInputError(f"{path}: column {name!r} missing or empty")
    return rows


def column(rows, name, path, kind=float):
    try:
        return np.array([kind(r[name]) for r in rows])
    except (KeyError, ValueError, TypeError) as e:
        raise ModelInputError(f"{path}: column {name!r} missing or malformed ({e})") from None


def load_collectives(directory):
    files = sorted(Path(directory).glob("collectives_np*.csv"))
    if not files:
        raise ModelInputError(f"no collectives_np*.csv in {directory} (run bench_collectives)")
    rows = []
    for f in files:
        rows += read_rows(f, "collectives")
    return rows


def fit_links(rows, cores):
    """alpha-beta per collective from the rows on 2..cores ranks (oversubscribed
    rows time-share cores and would fit a slower network than there is)."""
    links = {}
    for c in COLLECTIVES:
        sel = [r for r in rows if r["collective"] == c and 1 < int(r["ranks"]) <= cores]
        if not sel:
            sel = [r for r in rows if r["collective"] == c and int(r["ranks"]) > 1]
        if not sel:
            raise ModelInputError(f"no {c} measurements on more than one rank")
        links[c] = fit_alpha_beta(c, column(sel, "ranks", c), column(sel, "bytes", c),
                                  column(sel, "avg_us", c) * 1e-6)
    return links


def fit_rate(scaling_rows):
    """FLOP/s per rank: the mean over the 1-rank runs of FLOPs / step time."""
    ones = [r for r in scaling_rows if int(r["ranks"]) == 1]
    if not ones:
        raise ModelInputError("scaling.csv has no 1-rank run to fit the compute rate")
    return float(np.mean([float(r["flops_per_step"]) / float(r["step_seconds"]) for r in ones]))
