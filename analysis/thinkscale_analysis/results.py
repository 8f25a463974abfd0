"""Reading and checking a campaign's results.h5 (docs/campaign-results-format.md).

Everything wrong with the file raises ResultsError with a message that names
the problem; nothing here writes anything."""
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

FORMAT = "thinkscale-campaign-results"
VERSION = 1
AXES = ("data", "batch", "depth", "width", "params", "flops")
ARCHS = ("transformerpp", "ebt", "free", "nexus")
REFERENCE_ARCH = "transformerpp"
STATUSES = ("done", "pending", "failed")
ARCH_LABELS = {"transformerpp": "Transformer++", "ebt": "EBT", "free": "Free Transformer",
               "nexus": "Nexus"}
AXIS_LABELS = {"data": "training tokens", "batch": "tokens per batch", "depth": "blocks",
               "width": "embedding dimension D", "params": "non-embedding parameters N",
               "flops": "executed training FLOPs"}
# The EBT paper's printed rates, |beta_EBT| / |beta_T++| - 1 (v1 text), per axis.
PAPER_REL_RATES = {"ebt": {"data": 0.3598, "batch": 0.2846, "depth": 0.0529, "params": 0.0291,
                           "flops": 0.0292, "width": 0.0002}}

STRING_COLUMNS = ("name", "arch", "axis", "run", "status")
FLOAT_COLUMNS = ("x", "val_loss", "flops")
INT_COLUMNS = ("seed",)
# Columns the analysis cannot do without; the others of the contract are optional here.
REQUIRED_COLUMNS = STRING_COLUMNS + FLOAT_COLUMNS + INT_COLUMNS
OPTIONAL_STRING_COLUMNS = ("verdict", "commit", "run_dir")


class ResultsError(Exception):
    """results.h5 is missing, unreadable or breaks the contract."""


@dataclass
class Campaign:
    path: Path
    name: str
    commit: str
    columns: dict  # column name -> 1-D numpy array, strings as Python str
    n_points: int = 0

    def col(self, name):
        return self.columns[name]


@dataclass
class Selection:
    """Which rows enter the fits and why the others do not."""
    usable: np.ndarray  # bool per row
    missing: list = field(default_factory=list)  # (name, arch, axis, status): not done
    excluded: list = field(default_factory=list)  # (name, arch, axis, reason): done but unusable


def _text(value):
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).rstrip(b"\0").decode("ascii", errors="replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _read_strings(dataset, name):
    raw = dataset[()]
    if not isinstance(raw, np.ndarray) or raw.ndim != 1:
        raise ResultsError(f"column '{name}' is not a 1-D dataset")
    if raw.dtype.kind not in ("S", "O", "U"):
        raise ResultsError(f"column '{name}' should hold strings, has type {raw.dtype}")
    return np.array([_text(v) for v in raw], dtype=object)


def _read_numbers(dataset, name, kind):
    raw = dataset[()]
    if not isinstance(raw, np.ndarray) or raw.ndim != 1:
        raise ResultsError(f"column '{name}' is not a 1-D dataset")
    if raw.dtype.kind not in "fiu":
        raise ResultsError(f"column '{name}' should be numeric, has type {raw.dtype}")
    return raw.astype(np.float64 if kind == "f" else np.int64)


# What h5py raises on a damaged or unexpected file: RuntimeError for a
# damaged structure (a bad symbol table, B-tree or heap signature, where get()
# would just say "absent"), IndexError for an empty attribute, KeyError for a
# missing object. Readers turn these into their own "damaged" error.
DAMAGED_FILE_ERRORS = (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError)


def load(path):
    """Reads DIR/results.h5 into a Campaign, checking the contract."""
    path = Path(path)
    if not path.exists():
        raise ResultsError(f"{path} does not exist (has the campaign run any point yet?)")
    if not path.is_file():
        raise ResultsError(f"{path} is not a file")
    try:
        ok = h5py.is_hdf5(str(path))
    except OSError as e:
        raise ResultsError(f"{path} cannot be read: {e}") from None
    if not ok:
        raise ResultsError(f"{path} is not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, path)
    except ResultsError:
        raise
    except DAMAGED_FILE_ERRORS as e:
        raise ResultsError(f"{path} is damaged or unreadable: {e}") from None


def _read(f, path):
    if "format" not in f.attrs:
        raise ResultsError(f"{path} has no 'format' attribute; expected '{FORMAT}'")
    fmt = _text(f.attrs["format"])
    if fmt != FORMAT:
        raise ResultsError(f"{path} has format '{fmt}', expected '{FORMAT}'")
    version = f.attrs.get("version", None)
    if version is None or int(np.asarray(version).reshape(-1)[0]) != VERSION:
        raise ResultsError(f"{path} has version {version!r}; this analysis reads version {VERSION}")
    if "points" not in f or not isinstance(f["points"], h5py.Group):
        raise ResultsError(f"{path} has no group '/points'")
    points = f["points"]
    missing = [c for c in REQUIRED_COLUMNS if c not in points]
    if missing:
        raise ResultsError(f"{path}: /points lacks column(s) {', '.join(missing)}")
    columns = {}
    for name in STRING_COLUMNS:
        columns[name] = _read_strings(points[name], name)
    for name in OPTIONAL_STRING_COLUMNS:
        if name in points:
            columns[name] = _read_strings(points[name], name)
    for name in FLOAT_COLUMNS:
        columns[name] = _read_numbers(points[name], name, "f")
    for name in INT_COLUMNS:
        columns[name] = _read_numbers(points[name], name, "i")
    lengths = {name: len(v) for name, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ResultsError(f"{path}: /points columns differ in length: "
                           + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    n = lengths["name"]
    if "verdict" not in columns:
        columns["verdict"] = np.array([""] * n, dtype=object)
    bad_axis = sorted(set(columns["axis"]) - set(AXES))
    if bad_axis:
        raise ResultsError(f"{path}: unknown axis value(s) {', '.join(bad_axis)}; "
                           f"known: {', '.join(AXES)}")
    bad_status = sorted(set(columns["status"]) - set(STATUSES))
    if bad_status:
        raise ResultsError(f"{path}: unknown status value(s) {', '.join(bad_status)}; "
                           f"known: {', '.join(STATUSES)}")
    names, counts = np.unique(columns["name"].astype(str), return_counts=True)
    if n and counts.max() > 1:
        raise ResultsError(f"{path}: point name(s) repeated: {', '.join(names[counts > 1][:5])}")
    return Campaign(path=path, name=_text(f.attrs.get("campaign", "")),
                    commit=_text(f.attrs.get("commit", "")), columns=columns, n_points=n)


def select(campaign):
    """Splits the rows into those the fits use, those not done yet (missing) and
    those done but unusable (excluded: INVALID verdict, non-positive x or loss)."""
    c = campaign.columns
    usable = np.zeros(campaign.n_points, dtype=bool)
    sel = Selection(usable=usable)
    for i in range(campaign.n_points):
        who = (c["name"][i], c["arch"][i], c["axis"][i])
        if c["status"][i] != "done":
            sel.missing.append(who + (c["status"][i],))
        elif c["verdict"][i] == "INVALID":
            sel.excluded.append(who + ("verdict INVALID",))
        elif not (np.isfinite(c["val_loss"][i]) and c["val_loss"][i] > 0):
            sel.excluded.append(who + (f"val_loss {c['val_loss'][i]!r}",))
        elif not (np.isfinite(c["x"][i]) and c["x"][i] > 0):
            sel.excluded.append(who + (f"x {c['x'][i]!r}",))
        else:
            usable[i] = True
    return sel


def ordered(values, known):
    """The distinct values, those in `known` first in its order, the rest sorted."""
    present = set(values)
    return [v for v in known if v in present] + sorted(present - set(known))
