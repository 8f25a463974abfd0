#!/usr/bin/python3
"""The thinking analysis of a campaign with the thinking axis (docs/thinking.md).

usage: analysis/thinking.py [--partial] [--resamples N] [--seed S] DIR

Reads DIR/results.h5 and the thinking files of its runs; writes
DIR/thinking.csv, thinking_fits.csv, thinking_answer.csv, thinking_energy.csv,
thinking_vocab.csv (the byte vs subword comparison), thinking.md and DIR/figures/thinking_{ood,flops,ablation}.{png,pdf}.

exit status: 0 done, 2 usage, 3 bad input (nothing written), 4 thinking points
not done and no --partial (nothing written), 6 outputs not written (the
previous ones are left as they were).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from thinkscale_analysis import results, thinking  # noqa: E402

EXIT_BAD_INPUT, EXIT_NOT_DONE, EXIT_WRITE_FAILED = 3, 4, 6


def main(argv):
    parser = argparse.ArgumentParser(prog="thinking.py",
                                     description="Thinking gain against OOD-ness of a campaign.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--partial", action="store_true",
                        help="analyse the done thinking points even if others are not done")
    parser.add_argument("--resamples", type=int, default=thinking.DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ood-axis", choices=("linear", "log"), default="linear",
                        help="scale of thinking_ood's OOD-ness axis: log spreads sets whose "
                        "OOD-ness spans decades (Dyck's 100s against real text's 1-10)")
    args = parser.parse_args(argv)
    if args.resamples < 10:
        parser.error("--resamples must be at least 10")
    try:
        analysis = thinking.analyse(args.dir, args.resamples, args.seed)
    except thinking.ThinkingError as e:
        print(f"thinking: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (*results.DAMAGED_FILE_ERRORS, AttributeError, ZeroDivisionError,
            np.linalg.LinAlgError) as e:
        # What the readers' own checks do not foresee in a damaged or
        # hand-made file: still bad input, named as such, not a traceback.
        print(f"thinking: error: the inputs in {args.dir} are malformed or damaged "
              f"({type(e).__name__}: {e})", file=sys.stderr)
        return EXIT_BAD_INPUT
    if analysis.not_done and not args.partial:
        print(f"thinking: error: {len(analysis.not_done)} thinking point(s) not done (rerun the "
              "campaign, or pass --partial):", file=sys.stderr)
        for name, status in analysis.not_done:
            print(f"  {name}  {status}", file=sys.stderr)
        return EXIT_NOT_DONE
    if not analysis.runs:
        print("thinking: error: no thinking point is done", file=sys.stderr)
        return EXIT_BAD_INPUT
    from thinkscale_analysis import publish, thinking_figures  # matplotlib only with work

    texts = {"thinking_answer.csv": thinking.rows_csv(analysis.answer_rows),
             "thinking_energy.csv": thinking.energy_csv(analysis.energy),
             "thinking_vocab.csv": thinking.vocab_csv(analysis.vocab_rows),
             "thinking.md": thinking.summary_md(analysis),
             "thinking_fits.csv": thinking.fits_csv(analysis.fits),
             "thinking_fits_by_setting.csv": thinking.fits_csv(analysis.setting_fits),
             "thinking.csv": thinking.rows_csv(analysis.rows)}
    try:
        files, figures = publish.publish(args.dir, texts,
                                         lambda d: thinking_figures.render_all(analysis, d, args.ood_axis))
    except OSError as e:
        print(f"thinking: error: outputs not written: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    for p in files + figures:
        print(f"thinking: wrote {p}")
    for f in analysis.fits:
        print(f"thinking: {f.arch:28s} slope {f.slope:+.4g} [{f.slope_lo:+.4g}, "
              f"{f.slope_hi:+.4g}] over {f.n_sets} sets ({f.setting})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
