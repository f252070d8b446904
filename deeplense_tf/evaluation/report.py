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
from deeplense_tf.models.autoencoders import reconstruction_model

DIHEDRAL = [(k, flip) for flip in (False, True) for k in range(4)]


def dihedral(images: np.ndarray, k: int, flip: bool) -> np.ndarray:
    out = np.rot90(images, k, axes=(1, 2))
    return out[:, :, ::-1] if flip else out


def predict(model, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
    """Model outputs in physical units; ``tta`` averages the 8 symmetries of a square image."""
    views = DIHEDRAL if tta and images.shape[1] == images.shape[2] else [(0, False)]
    outputs = [np.asarray(model.predict(np.ascontiguousarray(dihedral(images, k, f)), batch_size=batch_size,
                                        verbose=0)) for k, f in views]
    return np.mean(outputs, axis=0)


def evaluate_predictions(task: str, y: np.ndarray, outputs: np.ndarray, info: dict, table: pd.DataFrame,
                         out_dir: Path, header: dict, model=None, images: np.ndarray | None = None) -> dict:
    """Write metrics.json, predictions.csv and the task's plots; return the metrics document.

    Anomaly runs given their ``model`` and ``images`` also draw example reconstructions.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    y_pred = outputs if task == "classification" else outputs.reshape(-1)
    extra = {"normal_class": info.get("normal_class", "no_sub")} if task == "anomaly" else {}
    result = metrics.metrics_for_task(task, y, y_pred, class_names=info["class_names"] or None, **extra)
    document = {**header, "task": task, "metrics": result}
    runs.write_json(out_dir / "metrics.json", document)
    predictions_frame(task, y, y_pred, info, table).to_csv(out_dir / "predictions.csv", index=False)
    plots.plots_for_task(task, y, y_pred, out_dir / "plots", class_names=info["class_names"] or None,
                         label=info.get("target"), **extra)
    if task == "anomaly" and model is not None and images is not None:
        reconstruction_plot(model, images, y_pred, np.asarray(info["class_names"])[y], extra["normal_class"],
                            out_dir / "plots")
    return document


def reconstruction_plot(model, images, scores: np.ndarray, labels: np.ndarray, normal_class: str,
                        out_dir: Path, per_class: int = 3) -> list[Path]:
    """``anomaly_reconstructions.png``: a few images of each class beside their reconstructions."""
    rows = plots.reconstruction_examples(scores, labels, normal_class, per_class)
    x = np.asarray(images[rows], np.float32)  # lazy image sets read only these rows
    standardised, reconstruction = reconstruction_model(model).predict(x, verbose=0)
    return plots.anomaly_reconstructions(standardised, reconstruction, scores[rows], labels[rows], normal_class,
                                         out_dir)


def predictions_frame(task: str, y: np.ndarray, y_pred: np.ndarray, info: dict, table: pd.DataFrame) -> pd.DataFrame:
    frame = table[[c for c in ("file", "class") if c in table.columns]].reset_index(drop=True).copy()
    if task == "classification":
        names = np.asarray(info["class_names"])
        frame["true"] = names[y]
        frame["predicted"] = names[np.argmax(y_pred, axis=1)]
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = y_pred[:, i]
    elif task == "regression":
        target = info.get("target", "target")
        frame[f"true_{target}"] = y
        frame[f"pred_{target}"] = y_pred
        if target.startswith("log10_"):
            frame[f"pred_{target[6:]}"] = 10.0 ** y_pred.astype(np.float64)
    elif task == "anomaly":
        frame["true"] = np.asarray(info["class_names"])[y]
        frame["anomaly_score"] = y_pred
    else:
        frame["is_lens"] = y
        frame["lens_probability"] = y_pred
    return frame


def summary_line(document: dict) -> str:
    keys = ("mae", "rmse", "r2", "accuracy", "roc_auc_macro_ovr", "auc", "tpr0", "tpr10", "average_precision",
            "auc_vs_all")
    found = {k: document["metrics"][k] for k in keys if isinstance(document["metrics"].get(k), (int, float))}
    return f"{document['task']} on {document['n']} images: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items())
