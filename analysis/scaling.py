#!/usr/bin/python3
"""Fits, tables and figures of a scaling campaign (docs/scaling-analysis.md).

usage: analysis/scaling.py [--partial] [--resamples N] [--seed S] DIR

Reads DIR/results.h5 (docs/campaign-results-format.md) and writes DIR/fits.csv,
DIR/fits.md, DIR/compute_matched.csv and DIR/figures/ (PNG and PDF).

exit status:
  0  done
  2  usage error
  3  bad input: DIR or DIR/results.h5 missing, not HDF5, wrong format or
     version, missing or malformed column (nothing written)
  4  some points are not done and --partial was not given (nothing written)
  5  no (architecture, axis) has two usable points: nothing to fit
  6  the outputs could not be written (the previous ones are left as they were)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from thinkscale_analysis import campaign_fits, results, tables  # noqa: E402

EXIT_BAD_INPUT, EXIT_NOT_DONE, EXIT_NOTHING_TO_FIT, EXIT_WRITE_FAILED = 3, 4, 5, 6


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="scaling.py", description="Fit scaling laws to a campaign's results.h5.",
        epilog="exit status: 0 done, 2 usage, 3 bad input, 4 points not done (see --partial), "
               "5 nothing to fit, 6 outputs not written")
    parser.add_argument("dir", type=Path, help="campaign directory holding results.h5")
    parser.add_argument("--partial", action="store_true",
                        help="fit the done points even if others are pending or failed; "
                             "the table is marked partial")
    parser.add_argument("--resamples", type=int, default=campaign_fits.DEFAULT_RESAMPLES,
                        help="bootstrap resamples (default %(default)s; the saturating law uses "
                             f"at most {campaign_fits.SATURATING_RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args(argv)
    if args.resamples < 10:
        parser.error("--resamples must be at least 10")
    return args


def error(message):
    print(f"scaling: error: {message}", file=sys.stderr)


def main(argv):
    args = parse_args(argv)
    if not args.dir.is_dir():
        error(f"{args.dir} is not a directory")
        return EXIT_BAD_INPUT
    try:
        campaign = results.load(args.dir / "results.h5")
    except results.ResultsError as e:
        error(str(e))
        return EXIT_BAD_INPUT
    selection = results.select(campaign)
    for name, arch, axis, reason in selection.excluded:
        print(f"scaling: warning: point {name} ({arch}/{axis}) left out: {reason}", file=sys.stderr)
    if selection.missing and not args.partial:
        error(f"{len(selection.missing)} of {campaign.n_points} points are not done "
              "(rerun the campaign, or pass --partial to fit what is done):")
        for name, arch, axis, status in selection.missing:
            print(f"  {name}  {arch}/{axis}  {status}", file=sys.stderr)
        return EXIT_NOT_DONE
    analysis = campaign_fits.analyse(campaign, selection, args.resamples, args.seed)
    if not analysis.rows:
        error("no (architecture, axis) has two usable points: nothing to fit")
        for arch, axis, why in analysis.skipped:
            print(f"  {arch}/{axis}: {why}", file=sys.stderr)
        return EXIT_NOTHING_TO_FIT
    from thinkscale_analysis import figures, publish  # matplotlib only when there is work

    texts = {"compute_matched.csv": tables.compute_matched_csv(analysis),
             "fits.md": tables.fits_md(analysis),
             "fits.csv": tables.fits_csv(analysis)}
    try:
        written, figure_paths = publish.publish(args.dir, texts,
                                                lambda d: figures.render(analysis, d))
    except OSError as e:
        error(f"cannot write the outputs in {args.dir}: {e}")
        return EXIT_WRITE_FAILED
    if analysis.partial:
        print(f"scaling: PARTIAL fits: {len(selection.missing)} point(s) not done")
    print(f"scaling: {len(analysis.rows)} fits of {campaign.n_points} points -> "
          + ", ".join(str(p) for p in written))
    print(f"scaling: {len(figure_paths)} figures in {args.dir / 'figures'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
