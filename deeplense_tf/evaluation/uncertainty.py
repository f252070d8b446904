"""Uncertainty numerics (pure numpy / scipy / scikit-learn): Gaussian NLL and coverage, split-conformal
intervals, deep-ensemble combination, expected calibration error, temperature scaling, and bootstrap
confidence intervals of the headline metrics.

Regression quantities are in the physical units of the target (log10 m_a: dex). Results meant for
``metrics.json`` are plain Python floats / lists / dicts, with ``None`` where a number is undefined.
Bad input (mismatched lengths, NaN/inf, sigma <= 0) raises ``ValueError`` naming it, as metrics.py does.
Used by ``python -m deeplense_tf.evaluate``, ``ensemble`` and ``predict``; tests: tests/test_uncertainty.py.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax
from scipy.stats import norm

from deeplense_tf.evaluation import metrics as _m
from deeplense_tf.evaluation.metrics import _as_1d, _f, _same_length

__all__ = [
    "gaussian_nll", "z_for", "coverage", "gaussian_interval", "calibration_curve",
    "regression_calibration_error", "conformal_quantile", "fit_conformal", "conformal_interval",
    "regression_uncertainty_metrics", "ensemble_gaussian", "expected_calibration_error",
    "reliability_table", "fit_temperature", "apply_temperature", "bootstrap_interval", "metric_intervals",
]

DEFAULT_LEVELS = np.linspace(0.05, 0.95, 19)
_EPS = 1e-7  # probability clip for logs and logits


# --------------------------------------------------------------------------- helpers
def _level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1 (e.g. 0.68, 0.95). Received: level={level}")
    return level


def _sigma(sigma: Any, n: int, name: str = "sigma") -> np.ndarray:
    """(N,) positive sigma; a scalar is broadcast (a homoscedastic model)."""
    s = np.asarray(sigma, dtype=float)
    s = np.full(n, float(s)) if s.ndim == 0 else _as_1d(s, name)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} must be finite. Received: {s[~np.isfinite(s)][:3].tolist()}")
    if (s <= 0).any():
        raise ValueError(f"{name} must be > 0: {int((s <= 0).sum())} of {s.size} value(s) are <= 0 "
                         f"(min {s.min():.3g}); a model's sigma comes from exp or softplus and is never 0")
    return s


def _regression_inputs(y, mean, sigma=None):
    y, mu = _as_1d(y, "y"), _as_1d(mean, "mean")
    n = _same_length(y=y, mean=mu)
    return y, mu, (None if sigma is None else _sigma(sigma, n))


# --------------------------------------------------------------------------- gaussian
def gaussian_nll(y, mean, sigma) -> float:
    """Mean negative log-likelihood of ``y`` under N(mean, sigma^2), with the 0.5 log(2 pi) term."""
    y, mu, s = _regression_inputs(y, mean, sigma)
    z = (y - mu) / s
    return float(np.mean(0.5 * math.log(2 * math.pi) + np.log(s) + 0.5 * z**2))


def z_for(level: float) -> float:
    """Half-width in sigmas of the central normal interval holding ``level`` (0.68 -> 0.994, 0.95 -> 1.960)."""
    return float(norm.ppf(0.5 + _level(level) / 2))


def coverage(y, lower, upper) -> float:
    """Fraction of items with lower <= y <= upper."""
    y, lo, hi = _as_1d(y, "y"), _as_1d(lower, "lower"), _as_1d(upper, "upper")
    _same_length(y=y, lower=lo, upper=hi)
    return float(np.mean((lo <= y) & (y <= hi)))


def gaussian_interval(mean, sigma, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Central interval mean -/+ z_for(level) * sigma."""
    mu = _as_1d(mean, "mean")
    half = z_for(level) * _sigma(sigma, len(mu))
    return mu - half, mu + half


def calibration_curve(y, mean, sigma, levels=DEFAULT_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """(nominal levels, empirical coverage of the central Gaussian interval at each level)."""
    y, mu, s = _regression_inputs(y, mean, sigma)
    levels = np.asarray([_level(v) for v in np.atleast_1d(levels)])
    absz = np.abs(y - mu) / s
    z = norm.ppf(0.5 + levels / 2)
    return levels, (absz[None, :] <= z[:, None]).mean(axis=1)


def regression_calibration_error(y, mean, sigma, levels=DEFAULT_LEVELS) -> float:
    """Mean |empirical - nominal| coverage over ``levels`` (0 for a perfectly calibrated sigma)."""
    nominal, empirical = calibration_curve(y, mean, sigma, levels)
    return float(np.mean(np.abs(empirical - nominal)))


# --------------------------------------------------------------------------- conformal
def conformal_quantile(scores, level: float) -> float:
    """Split-conformal quantile: the ceil((n+1) level)-th smallest of the n calibration ``scores``.

    That rank guarantees coverage >= level on exchangeable new data. When it exceeds n (fewer than
    level / (1 - level) scores, e.g. n < 19 at 95 %) the guarantee would need an infinite interval;
    we return the largest score instead (finite, JSON-safe: coverage then about n / (n + 1)) and warn.
    """
    s = _as_1d(scores, "scores")
    n = _same_length(scores=s)
    level = _level(level)
    k = math.ceil((n + 1) * level - 1e-9)  # the tolerance keeps 100 * 0.95 from rounding up to 96
    if k > n:
        warnings.warn(f"{n} calibration scores are too few for a {level:.0%} conformal interval "
                      f"(needs >= {math.ceil(level / (1 - level))}); using the largest score, which covers "
                      f"about {n / (n + 1):.0%}", stacklevel=2)
        k = n
    return float(np.partition(s, k - 1)[k - 1])


def fit_conformal(y_val, mean_val, sigma_val=None, levels=(0.68, 0.95)) -> dict:
    """Calibrate intervals on the validation split: quantiles of |y - mu| / sigma (normalised, when
    ``sigma_val`` is given) or of |y - mu| (absolute, any regression model). JSON-serialisable."""
    y, mu, s = _regression_inputs(y_val, mean_val, sigma_val)
    scores = np.abs(y - mu) if s is None else np.abs(y - mu) / s
    levels = [_level(v) for v in levels]
    return {"levels": levels, "quantiles": [conformal_quantile(scores, v) for v in levels],
            "normalised": s is not None, "n": int(len(y))}


def _calibrated_quantile(calibration: dict, level: float) -> float | None:
    levels = np.asarray(calibration["levels"], dtype=float)
    hit = np.flatnonzero(np.isclose(levels, _level(level), rtol=0, atol=1e-9))
    return float(calibration["quantiles"][hit[0]]) if hit.size else None


def conformal_interval(mean, sigma, calibration: dict, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated interval at ``level``: mean -/+ q sigma (normalised calibration) or mean -/+ q."""
    mu = _as_1d(mean, "mean")
    q = _calibrated_quantile(calibration, level)
    if q is None:
        raise ValueError(f"the calibration has no level {level}; it was fitted at {calibration['levels']}: "
                         f"refit with fit_conformal(..., levels=...) including it")
    if calibration["normalised"]:
        if sigma is None:
            raise ValueError("this calibration is normalised by sigma (fitted with sigma_val); pass sigma")
        return mu - q * _sigma(sigma, len(mu)), mu + q * _sigma(sigma, len(mu))
    return mu - q, mu + q


def regression_uncertainty_metrics(y, mean, sigma=None, calibration: dict | None = None) -> dict:
    """NLL, coverage of the 68 / 95 % intervals (raw Gaussian and conformal), mean full interval width
    (calibrated where there is a calibration, else raw) and the calibration error, for metrics.json."""
    y, mu, s = _regression_inputs(y, mean, sigma)
    out: dict[str, Any] = {"nll": None if s is None else gaussian_nll(y, mu, s)}
    widths: dict[int, float | None] = {}
    for pct in (68, 95):
        level = pct / 100
        raw = cal = None
        if s is not None:
            lo, hi = gaussian_interval(mu, s, level)
            out[f"coverage_{pct}"], raw = coverage(y, lo, hi), float(np.mean(hi - lo))
        else:
            out[f"coverage_{pct}"] = None
        if calibration is not None and _calibrated_quantile(calibration, level) is not None:
            lo, hi = conformal_interval(mu, s, calibration, level)
            out[f"coverage_{pct}_calibrated"], cal = coverage(y, lo, hi), float(np.mean(hi - lo))
        else:
            out[f"coverage_{pct}_calibrated"] = None
        widths[pct] = cal if cal is not None else raw
    out.update({"width_68": _f(widths[68]), "width_95": _f(widths[95]),
                "calibration_error": None if s is None else regression_calibration_error(y, mu, s)})
    return out


def ensemble_gaussian(means, sigmas=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Combine M members' predictions (M, N) into (mean, sigma_total, sigma_members).

    sigma_total^2 = mean of the members' variances + population variance of the members' means (their
    disagreement); sigma_members = sqrt(mean member variance), None when ``sigmas`` is None (then the
    total is the disagreement alone, 0 for a single member).
    """
    def members(a, name):
        a = np.asarray(a, dtype=float)
        a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"{name} must have shape (members, items). Received: shape {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} non-finite value(s) (NaN/inf)")
        return a

    mu = members(means, "means")
    var = mu.var(axis=0)
    sigma_members = None
    if sigmas is not None:
        s = members(sigmas, "sigmas")
        if s.shape != mu.shape:
            raise ValueError(f"sigmas must have the shape of means {mu.shape}. Received: {s.shape}")
        if (s < 0).any():
            raise ValueError(f"sigmas must be >= 0; {int((s < 0).sum())} are negative")
        aleatoric = np.mean(s**2, axis=0)
        var, sigma_members = var + aleatoric, np.sqrt(aleatoric)
    return mu.mean(axis=0), np.sqrt(var), sigma_members


# --------------------------------------------------------------------------- classification
def _probs(y, probs):
    """-> (labels, P, binary): (N,) probabilities of the positive class are binary, (N, K) multi-class."""
    P = np.asarray(probs, dtype=float)
    binary = P.ndim == 1 or (P.ndim == 2 and P.shape[1] == 1)
    if binary:
        P, labels = _as_1d(P, "probs"), _m._binary_labels(y, "y")
    elif P.ndim == 2:
        labels = _m._class_labels(y, P.shape[1])
    else:
        raise ValueError(f"probs must have shape (N,) (binary) or (N, K). Received: shape {P.shape}")
    _same_length(y=labels, probs=P)
    bad = ~np.isfinite(P) | (P < -1e-5) | (P > 1 + 1e-5)
    if bad.any():
        raise ValueError(f"probs must be probabilities in [0, 1]: {int(bad.sum())} value(s) are not "
                         f"(e.g. {P[bad][:3].tolist()}); pass softmax/sigmoid outputs, not logits")
    return labels, P, binary


def _reliability_bins(y, probs, n_bins: int):
    """Top-label confidence and correctness summed in equal-width bins [i/n, (i+1)/n) (last closed)."""
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1. Received: n_bins={n_bins}")
    labels, P, binary = _probs(y, probs)
    if binary:
        conf, correct = np.maximum(P, 1 - P), (P >= 0.5) == (labels == 1)
    else:
        conf, correct = P.max(axis=1), P.argmax(axis=1) == labels
    idx = np.clip(np.floor(conf * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    return (count, np.bincount(idx, weights=conf, minlength=n_bins),
            np.bincount(idx, weights=correct.astype(float), minlength=n_bins))


def expected_calibration_error(y, probs, n_bins: int = 15) -> float:
    """Top-label ECE: sum over confidence bins of (fraction of items) * |accuracy - mean confidence|."""
    count, conf_sum, acc_sum = _reliability_bins(y, probs, n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / count.sum())


def reliability_table(y, probs, n_bins: int = 15) -> dict:
    """Per-bin mean confidence, accuracy and count (None for empty bins), the bin edges, ECE and n."""
    count, conf_sum, acc_sum = _reliability_bins(y, probs, n_bins)
    mean = lambda v: [float(a / c) if c else None for a, c in zip(v, count)]  # noqa: E731
    return {"bin_edges": np.linspace(0, 1, n_bins + 1).tolist(), "confidence": mean(conf_sum),
            "accuracy": mean(acc_sum), "count": count.astype(int).tolist(),
            "ece": float(np.abs(acc_sum - conf_sum).sum() / count.sum()), "n": int(count.sum())}


def _tempered(P: np.ndarray, binary: bool, T: float) -> np.ndarray:
    P = np.clip(P, _EPS, 1 - _EPS)
    return expit(logit(P) / T) if binary else softmax(np.log(P) / T, axis=1)


def fit_temperature(y, probs) -> float:
    """Temperature T minimising the NLL of softmax(log p / T) (binary: sigmoid(logit p / T)) on held-out
    labels, searched over log T in [log 0.01, log 100]; T > 1 softens overconfident probabilities."""
    labels, P, binary = _probs(y, probs)
    P = np.clip(P, _EPS, 1 - _EPS)
    if binary:
        z, t = logit(P), labels.astype(float)
        nll = lambda lt: float(np.mean(t * np.logaddexp(0, -z / np.exp(lt))  # noqa: E731
                                       + (1 - t) * np.logaddexp(0, z / np.exp(lt))))
    else:
        L, rows = np.log(P), np.arange(len(labels))
        nll = lambda lt: float(-np.mean(log_softmax(L / np.exp(lt), axis=1)[rows, labels]))  # noqa: E731
    res = minimize_scalar(nll, bounds=(math.log(0.01), math.log(100.0)), method="bounded",
                          options={"xatol": 1e-5})
    return float(math.exp(res.x))


def apply_temperature(probs, T: float) -> np.ndarray:
    """Probabilities rescaled by temperature ``T`` (same shape as ``probs``: (N,) binary or (N, K))."""
    if not (math.isfinite(float(T)) and float(T) > 0):
        raise ValueError(f"temperature must be a finite number > 0. Received: T={T}")
    P = np.asarray(probs, dtype=float)
    binary = P.ndim == 1 or (P.ndim == 2 and P.shape[1] == 1)
    return _tempered(P, binary, float(T)).reshape(P.shape)


# --------------------------------------------------------------------------- bootstrap
_CHUNK = 2_000_000  # resampled indices held at once (16 MB of int64)


def _index_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap row indices, (b, n) per chunk; the same seed gives the same resamples on every path."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // n)
    for start in range(0, n_boot, step):
        yield rng.integers(0, n, size=(min(step, n_boot - start), n))


def _percentile(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile interval of the defined (finite) values; (None, None) if under half are defined."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or 2 * v.size < len(values):
        return None, None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return _f(lo), _f(hi)


def bootstrap_interval(statistic: Callable[..., Any], arrays: tuple, n_boot: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling rows jointly across ``arrays``.

    A resample where the statistic is undefined (None or NaN, e.g. an AUC with one class) is skipped;
    (None, None) if fewer than half of the ``n_boot`` resamples are defined.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    n = _same_length(**{f"arrays[{i}]": a for i, a in enumerate(arrays)})
    level, values = _level(level), []
    for idx in _index_chunks(n, int(n_boot), seed):
        for row in idx:
            v = statistic(*(a[row] for a in arrays))
            values.append(math.nan if v is None else float(v))
    return _percentile(np.asarray(values), level)


def _weighted_auc(score: np.ndarray, pos: np.ndarray, W: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count one half, as scikit-learn) of every row of resample counts W (b, n); NaN where a
    class is missing. One sort for all resamples instead of one per resample."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    Wo, p = W[:, order], pos[order]
    gp = np.add.reduceat(Wo * p, starts, axis=1)
    gn = np.add.reduceat(Wo * ~p, starts, axis=1)
    below = np.cumsum(gn, axis=1) - gn
    n_pos, n_neg = gp.sum(axis=1), gn.sum(axis=1)
    num = (gp * (below + 0.5 * gn)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos * n_neg > 0, num / (n_pos * n_neg), np.nan)


def _weighted_tpr(score: np.ndarray, pos: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    """metrics.tpr_before_false_positives for every row of resample counts W (b, n); NaN without lenses."""
    neg_order = np.flatnonzero(~pos)[np.argsort(-score[~pos], kind="stable")]
    pos_order = np.flatnonzero(pos)[np.argsort(-score[pos], kind="stable")]
    W_pos = np.concatenate([np.zeros((len(W), 1)), np.cumsum(W[:, pos_order], axis=1)], axis=1)
    n_pos = W_pos[:, -1]
    if neg_order.size:
        cum_neg = np.cumsum(W[:, neg_order], axis=1)
        enough = cum_neg[:, -1] >= k
        t = score[neg_order][np.argmax(cum_neg >= k, axis=1)]  # k-th highest non-lens, repeats counted
        above = np.searchsorted(-score[pos_order], -t, side="left")  # lenses scored strictly above t
        found = np.where(enough, W_pos[np.arange(len(W)), above], n_pos)
    else:
        found = n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, found / n_pos, np.nan)


def _regression_stats(y: np.ndarray, p: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    n, e, yc = len(y), p - y, y - y.mean()  # centred: no cancellation in the total sum of squares

    def r2(W):
        ss_tot = W @ yc**2 - (W @ yc) ** 2 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ss_tot > 1e-12 * (W @ yc**2), 1 - (W @ e**2) / ss_tot, np.nan)

    return {"mae": lambda W: W @ np.abs(e) / n, "rmse": lambda W: np.sqrt(W @ e**2 / n), "r2": r2}


def _classification_stats(y_true, probs, class_names) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    P = np.asarray(probs, dtype=float)
    k = P.shape[-1] if class_names is None else len(class_names)
    if P.ndim != 2 or P.shape[1] != k or not np.isfinite(P).all():
        raise ValueError(f"probs must be finite with shape (N, {k}). Received: shape {P.shape}")
    y = _m._class_labels(y_true, k)
    _same_length(y_true=y, probs=P)
    correct = (P.argmax(axis=1) == y).astype(float)

    def macro_ovr(W):
        aucs = np.stack([_weighted_auc(P[:, c], y == c, W) for c in range(k)])
        defined = np.isfinite(aucs).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(defined > 0, np.nansum(aucs, axis=0) / defined, np.nan)

    return {"accuracy": lambda W: W @ correct / len(y), "roc_auc_macro_ovr": macro_ovr}


def _task_stats(task, y_true, y_pred, class_names, normal_class):
    if task == "regression":
        y, p = _as_1d(y_true, "y_true"), _as_1d(y_pred, "y_pred")
        _same_length(y_true=y, y_pred=p)
        return _regression_stats(y, p), len(y)
    if task == "classification":
        stats = _classification_stats(y_true, y_pred, class_names)
        return stats, len(np.asarray(y_pred))
    if task == "lens_finding":
        y, s = _m._binary_labels(y_true), _as_1d(y_pred, "score")
        _same_length(y_true=y, score=s)
        pos = y == 1
        return {"auc": lambda W: _weighted_auc(s, pos, W), "tpr0": lambda W: _weighted_tpr(s, pos, W, 1),
                "tpr10": lambda W: _weighted_tpr(s, pos, W, 10)}, len(y)
    s = _as_1d(y_pred, "scores")
    names = np.asarray(_m._names_per_item(y_true, class_names))
    _same_length(scores=s, y_true=names)
    return {"auc_vs_all": lambda W: _weighted_auc(s, names != str(normal_class), W)}, len(s)


def metric_intervals(task: str, y_true, y_pred, class_names: Sequence[str] | None = None,
                     normal_class: str = "no_sub", n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, list]:
    """Bootstrap ``level`` intervals {metric: [low, high]} of the task's headline metrics over the items.

    regression: mae, rmse, r2; classification: accuracy, roc_auc_macro_ovr; lens_finding: auc, tpr0,
    tpr10; anomaly: auc_vs_all. Same definitions as metrics.py (checked by the tests), computed for all
    resamples at once from resample counts: calling metrics.py per resample would take ~20 s per 1000.
    [None, None] where the metric is undefined in over half the resamples.
    """
    if task not in _m.TASK_METRICS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(_m.TASK_METRICS)}")
    stats, n = _task_stats(task, y_true, y_pred, class_names, normal_class)
    level, values = _level(level), {name: [] for name in stats}
    for idx in _index_chunks(n, int(n_boot), seed):
        b = len(idx)
        W = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)
        for name, fn in stats.items():
            values[name].append(fn(W))
    return {name: list(_percentile(np.concatenate(v), level)) for name, v in values.items()}
