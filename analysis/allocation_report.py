#!/usr/bin/python3
"""The allocation report of a campaign (docs/allocation-report.md).

usage: analysis/allocation_report.py [--plan FILE] [--scaling DIR] [--checkpoints DIR] CAMPAIGN_DIR

Reads CAMPAIGN_DIR/results.h5 (docs/campaign-results-format.md) and each done
run's report.yaml; writes CAMPAIGN_DIR/allocation_report.md and
CAMPAIGN_DIR/allocation_report.pdf, both or neither. Pending points are
reported as such.

exit status:
  0  done
  2  usage error
  3  bad input: CAMPAIGN_DIR or results.h5 missing, not HDF5, wrong format;
     --plan without a total line; --scaling without perf_model's CSVs;
     --checkpoints without bench_checkpoint.sh's CSV
     (nothing written)
  6  the outputs could not be written (the previous ones are left as they were)
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from thinkscale_analysis import allocation, results  # noqa: E402

EXIT_BAD_INPUT, EXIT_WRITE_FAILED = 3, 6


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="allocation_report.py",
        description="Write DIR/allocation_report.md and .pdf for a campaign directory.",
        epilog="exit status: 0 done, 2 usage, 3 bad input (nothing written), 6 outputs not written")
    parser.add_argument("dir", type=Path, help="campaign directory holding results.h5")
    parser.add_argument("--plan", type=Path,
                        help="saved output of `thinkscale campaign plan TARGET.ini`: its total "
                             "lines become the projected node-hours")
    parser.add_argument("--scaling", type=Path,
                        help="directory with analysis/perf_model.py's outputs "
                             "(perf_model_check.csv, perf_model_predictions.csv)")
    parser.add_argument("--checkpoints", type=Path,
                        help="directory with bench/bench_checkpoint.sh's checkpoint_bench.csv "
                             "(write and read bandwidth by checkpoint size)")
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    try:
        report = allocation.gather(args.dir, args.plan, args.scaling, args.checkpoints)
        text = allocation.markdown(report)
    except allocation.AllocationError as e:
        print(f"allocation_report: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except results.DAMAGED_FILE_ERRORS as e:
        # what the readers' own checks do not foresee (a non-number where one
        # is needed): bad input, named as such, not a traceback
        print(f"allocation_report: error: the inputs are malformed ({type(e).__name__}: {e})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from thinkscale_analysis import publish  # after the input is known to be good

    def write_into(staging):
        publish.write_text(staging / allocation.MD_NAME, text)
        allocation.write_pdf(staging / allocation.PDF_NAME, report, text)

    try:
        written = publish.publish_files(args.dir, [allocation.PDF_NAME, allocation.MD_NAME],
                                        write_into)
    except OSError as e:
        print(f"allocation_report: error: cannot write the report in {args.dir}: {e}",
              file=sys.stderr)
        return EXIT_WRITE_FAILED
    pending = len(allocation.not_done(report.points))
    state = f"partial: {pending} of {len(report.points)} points not done" if pending else "complete"
    print(f"allocation_report: wrote {', '.join(str(p) for p in written)} ({state})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
