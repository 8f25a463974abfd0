"""The performance model (analysis/thinkscale_analysis/perf_model.py) on
synthetic benchmark files made from known constants, and analysis/perf_model.py
end to end: the fit recovers the constants, the strategies differ by their
communication volumes, efficiencies behave, bad input writes nothing."""
import csv
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkscale_analysis import perf_model as pm  # noqa: E402

PERF_MODEL = Path(__file__).resolve().parents[1] / "perf_model.py"
ALPHA, BETA = 3e-6, 1 / 2e9     # 3 us, 2 GB/s
RATE, PARAMS = 5e9, 1_000_000   # FLOP/s per rank, parameters
FLOPS_PER_SEQ = 1e9


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def synthetic_benchmark(directory, ranks=(1, 2), cores=2):
    """Files as bench/bench_scaling.sh writes them, from ALPHA, BETA, RATE."""
    d = Path(directory)
    truth = pm.AlphaBeta(ALPHA, BETA)
    for p in ranks:
        if p == 1:
            continue
        rows = []
        for n in (2 ** k for k in range(3, 25)):
            for c in pm.COLLECTIVES:
                t = truth.cost(c, p, n) * 1e6
                rows.append([c, p, n, 10, t, t, t])
        write_csv(d / f"collectives_np{p}.csv",
                  ["collective", "ranks", "bytes", "iterations", "min_us", "avg_us", "max_us"], rows)
    model = pm.StepModel(RATE, cores, PARAMS, 4, {c: truth for c in pm.COLLECTIVES})
    scaling = []
    all_ranks = (1, 2, 3, 4, 8, 64, 4096)
    for mode, batch_of in (("strong", lambda p: 16), ("weak", lambda p: 8 * p)):
        flops_rows = []
        for p in all_ranks:
            batch = batch_of(p)
            most = -(-batch // p)
            flops_rows.append([p, batch, batch * 256, 0, 0, batch * FLOPS_PER_SEQ,
                               most * FLOPS_PER_SEQ, PARAMS, PARAMS])
            if p in ranks:
                step = model.step_seconds("ddp", p, most * FLOPS_PER_SEQ)[2]
                scaling.append([mode, p, int(p > cores), batch, step, batch * 256 / step,
                                batch * FLOPS_PER_SEQ])
        write_csv(d / f"step_flops_{mode}.csv",
                  ["ranks", "batch", "tokens", "flops_forward", "flops_backward", "flops_total",
                   "flops_max_rank", "params", "non_embedding_params"], flops_rows)
    write_csv(d / "scaling.csv", ["mode", "ranks", "oversubscribed", "batch", "step_seconds",
                                  "tokens_per_s", "flops_per_step"], scaling)


class AlphaBetaFit(unittest.TestCase):
    def test_recovers_alpha_and_beta_of_each_collective(self):
        truth = pm.AlphaBeta(ALPHA, BETA)
        for c in pm.COLLECTIVES:
            p = np.repeat([2, 3, 4], 10)
            n = np.tile(np.geomspace(8, 1 << 24, 10), 3)
            fit = pm.fit_alpha_beta(c, p, n, truth.cost(c, p, n))
            self.assertAlmostEqual(fit.alpha / ALPHA, 1, places=6, msg=c)
            self.assertAlmostEqual(fit.beta / BETA, 1, places=6, msg=c)
            self.assertLess(fit.rms_rel_error, 1e-9)

    def test_one_rank_rows_are_not_enough(self):
        with self.assertRaises(pm.ModelInputError):
            pm.fit_alpha_beta("allreduce", [1, 1, 1], [8, 16, 32], [1e-6, 1e-6, 1e-6])

    def test_allreduce_moves_twice_what_reduce_scatter_does(self):
        a_ar, b_ar = pm.algorithm_terms("allreduce", 8, 1000)
        a_rs, b_rs = pm.algorithm_terms("reduce_scatter_block", 8, 1000)
        self.assertEqual(a_ar, 2 * a_rs)
        self.assertAlmostEqual(b_ar, 2 * b_rs)
        self.assertAlmostEqual(b_rs, 7 / 8 * 1000)


class Strategies(unittest.TestCase):
    def setUp(self):
        link = pm.AlphaBeta(ALPHA, BETA)
        self.model = pm.StepModel(RATE, 4, PARAMS, 4, {c: link for c in pm.COLLECTIVES})

    def test_one_rank_has_no_communication(self):
        compute, comm, step = self.model.step_seconds("ddp", 1, 1e9)
        self.assertEqual(comm, 0)
        self.assertAlmostEqual(step, 1e9 / RATE)

    def test_volumes_per_unit(self):
        """Bandwidth alone (alpha 0): zero1 and zero2 move ddp's 2n; zero3
        3n - 2n/U (its last block and unit 0 stay gathered for the
        backward), zero1's 2n when the whole model is one unit."""
        link = pm.AlphaBeta(0.0, BETA)
        for units, zero3 in ((1, 1.0), (5, 1.3), (33, (3 - 2 / 33) / 2)):
            model = pm.StepModel(RATE, 4, PARAMS, 4, {c: link for c in pm.COLLECTIVES}, units)
            small = pm.SMALL_REDUCTIONS * link.cost("allreduce", 1024, pm.SMALL_BYTES)
            comm = {s: model.comm_seconds(s, 1024) - small for s in pm.STRATEGIES}
            self.assertAlmostEqual(comm["zero1"] / comm["ddp"], 1, places=9)
            self.assertAlmostEqual(comm["zero2"] / comm["ddp"], 1, places=9)
            self.assertAlmostEqual(comm["zero3"] / comm["ddp"], zero3, places=9)

    def test_latency_grows_with_the_calls_per_unit(self):
        """Latency alone (beta 0): zero3 makes 3U - 2 calls, zero2 2U."""
        link = pm.AlphaBeta(ALPHA, 0.0)
        model = pm.StepModel(RATE, 4, PARAMS, 4, {c: link for c in pm.COLLECTIVES}, 5)
        small = pm.SMALL_REDUCTIONS * 2 * 10 * ALPHA  # two allreduces of 2 log2(1024) steps
        self.assertAlmostEqual(model.comm_seconds("zero3", 1024) - small, 13 * 10 * ALPHA)
        self.assertAlmostEqual(model.comm_seconds("zero2", 1024) - small, 10 * 10 * ALPHA)
        self.assertEqual(len(pm.strategy_calls("zero3", 5)), 13)

    def test_oversubscribed_ranks_share_the_cores(self):
        self.assertEqual(self.model.rate_at(4), RATE)
        self.assertEqual(self.model.rate_at(8), RATE / 2)

    def test_weak_efficiency_falls_with_ranks_and_stays_in_0_1(self):
        t1 = self.model.step_seconds("ddp", 1, 8e9)[2]
        eff = [pm.efficiency("weak", t1, self.model.step_seconds("ddp", n, 8e9)[2], n)
               for n in (2, 4, 64, 4096)]
        self.assertTrue(all(0 < e <= 1 for e in eff))
        self.assertEqual(eff, sorted(eff, reverse=True))

    def test_strong_efficiency_collapses_beyond_the_batch(self):
        t1 = self.model.step_seconds("ddp", 1, 16e9)[2]
        t16 = self.model.step_seconds("ddp", 16, 1e9)[2]
        t64 = self.model.step_seconds("ddp", 64, 1e9)[2]  # 48 ranks idle
        self.assertLess(pm.efficiency("strong", t1, t64, 64),
                        pm.efficiency("strong", t1, t16, 16) / 3)


class CommandLine(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def run_model(self, *args):
        return subprocess.run([sys.executable, str(PERF_MODEL), str(self.dir), "--cores", "2", *args],
                              capture_output=True, text=True, timeout=120)

    def test_fits_synthetic_measurements_and_reproduces_them(self):
        synthetic_benchmark(self.dir, ranks=(1, 2, 3, 4))
        r = self.run_model()
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.dir / "perf_model_check.csv") as f:
            check = list(csv.DictReader(f))
        self.assertEqual(len(check), 8)
        for row in check:
            self.assertLess(abs(float(row["rel_error"])), 1e-3, row)
        with open(self.dir / "perf_model_predictions.csv") as f:
            pred = list(csv.DictReader(f))
        self.assertEqual({p["label"] for p in pred}, {"modelled"})
        self.assertEqual({p["strategy"] for p in pred}, set(pm.STRATEGIES))
        self.assertIn("4096", {p["ranks"] for p in pred})
        self.assertIn("modelled", (self.dir / "perf_model.md").read_text())
        with open(self.dir / "perf_model_fit.csv") as f:
            fit = {row["what"]: row for row in csv.DictReader(f)}
        self.assertAlmostEqual(float(fit["allreduce"]["alpha_us"]), ALPHA * 1e6, places=3)
        self.assertAlmostEqual(float(fit["compute"]["flops_per_s"]) / RATE, 1, places=4)

    def test_cluster_network_replaces_the_fit(self):
        synthetic_benchmark(self.dir)
        self.assertEqual(self.run_model("--alpha-us", "2", "--beta-gbps", "12.5").returncode, 0)
        with open(self.dir / "perf_model_fit.csv") as f:
            fit = {row["what"]: row for row in csv.DictReader(f)}
        self.assertEqual(float(fit["allgather"]["bandwidth_gbps"]), 12.5)
        self.assertIn("given", fit["allgather"]["source"])

    def test_missing_micro_benchmark_writes_nothing(self):
        synthetic_benchmark(self.dir)
        for f in self.dir.glob("collectives_np*.csv"):
            f.unlink()
        (self.dir / "perf_model.md").write_text("previous\n")
        r = self.run_model()
        self.assertEqual(r.returncode, 3)
        self.assertIn("collectives_np", r.stderr)
        self.assertEqual((self.dir / "perf_model.md").read_text(), "previous\n")
        self.assertFalse((self.dir / "perf_model_predictions.csv").exists())

    def test_malformed_column_is_named(self):
        synthetic_benchmark(self.dir)
        text = (self.dir / "scaling.csv").read_text().replace("step_seconds", "seconds")
        (self.dir / "scaling.csv").write_text(text)
        r = self.run_model()
        self.assertEqual(r.returncode, 3)
        self.assertIn("step_seconds", r.stderr)


if __name__ == "__main__":
    unittest.main()
