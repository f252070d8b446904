"""Regression uncertainty (pure numpy / scipy): Gaussian NLL and coverage, split-conformal intervals and
the deep-ensemble combination of members' means and sigmas.

Quantities are in the physical units of the target (log10 m_a: dex). Results meant for ``metrics.json``
are plain Python floats / lists / dicts, with ``None`` where a number is undefined. Bad input (mismatched
lengths, NaN/inf, sigma <= 0) raises ``ValueError`` naming it, as metrics.py does.
Used by training/calibrate.py (fit on the validation split), report.py (metrics.json, predictions.csv),
``ensemble`` and uncertainty_plots.py; tests: tests/test_uncertainty.py.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy.stats import norm

from deeplense_tf.evaluation.metrics import _as_1d, _f, _same_length

__all__ = [
    "gaussian_nll", "z_for", "coverage", "gaussian_interval", "calibration_curve",
    "regression_calibration_error", "conformal_quantile", "fit_conformal", "conformal_interval",
    "regression_uncertainty_metrics", "ensemble_gaussian",
]

DEFAULT_LEVELS = np.linspace(0.05, 0.95, 19)


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
    (calibrated where there is a calibration, else raw) and the calibration error, for metrics.json.

    ``nll_calibrated`` is the NLL of the Gaussian whose 68 % interval is the calibrated one (sigma =
    calibrated half-width / 0.994): defined for a point-estimate run too (one sigma for every image),
    so the NLL of ``--uncertainty gaussian`` can be set beside a plain run's."""
    y, mu, s = _regression_inputs(y, mean, sigma)
    out: dict[str, Any] = {"nll": None if s is None else gaussian_nll(y, mu, s),
                           "nll_calibrated": None if calibration is None else calibrated_nll(y, mu, s, calibration)}
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


def calibrated_nll(y, mean, sigma, calibration: dict) -> float | None:
    """NLL under N(mean, sigma_68^2), sigma_68 the calibrated 68 % half-width over z(0.68); None
    without a 68 % level in the calibration."""
    q = _calibrated_quantile(calibration, 0.68)
    if q is None:
        return None
    y, mu, s = _regression_inputs(y, mean, sigma)
    if calibration["normalised"] and s is None:
        raise ValueError("this calibration is normalised by sigma (fitted with sigma_val); pass sigma")
    scale = q / z_for(0.68)
    return gaussian_nll(y, mu, scale * s if calibration["normalised"] else np.full_like(mu, scale))


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
