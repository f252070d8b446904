"""Classification calibration (pure numpy / scipy): expected calibration error, the reliability table
behind the reliability diagram, and temperature scaling fitted on held-out labels.

Probabilities are (N,) for the positive class (binary) or (N, K) (multi-class). Results meant for
``metrics.json`` are plain Python floats / lists / dicts, with ``None`` where a number is undefined. Bad
input (mismatched lengths, values outside [0, 1]) raises ``ValueError`` naming it, as metrics.py does.
Used by training/calibrate.py (fit on the validation split), report.py (metrics.json), ``ensemble``
and uncertainty_plots.py; tests: tests/test_uncertainty.py.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logit, softmax

from deeplense_tf.evaluation import metrics as _m
from deeplense_tf.evaluation.metrics import _as_1d, _same_length

__all__ = ["expected_calibration_error", "reliability_table", "fit_temperature", "apply_temperature"]

_EPS = 1e-7  # probability clip for logs and logits


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
