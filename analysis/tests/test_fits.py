"""The estimators on synthetic data with known exponents (seeded, so every run
draws the same data; the bands are wide enough for that draw and tight enough
to catch a broken interval)."""
import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thinkscale_analysis import bootstrap, campaign_fits, fits  # noqa: E402


def group(x, loss, runs=None, arch="a", axis="data", seeds=None):
    x = np.asarray(x, float)
    runs = np.arange(len(x)).astype(str) if runs is None else np.asarray(runs)
    seeds = np.zeros(len(x), dtype=int) if seeds is None else seeds
    return fits.make_group(arch, axis, np.arange(len(x)).astype(str), x, np.asarray(loss, float),
                           runs, seeds)


def power_law_campaign(rng, n, beta, sigma, level=4.0):
    x = np.geomspace(1e6, 1e9, n)
    return x, level * (x / 1e6) ** beta * np.exp(sigma * rng.standard_normal(n))


class PowerLawSlope(unittest.TestCase):
    def test_exact_without_noise(self):
        x = np.geomspace(10, 1e4, 5)
        fit = fits.fit_power_law(group(x, 3.0 * x ** -0.2), None)
        self.assertAlmostEqual(fit.beta, -0.2, places=12)
        self.assertAlmostEqual(np.exp(fit.intercept), 3.0, places=10)

    def test_interval_covers_the_true_slope_at_about_95_percent(self):
        rng = np.random.default_rng(11)
        trials, covered, widths = 100, 0, []
        for _ in range(trials):
            x, loss = power_law_campaign(rng, 6, -0.1, 0.01)
            g = group(x, loss)
            fit = fits.fit_power_law(g, bootstrap.draws(rng, g.n_clusters, 500))
            covered += fit.lo <= -0.1 <= fit.hi
            widths.append(fit.hi - fit.lo)
        self.assertGreaterEqual(covered / trials, 0.88)
        self.assertLessEqual(covered / trials, 0.995)
        # an honest 95% interval for 6 points, 1% noise over 3 decades is about +-0.0075
        self.assertLess(np.median(widths), 0.03)
        self.assertGreater(np.median(widths), 0.005)

    def test_two_points_fit_without_interval(self):
        fit = fits.fit_power_law(group([10, 100], [3.0, 2.0]), bootstrap.draws(
            np.random.default_rng(0), 2, 100))
        self.assertAlmostEqual(fit.beta, np.log(2 / 3) / np.log(10))
        self.assertTrue(np.isnan(fit.lo) and np.isnan(fit.hi))
        self.assertTrue(any("too few" in n for n in fit.notes))

    def test_one_distinct_x_gives_no_slope_and_a_note(self):
        fit = fits.fit_power_law(group([10, 10, 10], [3.0, 2.9, 3.1]), None)
        self.assertTrue(np.isnan(fit.beta))
        self.assertTrue(fit.notes)


class ClusteredBootstrap(unittest.TestCase):
    def test_rows_of_one_run_are_always_drawn_together(self):
        runs = np.array(["a", "a", "b", "c", "c", "c", "d"])
        ids, n = bootstrap.cluster_index(runs)
        w = bootstrap.row_weights(bootstrap.counts(
            bootstrap.draws(np.random.default_rng(1), n, 300), n), ids)
        for label in "acd":
            rows = runs == label
            self.assertTrue((w[:, rows] == w[:, rows][:, :1]).all())
        self.assertTrue(np.allclose(w.sum(1) > 0, True))
        self.assertFalse((w[:, 0] == w[:, 2]).all())  # different runs vary independently

    def test_clustering_widens_the_interval_when_runs_share_noise(self):
        """Each run contributes four checkpoints sharing one run-level offset.
        Clustered by run, the interval covers the truth; treating the 24 rows as
        independent (one run each) it is far too narrow."""
        rng = np.random.default_rng(5)
        trials, clustered, naive = 60, 0, 0
        for _ in range(trials):
            starts = np.geomspace(1e6, 1e9, 6)
            x = np.concatenate([s * np.array([1.0, 1.2, 1.4, 1.6]) for s in starts])
            runs = np.repeat(np.arange(6).astype(str), 4)
            shock = np.repeat(0.02 * rng.standard_normal(6), 4)
            loss = 4.0 * (x / 1e6) ** -0.1 * np.exp(shock + 0.001 * rng.standard_normal(24))
            g = group(x, loss, runs)
            self.assertEqual(g.n_clusters, 6)
            fit = fits.fit_power_law(g, bootstrap.draws(rng, 6, 400))
            clustered += fit.lo <= -0.1 <= fit.hi
            g_rows = group(x, loss)
            fit_rows = fits.fit_power_law(g_rows, bootstrap.draws(rng, 24, 400))
            naive += fit_rows.lo <= -0.1 <= fit_rows.hi
        self.assertGreaterEqual(clustered / trials, 0.85)
        self.assertLess(naive / trials, clustered / trials - 0.15)


class RelativeRate(unittest.TestCase):
    def _axis(self, rng, shared_sigma, own_sigma, n=6):
        x = np.geomspace(1e6, 1e9, n)
        shared = shared_sigma * rng.standard_normal(n)  # same data order per rung
        groups = []
        for arch, beta in (("transformerpp", -0.10), ("ebt", -0.13)):
            loss = 4.0 * (x / 1e6) ** beta * np.exp(shared + own_sigma * rng.standard_normal(n))
            groups.append(group(x, loss, [f"{arch}-{k}" for k in range(n)], arch=arch))
        return groups

    def test_recovers_a_known_rate_with_about_95_percent_coverage(self):
        rng = np.random.default_rng(21)
        trials, covered = 100, 0
        for _ in range(trials):
            tpp, ebt = self._axis(rng, 0.0, 0.01)
            drawn = bootstrap.draws(rng, 6, 400)
            _, lo, hi = fits.rel_rate(fits.fit_power_law(ebt, drawn), fits.fit_power_law(tpp, drawn), 6)
            covered += lo <= 0.3 <= hi
        self.assertGreaterEqual(covered / trials, 0.88)
        self.assertLessEqual(covered / trials, 0.995)

    def test_axis_fit_gives_rates_against_transformerpp_only(self):
        groups = self._axis(np.random.default_rng(4), 0.0, 0.005)
        rows = campaign_fits._fit_axis(groups, {("transformerpp", "data"): 6, ("ebt", "data"): 7},
                                       200, 0)
        self.assertEqual([r.arch for r in rows], ["transformerpp", "ebt"])
        self.assertTrue(np.isnan(rows[0].rel_rate))
        self.assertAlmostEqual(rows[1].rel_rate, 0.3, delta=0.1)
        self.assertLess(rows[1].rel_rate_lo, rows[1].rel_rate)
        self.assertGreater(rows[1].rel_rate_hi, rows[1].rel_rate)
        self.assertTrue(rows[0].complete)
        self.assertFalse(rows[1].complete)  # 6 of 7 manifest points

    def test_sign_convention(self):
        x = np.geomspace(10, 1e4, 4)
        steep = fits.fit_power_law(group(x, 3 * x ** -0.2), None)
        flat = fits.fit_power_law(group(x, 3 * x ** -0.1), None)
        self.assertAlmostEqual(fits.rel_rate(steep, flat, 4)[0], 1.0)
        self.assertAlmostEqual(fits.rel_rate(flat, steep, 4)[0], -0.5)

    def test_pairing_narrows_the_interval_when_rungs_share_noise(self):
        rng = np.random.default_rng(8)
        paired_w, unpaired_w = [], []
        for _ in range(20):
            tpp, ebt = self._axis(rng, 0.02, 0.002)
            drawn = bootstrap.draws(rng, 6, 400)
            p = fits.rel_rate(fits.fit_power_law(ebt, drawn), fits.fit_power_law(tpp, drawn), 6)
            u = fits.rel_rate(fits.fit_power_law(ebt, drawn),
                              fits.fit_power_law(tpp, bootstrap.draws(rng, 6, 400)), 6)
            paired_w.append(p[2] - p[1])
            unpaired_w.append(u[2] - u[1])
        self.assertLess(np.median(paired_w), 0.5 * np.median(unpaired_w))

    def test_clusters_are_paired_by_rung(self):
        g = group([1e8, 1e6, 1e7], [2.0, 3.0, 2.5], ["z", "y", "x"])
        self.assertEqual(list(g.cluster), [2, 0, 1])


class SaturatingLaw(unittest.TestCase):
    def test_exact_without_noise(self):
        x = np.geomspace(1e6, 1e9, 7)
        fit = fits.fit_saturating(group(x, 1.5 + 300 * x ** -0.35), None)
        self.assertAlmostEqual(fit.alpha, 0.35, delta=0.002)
        self.assertAlmostEqual(fit.E, 1.5, delta=0.01)
        self.assertAlmostEqual(fit.A, 300, delta=0.1 * 300)

    def test_pure_power_law_gives_zero_floor(self):
        x = np.geomspace(1e6, 1e9, 6)
        fit = fits.fit_saturating(group(x, 5 * x ** -0.1), None)
        self.assertAlmostEqual(fit.alpha, 0.1, delta=0.002)
        self.assertLess(fit.E, 0.02)

    def test_robust_to_one_outlier(self):
        x = np.geomspace(1e6, 1e9, 8)
        loss = 1.5 + 300 * x ** -0.35
        loss[3] *= 1.2
        fit = fits.fit_saturating(group(x, loss), None)
        self.assertAlmostEqual(fit.alpha, 0.35, delta=0.01)

    def test_interval_covers_the_true_exponent(self):
        rng = np.random.default_rng(3)
        trials, covered, widths = 50, 0, []
        for _ in range(trials):
            x = np.geomspace(1e6, 1e9, 8)
            loss = (1.5 + 300 * x ** -0.35) * np.exp(0.005 * rng.standard_normal(8))
            fit = fits.fit_saturating(group(x, loss), bootstrap.draws(rng, 8, 150))
            covered += fit.lo <= 0.35 <= fit.hi
            widths.append(fit.hi - fit.lo)
        self.assertGreaterEqual(covered / trials, 0.84)
        self.assertLess(np.median(widths), 0.2)

    def test_too_few_points_say_why(self):
        x = np.geomspace(1e6, 1e9, 3)
        fit = fits.fit_saturating(group(x, 5 * x ** -0.1), None)
        self.assertTrue(np.isnan(fit.alpha))
        self.assertIn("needs 4 distinct x", fit.notes[0])


class OddData(unittest.TestCase):
    def test_random_small_groups_never_raise_or_warn(self):
        """2-7 points, repeated x, shared runs, losses rising or falling: every
        estimator returns numbers or nan (numpy warnings are errors here)."""
        rng = np.random.default_rng(0)
        with np.errstate(all="raise"):
            for _ in range(25):
                n = int(rng.integers(2, 8))
                x = rng.choice([1, 2, 4, 8, 16, 32, 64], size=n) * 10.0 ** rng.integers(0, 12)
                loss = np.exp(rng.uniform(-1, 3, size=n))
                g = group(x, loss, rng.choice(list("abcdef"), size=n))
                drawn = bootstrap.draws(rng, g.n_clusters, 50)
                power = fits.fit_power_law(g, drawn)
                saturating = fits.fit_saturating(g, drawn)
                for value in (power.beta, power.lo, saturating.alpha, saturating.lo,
                              fits.loo_error(g), fits.rel_rate(power, power, g.n_clusters)[0]):
                    self.assertIsInstance(float(value), float)
                if g.n_distinct_x >= 2:
                    self.assertTrue(np.isfinite(power.beta))


class ForecastAndComputeMatched(unittest.TestCase):
    def test_leave_one_out_is_zero_on_an_exact_power_law_and_grows_with_noise(self):
        x = np.geomspace(10, 1e4, 6)
        self.assertAlmostEqual(fits.loo_error(group(x, 3 * x ** -0.2)), 0.0, places=12)
        noisy = 3 * x ** -0.2 * np.exp(0.02 * np.random.default_rng(0).standard_normal(6))
        self.assertGreater(fits.loo_error(group(x, noisy)), 0.005)
        self.assertTrue(np.isnan(fits.loo_error(group(x[:2], noisy[:2]))))

    def test_interpolation_is_exact_for_power_laws_and_never_extrapolates(self):
        flops = np.array([1e12, 1e13, 1e14])
        at = np.array([1e11, 3e12, 1e14, 1e15])
        got = fits.log_interpolate(flops, 5 * flops ** -0.05, at)
        self.assertTrue(np.isnan(got[0]) and np.isnan(got[3]))
        np.testing.assert_allclose(got[1:3], 5 * at[1:3] ** -0.05, rtol=1e-12)

    def test_compute_matched_budgets_span_all_architectures(self):
        view = fits.compute_matched({"transformerpp": (np.array([1e12, 1e14]), np.array([3.0, 2.0])),
                                     "ebt": (np.array([1e13, 1e15]), np.array([3.2, 2.2])),
                                     "free": (np.array([5e13]), np.array([2.5]))}, "flops", 5)
        self.assertAlmostEqual(view.budgets[0], 1e12)
        self.assertAlmostEqual(view.budgets[-1], 1e15)
        self.assertNotIn("free", view.loss_at)
        self.assertTrue(view.notes)
        self.assertTrue(np.isnan(view.loss_at["ebt"][0]))
        self.assertAlmostEqual(view.loss_at["transformerpp"][2], 3 ** 0.25 * 2 ** 0.75, places=10)


if __name__ == "__main__":
    unittest.main()
