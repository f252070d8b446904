"""Bootstrap confidence intervals (pure numpy) of any statistic, and of every task's headline metrics
computed for all resamples at once.

Intervals meant for ``metrics.json`` are plain Python floats, with ``None`` where the metric is
undefined in over half the resamples. Bad input (mismatched lengths, NaN/inf) raises ``ValueError``
naming it, as metrics.py does.
Used by report.py (``metrics["ci95"]`` of every evaluation); tests: tests/test_uncertainty.py.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from deeplense_tf.evaluation import metrics as _m
from deeplense_tf.evaluation.intervals import _level
from deeplense_tf.evaluation.metrics import _as_1d, _f, _same_length

__all__ = ["bootstrap_interval", "metric_intervals"]

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
