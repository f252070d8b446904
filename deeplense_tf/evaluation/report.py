"""The report of one evaluation: predictions of a model, then ``metrics.json``, ``predictions.csv``
and the task's plots in one folder.

``train`` writes it for the test split at the end of a run, ``evaluate`` for any run and data
set, ``ensemble`` for the members' mean. ``predict`` with ``tta`` averages the 8 flips / 90-degree
rotations of square images (exact symmetries of a lens).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.evaluation import metrics, plots
from deeplense_tf.evaluation.bootstrap import metric_intervals
from deeplense_tf.evaluation.calibration import apply_temperature, expected_calibration_error
from deeplense_tf.evaluation.intervals import conformal_interval, regression_uncertainty_metrics
from deeplense_tf.evaluation.uncertainty_plots import regression_uncertainty_plots, reliability_diagram
from deeplense_tf.models.autoencoders import reconstruction_model
from deeplense_tf.tasks import regression_columns

DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]
# simulator metadata copied into predictions.csv, where present, so results can be binned by them
# Simulated metadata that travel into predictions.csv, so results can be binned by them.
SIM_COLUMNS = ("theta_e_arcsec", "source_mag", "lensed_snr", "confuser", "source_kind", "seeing_arcsec", "depth_mag",
               "sky_sigma", "quasar_mag", "confuser_mag", "confuser_radius_arcsec", "n_point_images", "field_objects",
               "log10_halo_mass", "f_sub", "log10_vortex_mass")


def dihedral(images: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(images, k, axes=(1, 2))
    return out[:, :, ::-1] if flip else out


def predict(model, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
    """Model outputs in physical units; ``tta`` averages the 8 symmetries of a square image."""
    views = DIHEDRAL if tta and images.shape[1] == images.shape[2] else [(0, False)]
    outputs = [np.asarray(model.predict(np.ascontiguousarray(dihedral(images, k, f)), batch_size=batch_size,
                                        verbose=0)) for k, f in views]
    return np.mean(outputs, axis=0)


def regression_outputs(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mean, sigma)`` of a regression model's outputs: ``(N, 1)`` means, or ``(N, 2)`` ``[mean, sigma]``
    of ``--uncertainty gaussian`` (sigma None for the first)."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 2:
        return outputs[:, 0], outputs[:, 1]
    return outputs.reshape(-1), None


def calibrated_probabilities(task: str, outputs: np.ndarray, calibration: dict | None) -> np.ndarray:
    """Classifier / lens-finder outputs with the run's temperature applied (if it has one)."""
    probs = outputs if task == "classification" else np.asarray(outputs).reshape(-1)
    if calibration and calibration.get("temperature"):
        return apply_temperature(probs, calibration["temperature"])
    return probs


def evaluate_predictions(task: str, y: np.ndarray, outputs: np.ndarray, info: dict, table: pd.DataFrame,
                         out_dir: Path, header: dict, model=None, images: np.ndarray | None = None,
                         calibration: dict | None = None, plot_format: str = "png") -> dict:
    """Write metrics.json, predictions.csv and the task's plots; return the metrics document.

    Every headline metric gets a 95 % bootstrap interval (``metrics["ci95"]``); regression adds the
    quality of its intervals (``metrics["uncertainty"]``), classifiers their calibration error before
    and after the run's temperature (``metrics["calibration"]``; the metrics are of the calibrated
    probabilities, which the export serves). Anomaly runs given their ``model`` and ``images`` also
    draw example reconstructions. Lens finding on a ``table`` with the simulator's ``confuser`` /
    ``source_kind`` columns adds AUC / TPR0 / TPR10 per kind (``metrics["by_confuser"]``, ...).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sigma = None
    if task == "regression":
        y_pred, sigma = regression_outputs(outputs)
    elif task in ("classification", "lens_finding"):
        y_pred = calibrated_probabilities(task, outputs, calibration)
    else:
        y_pred = outputs.reshape(-1)
    extra = {"normal_class": info.get("normal_class", "no_sub")} if task == "anomaly" else {}
    names = info["class_names"] or None
    result = metrics.metrics_for_task(task, y, y_pred, class_names=names, **extra)
    for column, side in metrics.LENS_KIND_COLUMNS.items():  # simulated survey stamps: AUC per kind
        if task == "lens_finding" and column in table.columns:
            result[f"by_{column}"] = metrics.lens_finding_metrics_by_kind(y, y_pred, table[column].to_numpy(), side)
    result["ci95"] = metric_intervals(task, y, y_pred, class_names=names, **extra)
    conformal = (calibration or {}).get("conformal")
    if task == "regression":
        result["uncertainty"] = regression_uncertainty_metrics(y, y_pred, sigma, conformal)
    elif task in ("classification", "lens_finding"):
        raw = outputs if task == "classification" else np.asarray(outputs).reshape(-1)
        result["calibration"] = {"temperature": (calibration or {}).get("temperature"),
                                 "ece": expected_calibration_error(y, y_pred),
                                 "ece_uncalibrated": expected_calibration_error(y, raw)}
    document = {**header, "task": task, "metrics": result}
    runs.write_json(out_dir / "metrics.json", document)
    predictions_frame(task, y, y_pred, info, table, sigma, conformal).to_csv(out_dir / "predictions.csv",
                                                                             index=False)
    plot_dir = out_dir / "plots"
    plots.plots_for_task(task, y, y_pred, plot_dir, class_names=names, label=info.get("target"), fmt=plot_format,
                         **extra)
    if task == "regression" and (sigma is not None or conformal):
        regression_uncertainty_plots(y, y_pred, sigma, plot_dir, label=info.get("target"), calibration=conformal,
                                     fmt=plot_format)
    elif task in ("classification", "lens_finding"):
        reliability_diagram(y, raw, plot_dir, probs_calibrated=y_pred if calibration else None, fmt=plot_format)
    if task == "anomaly" and model is not None and images is not None:
        reconstruction_plot(model, images, y_pred, np.asarray(info["class_names"])[y], extra["normal_class"],
                            plot_dir, fmt=plot_format)
    return document


def reconstruction_plot(model, images, scores: np.ndarray, labels: np.ndarray, normal_class: str,
                        out_dir: Path, per_class: int = 3, fmt: str = "png") -> list[Path]:
    """``anomaly_reconstructions.png`` (or ``fmt``): a few images of each class beside their reconstructions."""
    rows = plots.reconstruction_examples(scores, labels, normal_class, per_class)
    x = np.asarray(images[rows], np.float32)  # lazy image sets read only these rows
    standardised, reconstruction = reconstruction_model(model).predict(x, verbose=0)
    return plots.anomaly_reconstructions(standardised, reconstruction, scores[rows], labels[rows], normal_class,
                                         out_dir, fmt=fmt)


def predictions_frame(task: str, y: np.ndarray, y_pred: np.ndarray, info: dict, table: pd.DataFrame,
                      sigma: np.ndarray | None = None, conformal: dict | None = None) -> pd.DataFrame:
    frame = table[[c for c in ("file", "class", *SIM_COLUMNS) if c in table.columns]].reset_index(drop=True).copy()
    if task == "classification":
        names = np.asarray(info["class_names"])
        frame["true"] = names[y]
        frame["predicted"] = names[np.argmax(y_pred, axis=1)]
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = y_pred[:, i]
    elif task == "regression":
        target = info.get("target", "target")
        frame[f"true_{target}"] = y
        bounds = {}
        for level in (conformal or {}).get("levels", []):
            bounds[f"lower{round(level * 100)}"], bounds[f"upper{round(level * 100)}"] = \
                conformal_interval(y_pred, sigma, conformal, level)
        for column, values in regression_columns(target, y_pred, sigma, bounds).items():
            frame[column] = values
    elif task == "anomaly":
        frame["true"] = np.asarray(info["class_names"])[y]
        frame["anomaly_score"] = y_pred
    else:
        frame["is_lens"] = y
        frame["lens_probability"] = y_pred
    return frame


def summary_line(document: dict) -> str:
    """The headline metrics of a metrics document, each with its 95 % bootstrap interval."""
    keys = ("mae", "rmse", "r2", "accuracy", "roc_auc_macro_ovr", "auc", "tpr0", "tpr10", "average_precision",
            "auc_vs_all")
    found = {k: document["metrics"][k] for k in keys if isinstance(document["metrics"].get(k), (int, float))}
    intervals = document["metrics"].get("ci95") or {}
    parts = []
    for key, value in found.items():
        low, high = intervals.get(key) or (None, None)
        parts.append(f"{key} {value:.4f}" + (f" [{low:.4f}, {high:.4f}]" if low is not None else ""))
    return f"{document['task']} on {document['n']} images (95 % intervals): " + ", ".join(parts)
