"""Evaluation metrics for the four deeplense_tf tasks (pure numpy / scikit-learn).

Every public function returns a JSON-serialisable dict: plain Python ``float``/``int``/
``str``/``list``/``dict`` values, and ``None`` (JSON ``null``) where a number is undefined
(e.g. an AUC on a split where a class is absent). Such cases never raise; they are
explained in the dict's ``"warnings"`` list instead. Bad input (mismatched lengths,
NaN/inf values, labels out of range) raises ``ValueError`` with a message naming it.

Regression metrics are in the physical units of the target as given (for the axion task,
log10 of the mass in eV, so MAE/RMSE are in dex). Pass inverse-transformed predictions,
never the standardised training targets.

Scores for lens finding and anomaly detection are "higher = more lens-like / more
anomalous".
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix as _sk_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = [
    "regression_metrics",
    "classification_metrics",
    "lens_finding_metrics",
    "lens_finding_metrics_by_kind",
    "anomaly_metrics",
    "metrics_for_task",
    "tpr_before_false_positives",
    "TASK_METRICS",
]


# --------------------------------------------------------------------------- helpers
def _f(x: Any) -> float | None:
    """Plain Python float, or None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _as_1d(x: Any, name: str, *, dtype=float) -> np.ndarray:
    """Flatten (N,), (N,1) or (1,N) input to (N,); reject other shapes and non-finite values."""
    a = np.asarray(x)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (N,) or (N, 1); got shape {a.shape}")
    try:
        a = a.astype(dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric: {e}") from None
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(
                f"{name} has {int(bad.sum())} non-finite value(s) (NaN/inf) out of {a.size}, "
                f"first at index {int(np.flatnonzero(bad)[0])}"
            )
    return a


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"length mismatch: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError(f"empty input: {', '.join(lengths)} have no items")
    return n


def _binary_labels(y_true: Any, name: str = "y_true") -> np.ndarray:
    y = _as_1d(y_true, name, dtype=float)
    if not np.isin(y, (0.0, 1.0)).all():
        bad = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]
        raise ValueError(f"{name} must contain only 0 and 1; found e.g. {bad.tolist()}")
    return y.astype(np.int64)


def _binary_auc(y01: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC via scikit-learn, None if only one class is present."""
    if y01.min() == y01.max():
        return None
    return _f(roc_auc_score(y01, score))


# --------------------------------------------------------------------------- regression
def regression_metrics(y_true, y_pred) -> dict:
    """Regression metrics in the physical units of the target (e.g. log10 m_a in dex).

    Returns ``mae``, ``rmse``, ``mse`` (units squared), ``r2`` (1 - SS_res/SS_tot; None
    if the targets have zero variance), ``bias`` (mean of pred - true),
    ``median_abs_error``, ``max_abs_error``, ``n`` and the baseline of a predictor that
    always outputs the mean of ``y_true`` on the same data: ``baseline_mae`` (mean
    |y - mean(y)|) and ``baseline_rmse`` (population std of y). For log10 m drawn
    uniformly over two decades the baseline is MAE 0.5, RMSE 0.577 dex.
    """
    y = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, "y_pred")
    n = _same_length(y_true=y, y_pred=p)
    err = p - y
    abs_err = np.abs(err)
    dev = y - y.mean()
    ss_tot = float(np.sum(dev**2))
    ss_res = float(np.sum(err**2))
    warnings: list[str] = []
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:
        r2 = None
        warnings.append("y_true is constant: R^2 is undefined (None)")
    return {
        "n": int(n),
        "mae": _f(abs_err.mean()),
        "rmse": _f(math.sqrt(ss_res / n)),
        "mse": _f(ss_res / n),
        "r2": _f(r2),
        "bias": _f(err.mean()),
        "median_abs_error": _f(np.median(abs_err)),
        "max_abs_error": _f(abs_err.max()),
        "baseline_mae": _f(np.abs(dev).mean()),
        "baseline_rmse": _f(math.sqrt(ss_tot / n)),
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- classification
def _class_labels(y_true: Any, k: int) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == k and k > 1:  # one-hot / soft labels
        y = y.argmax(axis=1)
    y = _as_1d(y, "y_true", dtype=float)
    if not np.all(y == np.round(y)):
        raise ValueError("y_true must hold integer class indices")
    y = y.astype(np.int64)
    out = (y < 0) | (y >= k)
    if out.any():
        raise ValueError(
            f"y_true has class indices outside [0, {k - 1}] (e.g. {np.unique(y[out])[:5].tolist()}) "
            f"for {k} class names"
        )
    return y


def classification_metrics(y_true, probs, class_names: Sequence[str]) -> dict:
    """Multi-class metrics from integer labels ``y_true`` (N,) and class probabilities (N, K).

    - ``accuracy`` of the arg-max prediction; ``log_loss`` (mean -ln p_true, clipped at 1e-12).
    - ``per_class_auc`` {name: AUC of class k vs the rest, scored by probs[:, k]}.
    - ``roc_auc_macro_ovr``: unweighted mean of the per-class one-vs-rest AUCs.
    - ``roc_auc_macro_ovo``: Hand & Till one-vs-one macro AUC, the mean over class pairs
      (a, b) of (AUC(a vs b scored by p_a) + AUC(b vs a scored by p_b)) / 2; the pairs are
      also given in ``pairwise_auc_ovo``. Equals scikit-learn's ``multi_class="ovo"``
      when every class is present.
    - ``confusion_matrix``: list of lists, rows = true class, columns = predicted class,
      in ``class_names`` order; ``confusion_matrix_normalized`` divides each row by its
      total (rows of absent classes are zeros).
    - ``per_class`` {name: {precision, recall, f1, support}}, ``macro_f1``.

    A class absent from ``y_true`` (small test splits) has AUC None (null in JSON); the
    macro averages are taken over the classes (pairs) that are present, and ``warnings``
    says which were left out. With fewer than two classes present the AUCs are None.
    """
    names = [str(c) for c in class_names]
    P = np.asarray(probs, dtype=float)
    k = len(names)
    if P.ndim != 2 or P.shape[1] != k:
        raise ValueError(f"probs must have shape (N, {k}) for {k} class names {names}; got {P.shape}")
    if not np.isfinite(P).all():
        raise ValueError(f"probs has {int((~np.isfinite(P)).sum())} non-finite value(s) (NaN/inf)")
    y = _class_labels(y_true, k)
    n = _same_length(y_true=y, probs=P)
    pred = P.argmax(axis=1)
    counts = np.bincount(y, minlength=k)
    present = counts > 0
    warnings: list[str] = []
    absent = [names[i] for i in range(k) if not present[i]]
    if absent:
        warnings.append(
            f"class(es) absent from y_true: {absent}; their AUC is None and the macro "
            f"AUCs average over the {int(present.sum())} present class(es)"
        )

    per_class_auc: dict[str, float | None] = {}
    for i, name in enumerate(names):
        per_class_auc[name] = _binary_auc((y == i).astype(np.int64), P[:, i]) if present[i] else None
    ovr_vals = [v for v in per_class_auc.values() if v is not None]
    if len(ovr_vals) == 0:
        warnings.append("fewer than two classes present in y_true: ROC-AUCs are undefined (None)")

    pairwise: dict[str, float | None] = {}
    ovo_vals: list[float] = []
    for a in range(k):
        for b in range(a + 1, k):
            key = f"{names[a]}_vs_{names[b]}"
            if not (present[a] and present[b]):
                pairwise[key] = None
                continue
            m = (y == a) | (y == b)
            ya = (y[m] == a).astype(np.int64)
            auc_ab = roc_auc_score(ya, P[m, a])
            auc_ba = roc_auc_score(1 - ya, P[m, b])
            v = 0.5 * (auc_ab + auc_ba)
            pairwise[key] = _f(v)
            ovo_vals.append(float(v))

    cm = _sk_confusion_matrix(y, pred, labels=np.arange(k))
    row = cm.sum(axis=1, keepdims=True)
    cm_norm = np.divide(cm, row, out=np.zeros(cm.shape, dtype=float), where=row > 0)
    prec, rec, f1, sup = precision_recall_fscore_support(
        y, pred, labels=np.arange(k), zero_division=0
    )
    per_class = {
        name: {
            "precision": _f(prec[i]),
            "recall": _f(rec[i]),
            "f1": _f(f1[i]),
            "support": int(sup[i]),
        }
        for i, name in enumerate(names)
    }
    p_true = np.clip(P[np.arange(n), y], 1e-12, 1.0)
    return {
        "n": int(n),
        "class_names": names,
        "class_counts": {name: int(counts[i]) for i, name in enumerate(names)},
        "accuracy": _f(np.mean(pred == y)),
        "log_loss": _f(-np.mean(np.log(p_true))),
        "roc_auc_macro_ovr": _f(np.mean(ovr_vals)) if ovr_vals else None,
        "roc_auc_macro_ovo": _f(np.mean(ovo_vals)) if ovo_vals else None,
        "per_class_auc": per_class_auc,
        "pairwise_auc_ovo": pairwise,
        "confusion_matrix": cm.astype(int).tolist(),
        "confusion_matrix_normalized": [[float(v) for v in r] for r in cm_norm],
        "per_class": per_class,
        "macro_f1": _f(np.mean(f1[present])) if present.any() else None,
        "warnings": warnings,
    }


# --------------------------------------------------------------------------- lens finding
def tpr_before_false_positives(y_true, score, k: int) -> float | None:
    """True-positive rate reached before the k-th false positive (k=1: TPR0, k=10: TPR10).

    Definition: let t be the k-th highest score among the non-lenses (counting repeats).
    TPR = (number of lenses with score strictly greater than t) / (number of lenses).
    This is the highest TPR of any threshold that admits at most k-1 non-lenses; a lens
    tied with the k-th non-lens is *not* counted as found before it. With fewer than k
    non-lenses no threshold reaches k false positives and the result is 1.0. Returns
    None when there are no lenses.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    y = _binary_labels(y_true)
    s = _as_1d(score, "score")
    _same_length(y_true=y, score=s)
    pos = s[y == 1]
    neg = s[y == 0]
    if pos.size == 0:
        return None
    if neg.size < k:
        return 1.0
    t = np.partition(neg, neg.size - k)[neg.size - k]  # k-th largest
    return float(np.mean(pos > t))


def lens_finding_metrics(y_true, score) -> dict:
    """Binary lens-finding metrics from labels ``y_true`` (1 = lens) and scores (higher = lens).

    - ``auc`` (ROC-AUC) and ``average_precision`` (scikit-learn); None if a class is absent.
    - ``tpr0``: TPR before the first false positive = fraction of lenses scored strictly
      above the highest-scored non-lens. ``tpr10``: fraction of lenses scored strictly
      above the 10th highest-scored non-lens (at most 9 false positives). Ties: a lens
      tied with that non-lens does not count as found before it
      (see :func:`tpr_before_false_positives`). Both as in the Bologna lens-finding challenge.
    - ``accuracy`` with the threshold score >= 0.5 (meaningful for sigmoid outputs),
      ``precision`` / ``recall`` at that threshold, ``n``, ``n_pos``, ``n_neg``,
      ``prevalence`` (the average precision of a random ranking).
    """
    y = _binary_labels(y_true)
    s = _as_1d(score, "score")
    n = _same_length(y_true=y, score=s)
    n_pos = int(y.sum())
    n_neg = int(n - n_pos)
    warnings: list[str] = []
    if n_pos == 0 or n_neg == 0:
        warnings.append(
            f"only one class present (n_pos={n_pos}, n_neg={n_neg}): ROC-AUC is undefined (None)"
        )
    if n_pos == 0:
        warnings.append("no lenses: average precision and TPRs are undefined (None)")
    for kk, key in ((1, "tpr0"), (10, "tpr10")):
        if n_pos and n_neg < kk:
            warnings.append(f"{key}: fewer than {kk} non-lenses, so every lens counts as found (1.0)")
    pred = (s >= 0.5).astype(np.int64)
    tp = int(np.sum((pred == 1) & (y == 1)))
    n_pred_pos = int(pred.sum())
    return {
        "n": int(n),
        "n_pos": n_pos,
        "n_neg": n_neg,
        "prevalence": _f(n_pos / n),
        "auc": _binary_auc(y, s),  # ROC-AUC; named like the anomaly "auc_vs_*" keys
        "average_precision": _f(average_precision_score(y, s)) if n_pos else None,
        "tpr0": tpr_before_false_positives(y, s, 1),
        "tpr10": tpr_before_false_positives(y, s, 10),
        "accuracy": _f(np.mean(pred == y)),
        "precision_at_0.5": _f(tp / n_pred_pos) if n_pred_pos else None,
        "recall_at_0.5": _f(tp / n_pos) if n_pos else None,
        "warnings": warnings,
    }


# metadata columns that sort the stamps into kinds, and which side of the lens / non-lens split they sort
LENS_KIND_COLUMNS = {"confuser": "negative", "source_kind": "positive"}
KIND_METRICS = ("n_pos", "n_neg", "auc", "tpr0", "tpr10", "average_precision")


def lens_finding_metrics_by_kind(y_true, score, kinds, side: str = "negative") -> dict:
    """:func:`lens_finding_metrics` per kind of stamp: ``{kind: {n_pos, n_neg, auc, tpr0, tpr10,
    average_precision}}``.

    ``side="negative"`` (e.g. the ``confuser`` column): for each kind among the non-lenses, every lens
    against the non-lenses of that kind, so "spiral" says how well lenses are told from spirals.
    ``side="positive"`` (``source_kind``): for each kind among the lenses, the lenses of that kind
    against every non-lens. Kinds are compared as strings (a missing value is ``"nan"``).
    """
    if side not in ("negative", "positive"):
        raise ValueError(f"side must be 'negative' or 'positive'; received: side={side!r}")
    y = _binary_labels(y_true)
    s = _as_1d(score, "score")
    k = np.asarray([str(v) for v in np.asarray(kinds, dtype=object).reshape(-1)])
    _same_length(y_true=y, score=s, kinds=k)
    sorted_side = y == (0 if side == "negative" else 1)
    out = {}
    for kind in sorted(set(k[sorted_side].tolist())):
        rows = ~sorted_side | (k == kind)
        found = lens_finding_metrics(y[rows], s[rows])
        out[kind] = {key: found[key] for key in KIND_METRICS}
    return out


# --------------------------------------------------------------------------- anomaly
def anomaly_metrics(scores, class_names_per_item: Sequence[str], normal_class: str) -> dict:
    """Anomaly-detection metrics: the normal class is the negative, higher score = anomalous.

    - ``auc_vs_<class>`` for every other class present: ROC-AUC of normal (0) vs that class
      (1), items of the remaining classes left out; also collected in ``per_class_auc``.
    - ``auc_vs_all``: normal vs every other item pooled.
    - ``mean_score`` / ``median_score`` / ``n_per_class`` per class.
    AUCs are None (with a warning) if the normal class, or every other class, is absent.
    """
    s = _as_1d(scores, "scores")
    labels = np.asarray([str(c) for c in np.asarray(class_names_per_item).reshape(-1)])
    n = _same_length(scores=s, class_names_per_item=labels)
    normal = str(normal_class)
    classes = sorted(set(labels.tolist()), key=lambda c: (c != normal, c))
    is_normal = labels == normal
    warnings: list[str] = []
    if not is_normal.any():
        warnings.append(
            f"normal class {normal!r} absent (classes present: {classes}): AUCs are undefined (None)"
        )
    others = [c for c in classes if c != normal]
    if not others:
        warnings.append("no anomalous (non-normal) items: AUCs are undefined (None)")
    per_class_auc: dict[str, float | None] = {}
    for c in others:
        m = is_normal | (labels == c)
        per_class_auc[c] = _binary_auc((labels[m] == c).astype(np.int64), s[m]) if is_normal.any() else None
    out: dict[str, Any] = {
        "n": int(n),
        "normal_class": normal,
        "auc_vs_all": _binary_auc((~is_normal).astype(np.int64), s),
    }
    for c, v in per_class_auc.items():
        out[f"auc_vs_{c}"] = v
    out.update(
        {
            "per_class_auc": per_class_auc,
            "mean_score": {c: _f(s[labels == c].mean()) for c in classes},
            "median_score": {c: _f(np.median(s[labels == c])) for c in classes},
            "n_per_class": {c: int(np.sum(labels == c)) for c in classes},
            "warnings": warnings,
        }
    )
    return out


# --------------------------------------------------------------------------- dispatch
def _names_per_item(y_true, class_names):
    """Anomaly labels may come as class indices plus class_names, or as names already."""
    y = np.asarray(y_true).reshape(-1)
    if class_names is not None and y.dtype.kind in "iuf":
        idx = y.astype(np.int64)
        return [str(class_names[i]) for i in idx]
    return [str(v) for v in y]


def _regression(y_true, y_pred, class_names=None, **_):
    return regression_metrics(y_true, y_pred)


def _classification(y_true, y_pred, class_names=None, **_):
    P = np.asarray(y_pred, dtype=float)
    if class_names is None:
        class_names = [f"class_{i}" for i in range(P.shape[-1])]
    return classification_metrics(y_true, P, class_names)


def _lens_finding(y_true, y_pred, class_names=None, **_):
    return lens_finding_metrics(y_true, y_pred)


def _anomaly(y_true, y_pred, class_names=None, normal_class="no_sub", **_):
    return anomaly_metrics(y_pred, _names_per_item(y_true, class_names), normal_class)


TASK_METRICS: dict[str, Callable[..., dict]] = {
    "regression": _regression,
    "classification": _classification,
    "lens_finding": _lens_finding,
    "anomaly": _anomaly,
}


def metrics_for_task(task: str, y_true, y_pred, class_names=None, **kwargs) -> dict:
    """Metrics for ``task`` (a key of ``TASK_METRICS``); the result also carries ``"task"``.

    ``y_pred`` is: regression, predictions in physical units; classification, probabilities
    (N, K); lens_finding, scores (N,); anomaly, anomaly scores (N,) with ``y_true`` the class
    of each item (names, or indices into ``class_names``) and ``normal_class=`` (default
    ``"no_sub"``).
    """
    try:
        fn = TASK_METRICS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_METRICS)}") from None
    out = fn(y_true, y_pred, class_names=class_names, **kwargs)
    return {"task": task, **out}
