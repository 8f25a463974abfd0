"""The thinking analysis on a synthetic campaign directory with a known line of
gain against OOD-ness (seeded): the slope is recovered, its interval covers it,
a flat architecture gets a flat line, and the outputs of analysis/thinking.py
have the documented columns."""
import csv
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import h5py
import numpy as np

ANALYSIS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ANALYSIS))

from thinkscale_analysis import thinking  # noqa: E402

WINDOWS, SEQ = 64, 32
VAL_LOSS = 2.0
OODS = {"val": 1.0, "near": 1.5, "mid": 2.5, "far": 4.0}


def gain_line(ood, intercept, slope):
    return intercept + slope * ood


def write_thinking_file(path, arch, knob_settings, line, rng, noise):
    """Per set: a default whose perplexity is OOD x the validation one, and knob
    levels whose top level has gain line(ood) (lower levels half of it)."""
    with h5py.File(path, "w") as f:
        f.attrs["config"] = "[model]\nvocab_size = 256\n[data]\ntokenizer = byte\n"
        for set_name, ood in OODS.items():
            default_loss = VAL_LOSS + np.log(ood)
            levels = [("default", default_loss, 1.0)]
            for i, text in enumerate(knob_settings):
                g = line(ood) * (i + 1) / len(knob_settings)
                levels.append((text, default_loss + np.log(1 - g), 2.0 + i))
            for text, loss, cost in levels:
                g = f.create_group(f"sets/{set_name}/{text}")
                per_window = loss + noise * rng.standard_normal(WINDOWS)
                g.attrs.update(setting=text, loss=float(per_window.mean()),
                               perplexity=float(np.exp(per_window.mean())), tokens=WINDOWS * SEQ,
                               flops=1e6 * cost * WINDOWS * SEQ, nfe=cost)
                g["window_loss"] = per_window * SEQ
                g["window_tokens"] = np.full(WINDOWS, float(SEQ))


def write_campaign(directory, rng, noise=0.02):
    """Two thinking points: ebt with gain 0.1 + 0.05 (ood - 1), transformerpp flat."""
    names = ["transformerpp-thinking-base-s33", "ebt-thinking-base-s33"]
    runs = directory / "runs"
    for name in names:
        (runs / name).mkdir(parents=True)
    write_thinking_file(runs / names[0] / "thinking.h5", "transformerpp", [], lambda o: 0.0, rng,
                        noise)
    write_thinking_file(runs / names[1] / "thinking.h5", "ebt",
                        ["ebt.infer_steps=2,ebt.infer_samples=1",
                         "ebt.infer_steps=8,ebt.infer_samples=4"],
                        lambda o: gain_line(o, 0.05, 0.05), rng, noise)
    with h5py.File(directory / "results.h5", "w") as f:
        f.attrs["format"] = "thinkscale-campaign-results"
        p = f.create_group("points")
        p["name"] = np.array([n.encode() for n in names])
        p["arch"] = np.array([b"transformerpp", b"ebt"])
        p["axis"] = np.array([b"thinking", b"thinking"])
        p["status"] = np.array([b"done", b"done"])
        p["run"] = p["name"][...]
        p["thinking_file"] = np.array([f"runs/{n}/thinking.h5".encode() for n in names])
        d = p.create_dataset("loss_by_domain", data=np.zeros((2, 4)))
        d.attrs["domains"] = np.array([b"val", b"near", b"mid", b"far"])


class SlopeRecovery(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        write_campaign(self.dir, np.random.default_rng(7))

    def tearDown(self):
        self.tmp.cleanup()

    def test_recovers_the_slope_and_covers_it(self):
        analysis = thinking.analyse(self.dir, resamples=400, seed=1)
        fits = {f.arch: f for f in analysis.fits}
        ebt = fits["ebt"]
        self.assertEqual(ebt.n_sets, 4)
        self.assertEqual(ebt.setting, "steps=8,samples=4")  # the highest-compute level
        self.assertAlmostEqual(ebt.slope, 0.05, delta=0.01)
        self.assertLess(ebt.slope_lo, 0.05)
        self.assertGreater(ebt.slope_hi, 0.05)
        self.assertLess(ebt.slope_hi - ebt.slope_lo, 0.05)  # informative, not everything
        ood = {p[0]: p[1] for p in ebt.points}
        for name, expected in OODS.items():
            self.assertAlmostEqual(ood[name], expected, delta=0.05 * expected)

    def test_transformerpp_is_flat(self):
        fits = {f.arch: f for f in thinking.analyse(self.dir, resamples=100).fits}
        self.assertEqual(fits["transformerpp"].slope, 0.0)

    def test_gain_sign(self):
        """Lower perplexity under the knob is a positive gain."""
        rows = thinking.analyse(self.dir, resamples=100).rows
        far = [r for r in rows if r.arch == "ebt" and r.set == "far"
               and r.setting == "steps=8,samples=4"][0]
        self.assertAlmostEqual(far.gain, gain_line(4.0, 0.05, 0.05), delta=0.02)
        self.assertLess(far.gain_lo, far.gain)
        self.assertGreater(far.gain_hi, far.gain)

    def test_script_outputs(self):
        done = subprocess.run([sys.executable, str(ANALYSIS / "thinking.py"), "--resamples", "50",
                               str(self.dir)], capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(self.dir / "thinking.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0].keys()), list(thinking.CSV_COLUMNS))
        self.assertEqual(len(rows), 4 * 1 + 4 * 3)
        with open(self.dir / "thinking_fits.csv") as f:
            fits = list(csv.DictReader(f))
        self.assertEqual(list(fits[0].keys()), list(thinking.FIT_COLUMNS))
        for stem in ("thinking_ood", "thinking_flops", "thinking_ablation"):
            for ext in ("png", "pdf"):
                self.assertTrue((self.dir / "figures" / f"{stem}.{ext}").is_file(), stem)

    def test_missing_results_is_bad_input(self):
        (self.dir / "results.h5").unlink()
        done = subprocess.run([sys.executable, str(ANALYSIS / "thinking.py"), str(self.dir)],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 3)
        self.assertIn("results.h5 does not exist", done.stderr)
        self.assertFalse((self.dir / "thinking.csv").exists())


if __name__ == "__main__":
    unittest.main()
