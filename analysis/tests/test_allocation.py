"""analysis/allocation_report.py end to end as a subprocess on a synthetic
campaign directory: results.h5 as the C layer writes it (fixed-length strings)
and runs/NAME/report.yaml shaped like the trainer's."""
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "allocation_report.py"
MD, PDF = "allocation_report.md", "allocation_report.pdf"

PLAN_TEXT = """\
campaign paper (jobs/campaigns/paper.ini): 116 points in 84 runs, 4 architectures, data x.h5
node rate: 3e+13 FLOP/s per node ([campaign] flop_rate)

   #  name  arch  axis  ...
   0 transformerpp-data-small-s33  transformerpp  data  ...  1.25  own

total transformerpp      29 points   21 runs  tokens     42.9G  executed FLOPs     37.2E  6N FLOPs     26.6E  node-hours 344.5
total ebt                29 points   21 runs  tokens     42.9G  executed FLOPs      204E  6N FLOPs     26.6E  node-hours 1892
total                   58 points   42 runs  tokens     85.8G  executed FLOPs      241E  6N FLOPs     53.2E  node-hours 2236.5
(shared runs are counted once; node-hours = executed FLOPs / node rate)
"""

CHECK_CSV = """\
mode,ranks,oversubscribed,measured_step_s,modelled_step_s,rel_error,measured_efficiency,modelled_efficiency
strong,1,0,4.0,4.2,+0.050,1.0000,1.0000
strong,2,0,2.5,2.2,-0.120,0.8000,0.9545
weak,1,0,2.0,2.0,+0.000,1.0000,1.0000
weak,2,0,2.5,2.1,-0.160,0.8000,0.9524
"""

PREDICTIONS_CSV = """\
strategy,mode,ranks,compute_s,comm_s,step_s,efficiency,label
ddp,strong,1,4.0,0.0,4.0,1.0000,modelled
ddp,strong,2,2.0,0.1,2.1,0.9524,modelled
ddp,strong,4096,0.01,0.5,0.51,0.0019,modelled
ddp,weak,1,2.0,0.0,2.0,1.0000,modelled
ddp,weak,4096,2.0,0.2,2.2,0.9091,modelled
"""


CHECKPOINT_BENCH_CSV = """\
ranks,width,depth,parameters,file_bytes,write_seconds,write_bandwidth_bytes_per_second,read_seconds,read_bandwidth_bytes_per_second,read_cache
1,96,3,243360,2900000,0.1,29000000,0.05,58000000,cold
2,1024,8,59000000,708000000,7.08,100000000,3.54,200000000,cold
"""


def report_yaml(run, checkpoint_bytes, bandwidth, verdict, reason, read_bytes=0, read_bandwidth=0):
    return f"""# thinkscale training report (docs/training.md)
run_dir: "/somewhere/runs/{run}"
machine:
  hostname: "testhost"
  nodes: 1
  ranks: 2
  threads_per_rank: 1
  gemm_peak_gflops_per_rank: 8.50
  gemm_peak_source: configured
  git_commit: "abc123"
problem:
  arch: "transformerpp"
  parameters: 243360
  steps: [0, 300]
performance:
  wall_seconds: 48.312
  node_hours: 0.013420
checkpoint:
  bytes: {checkpoint_bytes}
  write_bandwidth_bytes_per_second: {bandwidth}
  read_bytes: {read_bytes}
  read_seconds: {read_bytes / read_bandwidth if read_bandwidth else 0}
  read_bandwidth_bytes_per_second: {read_bandwidth}
losses:
  train_first: 5.976121
  train_last: 2.056524
  eval:
    - set: "bible"
      loss: 2.041925
      perplexity: 7.705431
validation:
  reason: "{reason}"
  verdict: {verdict}
"""


def run(directory, *args):
    return subprocess.run([sys.executable, str(SCRIPT), str(directory), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def table_rows(md, heading):
    """The rows of the first Markdown table after a '## heading' (cells stripped)."""
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]


class Campaign:
    """Two architectures x (data, params, flops), 3 values; the flops rows reuse
    the params runs. One point pending, one failed, one INVALID."""

    def __init__(self, root):
        self.dir = Path(root) / "camp"
        self.dir.mkdir()
        self.rows = synthetic.make_rows(archs=("transformerpp", "ebt"),
                                        axes=("data", "params", "flops"), n_values=3)
        names = [r["name"] for r in self.rows]
        self.pending = "ebt-data-2-s1"
        self.failed = "transformerpp-data-1-s1"
        self.invalid = "ebt-params-0-s1"
        status = ["pending" if n == self.pending else "failed" if n == self.failed else "done"
                  for n in names]
        verdicts = ["" if s != "done" else "INVALID" if n == self.invalid else "VALID"
                    for n, s in zip(names, status)]
        self.status = dict(zip(names, status))
        synthetic.write(self.dir / "results.h5", self.rows, status=status, verdicts=verdicts,
                        campaign="alloc-test")
        # distinct hours per run (the flops rows carry their params run's hours)
        runs = sorted({r["run"] for r in self.rows})
        self.run_hours = {run: 0.001 * (k + 1) for k, run in enumerate(runs)}
        hours = np.array([self.run_hours[r["run"]] if s == "done" else np.nan
                          for r, s in zip(self.rows, status)])
        with h5py.File(self.dir / "results.h5", "a") as f:
            f["points/node_hours"][...] = hours
            f["points/wall_seconds"][...] = hours * 3600.0
        self.checkpoint_bytes = {}
        self.read_bandwidth = {}  # the runs whose last invocation resumed
        for k, r in enumerate(self.rows):
            if status[k] != "done" or r["axis"] == "flops":
                continue
            d = self.dir / "runs" / r["name"]
            d.mkdir(parents=True)
            self.checkpoint_bytes[r["run"]] = 1_000_000 + 1000 * k
            verdict = "INVALID" if r["name"] == self.invalid else "VALID"
            reason = "training loss did not fall" if verdict == "INVALID" \
                else "losses finite and training loss fell"
            read_bytes = read_bw = 0
            if k % 2 == 0:
                read_bytes, read_bw = self.checkpoint_bytes[r["run"]], 30_000_000 + 100_000 * k
                self.read_bandwidth[r["run"]] = read_bw
            (d / "report.yaml").write_text(report_yaml(r["run"], self.checkpoint_bytes[r["run"]],
                                                        20_000_000 + k, verdict, reason,
                                                        read_bytes, read_bw))

    def expected_hours(self, arch=None):
        done_runs = {r["run"] for r in self.rows
                     if self.status[r["name"]] == "done" and (arch is None or r["arch"] == arch)}
        return sum(self.run_hours[run] for run in done_runs), len(done_runs)


class AllocationReportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="alloc-test-")
        self.campaign = Campaign(self.tmp)
        self.dir = self.campaign.dir

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def inputs(self):
        plan = Path(self.tmp) / "paper.plan"
        plan.write_text(PLAN_TEXT)
        scaling = Path(self.tmp) / "scaling"
        scaling.mkdir()
        (scaling / "perf_model_check.csv").write_text(CHECK_CSV)
        (scaling / "perf_model_predictions.csv").write_text(PREDICTIONS_CSV)
        checkpoints = Path(self.tmp) / "checkpoints"
        checkpoints.mkdir()
        (checkpoints / "checkpoint_bench.csv").write_text(CHECKPOINT_BENCH_CSV)
        (checkpoints / "checkpoint_bench_machine.txt").write_text("host benchhost, 2 cores\n"
                                                                  "load before: 0.10\n")
        return plan, scaling, checkpoints

    def test_full_report(self):
        plan, scaling, checkpoint_bench = self.inputs()
        r = run(self.dir, "--plan", plan, "--scaling", scaling, "--checkpoints", checkpoint_bench)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("partial: 2 of 18 points not done", r.stdout)
        md = (self.dir / MD).read_text()
        pdf = (self.dir / PDF).read_bytes()
        self.assertTrue(pdf.startswith(b"%PDF"))
        # text page(s) + node-hours + checkpoints + speedup/efficiency + projection
        self.assertGreaterEqual(len(re.findall(rb"/Type\s*/Page\b", pdf)), 5)
        self.assertEqual(list(Path(self.dir).glob(".analysis-*")), [])

        self.assertIn("PARTIAL campaign: 2 of 18 points are not done", md)
        self.assertIn("| hostname | testhost |", md)
        self.assertIn("| GEMM peak per rank (GFLOP/s) | 8.5 (configured) |", md)
        self.assertIn("| commit (results.h5) | abc123 |", md)
        manifest = {(row[0], row[1]): row[2:] for row in table_rows(md, "What was run")[1:]}
        self.assertEqual(manifest[("ebt", "data")], ["3", "2", "1", "0"])
        self.assertEqual(manifest[("transformerpp", "data")], ["3", "2", "0", "1"])

        # per-arch and total node-hours equal the sums over done runs, each run once
        node_tables = md.split("## Node-hours", 1)[1].split("\n## ", 1)[0]
        sums = {}
        for line in node_tables.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 4 and cells[0] in ("transformerpp", "ebt", "**total**"):
                sums[cells[0]] = (int(cells[1]), float(cells[2]))
        for arch in ("transformerpp", "ebt"):
            hours, n_runs = self.campaign.expected_hours(arch)
            self.assertEqual(sums[arch][0], n_runs)
            self.assertAlmostEqual(sums[arch][1], hours, places=6)
        hours, n_runs = self.campaign.expected_hours()
        self.assertEqual(sums["**total**"], (n_runs, round(hours, 6)))
        self.assertAlmostEqual(sums["**total**"][1],
                               sums["transformerpp"][1] + sums["ebt"][1], places=6)

        # every point's verdict, with the run's reason
        verdicts = {row[0]: row[1:] for row in table_rows(md, "Verdicts")[1:]}
        self.assertEqual(len(verdicts), 18)
        self.assertEqual(verdicts[self.campaign.invalid],
                         ["done", "INVALID", "training loss did not fall"])
        self.assertEqual(verdicts["transformerpp-params-0-s1"][1], "VALID")
        self.assertEqual(verdicts[self.campaign.pending][:2], ["pending", "-"])
        not_done = md.split("## Points not done", 1)[1].split("\n## ", 1)[0]
        self.assertIn(f"- {self.campaign.pending} (ebt/data): pending", not_done)
        self.assertIn(f"- {self.campaign.failed} (transformerpp/data): failed", not_done)

        checkpoints = {row[0]: row[1:] for row in table_rows(md, "Checkpoints and I/O")[1:]}
        ck_run = "transformerpp-params-2-s1"
        self.assertEqual(checkpoints[ck_run][0],
                         f"{self.campaign.checkpoint_bytes[ck_run] / 1e6:.3f}")
        self.assertNotIn(self.campaign.pending, checkpoints)
        # read bandwidth: the restore of runs whose last invocation resumed, n/a otherwise
        self.assertTrue(self.campaign.read_bandwidth)
        for run_name in self.campaign.checkpoint_bytes:
            expected = self.campaign.read_bandwidth.get(run_name)
            self.assertEqual(checkpoints[run_name][2],
                             "n/a" if expected is None else f"{expected / 1e6:.1f}", run_name)
        bench = md.split("### Checkpoint write and read by size", 1)[1].split("\n## ", 1)[0]
        bench_rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                      for line in bench.splitlines() if line.startswith("| 2 ")]
        self.assertIn("Machine while it ran: host benchhost, 2 cores; load before: 0.10.", bench)
        self.assertEqual(bench_rows, [["2", "1024 x 8", "59,000,000", "708.0", "100.0", "200.0",
                                       "cold"]])

        for test in ("tests/cli/test_campaign_resume.sh", "tests/cli/test_train_resume.sh",
                     "tests/slurm/test_slurm_requeue.sh", "tests/slurm/test_slurm_signal.sh",
                     "tests/cli/test_resume_fallback.sh"):
            self.assertIn(f"`{test}`", md)

        projected = {row[0]: row[1:] for row in table_rows(md, "Projected target campaign")[1:]}
        self.assertEqual(projected["total"], ["58", "42", "2236"])
        self.assertEqual(projected["total ebt"][2], "1892")
        speed = table_rows(md, "Speedup and efficiency of the suite")
        strong2 = next(row for row in speed if row[:2] == ["strong", "2"])
        self.assertEqual(strong2[5:9], ["1.600", "1.909", "0.800", "0.955"])
        ddp_strong = next(row for row in speed if row[:2] == ["ddp", "strong"])
        self.assertEqual(ddp_strong[2], "1.000")
        self.assertEqual(ddp_strong[-1], "0.002")

    def test_without_optional_inputs_says_so_and_notes_missing_run_reports(self):
        shutil.rmtree(self.dir / "runs" / "transformerpp-params-1-s1")
        r = run(self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        md = (self.dir / MD).read_text()
        self.assertIn("Not included: pass `--plan FILE`", md)
        self.assertIn("Not included: pass `--scaling DIR`", md)
        checkpoints = {row[0]: row[1:] for row in table_rows(md, "Checkpoints and I/O")[1:]}
        self.assertEqual(checkpoints["transformerpp-params-1-s1"],
                         ["n/a", "n/a", "n/a", "report.yaml missing"])
        self.assertIn("pass `--checkpoints DIR`", md)
        self.assertGreater((self.dir / PDF).stat().st_size, 1000)

    def plant_previous(self):
        (self.dir / MD).write_text("previous md\n")
        (self.dir / PDF).write_bytes(b"previous pdf")

    def assert_previous_untouched(self, r, code, message):
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        self.assertIn(message, r.stderr)
        self.assertEqual((self.dir / MD).read_text(), "previous md\n")
        self.assertEqual((self.dir / PDF).read_bytes(), b"previous pdf")
        self.assertEqual(list(self.dir.glob(".analysis-*")), [])

    def test_no_results_file(self):
        (self.dir / "results.h5").unlink()
        self.plant_previous()
        self.assert_previous_untouched(run(self.dir), 3, "results.h5 does not exist")

    def test_not_hdf5(self):
        (self.dir / "results.h5").write_text("this is not HDF5\n")
        self.plant_previous()
        self.assert_previous_untouched(run(self.dir), 3, "is not an HDF5 file")

    def test_missing_directory(self):
        r = run(Path(self.tmp) / "nowhere")
        self.assertEqual(r.returncode, 3)
        self.assertIn("is not a directory", r.stderr)
        self.assertFalse((Path(self.tmp) / "nowhere").exists())

    def test_plan_without_totals(self):
        plan = Path(self.tmp) / "bad.plan"
        plan.write_text("this is not a plan\n")
        self.plant_previous()
        self.assert_previous_untouched(run(self.dir, "--plan", plan), 3, "has no 'total")

    def test_scaling_without_perf_model_outputs(self):
        scaling = Path(self.tmp) / "scaling"
        scaling.mkdir()
        (scaling / "perf_model_check.csv").write_text(CHECK_CSV)
        self.plant_previous()
        self.assert_previous_untouched(run(self.dir, "--scaling", scaling), 3,
                                       "perf_model_predictions.csv cannot be read")

    def test_checkpoint_bench_missing_or_malformed(self):
        bench = Path(self.tmp) / "bench"
        bench.mkdir()
        self.plant_previous()
        self.assert_previous_untouched(run(self.dir, "--checkpoints", bench), 3,
                                       "checkpoint_bench.csv cannot be read")
        (bench / "checkpoint_bench.csv").write_text(
            CHECKPOINT_BENCH_CSV.replace("read_seconds,", "seconds,"))
        self.assert_previous_untouched(run(self.dir, "--checkpoints", bench), 3,
                                       "lacks column(s) read_seconds")
        (bench / "checkpoint_bench.csv").write_text(CHECKPOINT_BENCH_CSV.replace(",3.54,", ",0,"))
        self.assert_previous_untouched(run(self.dir, "--checkpoints", bench), 3,
                                       "line 3: sizes and times must be positive")

    def test_write_failure_leaves_the_previous_report(self):
        (self.dir / MD).write_text("previous md\n")
        blocker = self.dir / PDF  # a non-empty directory cannot be replaced by a file
        blocker.mkdir()
        (blocker / "keep").write_text("x")
        r = run(self.dir)
        self.assertEqual(r.returncode, 6, r.stdout + r.stderr)
        self.assertIn("cannot write the report", r.stderr)
        self.assertEqual((self.dir / MD).read_text(), "previous md\n")
        self.assertTrue((blocker / "keep").is_file())
        self.assertEqual(list(self.dir.glob(".analysis-*")), [])


if __name__ == "__main__":
    unittest.main()
