"""analysis/scaling.py end to end as a subprocess on results.h5 files written
the way the C campaign layer writes them (tests/synthetic.py)."""
import csv
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402

SCALING = Path(__file__).resolve().parents[1] / "scaling.py"
CONTRACT_COLUMNS = ["arch", "axis", "n_points", "beta", "beta_lo", "beta_hi", "rel_rate",
                    "rel_rate_lo", "rel_rate_hi", "paper_rel_rate", "E", "A", "alpha", "alpha_lo",
                    "alpha_hi", "loo_error"]
SENTINEL = "previous analysis\n"


def run(directory, *args):
    return subprocess.run([sys.executable, str(SCALING), str(directory), "--resamples", "100",
                           *args], capture_output=True, text=True, timeout=300)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class Workdir(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def plant_previous_outputs(self):
        """Outputs of an earlier analysis that a failing one must leave alone."""
        (self.dir / "figures").mkdir(exist_ok=True)
        for p in (self.dir / "fits.csv", self.dir / "fits.md", self.dir / "figures" / "all_axes.png"):
            p.write_text(SENTINEL)

    def assert_previous_outputs_untouched(self):
        for p in (self.dir / "fits.csv", self.dir / "fits.md", self.dir / "figures" / "all_axes.png"):
            self.assertEqual(p.read_text(), SENTINEL, p)
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()
                                if p.name.startswith(".analysis-")), [])


class FullCampaign(Workdir):
    """All four architectures on all six axes, five points each."""

    def test_fits_table_and_figures(self):
        rows = synthetic.make_rows(n_values=5)
        synthetic.write(self.dir / "results.h5", rows)
        result = run(self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(self.dir / "fits.csv", newline="") as f:
            header = next(csv.reader(f))
        self.assertEqual(header[:len(CONTRACT_COLUMNS)], CONTRACT_COLUMNS)
        table = read_csv(self.dir / "fits.csv")
        self.assertEqual(len(table), 24)
        by_key = {(r["arch"], r["axis"]): r for r in table}
        for (arch, axis), r in by_key.items():
            self.assertEqual(r["n_points"], "5")
            beta = float(r["beta"])
            self.assertLess(float(r["beta_lo"]), beta)
            self.assertGreater(float(r["beta_hi"]), beta)
            self.assertAlmostEqual(beta, synthetic.BETAS[arch], delta=0.02, msg=(arch, axis))
            self.assertEqual(r["rel_rate"] == "", arch == "transformerpp")
            self.assertTrue(r["loo_error"] and float(r["loo_error"]) < 0.05)
            self.assertTrue(r["alpha"])
        paper = {"data": 0.3598, "batch": 0.2846, "depth": 0.0529, "params": 0.0291,
                 "flops": 0.0292, "width": 0.0002}
        for axis, rate in paper.items():
            self.assertAlmostEqual(float(by_key[("ebt", axis)]["paper_rel_rate"]), rate)
            self.assertEqual(by_key[("free", axis)]["paper_rel_rate"], "")
            self.assertAlmostEqual(float(by_key[("ebt", axis)]["rel_rate"]), 0.3, delta=0.12)
        # the flops axis reuses the params runs: same losses, same slope
        self.assertAlmostEqual(float(by_key[("ebt", "flops")]["beta"]),
                               float(by_key[("ebt", "params")]["beta"]), places=9)
        md = (self.dir / "fits.md").read_text()
        for printed in ("35.98%", "28.46%", "5.29%", "2.91%", "2.92%", "0.02%"):
            self.assertIn(printed, md)
        self.assertNotIn("PARTIAL", md)
        self.assertIn("Compute-matched", md)
        figures = self.dir / "figures"
        names = [f"axis_{a}" for a in synthetic.AXES] + ["all_axes", "compute_matched"]
        for name in names:
            png, pdf = figures / f"{name}.png", figures / f"{name}.pdf"
            self.assertEqual(png.read_bytes()[:8], b"\x89PNG\r\n\x1a\n", png)
            self.assertEqual(pdf.read_bytes()[:5], b"%PDF-", pdf)
            self.assertGreater(png.stat().st_size, 10000, png)
        cm = read_csv(self.dir / "compute_matched.csv")
        self.assertEqual({r["arch"] for r in cm}, set(synthetic.ARCHS))


class SmallCampaign(Workdir):
    """Two architectures on two axes: enough for everything but the full figure set."""

    def rows(self, **kw):
        return synthetic.make_rows(archs=("transformerpp", "ebt"), axes=("data", "depth"),
                                   n_values=4, **kw)

    def test_same_seed_same_fits_other_seed_other_intervals(self):
        synthetic.write(self.dir / "results.h5", self.rows())
        self.assertEqual(run(self.dir).returncode, 0)
        first = (self.dir / "fits.csv").read_text()
        self.assertEqual(run(self.dir).returncode, 0)
        self.assertEqual((self.dir / "fits.csv").read_text(), first)
        self.assertEqual(run(self.dir, "--seed", "7").returncode, 0)
        other = read_csv(self.dir / "fits.csv")
        first_rows = list(csv.DictReader(first.splitlines()))
        self.assertEqual([r["beta"] for r in other], [r["beta"] for r in first_rows])
        intervals = ("beta_lo", "beta_hi", "rel_rate_lo", "rel_rate_hi", "alpha_lo", "alpha_hi")
        self.assertNotEqual([[r[c] for c in intervals] for r in other],
                            [[r[c] for c in intervals] for r in first_rows])

    def test_points_not_done_refuse_by_default_and_list_them(self):
        rows = self.rows()
        status = ["done"] * len(rows)
        status[1], status[6] = "pending", "failed"
        synthetic.write(self.dir / "results.h5", rows, status=status)
        self.plant_previous_outputs()
        result = run(self.dir)
        self.assertEqual(result.returncode, 4)
        self.assertIn("2 of 16 points are not done", result.stderr)
        self.assertIn(f"{rows[1]['name']}  transformerpp/data  pending", result.stderr)
        self.assertIn(f"{rows[6]['name']}  transformerpp/depth  failed", result.stderr)
        self.assertIn("--partial", result.stderr)
        self.assert_previous_outputs_untouched()

    def test_partial_fits_what_is_done_and_marks_it(self):
        rows = self.rows()
        status = ["done"] * len(rows)
        status[1] = "pending"
        synthetic.write(self.dir / "results.h5", rows, status=status)
        result = run(self.dir, "--partial")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("PARTIAL", result.stdout)
        table = {(r["arch"], r["axis"]): r for r in read_csv(self.dir / "fits.csv")}
        self.assertEqual(table[("transformerpp", "data")]["n_points"], "3")
        self.assertEqual(table[("transformerpp", "data")]["complete"], "0")
        self.assertEqual(table[("ebt", "data")]["complete"], "1")
        md = (self.dir / "fits.md").read_text()
        self.assertIn("**PARTIAL**", md)
        self.assertIn(f"| {rows[1]['name']} | transformerpp | data | pending |", md)

    def test_invalid_verdicts_are_left_out_and_named(self):
        rows = self.rows()
        verdicts = ["VALID"] * len(rows)
        verdicts[9] = "INVALID"
        synthetic.write(self.dir / "results.h5", rows, verdicts=verdicts)
        result = run(self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"point {rows[9]['name']}", result.stderr)
        table = {(r["arch"], r["axis"]): r for r in read_csv(self.dir / "fits.csv")}
        self.assertEqual(table[(rows[9]["arch"], rows[9]["axis"])]["n_points"], "3")
        self.assertIn("verdict INVALID", (self.dir / "fits.md").read_text())

    def test_groups_with_fewer_than_two_points_are_skipped_with_a_note(self):
        rows = self.rows()
        status = ["done"] * len(rows)
        for i in (0, 1, 2):  # transformerpp/data keeps one point
            status[i] = "pending"
        for i in (4, 5):  # transformerpp/depth keeps two points: a slope, no interval
            status[i] = "pending"
        synthetic.write(self.dir / "results.h5", rows, status=status)
        result = run(self.dir, "--partial")
        self.assertEqual(result.returncode, 0, result.stderr)
        table = {(r["arch"], r["axis"]): r for r in read_csv(self.dir / "fits.csv")}
        self.assertNotIn(("transformerpp", "data"), table)
        self.assertEqual(table[("ebt", "data")]["rel_rate"], "")
        two = table[("transformerpp", "depth")]
        self.assertEqual(two["n_points"], "2")
        self.assertTrue(two["beta"] and not two["beta_lo"] and not two["alpha"])
        self.assertIn("too few", two["notes"])
        md = (self.dir / "fits.md").read_text()
        self.assertIn("transformerpp / data: 1 usable point(s) of 4", md)

    def test_nothing_to_fit(self):
        rows = self.rows()
        synthetic.write(self.dir / "results.h5", rows, status=["pending"] * len(rows))
        self.plant_previous_outputs()
        result = run(self.dir, "--partial")
        self.assertEqual(result.returncode, 5)
        self.assertIn("nothing to fit", result.stderr)
        self.assert_previous_outputs_untouched()

    def test_variable_length_strings_are_read_too(self):
        rows = self.rows()
        synthetic.write(self.dir / "results.h5", rows)
        with h5py.File(self.dir / "results.h5", "a") as f:
            for name in ("name", "arch", "axis", "run", "status"):
                values = [v.decode() for v in f["points"][name][()]]
                del f["points"][name]
                f["points"].create_dataset(name, data=values, dtype=h5py.string_dtype())
        result = run(self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(read_csv(self.dir / "fits.csv")), 4)

    def test_write_failure_keeps_the_previous_outputs(self):
        synthetic.write(self.dir / "results.h5", self.rows())
        (self.dir / "fits.csv").write_text(SENTINEL)
        (self.dir / "figures").write_text("a file where the figures directory should be")
        result = run(self.dir)
        self.assertEqual(result.returncode, 6)
        self.assertIn("cannot write the outputs", result.stderr)
        self.assertEqual((self.dir / "fits.csv").read_text(), SENTINEL)
        self.assertFalse((self.dir / "fits.md").exists())
        self.assertEqual([p.name for p in self.dir.iterdir() if p.name.startswith(".analysis-")], [])

    def test_a_failure_midway_puts_back_what_it_replaced(self):
        """A destination that cannot take its file (fits.md a directory here)
        fails the run; the figures and tables already renamed into place
        before it must be put back, and stale figures it removed restored."""
        synthetic.write(self.dir / "results.h5", self.rows())
        self.plant_previous_outputs()
        (self.dir / "figures" / "axis_stale.png").write_text(SENTINEL)
        (self.dir / "compute_matched.csv").write_text(SENTINEL)
        (self.dir / "fits.md").unlink()
        (self.dir / "fits.md").mkdir()
        result = run(self.dir)
        self.assertEqual(result.returncode, 6, result.stderr)
        self.assertIn("fits.md exists and is not a file", result.stderr)
        for p in (self.dir / "fits.csv", self.dir / "figures" / "all_axes.png",
                  self.dir / "figures" / "axis_stale.png", self.dir / "compute_matched.csv"):
            self.assertEqual(p.read_text(), SENTINEL, p)
        self.assertEqual(sorted(p.name for p in (self.dir / "figures").iterdir()),
                         ["all_axes.png", "axis_stale.png"])

    def test_a_rename_failing_midway_is_rolled_back(self):
        """The same guarantee when the failure comes from the rename itself."""
        import os
        sys.path.insert(0, str(SCALING.parent))
        from thinkscale_analysis import publish
        self.plant_previous_outputs()
        real_replace, calls = os.replace, []

        def failing_replace(src, dst):  # the staged fits.md's rename fails, once
            calls.append(dst)
            if str(dst).endswith("fits.md") and ".replaced" not in str(src) and \
                    "injected" not in calls:
                calls.append("injected")
                raise OSError("injected failure")
            real_replace(src, dst)

        def render(d):
            (d / "all_axes.png").write_text("new figure")
            return [d / "all_axes.png"]
        publish.os.replace = failing_replace
        try:
            with self.assertRaises(OSError):
                publish.publish(self.dir, {"fits.md": "new\n", "fits.csv": "new\n"}, render)
        finally:
            publish.os.replace = real_replace
        self.assert_previous_outputs_untouched()
        self.assertIn("injected", calls)
        self.assertTrue(any(str(c).endswith("all_axes.png") for c in calls))  # had been replaced


class BadInput(Workdir):
    def check(self, message, *args, directory=None):
        self.plant_previous_outputs()
        result = run(directory or self.dir, *args)
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertIn(message, result.stderr)
        self.assertTrue(result.stderr.startswith("scaling: error: "))
        self.assertNotIn("Traceback", result.stderr)
        self.assert_previous_outputs_untouched()

    def test_an_empty_version_attribute(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=3))
        with h5py.File(self.dir / "results.h5", "a") as f:
            f.attrs["version"] = np.array([], dtype=np.int64)
        self.check("is damaged or unreadable")

    def test_no_results_file(self):
        self.check("results.h5 does not exist")

    def test_missing_directory(self):
        result = run(self.dir / "nowhere")
        self.assertEqual(result.returncode, 3)
        self.assertIn("nowhere is not a directory", result.stderr)

    def test_not_hdf5(self):
        (self.dir / "results.h5").write_text("arch,axis\n")
        self.check("is not an HDF5 file")

    def test_truncated_hdf5(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2))
        data = (self.dir / "results.h5").read_bytes()
        (self.dir / "results.h5").write_bytes(data[:len(data) // 3])
        self.check("results.h5")

    def test_wrong_format_attribute(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2), fmt="thinkscale-metrics")
        self.check("has format 'thinkscale-metrics', expected 'thinkscale-campaign-results'")

    def test_no_format_attribute(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2), fmt=None)
        self.check("no 'format' attribute")

    def test_wrong_version(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2), version=2)
        self.check("this analysis reads version 1")

    def test_missing_column(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2),
                        drop_columns=("val_loss", "run"))
        self.check("lacks column(s) run, val_loss")

    def test_unknown_axis(self):
        rows = synthetic.make_rows(n_values=2)
        rows[0]["axis"] = "heads"
        synthetic.write(self.dir / "results.h5", rows)
        self.check("unknown axis value(s) heads")

    def test_columns_of_different_length(self):
        synthetic.write(self.dir / "results.h5", synthetic.make_rows(n_values=2))
        with h5py.File(self.dir / "results.h5", "a") as f:
            x = f["points/x"][()]
            del f["points/x"]
            f["points"].create_dataset("x", data=np.append(x, 1.0))
        self.check("columns differ in length")


if __name__ == "__main__":
    unittest.main()
