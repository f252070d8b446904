"""Evaluation plots for the deeplense_tf tasks (numpy / scikit-learn / matplotlib, Agg).

Each public function writes its figures under ``out_dir`` (created if needed) as PNG (300 dpi),
or PDF / SVG with ``fmt=`` (``--plot-format``), and returns the list of paths written. They are
drawn in the house style of plot_style.py (a journal page's widths and fonts, units on every
axis), with the largest errors marked and whole-number epochs. Scores are "higher = more
lens-like / more anomalous". The plots of uncertainty (error bars, coverage, reliability) are in
uncertainty_plots.py.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, NullFormatter
from sklearn.metrics import precision_recall_curve, roc_curve

from deeplense_tf.evaluation import metrics as _m
from deeplense_tf.evaluation.plot_style import (COLORS, DEFAULT_TARGET_LABEL, DOUBLE, SINGLE, ensure_dir, few_ticks,
                                                format_number, journal, legend_below, residual_unit, save,
                                                scatter_style, signed, target_label)

__all__ = [
    "regression_plots",
    "classification_plots",
    "lens_finding_plots",
    "anomaly_plots",
    "anomaly_reconstructions",
    "candidate_mosaic",
    "training_curves",
    "metric_against_time",
    "plots_for_task",
    "TASK_PLOTS",
]


# --------------------------------------------------------------------------- helpers
def _largest(residuals: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` largest absolute residuals: drawn on top, so no cloud hides them."""
    return np.argsort(-np.abs(residuals), kind="stable")[: min(k, len(residuals))]


def _mark_largest(ax, x, y, worst: np.ndarray) -> None:
    ax.scatter(x[worst], y[worst], s=22, facecolors="none", edgecolors=COLORS[3], linewidths=0.8, zorder=4,
               clip_on=False, label=f"{len(worst)} largest |residual|")


def _binned_quantiles(x: np.ndarray, y: np.ndarray, n_bins: int = 15):
    """Bin centres and the 16/50/84 % quantiles of y in equal-count bins of x."""
    n_bins = int(max(1, min(n_bins, len(x) // 10)))
    if n_bins < 2:
        return None
    order = np.argsort(x)
    chunks = np.array_split(order, n_bins)
    c = np.array([x[i].mean() for i in chunks])
    q = np.array([np.percentile(y[i], [16, 50, 84]) for i in chunks])
    return c, q[:, 0], q[:, 1], q[:, 2]


def _roc_ax(ax, title: str) -> None:
    ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1, label="chance (AUC 0.5)")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)


# --------------------------------------------------------------------------- regression
@journal
def regression_plots(y_true, y_pred, out_dir, label: str = DEFAULT_TARGET_LABEL, fmt: str = "png") -> list[Path]:
    """Predicted vs true (with the identity line), residuals vs true, residual histogram.

    ``label`` names the target: a column name (``target_label`` adds its units) or a label with
    units; residuals are pred - true in the same units. The five largest errors are circled.
    """
    label = target_label(str(label) if label else None)
    y = _m._as_1d(y_true, "y_true")
    p = _m._as_1d(y_pred, "y_pred")
    _m._same_length(y_true=y, y_pred=p)
    out = ensure_dir(out_dir)
    met = _m.regression_metrics(y, p)
    r = p - y
    n = len(y)
    worst = _largest(r)
    ru = residual_unit(label)
    rlabel = f"residual, predicted − true [{ru}]" if ru else "residual, predicted − true"
    summary = (f"MAE {format_number(met['mae'])}, RMSE {format_number(met['rmse'])}, R² {format_number(met['r2'])}, "
               f"bias {signed(met['bias'])}\nN = {n}; the mean as prediction: MAE {format_number(met['baseline_mae'])}")
    paths = []

    # predicted vs true
    fig, ax = plt.subplots(figsize=(SINGLE, SINGLE + 0.9), layout="constrained")
    lo = float(min(y.min(), p.min()))
    hi = float(max(y.max(), p.max()))
    pad = 0.04 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.scatter(y, p, color=COLORS[0], label="test items", **scatter_style(n))
    ax.plot([lo, hi], [lo, hi], color="k", lw=1.0, label="identity")
    b = _binned_quantiles(y, p)
    if b is not None:
        c, q16, q50, q84 = b
        ax.plot(c, q50, color=COLORS[1], lw=1.4, label="binned median")
        ax.fill_between(c, q16, q84, color=COLORS[1], alpha=0.2, lw=0, label="binned 16-84 %")
    _mark_largest(ax, y, p, worst)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.xaxis.set_major_locator(few_ticks())  # tick labels that do not run into each other
    ax.yaxis.set_major_locator(few_ticks())
    ax.set_title(summary)
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    paths.append(save(fig, out, "regression_pred_vs_true.png", fmt))

    # residuals vs true
    fig, ax = plt.subplots(figsize=(SINGLE, 3.0), layout="constrained")
    ax.scatter(y, r, color=COLORS[0], label="test items", **scatter_style(n))
    ax.axhline(0, color="k", lw=1.0)
    if b is not None:
        c, *_ = b
        _, q16, q50, q84 = _binned_quantiles(y, r)
        ax.plot(c, q50, color=COLORS[1], lw=1.4, label="binned median")
        ax.fill_between(c, q16, q84, color=COLORS[1], alpha=0.2, lw=0, label="binned 16-84 %")
    _mark_largest(ax, y, r, worst)
    span = float(np.abs(r).max()) * 1.08 or 1.0
    ax.set_ylim(-span, span)  # symmetric: a bias shows as an offset from the middle
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(rlabel)
    ax.xaxis.set_major_locator(few_ticks())
    ax.set_title(f"bias {signed(met['bias'])}, RMSE {format_number(met['rmse'])}{f' {ru}' if ru else ''}")
    ax.grid(alpha=0.3)
    legend_below(fig, ax)
    paths.append(save(fig, out, "regression_residuals_vs_true.png", fmt))

    # residual histogram
    fig, ax = plt.subplots(figsize=(SINGLE, 2.9), layout="constrained")
    bins = int(np.clip(np.sqrt(n), 10, 60))
    ax.hist(r, bins=bins, color=COLORS[0], alpha=0.75, edgecolor="white", linewidth=0.3)
    ax.axvline(0, color="k", lw=1.0, label="zero")
    ax.axvline(met["bias"], color=COLORS[1], lw=1.2, ls="--", label=f"mean {signed(met['bias'])}")
    ax.plot(r[worst], np.zeros(len(worst)), "|", color=COLORS[3], ms=12, mew=1.2, clip_on=False,
            label=f"{len(worst)} largest |residual|")  # single items: invisible as bars of height 1
    ax.set_xlabel(rlabel)
    ax.set_ylabel("test items per bin")
    ax.set_title(f"std {np.std(r):.3f}, median |residual| {format_number(met['median_abs_error'])}")
    legend_below(fig, ax, ncol=3)
    paths.append(save(fig, out, "regression_residual_hist.png", fmt))
    return paths


# --------------------------------------------------------------------------- classification
@journal
def classification_plots(y_true, probs, class_names: Sequence[str], out_dir, fmt: str = "png") -> list[Path]:
    """One-vs-rest ROC curve per class (AUC in the legend) and the confusion matrix
    (counts and row-normalised side by side; rows = true class)."""
    names = [str(c) for c in class_names]
    P = np.asarray(probs, dtype=float)
    met = _m.classification_metrics(y_true, P, names)
    y = _m._class_labels(y_true, len(names))
    out = ensure_dir(out_dir)
    paths = []

    fig, ax = plt.subplots(figsize=(SINGLE, SINGLE), layout="constrained")
    for i, name in enumerate(names):
        a = met["per_class_auc"][name]
        yi = (y == i).astype(int)
        if a is None:
            ax.plot([], [], color=COLORS[i % 10], label=f"{name}: absent from data")
            continue
        fpr, tpr, _ = roc_curve(yi, P[:, i])
        ax.plot(fpr, tpr, color=COLORS[i % 10], lw=1.4, label=f"{name} vs rest: AUC {a:.3f}")
    _roc_ax(ax, "ROC, one-vs-rest")
    ax.legend(loc="best", title=f"macro AUC: OvR {format_number(met['roc_auc_macro_ovr'])}, "
                                f"OvO {format_number(met['roc_auc_macro_ovo'])}")
    paths.append(save(fig, out, "classification_roc.png", fmt))

    cm = np.asarray(met["confusion_matrix"], dtype=float)
    cmn = np.asarray(met["confusion_matrix_normalized"], dtype=float)
    k = len(names)
    fig, axes = plt.subplots(1, 2, figsize=(DOUBLE, min(3.1 + 0.12 * max(0, k - 3), 6.0)), layout="constrained")
    for ax, mat, title, fmt_cell, vmax in (
        (axes[0], cm, "counts", "{:.0f}", max(cm.max(), 1)),
        (axes[1], cmn, "row-normalised (recall on the diagonal)", "{:.2f}", 1.0),
    ):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(k), names, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    v = mat[i, j]
                    ax.text(j, i, fmt_cell.format(v), ha="center", va="center", fontsize=8 if k <= 8 else 6,
                            color="white" if v > 0.6 * vmax else "black")
    fig.suptitle(f"Confusion matrix (N = {met['n']}, accuracy {met['accuracy']:.3f})")
    paths.append(save(fig, out, "classification_confusion.png", fmt))
    return paths


# --------------------------------------------------------------------------- lens finding
@journal
def lens_finding_plots(y_true, score, out_dir, fmt: str = "png") -> list[Path]:
    """ROC (linear and log false-positive rate, TPR0/TPR10 marked), precision-recall curve
    with average precision, and score histograms of lenses vs non-lenses."""
    y = _m._binary_labels(y_true)
    s = _m._as_1d(score, "score")
    met = _m.lens_finding_metrics(y, s)
    out = ensure_dir(out_dir)
    paths = []
    both = met["n_pos"] > 0 and met["n_neg"] > 0

    fig, axes = plt.subplots(1, 2, figsize=(DOUBLE, 3.9), layout="constrained")
    if both:
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for ax in axes:
            ax.plot(fpr, tpr, color=COLORS[0], lw=1.4, label=f"model: AUC {met['auc']:.4f}")
        for key, k, col in (("tpr0", 1, COLORS[3]), ("tpr10", 10, COLORS[2])):
            v = met[key]
            if v is not None and met["n_neg"] >= k:
                f = (k - 1) / met["n_neg"]
                lab = f"{key.upper()} = {v:.3f} ({k - 1} false positives)"
                axes[0].plot([f], [v], "o", color=col, ms=5, zorder=5, label=lab)
                # FPR 0 has no place on a log axis: TPR0 sits on the left edge
                axes[1].plot([max(f, 0.5 / met["n_neg"])], [v], "o", color=col, ms=5, zorder=5,
                             clip_on=False, label=lab)
    _roc_ax(axes[0], "ROC")
    ax = axes[1]
    lo = 0.5 / max(met["n_neg"], 1)
    xs = np.geomspace(lo, 1.0, 200)
    ax.plot(xs, xs, ls="--", color="0.6", lw=1, label="chance")
    ax.set_xscale("log")
    ax.set_xlim(lo, 1.0)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false-positive rate (log scale)")
    ax.set_ylabel("true-positive rate")
    ax.set_title("ROC, low false-positive rate")
    ax.grid(alpha=0.3, which="both")
    legend_below(fig, axes[0], ncol=4)  # one legend for both panels, on neither curve
    fig.suptitle(f"Lens finding (N = {met['n']}: {met['n_pos']} lenses, {met['n_neg']} non-lenses)")
    paths.append(save(fig, out, "lens_roc.png", fmt))

    fig, ax = plt.subplots(figsize=(SINGLE, 3.2), layout="constrained")
    if met["n_pos"]:
        prec, rec, _ = precision_recall_curve(y, s)
        ax.plot(rec, prec, color=COLORS[0], lw=1.4, drawstyle="steps-post",
                label=f"model: AP {met['average_precision']:.4f}")
        ax.axhline(met["prevalence"], ls="--", color="0.6", lw=1,
                   label=f"random ranking: AP {met['prevalence']:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    ax.set_xlabel("recall (fraction of lenses found)")
    ax.set_ylabel("precision (lenses among candidates)")
    ax.set_title("Precision-recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    paths.append(save(fig, out, "lens_precision_recall.png", fmt))

    fig, ax = plt.subplots(figsize=(SINGLE, 3.0), layout="constrained")
    prob_like = s.min() >= 0.0 and s.max() <= 1.0
    lo, hi = (0.0, 1.0) if prob_like else (float(s.min()), float(s.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, int(np.clip(1.5 * np.sqrt(len(s)), 10, 40)) + 1)
    for lab, name, col in ((0, "non-lenses", COLORS[0]), (1, "lenses", COLORS[3])):
        v = s[y == lab]
        if v.size:
            ax.hist(v, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color=col)
            ax.hist(v, bins=bins, density=True, histtype="step", lw=1.2, color=col, label=f"{name} (N = {v.size})")
    if prob_like:
        ax.axvline(0.5, color="k", ls=":", lw=1, label="threshold 0.5")
    heights = np.concatenate([np.histogram(s[y == lab], bins, density=True)[0] for lab in (0, 1) if (y == lab).any()])
    heights = heights[heights > 0]
    if heights.size and heights.max() / heights.min() > 30:  # log scale: the tails that matter at low FPR
        ax.set_yscale("log")
    ax.set_xlabel("lens score (probability)" if prob_like else "lens score")
    ax.set_ylabel("density (each class normalised)")
    ax.set_title("Score distribution")
    legend_below(fig, ax)
    ax.grid(alpha=0.3)
    paths.append(save(fig, out, "lens_score_hist.png", fmt))
    return paths


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(H, W, C) -> what imshow draws: the first three bands as RGB, else the first band in grey,
    each stretched between its 1st and 99.5th percentile."""
    image = np.asarray(image, np.float32)
    image = image[..., None] if image.ndim == 2 else image
    planes = image[..., :3] if image.shape[-1] >= 3 else image[..., :1]
    lo = np.percentile(planes, 1, axis=(0, 1))
    hi = np.percentile(planes, 99.5, axis=(0, 1))
    scaled = np.clip((planes - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    return (scaled, None) if scaled.shape[-1] == 3 else (scaled[..., 0], "gray")


@journal
def candidate_mosaic(images, scores, names: Sequence[str], path) -> Path:
    """The ranked lens candidates in a grid, each titled with rank, lens probability and name;
    multi-band stamps show their first three bands as RGB. The format is ``path``'s suffix."""
    images = np.asarray(images)
    k = len(images)
    if k == 0 or len(scores) != k or len(names) != k:
        raise ValueError(f"candidate_mosaic needs as many scores and names as images (>= 1). Received: "
                         f"{k} images, {len(scores)} scores, {len(names)} names")
    cols = int(math.ceil(math.sqrt(k)))
    rows = int(math.ceil(k / cols))
    side = min(1.6, DOUBLE / cols)  # two columns wide at most
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, (side + 0.35) * rows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= k:
            continue
        shown, cmap = _display(images[i])
        ax.imshow(shown, cmap=cmap, origin="lower", interpolation="nearest")
        name = str(names[i])
        ax.set_title(f"#{i + 1}  p={float(scores[i]):.3f}\n{name if len(name) <= 20 else '...' + name[-17:]}",
                     fontsize=6)
    fig.suptitle(f"Top {k} lens candidates (most lens-like first)")
    path = Path(path)
    return save(fig, ensure_dir(path.parent), path.name)


# --------------------------------------------------------------------------- anomaly
@journal
def anomaly_plots(scores, class_names_per_item: Sequence[str], normal_class: str, out_dir,
                  fmt: str = "png") -> list[Path]:
    """Anomaly-score histograms per class and ROC of each other class vs the normal class."""
    s = _m._as_1d(scores, "scores")
    labels = np.asarray([str(c) for c in np.asarray(class_names_per_item).reshape(-1)])
    met = _m.anomaly_metrics(s, labels, normal_class)
    normal = met["normal_class"]
    classes = list(met["n_per_class"])
    out = ensure_dir(out_dir)
    paths = []

    fig, ax = plt.subplots(figsize=(SINGLE, 3.0 + 0.15 * len(classes)), layout="constrained")
    lo, hi = float(s.min()), float(s.max())
    positive = lo > 0 and hi / lo > 30
    bins = np.geomspace(lo, hi, 41) if positive else np.linspace(lo, hi if hi > lo else lo + 1, 41)
    for i, c in enumerate(classes):
        v = s[labels == c]
        tag = " (normal)" if c == normal else ""
        # each class normalised to unit total, so classes of different sizes compare
        ax.hist(v, bins=bins, weights=np.full(v.size, 1.0 / v.size), histtype="step", lw=1.4,
                color=COLORS[i % 10], label=f"{c}{tag}: N = {v.size}, mean {v.mean():.3g}")
    if positive:
        ax.set_xscale("log")
    ax.set_ylabel("fraction of the class per bin")
    ax.set_xlabel("anomaly score (higher = more anomalous)")
    ax.set_title(f"Anomaly scores by class (trained on {normal})")
    legend_below(fig, ax, ncol=1)
    ax.grid(alpha=0.3)
    paths.append(save(fig, out, "anomaly_score_hist.png", fmt))

    fig, ax = plt.subplots(figsize=(SINGLE, SINGLE), layout="constrained")
    is_normal = labels == normal
    if is_normal.any():
        for i, c in enumerate(classes):
            if c == normal:
                continue
            m = is_normal | (labels == c)
            fpr, tpr, _ = roc_curve((labels[m] == c).astype(int), s[m])
            ax.plot(fpr, tpr, lw=1.4, color=COLORS[i % 10],
                    label=f"{c} vs {normal}: AUC {format_number(met['per_class_auc'][c], 4)}")
        if len(classes) > 2:
            fpr, tpr, _ = roc_curve((~is_normal).astype(int), s)
            ax.plot(fpr, tpr, lw=1.2, color="k", ls="-.",
                    label=f"all vs {normal}: AUC {format_number(met['auc_vs_all'], 4)}")
    _roc_ax(ax, f"ROC: anomalous classes vs {normal}")
    ax.set_xlabel(f"false-positive rate ({normal} flagged)")
    ax.set_ylabel("true-positive rate (anomalies flagged)")
    ax.legend(loc="best")
    paths.append(save(fig, out, "anomaly_roc.png", fmt))
    return paths


def reconstruction_examples(scores, class_names_per_item: Sequence[str], normal_class: str,
                            per_class: int = 3) -> np.ndarray:
    """Indices of ``per_class`` items of each class spread over its score range (lowest, median,
    highest for 3), normal class first: the rows ``anomaly_reconstructions`` shows."""
    s = _m._as_1d(scores, "scores")
    labels = np.asarray([str(c) for c in np.asarray(class_names_per_item).reshape(-1)])
    _m._same_length(scores=s, class_names_per_item=labels)
    rows = []
    for c in sorted(set(labels.tolist()), key=lambda c: (c != normal_class, c)):
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(s[idx], kind="stable")]
        rows += idx[np.unique(np.round(np.linspace(0, len(idx) - 1, min(per_class, len(idx)))).astype(int))].tolist()
    return np.asarray(rows, np.int64)


@journal
def anomaly_reconstructions(images, reconstructions, scores, class_names_per_item: Sequence[str],
                            normal_class: str, out_dir, fmt: str = "png") -> list[Path]:
    """One row per image (e.g. picked by ``reconstruction_examples``): input, reconstruction and
    their difference, first band, as the autoencoder sees them (standardised)."""
    x, r = np.asarray(images, np.float32), np.asarray(reconstructions, np.float32)
    s = _m._as_1d(scores, "scores")
    labels = np.asarray([str(c) for c in np.asarray(class_names_per_item).reshape(-1)])
    _m._same_length(images=x, reconstructions=r, scores=s, class_names_per_item=labels)
    if x.shape != r.shape or x.ndim != 4:
        raise ValueError(f"images and reconstructions must both be (N, H, W, C). Received: {x.shape}, {r.shape}")
    rows = list(zip(labels, range(len(x))))
    fig, axes = plt.subplots(len(rows), 3, figsize=(DOUBLE * 0.75, 1.75 * len(rows)), squeeze=False,
                             layout="constrained")
    for (c, i), (a_in, a_rec, a_res) in zip(rows, axes):
        vmin, vmax = np.percentile(x[i, ..., 0], [1, 99.5])
        residual = x[i, ..., 0] - r[i, ..., 0]
        span = float(np.abs(residual).max()) or 1.0
        a_in.imshow(x[i, ..., 0], cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
        a_rec.imshow(r[i, ..., 0], cmap="gray", vmin=vmin, vmax=vmax, origin="lower")
        im = a_res.imshow(residual, cmap="RdBu_r", vmin=-span, vmax=span, origin="lower")
        fig.colorbar(im, ax=a_res, fraction=0.046, pad=0.04)
        tag = " (normal)" if c == normal_class else ""
        a_in.set_title(f"{c}{tag}: score {s[i]:.3g}")
        a_rec.set_title("reconstruction")
        a_res.set_title("input − reconstruction")
        for ax in (a_in, a_rec, a_res):
            ax.set_axis_off()
    fig.suptitle("Reconstructions (standardised first band; lowest to highest score per class)")
    return [save(fig, ensure_dir(out_dir), "anomaly_reconstructions.png", fmt)]


# --------------------------------------------------------------------------- training curves
def _read_history(path: Path) -> dict[str, np.ndarray]:
    """Keras CSVLogger file -> {column: float array}, one row per epoch.

    Rows repeated for the same epoch (a run resumed after a kill re-logs it) keep the last.
    """
    if not path.is_file():
        raise FileNotFoundError(f"training history not found: {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"training history {path} has no epochs (empty or header only)")
    cols = [c for c in rows[0] if c is not None]

    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan

    data = {c: np.array([num(r.get(c)) for r in rows]) for c in cols}
    if "epoch" in data:
        ep = data["epoch"]
        last = {}
        for i, e in enumerate(ep):
            last[e] = i
        keep = np.array(sorted(last.values(), key=lambda i: ep[i]))
        data = {c: v[keep] for c, v in data.items()}
        data["epoch"] = data["epoch"] + 1  # Keras logs 0-based epochs
    else:
        data["epoch"] = np.arange(1, len(rows) + 1, dtype=float)
    return data


@journal
def training_curves(history_csv, out_dir, fmt: str = "png") -> list[Path]:
    """Loss and each metric per epoch, train vs validation, from a Keras CSVLogger file.

    One panel per quantity (``loss``, ``mae``, ... paired with ``val_*``), the best
    validation epoch marked, and a learning-rate panel (log scale) if it was logged.
    Epochs are shown 1-based, on whole-number ticks. Writes ``training_curves.png`` (or ``fmt``).
    """
    path = Path(history_csv)
    data = _read_history(path)
    ep = data["epoch"]
    lr_keys = [c for c in data if c in ("lr", "learning_rate")]
    # the epoch's timings (training/callbacks.py: *_seconds, step_ms): a cost, not a training curve
    skip = {"epoch", "step_ms", *lr_keys, *(c for c in data if c.endswith("_seconds"))}
    base = [c for c in data if c not in skip and not c.startswith("val_")]
    base += [c[4:] for c in data if c.startswith("val_") and c[4:] not in data]  # val-only columns
    base = sorted(dict.fromkeys(base), key=lambda c: (c != "loss", c))
    base = [c for c in base if np.isfinite(data.get(c, data.get("val_" + c))).any()]
    panels = base + lr_keys[:1]
    if not panels:
        raise ValueError(f"training history {path} has no loss or metric columns: {list(data)}")
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(DOUBLE if ncol > 1 else SINGLE, 2.3 * nrow + 0.3), squeeze=False,
                             layout="constrained")
    best_ep = None
    if "val_loss" in data and np.isfinite(data["val_loss"]).any():
        best_ep = ep[int(np.nanargmin(data["val_loss"]))]
    for ax, key in zip(axes.flat, panels):
        if key in lr_keys:
            ax.plot(ep, data[key], color=COLORS[2], lw=1.4, marker="." if len(ep) < 60 else None)
            if np.all(data[key][np.isfinite(data[key])] > 0):
                ax.set_yscale("log")
            ax.set_title("learning rate")
            ax.set_ylabel("learning rate")
        else:
            vals = []
            for col, lab, c in ((key, "train", COLORS[0]), ("val_" + key, "validation", COLORS[1])):
                if col in data:
                    ax.plot(ep, data[col], color=c, lw=1.4, marker="." if len(ep) < 60 else None, label=lab)
                    vals.append(data[col][np.isfinite(data[col])])
            v = np.concatenate(vals) if vals else np.array([])
            if key.endswith("loss") and v.size and v.min() > 0 and v.max() / v.min() > 30:
                ax.set_yscale("log")
            ax.set_title(key.replace("_", " "))
            ax.set_ylabel(key)
            ax.legend(loc="best")
        if best_ep is not None:
            ax.axvline(best_ep, color="0.5", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    title = f"Training history: {path.parent.name or path.name} ({len(ep)} epochs)"
    if best_ep is not None:
        title += f"; best val_loss at epoch {int(best_ep)} (dotted)"
    fig.suptitle(title)
    return [save(fig, ensure_dir(out_dir), "training_curves.png", fmt)]


# --------------------------------------------------------------------------- dispatch
def _regression(y_true, y_pred, out_dir, class_names=None, label=None, fmt="png", **_):
    return regression_plots(y_true, y_pred, out_dir, label=label or DEFAULT_TARGET_LABEL, fmt=fmt)


def _classification(y_true, y_pred, out_dir, class_names=None, fmt="png", **_):
    P = np.asarray(y_pred, dtype=float)
    if class_names is None:
        class_names = [f"class_{i}" for i in range(P.shape[-1])]
    return classification_plots(y_true, P, class_names, out_dir, fmt=fmt)


def _lens_finding(y_true, y_pred, out_dir, class_names=None, fmt="png", **_):
    return lens_finding_plots(y_true, y_pred, out_dir, fmt=fmt)


def _anomaly(y_true, y_pred, out_dir, class_names=None, normal_class="no_sub", fmt="png", **_):
    return anomaly_plots(y_pred, _m._names_per_item(y_true, class_names), normal_class, out_dir, fmt=fmt)


TASK_PLOTS: dict[str, Callable[..., list[Path]]] = {
    "regression": _regression,
    "classification": _classification,
    "lens_finding": _lens_finding,
    "anomaly": _anomaly,
}


def plots_for_task(task: str, y_true, y_pred, out_dir, class_names=None, **kwargs: Any) -> list[Path]:
    """Plots for ``task`` (a key of ``TASK_PLOTS``), arguments as in ``metrics.metrics_for_task``
    plus ``out_dir``; ``label=`` (regression), ``normal_class=`` (anomaly) and ``fmt=`` pass through."""
    try:
        fn = TASK_PLOTS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASK_PLOTS)}") from None
    return fn(y_true, y_pred, out_dir, class_names=class_names, **kwargs)


@journal
def metric_against_time(rows, path: Path) -> None:
    """The headline metric of every finished seed against its training time, one colour per run."""
    finished = rows[rows["status"] == "finished"]
    fig, ax = plt.subplots(figsize=(SINGLE, 2.8))
    for name, group in finished.groupby("name", sort=False):
        ax.scatter(group["train_seconds"].astype(float), group["value"].astype(float), label=f"{name} "
                   f"({group['metric'].iloc[0]})", s=16)
    ax.set_xlabel("training time [s]")
    ax.set_ylabel("test metric (better: MAE ↓, AUC ↑)")
    ax.grid(alpha=0.3)
    if len(finished):
        ax.legend(loc="best")
    fig.tight_layout()
    save(fig, Path(path).parent, Path(path).name)


@journal
def learning_curves(curves, path: Path) -> None:
    """Validation metric against training images seen, one panel per task, one line per run and seed."""
    tasks = list(dict.fromkeys(curves["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(SINGLE * len(tasks) * 0.8, 2.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = curves[curves["task"] == task]
        for (name, seed), group in part.groupby(["name", "seed"], sort=False):
            ax.plot(group["images_seen"], group["value"], marker=".", ms=3, label=f"{name} s{seed}")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks collide on a short span
        ax.set_xlabel("training images seen")
        ax.set_ylabel(f"{part['metric'].iloc[0]} ({task})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    save(fig, Path(path).parent, Path(path).name)
