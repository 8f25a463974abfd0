"""Figures of the thinking analysis, PNG and PDF: thinking_ood (the EBT
paper's Fig. 7 layout), thinking_flops (its Fig. 6a) and thinking_ablation
(its Table 2 as a table)."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .figures import _colour, _save  # noqa: E402
from .results import ARCH_LABELS  # noqa: E402
from .thinking import PAPER_EBT_POINTS, SEED_MARK, ablation_names, split_seed  # noqa: E402


def _base_fits(analysis):
    return [f for f in analysis.fits if "/" not in f.arch]


def _other_vocab_fits(analysis):
    """Fits of runs trained in another vocabulary than their architecture's
    base run (the subword row), with the base architecture's name."""
    runs = {}
    for r in analysis.vocab_rows:
        if "/" in r.run:  # its seed's base run's series ("ebt@s34") gives the colour
            _, mark, seed = r.run.partition(SEED_MARK)
            runs[r.run] = r.arch + mark + seed
    return [(runs[f.arch], f) for f in analysis.fits if f.arch in runs]


SEED_MARKERS = ("o", "s", "^", "D", "v", "P")


def _style(label, labels):
    """(colour, marker) of a run label among labels: the colour of its
    architecture or variant, the marker of its seed (one seed: "o"), so that
    seeds of one run share a colour and no two runs share both."""
    bases = list(dict.fromkeys(split_seed(x)[0] for x in labels))
    seeds = sorted({split_seed(x)[1] for x in labels})
    base, seed = split_seed(label)
    if base not in bases:
        bases.append(base)
    marker = SEED_MARKERS[seeds.index(seed) % len(SEED_MARKERS)] if seed in seeds else "o"
    return _colour(base, bases), marker


def ood_figure(analysis, out_dir, ood_axis="linear"):
    """x OOD-ness, y thinking gain (%) at each architecture's highest-compute
    knob level: points with window-bootstrap intervals and the fitted line;
    runs in another vocabulary (the subword row) hollow, dashed. ood_axis
    "log" draws x on a log scale (the lines, fitted in linear OOD-ness, then
    bend), for sets whose OOD-ness spans decades."""
    if ood_axis not in ("linear", "log"):
        raise ValueError(f"ood_axis must be linear or log, not {ood_axis!r}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    archs = [f.arch for f in _base_fits(analysis)]
    series = [(f.arch, f, False) for f in _base_fits(analysis)]
    series += [(arch, f, True) for arch, f in _other_vocab_fits(analysis)]
    for arch, f, other_vocab in series:
        if not f.points:
            continue
        colour, marker = _style(arch, archs)
        x = np.array([p[1] for p in f.points])
        y = 100 * np.array([p[2] for p in f.points])
        lo = 100 * np.array([p[3] for p in f.points])
        hi = 100 * np.array([p[4] for p in f.points])
        err = np.vstack([np.where(np.isfinite(lo), y - lo, 0), np.where(np.isfinite(hi), hi - y, 0)])
        # "sentencepiece:HASH (2001)" -> "subword (2001)": the hash is in thinking.md
        vocab = "subword " + f.vocab.split(" ", 1)[-1] if f.vocab.startswith("sentencepiece:") \
            else f.vocab
        base, seed = split_seed(arch)
        name = ARCH_LABELS.get(base, base) + seed + (f", {vocab}" if other_vocab else "")
        label = f"{name} ({f.setting}; slope {100 * f.slope:+.2f}%)" \
            if np.isfinite(f.slope) else name
        ax.errorbar(x, y, yerr=np.abs(err), fmt=marker, color=colour, capsize=3, label=label,
                    mfc="none" if other_vocab else colour)
        for p, xi, yi in zip(f.points, x, y):
            ax.annotate(p[0], (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7,
                        color=colour)
        if np.isfinite(f.slope):
            lo_x = min(x.min(), 1.0)
            grid = np.geomspace(lo_x, x.max(), 50) if ood_axis == "log" \
                else np.linspace(lo_x, x.max(), 50)
            ax.plot(grid, 100 * (f.intercept + f.slope * grid), "--" if other_vocab else "-",
                    color=colour, lw=1)
    (x0, y0), (x1, y1) = PAPER_EBT_POINTS
    ax.plot([x0, x1], [y0, y1], "x--", color="black", lw=0.8,
            label="EBT paper, Fig. 7 (first and last of its 5 points)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xscale(ood_axis)
    ax.set_xlabel("OOD-ness (set perplexity / validation perplexity, default inference)"
                  + (", log scale" if ood_axis == "log" else ""))
    ax.set_ylabel("thinking gain, % perplexity improvement")
    ax.set_title("Thinking gain against distribution shift")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_dir, "thinking_ood")


def flops_figure(analysis, out_dir):
    """Per architecture: perplexity against executed inference FLOPs per token
    over the knob levels, in distribution and on the most OOD set."""
    base = [f.arch for f in _base_fits(analysis)]
    default_rows = [r for r in analysis.rows if r.setting == "default" and r.arch in base]
    oods = {}
    for r in default_rows:
        oods.setdefault(r.set, []).append(r.ood)
    most = max(oods, key=lambda s: np.mean(oods[s])) if oods else None
    fig, axes = plt.subplots(1, max(len(base), 1), figsize=(3.2 * max(len(base), 1), 3.4),
                             squeeze=False)
    for ax, arch in zip(axes[0], base):
        colour = _style(arch, base)[0]
        for set_name, style in ((analysis.train_domain, "o-"), (most, "s--")):
            rows = sorted((r for r in analysis.rows if r.arch == arch and r.set == set_name
                           and r.setting != "default"), key=lambda r: r.flops_per_token)
            if not rows:  # no knob: the default alone
                rows = [r for r in analysis.rows if r.arch == arch and r.set == set_name]
            ax.plot([r.flops_per_token for r in rows], [r.perplexity for r in rows], style,
                    color=colour, label=f"{set_name}" + (" (most OOD)" if set_name == most else ""))
        ax.set_xscale("log")
        base_arch, seed = split_seed(arch)
        ax.set_title(ARCH_LABELS.get(base_arch, base_arch) + seed, fontsize=9)
        ax.set_xlabel("inference FLOPs per token")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("perplexity")
    fig.tight_layout()
    return _save(fig, out_dir, "thinking_flops")


def ablation_figure(analysis, out_dir):
    """The Table 2 ablation as a rendered table."""
    cells = []
    for variant, _, g, lo, hi, v, vlo, vhi, _, _ in analysis.ablation:
        name, paper = ablation_names(variant)
        cells.append([name,
                      f"{100 * g:+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                      f"{100 * v:+.2f} [{100 * vlo:+.1f}, {100 * vhi:+.1f}]",
                      f"{paper[0]:+.2f} / {paper[1]:+.2f}"])
    if not cells:
        cells = [["(no EBT variants evaluated)", "", "", ""]]
    fig, ax = plt.subplots(figsize=(8.4, 0.5 + 0.35 * (len(cells) + 1)))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=["trained variant", "thinking longer, %",
                                                "+ self-verification, %", "paper (Dyck)"],
                     loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(4)))
    ax.set_title(f"EBT System-2 ablation on {analysis.ablation_set or '-'} "
                 "(% perplexity improvement over default inference)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out_dir, "thinking_ablation")


def render_all(analysis, out_dir, ood_axis="linear"):
    return ood_figure(analysis, out_dir, ood_axis) + flops_figure(analysis, out_dir) + \
        ablation_figure(analysis, out_dir)
