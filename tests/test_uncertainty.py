"""Uncertainty numerics (evaluation/intervals.py, calibration.py, bootstrap.py) and their plots
(evaluation/uncertainty_plots.py): hand-computed values, coverage on synthetic data with known noise,
calibration, bootstrap intervals. Pure numpy, no TensorFlow."""

import json
import math

import numpy as np
import pytest
from scipy.special import softmax

from deeplense_tf.evaluation import bootstrap, calibration, intervals, metrics, uncertainty_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def heteroscedastic(rng, n, scale=1.0):
    """Targets with known Gaussian noise sigma_true; the returned sigma is sigma_true * scale."""
    mu = rng.uniform(-24, -22, n)
    sigma_true = rng.uniform(0.05, 0.3, n)
    return mu + sigma_true * rng.standard_normal(n), mu, sigma_true * scale


def check_png(path, out_dir):
    assert path.parent == out_dir and path.suffix == ".png"
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


# --------------------------------------------------------------------------- gaussian
def test_gaussian_nll_by_hand():
    c = 0.5 * math.log(2 * math.pi)
    # z = 0, 2, -1 with sigma 1, 0.5, 2: c + log s + z^2 / 2
    expected = np.mean([c, c + math.log(0.5) + 2.0, c + math.log(2.0) + 0.5])
    assert intervals.gaussian_nll([0.0, 1.0, -2.0], [0.0, 0.0, 0.0], [1.0, 0.5, 2.0]) == pytest.approx(expected)
    assert intervals.gaussian_nll([1.0, 3.0], [1.0, 3.0], 1.0) == pytest.approx(c)  # scalar sigma broadcasts
    with pytest.raises(ValueError, match="sigma must be > 0"):
        intervals.gaussian_nll([1.0, 2.0], [1.0, 2.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="length mismatch"):
        intervals.gaussian_nll([1.0, 2.0], [1.0], 1.0)


def test_z_coverage_and_intervals_by_hand():
    assert intervals.z_for(0.68) == pytest.approx(0.9945, abs=1e-4)
    assert intervals.z_for(0.95) == pytest.approx(1.95996, abs=1e-5)
    assert intervals.coverage([0.0, 1.0, 2.0, 5.0], [0.0, 1.5, 1.0, 0.0], [1.0, 2.0, 2.0, 4.0]) == 0.5  # edges count
    lo, hi = intervals.gaussian_interval([1.0, 2.0], [0.5, 1.0], 0.95)
    np.testing.assert_allclose(hi - lo, 2 * 1.959964 * np.array([0.5, 1.0]), rtol=1e-6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        intervals.z_for(95)
    with pytest.raises(ValueError, match="non-finite"):
        intervals.coverage([np.nan], [0.0], [1.0])


def test_calibration_curve_of_true_sigma_is_near_diagonal(rng):
    y, mu, s = heteroscedastic(rng, 20_000)
    levels, emp = intervals.calibration_curve(y, mu, s)
    assert np.abs(emp - levels).max() < 0.02
    assert intervals.regression_calibration_error(y, mu, s) < 0.01
    assert intervals.regression_calibration_error(y, mu, 0.5 * s) > 0.15  # overconfident sigma


# --------------------------------------------------------------------------- conformal
def test_conformal_quantile_rank_and_small_n():
    scores = np.arange(1.0, 101.0)  # n = 99 + 1: rank ceil(101 * 0.5) = 51
    assert intervals.conformal_quantile(scores, 0.5) == 51.0
    assert intervals.conformal_quantile(np.arange(1.0, 100.0), 0.95) == 95.0  # exactly (99 + 1) * 0.95
    with pytest.warns(UserWarning, match="too few"):
        assert intervals.conformal_quantile([3.0, 1.0, 2.0], 0.95) == 3.0  # capped at the largest score


@pytest.mark.parametrize("normalised", [True, False])
def test_conformal_interval_covers_nominal_on_new_data(rng, normalised):
    # sigma off by a factor 2.5 (normalised) or no sigma at all (absolute): calibration repairs both
    y_val, mu_val, s_val = heteroscedastic(rng, 5000, scale=2.5)
    cal = intervals.fit_conformal(y_val, mu_val, s_val if normalised else None)
    assert cal["normalised"] is normalised and cal["n"] == 5000 and json.loads(json.dumps(cal)) == cal
    y, mu, s = heteroscedastic(rng, 20_000, scale=2.5)
    for level in (0.68, 0.95):
        lo, hi = intervals.conformal_interval(mu, s if normalised else None, cal, level)
        assert intervals.coverage(y, lo, hi) == pytest.approx(level, abs=0.02)
    with pytest.raises(ValueError, match="no level 0.9"):
        intervals.conformal_interval(mu, s, cal, 0.9)


def test_regression_uncertainty_metrics_keys_and_nones(rng):
    y, mu, s = heteroscedastic(rng, 500)
    cal = intervals.fit_conformal(y, mu, s)
    full = intervals.regression_uncertainty_metrics(y, mu, s, cal)
    assert json.loads(json.dumps(full)) == full and None not in full.values()
    assert full["coverage_95"] == pytest.approx(0.95, abs=0.03) and full["width_95"] > full["width_68"] > 0
    bare = intervals.regression_uncertainty_metrics(y, mu)
    assert set(bare) == set(full) and all(v is None for v in bare.values())
    absolute = intervals.regression_uncertainty_metrics(y, mu, calibration=intervals.fit_conformal(y, mu))
    assert absolute["coverage_68_calibrated"] is not None and absolute["nll"] is None
    assert absolute["nll_calibrated"] is not None  # a point estimate gets an NLL through its calibrated interval


def test_calibrated_nll_by_hand():
    y, mu = np.array([0.0, 1.0, -1.0]), np.zeros(3)
    z68 = intervals.z_for(0.68)
    absolute = {"levels": [0.68], "quantiles": [2 * z68], "normalised": False}  # 68 % half-width 2 z68: sigma 2
    by_hand = np.mean([0.5 * np.log(2 * np.pi) + np.log(2.0) + 0.5 * (v / 2.0) ** 2 for v in y])
    assert intervals.calibrated_nll(y, mu, None, absolute) == pytest.approx(by_hand)
    normalised = {"levels": [0.68], "quantiles": [0.5 * z68], "normalised": True}  # half of each sigma
    sigma = np.array([2.0, 4.0, 6.0])
    by_hand = np.mean([0.5 * np.log(2 * np.pi) + np.log(s / 2) + 0.5 * (v / (s / 2)) ** 2 for v, s in zip(y, sigma)])
    assert intervals.calibrated_nll(y, mu, sigma, normalised) == pytest.approx(by_hand)
    assert intervals.calibrated_nll(y, mu, None, {"levels": [0.95], "quantiles": [1.0], "normalised": False}) is None


# --------------------------------------------------------------------------- ensemble
def test_ensemble_total_sigma_from_known_members():
    mean, total, members = intervals.ensemble_gaussian([[0.0, 5.0], [2.0, 5.0]], [[1.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(mean, [1.0, 5.0])
    np.testing.assert_allclose(total, [math.sqrt(2.0), math.sqrt(5.0)])  # 1 + var{0, 2}; mean{1, 9} + 0
    np.testing.assert_allclose(members, [1.0, math.sqrt(5.0)])
    mean, total, members = intervals.ensemble_gaussian(np.array([[0.0], [2.0], [4.0]])[..., None])  # (M, N, 1)
    assert mean.tolist() == [2.0] and total == pytest.approx(math.sqrt(8 / 3)) and members is None
    with pytest.raises(ValueError, match="shape of means"):
        intervals.ensemble_gaussian([[0.0, 1.0]], [[1.0]])


# --------------------------------------------------------------------------- classification
def synthetic_classes(rng, n=20_000, k=3):
    """Labels drawn from softmax(z): softmax(z) is calibrated, softmax(3 z) overconfident."""
    z = rng.standard_normal((n, k)) * 1.5
    p = softmax(z, axis=1)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return y, z


def test_ece_calibrated_vs_overconfident(rng):
    y, z = synthetic_classes(rng)
    assert calibration.expected_calibration_error(y, softmax(z, axis=1)) < 0.02
    assert calibration.expected_calibration_error(y, softmax(3 * z, axis=1)) > 0.05
    p = rng.random(20_000)  # binary: probability of the positive class
    yb = (rng.random(20_000) < p).astype(int)
    assert calibration.expected_calibration_error(yb, p) < 0.02
    table = calibration.reliability_table(yb, p, n_bins=10)
    assert len(table["bin_edges"]) == 11 and sum(table["count"]) == 20_000
    assert table["count"][:5] == [0] * 5 and table["accuracy"][0] is None  # binary confidence >= 0.5
    with pytest.raises(ValueError, match="not logits"):
        calibration.expected_calibration_error([0, 1], [-2.0, 3.0])


def test_temperature_scaling_recovers_known_temperature(rng):
    y, z = synthetic_classes(rng)
    hot = softmax(3 * z, axis=1)
    T = calibration.fit_temperature(y, hot)
    assert T == pytest.approx(3.0, rel=0.1)
    cooled = calibration.apply_temperature(hot, T)
    assert cooled.shape == hot.shape and np.allclose(cooled.sum(axis=1), 1.0)
    assert calibration.expected_calibration_error(y, cooled) < 0.5 * calibration.expected_calibration_error(y, hot)


def test_temperature_scaling_binary(rng):
    logits = 2.0 * rng.standard_normal(20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-logits))).astype(int)
    hot = 1 / (1 + np.exp(-2.0 * logits))
    assert calibration.fit_temperature(y, hot) == pytest.approx(2.0, rel=0.1)
    assert calibration.apply_temperature(hot[:, None], 2.0).shape == (20_000, 1)
    with pytest.raises(ValueError, match="temperature must be"):
        calibration.apply_temperature(hot, 0.0)


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_interval_contains_estimate_and_narrows(rng):
    x = rng.standard_normal(4000)
    widths = []
    for n in (100, 4000):
        lo, hi = bootstrap.bootstrap_interval(np.mean, (x[:n],), n_boot=300)
        assert lo < x[:n].mean() < hi
        widths.append(hi - lo)
    assert widths[1] < 0.3 * widths[0]  # ~ 1 / sqrt(n): 100 -> 4000 is a factor 6.3
    auc = lambda yy, ss: metrics._binary_auc(yy.astype(int), ss)  # noqa: E731
    rare = np.r_[np.zeros(99), 1.0]  # a third of the resamples miss the one positive: skipped
    assert None not in bootstrap.bootstrap_interval(auc, (rare, rng.random(100)), n_boot=200)
    assert bootstrap.bootstrap_interval(auc, (np.zeros(100), rng.random(100)), n_boot=200) == (None, None)


def test_vectorised_statistics_equal_metrics_py(rng):
    """metric_intervals computes the metrics from resample counts: on unit counts they are metrics.py's."""
    y = (rng.random(400) < 0.2).astype(int)
    s = np.round(rng.standard_normal(400) + 1.5 * y, 1)  # rounded: ties
    stats, _ = bootstrap._task_stats("lens_finding", y, s, None, "no_sub")
    ones = np.ones((1, 400))
    ref = metrics.lens_finding_metrics(y, s)
    for key in ("auc", "tpr0", "tpr10"):
        assert stats[key](ones)[0] == pytest.approx(ref[key])
    P = softmax(rng.standard_normal((400, 3)), axis=1)
    labels = rng.integers(0, 2, 400)  # class 2 absent: the macro AUC averages the present classes
    stats, _ = bootstrap._task_stats("classification", labels, P, None, "no_sub")
    ref = metrics.classification_metrics(labels, P, ["a", "b", "c"])
    for key in ("accuracy", "roc_auc_macro_ovr"):
        assert stats[key](ones)[0] == pytest.approx(ref[key])
    yr, pr = rng.standard_normal(400) - 23, rng.standard_normal(400) - 23
    stats, _ = bootstrap._task_stats("regression", yr, pr, None, "no_sub")
    ref = metrics.regression_metrics(yr, pr)
    for key in ("mae", "rmse", "r2"):
        assert stats[key](ones)[0] == pytest.approx(ref[key])


def test_metric_intervals_equal_the_generic_bootstrap(rng):
    y = (rng.random(300) < 0.3).astype(int)
    s = rng.standard_normal(300) + y
    fast = bootstrap.metric_intervals("lens_finding", y, s, n_boot=200, seed=3)["auc"]
    slow = bootstrap.bootstrap_interval(lambda a, b: metrics._binary_auc(a, b), (y, s), n_boot=200, seed=3)
    assert fast == pytest.approx(list(slow))


@pytest.mark.parametrize("task, keys", [
    ("regression", {"mae", "rmse", "r2"}),
    ("classification", {"accuracy", "roc_auc_macro_ovr"}),
    ("lens_finding", {"auc", "tpr0", "tpr10"}),
    ("anomaly", {"auc_vs_all"}),
])
def test_metric_intervals_keys_for_each_task(rng, task, keys):
    n = 200
    y_true, y_pred = {
        "regression": (rng.uniform(-24, -22, n), rng.uniform(-24, -22, n)),
        "classification": (rng.integers(0, 3, n), softmax(rng.standard_normal((n, 3)), axis=1)),
        "lens_finding": (rng.integers(0, 2, n), rng.random(n)),
        "anomaly": (rng.integers(0, 3, n), rng.random(n)),
    }[task]
    out = bootstrap.metric_intervals(task, y_true, y_pred, class_names=["no_sub", "cdm", "axion"], n_boot=100)
    assert set(out) == keys and json.loads(json.dumps(out)) == out
    for lo, hi in out.values():
        assert lo <= hi


def test_metric_intervals_errors():
    with pytest.raises(ValueError, match="unknown task"):
        bootstrap.metric_intervals("segmentation", [0, 1], [0.1, 0.9])
    with pytest.raises(ValueError, match="length mismatch"):
        bootstrap.metric_intervals("regression", [1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- plots
def test_regression_uncertainty_plots(tmp_path, rng):
    y, mu, s = heteroscedastic(rng, 2000, scale=2.0)  # more items than error bars drawn
    cal = intervals.fit_conformal(y, mu, s)
    paths = uncertainty_plots.regression_uncertainty_plots(y, mu, s, tmp_path, "log10 m_a [eV]", calibration=cal)
    assert [p.name for p in paths] == ["pred_vs_true_errorbars.png", "coverage.png", "residual_over_sigma.png"]
    for p in paths:
        check_png(p, tmp_path)
    # a plain model: absolute calibration, no sigma, no residual / sigma histogram
    paths = uncertainty_plots.regression_uncertainty_plots(y[:30], mu[:30], None, tmp_path / "plain", "f_sub",
                                                           calibration=intervals.fit_conformal(y, mu))
    assert len(paths) == 2
    with pytest.raises(ValueError, match="needs sigma"):
        uncertainty_plots.regression_uncertainty_plots(y, mu, None, tmp_path, "f_sub")


def test_reliability_diagram(tmp_path, rng):
    y, z = synthetic_classes(rng, n=2000)
    hot = softmax(3 * z, axis=1)
    tempered = calibration.apply_temperature(hot, 3.0)
    check_png(uncertainty_plots.reliability_diagram(y, hot, tmp_path, probs_calibrated=tempered), tmp_path)
    path = uncertainty_plots.reliability_diagram([0, 1, 1], [0.2, 0.9, 0.4], tmp_path, name="lens_reliability.png")
    assert path.name == "lens_reliability.png"
    check_png(path, tmp_path)
