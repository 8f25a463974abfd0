"""The thinking analysis (docs/thinking.md): how much extra inference compute
lowers perplexity, against how far out of distribution a set is.

Input: a campaign directory whose results.h5 has points on the `thinking`
axis, each with a `thinking_file` (an eval.h5 with per-window sums,
docs/campaign-results-format.md). Definitions:

- OOD-ness of a set = its perplexity / the training domain's validation
  perplexity, both under the model's default inference (the paper's).
- Thinking gain of a setting F on a set = 1 - P(F) / P(F0), F0 the default
  inference: the paper's C.1 quantity E[P(F)/P(F0) - 1] with the sign flipped,
  so a POSITIVE gain means extra compute LOWERED perplexity (the paper plots
  that as "% improvement"). Perplexities are token-weighted over the windows.
- Intervals: percentile bootstrap over windows (the same resampled windows
  for F and F0, and for a set and the validation set within one replicate).
- Per architecture a least-squares line of gain (at the knob's highest-compute
  level) against OOD-ness over the sets; its slope's interval from the same
  window bootstrap. The same line at every other knob level too
  (thinking_fits_by_setting.csv), so a slope can be followed from one step to
  eight and with or without self-verification.
- EBT's per-token energy (after the last step) against its per-token loss:
  Spearman rank correlation, interval by bootstrap over windows.

Nothing here writes; thinking.py (the script) publishes."""
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from scipy import stats as scipy_stats

from . import bootstrap
from .results import DAMAGED_FILE_ERRORS

# The EBT paper's Fig. 7 (OOD-ness, % gain): the spec
# (../shared/specs/experiments.md section 2) gives only the first and last of
# its five points; the middle three are not in any text we have.
PAPER_EBT_POINTS = ((1.0, 11.8), (4.37, 23.0))
# The paper's Table 2 (BigBench Dyck, % perplexity improvement: longer / + verify).
PAPER_TABLE2 = {"full": (7.19, 18.7), "no_random_step_size": (-1.47, 0.19),
                "no_random_steps": (0.00, 9.65), "no_langevin": (17.2, 17.0),
                "no_replay": (14.8, 17.8)}
ABLATION_LABELS = {"full": "full S2 recipe", "no_random_step_size": "no random step size",
                   "no_random_steps": "no random number of steps",
                   "no_langevin": "no Langevin noise", "no_replay": "no replay buffer"}
KNOBS = {"ebt": "steps,samples", "free": "K", "nexus": "order", "transformerpp": "none"}
# Columns other tools rely on come first; later additions go at the end.
CSV_COLUMNS = ("arch", "set", "knob", "setting", "ood", "gain", "gain_lo", "gain_hi",
               "nfe_per_token", "flops_per_token", "vocab")
FIT_COLUMNS = ("arch", "slope", "slope_lo", "slope_hi", "n_sets", "vocab", "setting")
VOCAB_COLUMNS = ("arch", "run", "vocab", "set", "setting", "ood", "gain", "gain_lo", "gain_hi",
                 "slope", "slope_lo", "slope_hi")
DEFAULT_RESAMPLES = 1000


class ThinkingError(Exception):
    """The campaign's thinking results are missing or malformed."""


def _text(value):
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).rstrip(b"\0").decode("utf-8", errors="replace")
    return str(value)


@dataclass
class Setting:
    """One (run, set, inference setting) of a thinking file."""
    set: str
    text: str  # the eval setting text, "default" or "ebt.infer_steps=4,ebt.infer_samples=1"
    knob: str
    label: str  # "default", "steps=4,samples=1", "K=16", "order=3"
    loss: float
    perplexity: float
    tokens: float
    flops: float
    nfe: float
    window_loss: np.ndarray
    window_tokens: np.ndarray
    answer_loss: np.ndarray = None  # per window, or None
    answer_tokens: np.ndarray = None


@dataclass
class Run:
    arch: str  # the architecture
    variant: str  # "base" or a trained ablation
    name: str
    path: Path
    vocab: str  # "byte (256)" / "sentencepiece:HASH (2001)": tokenizer (vocabulary size)
    settings: list = field(default_factory=list)
    energies: Path = None
    seed: str = ""  # the training seed, from the point's name
    seed_in_label: bool = False  # the campaign trained some arch and variant with several seeds

    @property
    def label(self):
        label = self.arch if self.variant == "base" else f"{self.arch}/{self.variant}"
        return label + (f"{SEED_MARK}{self.seed}" if self.seed_in_label else "")


# Runs of one architecture and variant trained with several seeds each get
# their own rows, fits and series, their labels ending in "@sSEED" ("ebt@s34",
# "ebt/no_replay@s34"): the spread between seeds is the retraining noise that
# the window-bootstrap intervals leave out (docs/thinking.md).
SEED_MARK = "@s"


def split_seed(name):
    """(name without its seed mark, " sSEED" or "") of a run label or an
    ablation variant."""
    base, mark, seed = name.partition(SEED_MARK)
    return base, f" s{seed}" if mark else ""


def ablation_names(variant):
    """(the row's name, the paper's (longer, verify)) of an ablation variant."""
    base, seed = split_seed(variant)
    return (ABLATION_LABELS.get(base, base) + seed,
            PAPER_TABLE2.get(base, (float("nan"), float("nan"))))


def knob_label(arch, text, config_free_samples=1):
    """(knob, label, nfe fallback) of an eval setting text."""
    knob = KNOBS.get(arch, "none")
    if text == "default":
        return knob, "default", None
    values = dict(item.split("=", 1) for item in text.split(","))
    if arch == "ebt":
        s, g = values.get("ebt.infer_steps"), values.get("ebt.infer_samples", "1")
        return knob, f"steps={s},samples={g}", None
    if arch == "free":
        k = values.get("free.eval_samples")
        return knob, f"K={k}", float(k)
    if arch == "nexus":
        return knob, f"order={values.get('nexus.infer_order')}", 1.0
    return knob, text, 1.0


def _config_value(config_text, section, key):
    current = None
    for line in config_text.splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            if k == key:
                return v
    return None


def load_runs(directory):
    """Every done thinking point of DIR with its settings; the training
    domain's name. Raises ThinkingError naming what is wrong."""
    directory = Path(directory)
    path = directory / "results.h5"
    if not path.is_file():
        raise ThinkingError(f"{path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ThinkingError(f"{path}: not an HDF5 file ({e})")
    try:
        with f:
            col, domains = _read_points(f, path)
    except ThinkingError:
        raise
    except DAMAGED_FILE_ERRORS as e:
        raise ThinkingError(f"{path} is damaged or unreadable: {e}") from None
    train_domain = domains[0]
    runs, not_done = [], []
    seen = set()
    for i, axis in enumerate(col["axis"]):
        if axis != "thinking":
            continue
        name, arch = col["name"][i], col["arch"][i]
        if col["status"][i] != "done" or not col["thinking_file"][i]:
            not_done.append((name, col["status"][i]))
            continue
        if col["run"][i] in seen:  # a shared run: one set of rows
            continue
        seen.add(col["run"][i])
        # ARCH-thinking-VARIANT-sSEED
        variant, _, seed = name[len(arch) + len("-thinking-"):].rpartition("-s")
        if not variant:  # not a campaign's name: the whole rest is the variant
            variant, seed = seed, ""
        run = _load_run(directory, arch, variant, name, directory / col["thinking_file"][i])
        run.seed = seed
        runs.append(run)
    if not runs and not not_done:
        raise ThinkingError(f"{path}: no point on the thinking axis")
    # every label carries its seed once any run has a sibling of another seed,
    # so that a run and its subword or ablation runs of one seed go together
    trained = {(r.arch, r.variant) for r in runs}
    several = len({(r.arch, r.variant, r.seed) for r in runs}) > len(trained)
    for run in runs:
        run.seed_in_label = several
    return runs, train_domain, not_done


def _read_points(f, path):
    """The thinking columns of results.h5's /points and the domains of its
    loss_by_domain."""
    if _text(f.attrs.get("format", "")) != "thinkscale-campaign-results":
        raise ThinkingError(f"{path}: not a campaign results file")
    if "points" not in f:  # raises on a damaged root group
        raise ThinkingError(f"{path} has no group '/points'")
    p = f["points"]
    need = ("name", "arch", "axis", "status", "run", "thinking_file", "loss_by_domain")
    missing = [k for k in need if k not in p]
    if missing:
        raise ThinkingError(f"{path}: /points lacks {', '.join(missing)} "
                            "(a campaign without the thinking axis, or an older build)")
    col = {k: [_text(v) for v in p[k][...]] for k in need[:-1]}
    domains = [_text(d) for d in p["loss_by_domain"].attrs["domains"]]
    return col, domains


def _load_run(directory, arch, variant, name, path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ThinkingError(f"{path}: cannot read ({e})")
    with f:
        config = _text(f.attrs.get("config", ""))
        tokenizer = _config_value(config, "data", "tokenizer") or "?"
        vocab = _config_value(config, "model", "vocab_size") or "?"
        run = Run(arch, variant, name, path, f"{tokenizer} ({vocab})")
        if "sets" not in f:
            raise ThinkingError(f"{path}: no /sets")
        for set_name, group in f["sets"].items():
            for text, g in group.items():
                a = g.attrs
                for k in ("loss", "perplexity", "tokens", "flops"):
                    if k not in a:
                        raise ThinkingError(f"{path}: sets/{set_name}/{text} lacks {k}")
                if "window_loss" not in g or "window_tokens" not in g:
                    raise ThinkingError(f"{path}: sets/{set_name}/{text} has no per-window sums")
                setting_text = _text(a.get("setting", text))
                knob, label, nfe = knob_label(arch, setting_text)
                if "nfe" in a:
                    nfe = float(a["nfe"])
                elif nfe is None:  # a default without a statistic
                    if arch == "free":
                        nfe = float(_config_value(config, "free", "eval_samples") or 1)
                    else:
                        nfe = 1.0
                has_answers = "window_answer_loss" in g
                run.settings.append(Setting(
                    set_name, setting_text, knob, label, float(a["loss"]), float(a["perplexity"]),
                    float(a["tokens"]), float(a["flops"]), float(nfe),
                    g["window_loss"][...].astype(float), g["window_tokens"][...].astype(float),
                    g["window_answer_loss"][...].astype(float) if has_answers else None,
                    g["window_answer_tokens"][...].astype(float) if has_answers else None))
    energies = path.parent / "thinking_energies.h5"
    run.energies = energies if energies.is_file() else None
    return run


# ---------------------------------------------------------------- statistics

def _perplexity(loss_sums, token_sums, weights=None):
    """exp(token-weighted mean loss); with weights (R, W) one value per resample."""
    if weights is None:
        return math.exp(loss_sums.sum() / token_sums.sum())
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without answer tokens: NaN
        return np.exp((weights @ loss_sums) / (weights @ token_sums))


def window_weights(rng, n_windows, resamples):
    """(resamples, n_windows) multiplicities of windows drawn with replacement."""
    drawn = bootstrap.draws(rng, n_windows, resamples)
    return bootstrap.counts(drawn, n_windows)


def fit_line(x, y):
    """Least-squares (slope, intercept); NaN with fewer than 2 distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def fit_lines(x, y):
    """Row-wise least-squares slopes of (R, S) arrays."""
    xm, ym = x.mean(axis=1, keepdims=True), y.mean(axis=1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((x - xm) * (y - ym)).sum(axis=1) / sxx


@dataclass
class Row:
    arch: str
    set: str
    knob: str
    setting: str
    ood: float
    gain: float
    gain_lo: float
    gain_hi: float
    nfe_per_token: float
    flops_per_token: float
    perplexity: float = float("nan")
    vocab: str = ""


@dataclass
class Fit:
    arch: str
    slope: float
    slope_lo: float
    slope_hi: float
    n_sets: int
    intercept: float = float("nan")
    setting: str = ""
    points: list = field(default_factory=list)  # (set, ood, gain, lo, hi)
    vocab: str = ""


def max_compute_label(run):
    """The knob level with the most FLOPs per token (mean over sets)."""
    by_label = {}
    for s in run.settings:
        by_label.setdefault(s.label, []).append(s.flops / s.tokens)
    return max(by_label, key=lambda k: np.mean(by_label[k]))


def analyse_run(run, train_domain, resamples, rng, answers=False):
    """Rows of one run (every set x setting), its fit at the top knob level
    and its fits at every other level. With answers, the answer-only sums of
    sets that have them (OOD-ness still relative to the validation set's
    whole-text perplexity), and no fits: the figures and the fit files use
    whole-text perplexity (docs/thinking.md), so answer-only lines would be
    computed for nothing."""
    by_set = {}
    for s in run.settings:
        by_set.setdefault(s.set, {})[s.label] = s
    if train_domain not in by_set or "default" not in by_set[train_domain]:
        raise ThinkingError(f"{run.path}: no default evaluation of the training domain "
                            f"'{train_domain}'")
    val = by_set[train_domain]["default"]
    n_windows = len(val.window_loss)
    if n_windows == 0:
        raise ThinkingError(f"{run.path}: the default evaluation of '{train_domain}' has no "
                            "per-window sums (window_loss is empty): nothing to resample")
    for s in run.settings:  # the resampling pairs windows across sets and settings
        sums = (np.asarray(s.window_loss, float), np.asarray(s.window_tokens, float))
        if any(len(x) != n_windows for x in sums) or not all(np.isfinite(x).all() for x in sums):
            raise ThinkingError(f"{run.path}: set {s.set}, setting {s.label}: its per-window sums "
                                f"are not {n_windows} finite numbers like the validation set's")
    # One window draw per replicate, shared by every set and setting: the sets
    # are different files, so sharing only ties the replicates together.
    weights = window_weights(rng, n_windows, resamples)
    val_ppl = _perplexity(val.window_loss, val.window_tokens)
    val_ppl_b = _perplexity(val.window_loss, val.window_tokens, weights)
    top = max_compute_label(run)
    rows = []
    points, ood_b, gain_b = {}, {}, {}  # per knob label
    for set_name, settings in by_set.items():
        if "default" not in settings:
            raise ThinkingError(f"{run.path}: set {set_name} has no default evaluation")
        base = settings["default"]

        def sums(s):
            if answers:
                return s.answer_loss, s.answer_tokens
            return s.window_loss, s.window_tokens

        if answers and base.answer_loss is None:
            continue
        bl, bt = sums(base)
        if bt.sum() <= 0:
            continue
        p0 = _perplexity(bl, bt)
        p0_b = _perplexity(bl, bt, weights)
        ood = p0 / val_ppl
        for label, s in settings.items():
            sl, st = sums(s)
            p = _perplexity(sl, st)
            gain = 1.0 - p / p0
            samples = 1.0 - _perplexity(sl, st, weights) / p0_b
            lo, hi = bootstrap.percentile_interval(samples)
            rows.append(Row(run.label, set_name, s.knob, label, ood, gain, lo, hi, s.nfe,
                            s.flops / s.tokens, p, run.vocab))
            points.setdefault(label, []).append((set_name, ood, gain, lo, hi))
            ood_b.setdefault(label, []).append(p0_b / val_ppl_b)
            gain_b.setdefault(label, []).append(samples)
    if answers:
        return rows, None, []

    def fit_at(label):
        return _fit_points(run, label, points.get(label, []), ood_b.get(label, []),
                           gain_b.get(label, []))

    return rows, fit_at(top), [fit_at(label) for label in points if label != "default"]


def _fit_points(run, label, points, ood_b, gain_b):
    """The line of gain against OOD-ness over the sets at one knob level, its
    slope's interval from the window replicates (ood_b, gain_b: per set, one
    value per replicate)."""
    fit = Fit(run.label, float("nan"), float("nan"), float("nan"), len(points), setting=label,
              points=points, vocab=run.vocab)
    if len(points) >= 2:
        x = np.array([q[1] for q in points])
        y = np.array([q[2] for q in points])
        fit.slope, fit.intercept = fit_line(x, y)
        if np.ptp(y) == 0:  # no knob (Transformer++): flat by construction
            fit.slope_lo = fit.slope_hi = fit.slope
        else:
            slopes = fit_lines(np.array(ood_b).T, np.array(gain_b).T)
            fit.slope_lo, fit.slope_hi = bootstrap.percentile_interval(slopes)
    return fit


def energy_correlation(run, resamples, rng, setting="default"):
    """Per set: (set, spearman, lo, hi, n_tokens) of EBT's final per-token
    energy against its per-token loss."""
    out = []
    if run.energies is None:
        return out
    try:
        f = h5py.File(run.energies, "r")
    except OSError as e:
        raise ThinkingError(f"{run.energies}: cannot read ({e})") from None
    with f:
        try:
            has_sets = "sets" in f
        except DAMAGED_FILE_ERRORS as e:  # a damaged root group, which f.get() calls absent
            raise ThinkingError(f"{run.energies} is damaged or unreadable: {e}") from None
        if not has_sets:
            raise ThinkingError(f"{run.energies}: no /sets")
        for set_name, group in f["sets"].items():
            if setting not in group:
                continue
            g = group[setting]
            energy = g["energy"][...][:, -1, :].astype(float)  # [windows, seq], after the last step
            loss = g["token_loss"][...].astype(float)
            ok = np.isfinite(energy) & np.isfinite(loss)
            rho = _spearman(energy[ok], loss[ok])
            n = energy.shape[0]
            samples = []
            for _ in range(resamples):
                pick = rng.integers(0, n, n)
                e, l, m = energy[pick], loss[pick], ok[pick]
                samples.append(_spearman(e[m], l[m]))
            lo, hi = bootstrap.percentile_interval(samples)
            out.append((set_name, rho, lo, hi, int(ok.sum())))
    return out


def _spearman(a, b):
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy_stats.spearmanr(a, b)[0])


@dataclass
class Analysis:
    rows: list
    answer_rows: list
    fits: list
    energy: list  # (arch, set, spearman, lo, hi, n)
    ablation: list  # (variant, set, longer, longer_lo, longer_hi, verify, verify_lo, verify_hi)
    ablation_set: str
    train_domain: str
    vocabularies: list
    not_done: list
    runs: list
    vocab_rows: list = field(default_factory=list)  # VocabRow, the byte vs subword comparison
    setting_fits: list = field(default_factory=list)  # Fit per run and non-default knob level


@dataclass
class VocabRow:
    """One run's point of the vocabulary comparison: a set at the run's
    highest-compute knob level, with the run's fitted slope."""
    arch: str  # the architecture (ebt), not the run label
    run: str  # the run label (ebt, ebt/subword)
    vocab: str
    set: str
    setting: str
    ood: float
    gain: float
    gain_lo: float
    gain_hi: float
    slope: float
    slope_lo: float
    slope_hi: float


def vocab_comparison(runs, fits):
    """The byte vs subword comparison: per architecture, its base run and
    every run of it trained in another vocabulary (thinking.ini's subword
    variant), each set's OOD-ness and gain at the highest-compute level and
    the fitted slope. Per-token perplexities of different vocabularies are
    not comparable; OOD-ness and gain are ratios within one vocabulary."""
    by_label = {f.arch: f for f in fits}
    rows = []
    for base in (r for r in runs if r.variant == "base"):
        others = [r for r in runs
                  if r.arch == base.arch and r.vocab != base.vocab and r.seed == base.seed]
        if not others:
            continue
        for run in [base] + others:
            f = by_label[run.label]
            for set_name, ood, gain, lo, hi in f.points:
                rows.append(VocabRow(run.arch, run.label, run.vocab, set_name, f.setting, ood, gain,
                                     lo, hi, f.slope, f.slope_lo, f.slope_hi))
    return rows


def ablation_table(runs, rows):
    """EBT Table 2: per trained variant, the gain of thinking longer (most
    steps, 1 sample) and of thinking longer with self-verification (most
    steps, most samples) over the default inference, on Dyck if evaluated,
    else the most out-of-distribution set."""
    ebt = [r for r in runs if r.arch == "ebt"]
    # Variants trained in another vocabulary than the base EBT's are not
    # ablations of the recipe (the subword row): left out.
    base_vocab = next((r.vocab for r in ebt if r.variant == "base"), None)
    ebt = [r for r in ebt if base_vocab is None or r.vocab == base_vocab]
    if not ebt:
        return [], ""
    sets = {row.set for row in rows if row.arch.startswith("ebt")}
    base_labels = {r.label for r in ebt if r.variant == "base"}
    if "dyck" in sets:
        chosen = "dyck"
    else:
        oods = {}
        for row in rows:
            if row.arch in base_labels and row.setting == "default":
                oods[row.set] = row.ood
        chosen = max(oods, key=oods.get) if oods else ""
    table = []
    for run in ebt:
        labels = [s.label for s in run.settings if s.label.startswith("steps=")]
        if not labels:
            continue
        parsed = [tuple(int(p.split("=")[1]) for p in label.split(",")) for label in labels]
        most_steps = max(p[0] for p in parsed)
        fewest_samples = min(p[1] for p in parsed if p[0] == most_steps)
        most_samples = max(p[1] for p in parsed if p[0] == most_steps)
        longer = f"steps={most_steps},samples={fewest_samples}"
        verify = f"steps={most_steps},samples={most_samples}"
        found = {row.setting: row for row in rows if row.arch == run.label and row.set == chosen}
        if longer in found and verify in found:
            a, b = found[longer], found[verify]
            variant = "full" if run.variant == "base" else run.variant
            if run.seed_in_label:
                variant += SEED_MARK + run.seed
            table.append((variant, chosen, a.gain, a.gain_lo, a.gain_hi, b.gain, b.gain_lo,
                          b.gain_hi, longer, verify))
    return table, chosen


def analyse(directory, resamples=DEFAULT_RESAMPLES, seed=0):
    runs, train_domain, not_done = load_runs(directory)
    rng = np.random.default_rng(seed)
    rows, answer_rows, fits, setting_fits, energy = [], [], [], [], []
    order = {"transformerpp": 0, "ebt": 1, "free": 2, "nexus": 3}
    runs.sort(key=lambda r: (order.get(r.arch, 9), r.variant != "base", r.variant))
    for run in runs:
        r, fit, by_setting = analyse_run(run, train_domain, resamples, rng)
        rows += r
        fits.append(fit)
        setting_fits += by_setting
        answer_rows += analyse_run(run, train_domain, resamples, rng, answers=True)[0]
        if run.arch == "ebt":
            for set_name, rho, lo, hi, n in energy_correlation(run, min(resamples, 200), rng):
                energy.append((run.label, set_name, rho, lo, hi, n))
    ablation, ablation_set = ablation_table(runs, rows)
    vocabularies = sorted({r.vocab for r in runs})
    return Analysis(rows, answer_rows, fits, energy, ablation, ablation_set, train_domain,
                    vocabularies, not_done, runs, vocab_comparison(runs, fits), setting_fits)


# ---------------------------------------------------------------- tables

def _fmt(v):
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, int):
        return str(v)
    return f"{v:.6g}"


def _table_csv(items, columns):
    lines = [",".join(columns)]
    for item in items:
        lines.append(",".join(_csv_cell(_fmt(getattr(item, c))) for c in columns))
    return "\n".join(lines) + "\n"


def _csv_cell(text):
    return f'"{text}"' if "," in text else text


def rows_csv(rows):
    return _table_csv(rows, CSV_COLUMNS)


def fits_csv(fits):
    return _table_csv(fits, FIT_COLUMNS)


def vocab_csv(vocab_rows):
    return _table_csv(vocab_rows, VOCAB_COLUMNS)


def vocab_md(analysis):
    """The byte vs subword table: per architecture and set, OOD-ness and gain
    (%) at the highest-compute level in each vocabulary, then the slopes."""
    rows = analysis.vocab_rows
    out = ["## Byte vs subword vocabulary", "",
           "The same domains in two tokenizers, at each run's highest-compute knob level. "
           "OOD-ness and gain are ratios within one vocabulary (per-token perplexities of "
           "different vocabularies are not comparable).", ""]
    for arch in dict.fromkeys(r.arch for r in rows):
        mine = [r for r in rows if r.arch == arch]
        runs = list(dict.fromkeys((r.run, r.vocab) for r in mine))
        out += ["| " + arch + " | " + " | ".join(f"{run}: {vocab}" for run, vocab in runs) + " |",
                "|---|" + "---|" * len(runs)]
        for set_name in dict.fromkeys(r.set for r in mine):
            cells = []
            for run, _ in runs:
                hit = [r for r in mine if r.run == run and r.set == set_name]
                cells.append(f"OOD {hit[0].ood:.2f}, gain {100 * hit[0].gain:+.1f}% "
                             f"[{100 * hit[0].gain_lo:+.1f}, {100 * hit[0].gain_hi:+.1f}]"
                             if hit else "-")
            out.append(f"| {set_name} | " + " | ".join(cells) + " |")
        slopes = []
        for run, _ in runs:
            r = next(r for r in mine if r.run == run)
            slopes.append(f"{_fmt(r.slope)} [{_fmt(r.slope_lo)}, {_fmt(r.slope_hi)}] "
                          f"({r.setting})")
        out += ["| slope | " + " | ".join(slopes) + " |", ""]
    return "\n".join(out) + "\n"


def setting_fits_md(analysis):
    """The slope at every knob level of every run with a knob."""
    out = ["## Slope of gain against OOD-ness at every knob level", "",
           "| run | setting | slope | 95% interval | sets |", "|---|---|---|---|---|"]
    for f in analysis.setting_fits:
        out.append(f"| {f.arch} | {f.setting} | {_fmt(f.slope)} | [{_fmt(f.slope_lo)}, "
                   f"{_fmt(f.slope_hi)}] | {f.n_sets} |")
    return "\n".join(out) + "\n"


def energy_csv(energy):
    lines = ["arch,set,spearman,spearman_lo,spearman_hi,n_tokens"]
    for arch, s, rho, lo, hi, n in energy:
        lines.append(",".join([arch, s, _fmt(rho), _fmt(lo), _fmt(hi), str(n)]))
    return "\n".join(lines) + "\n"


def ablation_md(analysis):
    lines = [f"EBT Table 2 ablation on `{analysis.ablation_set}` (% perplexity improvement over "
             "the default inference; 95% window-bootstrap interval; the paper's on BigBench Dyck)",
             "",
             "| trained variant | thinking longer | + self-verification | paper longer | "
             "paper + verify |",
             "|---|---|---|---|---|"]
    for variant, _, g, lo, hi, v, vlo, vhi, longer, verify in analysis.ablation:
        name, paper = ablation_names(variant)
        lines.append(f"| {name} | {100 * g:+.2f} "
                     f"[{100 * lo:+.2f}, {100 * hi:+.2f}] ({longer}) | {100 * v:+.2f} "
                     f"[{100 * vlo:+.2f}, {100 * vhi:+.2f}] ({verify}) | {paper[0]:+.2f} | "
                     f"{paper[1]:+.2f} |")
    return "\n".join(lines) + "\n"


def summary_md(analysis):
    a = analysis
    out = ["# Thinking gain against distribution shift", "",
           f"Vocabulary: {', '.join(a.vocabularies)}. Training domain: `{a.train_domain}`. "
           "Metric: whole-text teacher-forced perplexity (answer-only rows in "
           "thinking_answer.csv). Gain = 1 - P(F)/P(default): positive = extra inference "
           "compute lowered perplexity.", ""]
    if a.not_done:
        out += [f"**Partial**: {len(a.not_done)} thinking point(s) not done: "
                + ", ".join(n for n, _ in a.not_done), ""]
    out += ["## Fits: gain at the highest-compute knob level against OOD-ness", "",
            "| arch | setting | slope | 95% interval | sets | points (set: OOD-ness, gain %) |",
            "|---|---|---|---|---|---|"]
    for f in a.fits:
        pts = "; ".join(f"{s}: {o:.2f}, {100 * g:+.1f}" for s, o, g, _, _ in f.points)
        out.append(f"| {f.arch} | {f.setting} | {_fmt(f.slope)} | [{_fmt(f.slope_lo)}, "
                   f"{_fmt(f.slope_hi)}] | {f.n_sets} | {pts} |")
    (x0, y0), (x1, y1) = PAPER_EBT_POINTS
    out += ["", f"The paper's EBT: from ({x0}, {y0}%) to ({x1}, {y1}%), a slope of about "
            f"{(y1 - y0) / 100 / (x1 - x0):.4f} per unit of OOD-ness (from its end points).", ""]
    if a.energy:
        out += ["## EBT: per-token energy against per-token loss (Spearman, default inference)",
                "", "| run | set | rho | 95% interval | tokens |", "|---|---|---|---|---|"]
        for arch, s, rho, lo, hi, n in a.energy:
            out.append(f"| {arch} | {s} | {_fmt(rho)} | [{_fmt(lo)}, {_fmt(hi)}] | {n} |")
        out.append("")
    if a.ablation:
        out += ["## " + ablation_md(a)]
    if a.setting_fits:
        out += [setting_fits_md(a)]
    if a.vocab_rows:
        out += [vocab_md(a)]
    return "\n".join(out) + "\n"
