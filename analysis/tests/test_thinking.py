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


BYTE_CONFIG = "[model]\nvocab_size = 256\n[data]\ntokenizer = byte\n"
SUBWORD_CONFIG = "[model]\nvocab_size = 2001\n[data]\ntokenizer = sentencepiece:0123456789abcdef\n"
EBT_KNOB = ["ebt.infer_steps=2,ebt.infer_samples=1", "ebt.infer_steps=8,ebt.infer_samples=4"]


def write_thinking_file(path, arch, knob_settings, line, rng, noise, config=BYTE_CONFIG):
    """Per set: a default whose perplexity is OOD x the validation one, and knob
    levels whose top level has gain line(ood) (lower levels half of it)."""
    with h5py.File(path, "w") as f:
        f.attrs["config"] = config
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


def write_campaign(directory, rng, noise=0.02, subword=False, seeds=(33,)):
    """Two thinking points: ebt with gain 0.1 + 0.05 (ood - 1), transformerpp
    flat; with subword, a third: ebt trained in a subword vocabulary (the
    subword variant) with gain 0.02 + 0.02 (ood - 1). With several seeds,
    each seed's points, the slopes of seed 33 + k raised by 0.01 k."""
    points = []
    for seed in seeds:
        up = 0.01 * (seed - 33)
        points += [(f"transformerpp-thinking-base-s{seed}", "transformerpp", [], lambda o: 0.0,
                    BYTE_CONFIG),
                   (f"ebt-thinking-base-s{seed}", "ebt", EBT_KNOB,
                    lambda o, up=up: gain_line(o, 0.05, 0.05 + up), BYTE_CONFIG)]
        if subword:
            points.append((f"ebt-thinking-subword-s{seed}", "ebt", EBT_KNOB,
                           lambda o, up=up: gain_line(o, 0.0, 0.02 + up), SUBWORD_CONFIG))
    names = [p[0] for p in points]
    runs = directory / "runs"
    for name, arch, knob, line, config in points:
        (runs / name).mkdir(parents=True)
        write_thinking_file(runs / name / "thinking.h5", arch, knob, line, rng, noise, config)
    with h5py.File(directory / "results.h5", "w") as f:
        f.attrs["format"] = "thinkscale-campaign-results"
        p = f.create_group("points")
        p["name"] = np.array([n.encode() for n in names])
        p["arch"] = np.array([a.encode() for _, a, _, _, _ in points])
        p["axis"] = np.array([b"thinking"] * len(names))
        p["status"] = np.array([b"done"] * len(names))
        p["run"] = p["name"][...]
        p["thinking_file"] = np.array([f"runs/{n}/thinking.h5".encode() for n in names])
        d = p.create_dataset("loss_by_domain", data=np.zeros((len(names), 4)))
        d.attrs["domains"] = np.array([b"val", b"near", b"mid", b"far"])


def damage_root_group(path):
    """Overwrites the signature of the file's first v1 B-tree (the root
    group's, as h5py writes by default), so its links cannot be read."""
    data = bytearray(path.read_bytes())
    at = data.find(b"TREE")
    if at < 0:
        raise AssertionError(f"{path} has no v1 B-tree to damage")
    data[at:at + 4] = b"XXXX"
    path.write_bytes(bytes(data))


def run_script(directory, *options):
    """analysis/thinking.py on directory (few resamples: the outputs' form is tested)."""
    return subprocess.run([sys.executable, str(ANALYSIS / "thinking.py"), "--resamples", "50",
                           *options, str(directory)], capture_output=True, text=True)


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

    def test_a_slope_at_every_knob_level(self):
        """The lower level has half the top level's gain, so half its slope;
        Transformer++ has no knob and so no row."""
        analysis = thinking.analyse(self.dir, resamples=400, seed=1)
        by = {(f.arch, f.setting): f for f in analysis.setting_fits}
        self.assertEqual(set(by), {("ebt", "steps=2,samples=1"), ("ebt", "steps=8,samples=4")})
        low = by[("ebt", "steps=2,samples=1")]
        self.assertAlmostEqual(low.slope, 0.025, delta=0.008)
        self.assertLess(low.slope_lo, 0.025)
        self.assertGreater(low.slope_hi, 0.025)
        top = {f.arch: f for f in analysis.fits}["ebt"]
        self.assertEqual(by[("ebt", "steps=8,samples=4")].slope, top.slope)

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
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(self.dir / "thinking.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0].keys()), list(thinking.CSV_COLUMNS))
        self.assertEqual(len(rows), 4 * 1 + 4 * 3)
        with open(self.dir / "thinking_fits.csv") as f:
            fits = list(csv.DictReader(f))
        self.assertEqual(list(fits[0].keys()), list(thinking.FIT_COLUMNS))
        with open(self.dir / "thinking_fits_by_setting.csv") as f:
            by_setting = list(csv.DictReader(f))
        self.assertEqual([(r["arch"], r["setting"]) for r in by_setting],
                         [("ebt", "steps=2,samples=1"), ("ebt", "steps=8,samples=4")])
        self.assertIn("every knob level", (self.dir / "thinking.md").read_text())
        for stem in ("thinking_ood", "thinking_flops", "thinking_ablation"):
            for ext in ("png", "pdf"):
                self.assertTrue((self.dir / "figures" / f"{stem}.{ext}").is_file(), stem)

    def test_log_ood_axis_redraws_the_ood_figure_only(self):
        self.assertEqual(run_script(self.dir).returncode, 0)
        figures = self.dir / "figures"
        linear = {p.name: p.read_bytes() for p in figures.glob("*.png")}
        done = run_script(self.dir, "--ood-axis", "log")
        self.assertEqual(done.returncode, 0, done.stderr)
        log = {p.name: p.read_bytes() for p in figures.glob("*.png")}
        self.assertNotEqual(linear["thinking_ood.png"], log["thinking_ood.png"])
        self.assertEqual(linear["thinking_flops.png"], log["thinking_flops.png"])
        bad = run_script(self.dir, "--ood-axis", "sideways")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("--ood-axis", bad.stderr)

    def test_answer_pass_fits_nothing(self):
        runs, train_domain, _ = thinking.load_runs(self.dir)
        rng = np.random.default_rng(0)
        rows, top, by_setting = thinking.analyse_run(runs[0], train_domain, 50, rng,
                                                     answers=True)
        self.assertIsNone(top)
        self.assertEqual(by_setting, [])

    def test_missing_results_is_bad_input(self):
        (self.dir / "results.h5").unlink()
        done = subprocess.run([sys.executable, str(ANALYSIS / "thinking.py"), str(self.dir)],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 3)
        self.assertIn("results.h5 does not exist", done.stderr)
        self.assertFalse((self.dir / "thinking.csv").exists())

    def test_a_damaged_results_file_is_called_damaged(self):
        """A bad B-tree signature under the root group: h5py's get() reads
        that as "no /points", which is not what is wrong."""
        path = self.dir / "results.h5"
        damage_root_group(path)
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("is damaged or unreadable", done.stderr)
        self.assertNotIn("lacks", done.stderr)
        self.assertFalse((self.dir / "thinking.csv").exists())

    def test_a_damaged_or_empty_energies_file_is_named(self):
        """thinking_energies.h5 beside EBT's thinking.h5 feeds the energy
        table; a damaged one used to read as "no sets", silently no rows."""
        path = self.dir / "runs" / "ebt-thinking-base-s33" / "thinking_energies.h5"
        with h5py.File(path, "w") as f:
            f.create_group("other")
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("thinking_energies.h5: no /sets", done.stderr)
        with h5py.File(path, "w") as f:
            g = f.create_group("sets/val/default")
            g["energy"] = np.zeros((4, 2, 8))
            g["token_loss"] = np.zeros((4, 8))
        damage_root_group(path)
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("thinking_energies.h5 is damaged or unreadable", done.stderr)
        self.assertFalse((self.dir / "thinking.csv").exists())

    def test_malformed_thinking_files_are_bad_input_not_tracebacks(self):
        """Files the readers' own checks do not foresee: a NaN window loss (the
        fit's SVD fails), then no windows at all (nothing to resample)."""
        path = self.dir / "runs" / "ebt-thinking-base-s33" / "thinking.h5"
        with h5py.File(path, "r+") as f:
            sets = f["sets"]
            group = sets[next(iter(sets))]["default"]
            loss = group["window_loss"][...]
            loss[0] = np.nan
            group["window_loss"][...] = loss
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("thinking: error: ", done.stderr)
        self.assertNotIn("Traceback", done.stderr)
        write_campaign_dir = Path(tempfile.mkdtemp(dir=self.tmp.name))
        write_campaign(write_campaign_dir, np.random.default_rng(7))
        path = write_campaign_dir / "runs" / "ebt-thinking-base-s33" / "thinking.h5"
        with h5py.File(path, "r+") as f:
            for domain in f["sets"].values():
                for setting in domain.values():
                    for name in ("window_loss", "window_tokens"):
                        del setting[name]
                        setting[name] = np.zeros(0)
        done = run_script(write_campaign_dir)
        self.assertEqual(done.returncode, 3, done.stderr)
        self.assertIn("no per-window sums", done.stderr)
        self.assertFalse((write_campaign_dir / "thinking.csv").exists())


class VocabularyComparison(unittest.TestCase):
    """The byte vs subword row: an EBT run in a subword vocabulary beside the
    byte one is compared set by set, with its own slope, and is no ablation."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        write_campaign(self.dir, np.random.default_rng(8), subword=True)

    def tearDown(self):
        self.tmp.cleanup()

    def test_each_vocabulary_gets_its_own_slope_and_rows(self):
        analysis = thinking.analyse(self.dir, resamples=300, seed=2)
        self.assertEqual(analysis.vocabularies,
                         ["byte (256)", "sentencepiece:0123456789abcdef (2001)"])
        fits = {f.arch: f for f in analysis.fits}
        self.assertAlmostEqual(fits["ebt"].slope, 0.05, delta=0.01)
        self.assertAlmostEqual(fits["ebt/subword"].slope, 0.02, delta=0.01)
        self.assertEqual(fits["ebt/subword"].vocab, "sentencepiece:0123456789abcdef (2001)")
        rows = analysis.vocab_rows
        self.assertEqual({(r.run, r.vocab) for r in rows},
                         {("ebt", "byte (256)"),
                          ("ebt/subword", "sentencepiece:0123456789abcdef (2001)")})
        self.assertEqual(len(rows), 2 * 4)  # two runs x four sets; no Transformer++ pair
        far = {r.run: r for r in rows if r.set == "far"}
        self.assertAlmostEqual(far["ebt"].gain, gain_line(4.0, 0.05, 0.05), delta=0.02)
        self.assertAlmostEqual(far["ebt/subword"].gain, gain_line(4.0, 0.0, 0.02), delta=0.02)
        self.assertEqual(far["ebt/subword"].slope, fits["ebt/subword"].slope)
        # Another vocabulary is not an ablation of the recipe.
        self.assertEqual([a[0] for a in analysis.ablation], ["full"])
        md = thinking.summary_md(analysis)
        self.assertIn("## Byte vs subword vocabulary", md)
        self.assertIn("| far | OOD 4.", md)

    def test_script_writes_the_comparison(self):
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(self.dir / "thinking_vocab.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0].keys()), list(thinking.VOCAB_COLUMNS))
        self.assertEqual(len(rows), 8)
        with open(self.dir / "thinking.csv") as f:
            rows = list(csv.DictReader(f))
        # The columns other tools rely on keep their names and places; vocab is added at the end.
        self.assertEqual(list(rows[0].keys())[:10], ["arch", "set", "knob", "setting", "ood", "gain",
                                                     "gain_lo", "gain_hi", "nfe_per_token",
                                                     "flops_per_token"])
        self.assertEqual({r["vocab"] for r in rows if r["arch"] == "ebt/subword"},
                         {"sentencepiece:0123456789abcdef (2001)"})
        with open(self.dir / "thinking_fits.csv") as f:
            fits = list(csv.DictReader(f))
        self.assertEqual(list(fits[0].keys())[:5], ["arch", "slope", "slope_lo", "slope_hi", "n_sets"])
        self.assertEqual(len(fits), 3)


class SeveralSeeds(unittest.TestCase):
    """A campaign with seeds = 33, 34: every run keeps its own rows, fits and
    ablation row, labelled with its seed, and each subword run is compared
    with the byte run of its own seed."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        write_campaign(self.dir, np.random.default_rng(9), subword=True, seeds=(33, 34))

    def tearDown(self):
        self.tmp.cleanup()

    def test_each_seed_is_its_own_series(self):
        analysis = thinking.analyse(self.dir, resamples=300, seed=2)
        fits = {f.arch: f for f in analysis.fits}
        self.assertEqual(set(fits), {"transformerpp@s33", "transformerpp@s34", "ebt@s33",
                                     "ebt@s34", "ebt/subword@s33", "ebt/subword@s34"})
        self.assertAlmostEqual(fits["ebt@s33"].slope, 0.05, delta=0.005)
        self.assertAlmostEqual(fits["ebt@s34"].slope, 0.06, delta=0.005)
        self.assertAlmostEqual(fits["ebt/subword@s34"].slope, 0.03, delta=0.005)
        self.assertEqual(sorted(a[0] for a in analysis.ablation), ["full@s33", "full@s34"])
        pairs = {(r.run, r.slope) for r in analysis.vocab_rows}
        self.assertEqual({run for run, _ in pairs},
                         {"ebt@s33", "ebt/subword@s33", "ebt@s34", "ebt/subword@s34"})
        self.assertEqual(len(analysis.vocab_rows), 4 * 4)  # each run once, 4 sets
        md = thinking.summary_md(analysis)
        self.assertIn("| full S2 recipe s34 |", md)
        self.assertIn("| +7.19 | +18.70 |", md)  # the paper's row found despite the seed

    def test_script_succeeds_with_a_row_per_seed(self):
        done = run_script(self.dir)
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(self.dir / "thinking_fits.csv") as f:
            fits = list(csv.DictReader(f))
        self.assertEqual(len(fits), 6)
        self.assertEqual(len({r["arch"] for r in fits}), 6)
        for name in ("thinking_ood", "thinking_flops", "thinking_ablation"):
            self.assertTrue((self.dir / "figures" / f"{name}.png").is_file())

    def test_seeds_of_a_run_share_a_colour_not_a_marker(self):
        from thinkscale_analysis import thinking_figures
        labels = ["transformerpp@s33", "transformerpp@s34", "ebt@s33", "ebt@s34", "nexus@s33",
                  "nexus@s34"]
        styles = {label: thinking_figures._style(label, labels) for label in labels}
        self.assertEqual(styles["ebt@s33"][0], styles["ebt@s34"][0])
        self.assertNotEqual(styles["ebt@s33"][1], styles["ebt@s34"][1])
        self.assertEqual(len(set(styles.values())), len(labels))
        self.assertEqual(len({colour for colour, _ in styles.values()}), 3)

    def test_one_seed_keeps_plain_labels(self):
        (self.dir / "results.h5").unlink()
        write_campaign(Path(self.tmp.name) / "one", np.random.default_rng(9), subword=True)
        analysis = thinking.analyse(Path(self.tmp.name) / "one", resamples=50, seed=2)
        self.assertEqual({f.arch for f in analysis.fits}, {"transformerpp", "ebt", "ebt/subword"})


if __name__ == "__main__":
    unittest.main()
