"""Evaluate a trained run: metrics, predictions and plots.

    python -m deeplense_tf.evaluate RUN_DIR                 # the run's own test split
    python -m deeplense_tf.evaluate RUN_DIR --data OTHER    # every labelled image of another data set
    python -m deeplense_tf.evaluate RUN_DIR --tta           # average over the 8 flips/rotations

Writes ``metrics.json``, ``predictions.csv`` and ``plots/*.png`` into ``--out`` (default
``RUN_DIR/eval-<data>``). ``train`` calls the same functions on the test split at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.cli import prepare_environment, run_cli

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
    from deeplense_tf import metrics, plots, runs

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
    from deeplense_tf import plots
    from deeplense_tf.models.autoencoders import reconstruction_model

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


def load_for_evaluation(run_dir: Path, data: str | None, allow_pickle: bool):
    """The run's model plus (images, labels, table) of its test split or of ``data``."""
    from deeplense_tf import runs
    from deeplense_tf.config import RunConfig

    config = RunConfig.load(run_dir / runs.CONFIG)
    info = runs.read_json(run_dir / runs.DATA_INFO)
    model = load_model(run_dir)
    if data is None:
        from deeplense_tf.data.prepare import check_split, prepare_data

        prepared = prepare_data(config)
        check_split(prepared, run_dir / "split.csv")
        idx = prepared.splits["test"]
        return config, info, model, prepared.images[idx], prepared.y[idx], prepared.table.loc[idx], "test"
    images, y, table = load_other_data(config, info, data, allow_pickle)
    return config, info, model, images, y, table, "all"


def load_other_data(config, info: dict, data: str, allow_pickle: bool):
    from deeplense_tf.data.prepare import label_index
    from deeplense_tf.data.sources import load_data
    from deeplense_tf.errors import DataError

    d = config.data  # read the other set the way the run read its own (label column, checks)
    index = load_data(data, samples=d.samples, seed=config.train.seed, allow_pickle=allow_pickle,
                      workers=d.workers, validate=d.validate, label_column=d.label_column)
    prepared, _ = label_index(index, config.model.task, config.data.target)
    if prepared.input_shape != tuple(info["input_shape"]):
        raise DataError(f"{data}: images of shape {prepared.input_shape}, but the model takes {tuple(info['input_shape'])}")
    y = prepared.y
    if config.model.task in ("classification", "anomaly"):
        unknown = sorted(set(prepared.class_names) - set(info["class_names"]))
        if unknown:
            raise DataError(f"{data}: classes {unknown} are unknown to the model, which knows {info['class_names']}")
        y = np.searchsorted(info["class_names"], np.asarray(prepared.class_names)[y])
    return prepared.images, y, prepared.table


def load_model(run_dir: Path):
    """``model.keras`` of a finished run, else its best (or last) checkpoint."""
    import keras

    from deeplense_tf import runs
    from deeplense_tf.errors import UserError
    from deeplense_tf.models import build  # noqa: F401  (registers the custom layers)

    for name in (runs.KERAS_MODEL, runs.BEST, runs.LAST):
        if (run_dir / name).is_file():
            return keras.models.load_model(run_dir / name, compile=False)
    raise UserError(f"{run_dir} has no trained model ({runs.KERAS_MODEL} or checkpoints/*.keras)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deeplense_tf.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory written by deeplense_tf.train")
    parser.add_argument("--data", help="evaluate on this data set (path or sim:<preset>) instead of the test split")
    parser.add_argument("--out", type=Path, help="output folder (default RUN_DIR/eval-<data>)")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: mean over the 8 flips/rotations")
    parser.add_argument("--batch-size", type=int, default=64, help="images per prediction batch")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickled .npy files in --data (runs code from them)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment()
    return run_cli(lambda: evaluate_run(args))


def evaluate_run(args) -> Path:
    from deeplense_tf.runs import require_run_dir

    run_dir = require_run_dir(args.run_dir)
    config, info, model, images, y, table, split = load_for_evaluation(run_dir, args.data, args.allow_pickle)
    name = "test" if args.data is None else Path(args.data.replace("sim:", "sim_")).name
    out_dir = args.out or run_dir / f"eval-{name}{'-tta' if args.tta else ''}"
    outputs = predict(model, images, args.batch_size, args.tta)
    document = evaluate_predictions(config.model.task, y, outputs, info, table, out_dir,
                                    {"run": str(run_dir), "data": args.data or info["source"], "split": split,
                                     "tta": args.tta, "n": int(len(y))}, model=model, images=images)
    print(summary_line(document))
    print(f"metrics, predictions and plots in {out_dir}")
    return out_dir


def summary_line(document: dict) -> str:
    keys = ("mae", "rmse", "r2", "accuracy", "roc_auc_macro_ovr", "auc", "tpr0", "tpr10", "average_precision",
            "auc_vs_all")
    found = {k: document["metrics"][k] for k in keys if isinstance(document["metrics"].get(k), (int, float))}
    return f"{document['task']} on {document['n']} images: " + ", ".join(f"{k} {v:.4f}" for k, v in found.items())


if __name__ == "__main__":
    sys.exit(main())
