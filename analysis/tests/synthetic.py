"""Synthetic campaigns with known exponents, written as results.h5 exactly as
the C campaign layer writes it (docs/campaign-results-format.md): fixed-length
null-padded ASCII strings, every contract column, NaN where not done."""
from pathlib import Path

import h5py
import numpy as np

ARCHS = ("transformerpp", "ebt", "free", "nexus")
AXES = ("data", "batch", "depth", "width", "params", "flops")
# Known slopes per architecture: EBT's |beta| is 30% larger than Transformer++'s.
BETAS = {"transformerpp": -0.10, "ebt": -0.13, "free": -0.09, "nexus": -0.11}
AXIS_RANGES = {"data": (1e6, 1e8), "batch": (4096, 65536), "depth": (2, 16), "width": (64, 512),
               "params": (1e5, 1e7), "flops": None}
FLOPS_PER_PARAM_TOKEN = {"transformerpp": 6.0, "ebt": 20.0, "free": 7.0, "nexus": 8.0}
TOKENS = 1e7


def power_law_loss(beta, x, x0, level=3.0):
    return level * (x / x0) ** beta


def make_rows(archs=ARCHS, axes=AXES, n_values=5, sigma=0.005, seed=1, betas=BETAS):
    """One row per (arch, axis, value); the flops axis reuses the params runs
    (same run names, x = executed FLOPs, the same loss)."""
    rng = np.random.default_rng(seed)
    rows = []
    for arch in archs:
        for axis in axes:
            if axis == "flops":
                continue
            lo, hi = AXIS_RANGES[axis]
            for k, x in enumerate(np.geomspace(lo, hi, n_values)):
                loss = power_law_loss(betas[arch], x, lo) * np.exp(sigma * rng.standard_normal())
                run = f"{arch}-{axis}-{k}-s1"
                rows.append(dict(name=run, arch=arch, axis=axis, x=float(x), run=run, loss=loss,
                                 params=int(x) if axis == "params" else 100000,
                                 flops=FLOPS_PER_PARAM_TOKEN[arch] * (x if axis == "params" else 1e5)
                                 * TOKENS))
        if "flops" in axes and "params" in axes:
            for r in [r for r in rows if r["arch"] == arch and r["axis"] == "params"]:
                rows.append(dict(r, name=r["name"].replace("-params-", "-flops-"), axis="flops",
                                 x=r["flops"]))
    return rows


def _strings(values):
    values = [v.encode("ascii") for v in values]
    return np.array(values, dtype=f"S{max([1] + [len(v) for v in values])}")


def write(path, rows, status=None, fmt="thinkscale-campaign-results", version=1,
          drop_columns=(), campaign="synthetic", verdicts=None):
    """Writes rows to path; status/verdicts: optional per-row lists."""
    n = len(rows)
    status = status or ["done"] * n
    verdicts = verdicts or ["VALID" if s == "done" else "" for s in status]
    done = np.array([s == "done" for s in status])
    loss = np.where(done, [r["loss"] for r in rows], np.nan)
    domains = ["bible", "code"]
    cols = {
        "name": _strings([r["name"] for r in rows]),
        "arch": _strings([r["arch"] for r in rows]),
        "axis": _strings([r["axis"] for r in rows]),
        "x": np.array([r["x"] for r in rows], dtype=np.float64),
        "seed": np.ones(n, dtype=np.int64),
        "run": _strings([r["run"] for r in rows]),
        "status": _strings(status),
        "verdict": _strings(verdicts),
        "params": np.array([r["params"] + 5000 for r in rows], dtype=np.int64),
        "non_embedding_params": np.array([r["params"] for r in rows], dtype=np.int64),
        "depth": np.full(n, 4, dtype=np.int64), "width": np.full(n, 128, dtype=np.int64),
        "heads": np.full(n, 4, dtype=np.int64), "context": np.full(n, 64, dtype=np.int64),
        "batch": np.full(n, 16, dtype=np.int64), "steps": np.full(n, 100, dtype=np.int64),
        "lr": np.full(n, 1e-3), "warmup": np.full(n, 10, dtype=np.int64),
        "tokens": np.full(n, TOKENS), "epochs": np.full(n, 0.5),
        "flops": np.array([r["flops"] for r in rows]),
        "flops_6n": np.array([6.0 * r["params"] * TOKENS for r in rows]),
        "flops_6n_attn": np.array([6.0 * r["params"] * TOKENS * 1.1 for r in rows]),
        "val_loss": loss, "val_ppl": np.exp(loss),
        "wall_seconds": np.where(done, 10.0, np.nan), "node_hours": np.where(done, 10 / 3600, np.nan),
        "ranks": np.full(n, 2, dtype=np.int64), "nodes": np.ones(n, dtype=np.int64),
        "commit": _strings(["abc123"] * n),
        "run_dir": _strings([f"runs/{r['name']}" for r in rows]),
    }
    with h5py.File(Path(path), "w") as f:
        if fmt is not None:
            f.attrs["format"] = np.bytes_(fmt)
        f.attrs["version"] = np.int64(version)
        f.attrs["campaign"] = np.bytes_(campaign)
        f.attrs["campaign_file"] = np.bytes_("[campaign]\nname = synthetic\n")
        f.attrs["commit"] = np.bytes_("abc123")
        f.attrs["updated"] = np.bytes_("2026-01-01T00:00:00Z")
        points = f.create_group("points")
        for name, values in cols.items():
            if name in drop_columns:
                continue
            ds = points.create_dataset(name, data=values)
            ds.attrs["units"] = np.bytes_("")
            ds.attrs["description"] = np.bytes_(name)
        by_domain = np.stack([loss, loss * 1.5], axis=1)
        ds = points.create_dataset("loss_by_domain", data=by_domain)
        ds.attrs["domains"] = _strings(domains)
        ds = points.create_dataset("ppl_by_domain", data=np.exp(by_domain))
        ds.attrs["domains"] = _strings(domains)
