"""Predict with a trained run's exported SavedModel, in physical units.

    python -m deeplense_tf.predict --model RUN_DIR image1.npy image2.npy ...
    python -m deeplense_tf.predict --model RUN_DIR some_folder/ --out predictions.csv
    python -m deeplense_tf.predict --model LENS_RUN survey/ --out candidates.csv --mosaic 25

Files are read with the same tolerant reader as training (every DeepLense ``.npy`` variant;
folders are searched for ``.npy`` files); catalogues (an HDF5 file, a FITS ``Band<k>/`` tree,
packed shards) are read with the training readers and keep their ``ID`` column.
Classification prints the class and its probabilities; regression prints the target, and for
``log10_*`` targets the value itself (e.g. the axion mass in eV). Lens finding writes a
ranked candidate list (most lens-like first, ``rank`` 1) for a scientist to inspect, and with
``--mosaic K`` a PNG of the top K stamps beside ``--out``. ``--out`` gets every row and the
terminal a summary (images per predicted class, the regression range, candidates above 0.5);
without it the first 20 rows are printed. Images of another shape than the run's model takes
stop it with one line naming the file, both shapes and what to do.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.cli import command_parser, prepare_environment, run_cli
from deeplense_tf.data import readers_astro
from deeplense_tf.data.index import PICKLE_ADVICE
from deeplense_tf.data.npy import BAD_SHAPE, PICKLED, UNREADABLE, BadFile, read_npy
from deeplense_tf.data.shards import MANIFEST
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import DataError, UserError
from deeplense_tf.tasks import regression_columns, target_units

SHOWN_ROWS = 20  # without --out: rows printed (a survey is 100,000 stamps)


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("python -m deeplense_tf.predict", __doc__, verbose=True)
    p.add_argument("--model", required=True, type=Path, help="run directory (uses its export/saved_model)")
    p.add_argument("inputs", nargs="+", type=Path, help=".npy files or folders of them")
    p.add_argument("--out", type=Path, help="write every prediction to this CSV file and print a summary "
                   f"(default: print the first {SHOWN_ROWS} rows)")
    p.add_argument("--batch-size", type=int, default=64, help="images per call of the model")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled .npy files (runs code from them)")
    p.add_argument("--mosaic", type=int, metavar="K", help="lens finding: also draw the K most lens-like "
                   "candidates into a PNG (beside --out, else candidates_top<K>.png)")
    return p


def is_catalogue(path: Path) -> bool:
    """An HDF5 file, a FITS ``Band<k>/`` tree or packed shards: read by the training readers."""
    if path.is_file():
        return path.suffix.lower() in readers_astro.HDF5_SUFFIXES
    return path.is_dir() and ((path / MANIFEST).is_file() or readers_astro.is_fits_layout(path))


def read_inputs(inputs: list[Path], allow_pickle: bool, expected: tuple[int, ...]) -> tuple[np.ndarray, pd.DataFrame]:
    """Images and a table naming each (``file``, and ``ID`` for catalogues), in input order."""
    images, tables = [], []
    for path in inputs:
        if is_catalogue(path):
            index = load_data(str(path), allow_pickle=allow_pickle)
            if tuple(index.images.shape[1:]) != expected:
                raise DataError(f"{path}: {shape_problem(tuple(index.images.shape[1:]), expected)}")
            table = index.table[[c for c in ("file", "ID") if c in index.table.columns]].copy()
            table["file"] = [str(path / f) if path.is_dir() else f"{path.parent / f}" for f in table["file"]]
            images.append(np.asarray(index.images, np.float32))
            tables.append(table)
        else:
            files = collect_files([path])
            images.append(read_images(files, allow_pickle, expected))
            tables.append(pd.DataFrame({"file": [str(f) for f in files]}))
    return np.concatenate(images), pd.concat(tables, ignore_index=True)


def collect_files(inputs: list[Path]) -> list[Path]:
    files = []
    for path in inputs:
        if path.is_dir():
            found = sorted(path.rglob("*.npy"))
            if not found:
                raise DataError(f"{path}: folder holds no .npy files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def read_images(files: list[Path], allow_pickle: bool, expected: tuple[int, ...]) -> np.ndarray:
    """The images of ``files``; the first unusable file stops it with one line (the others are counted)."""
    images, problems = [], {}
    for f in files:
        try:
            image = read_npy(f, allow_pickle).image
        except BadFile as err:
            advice = {PICKLED: PICKLE_ADVICE, BAD_SHAPE: f"the model takes numeric arrays of shape {expected}",
                      UNREADABLE: f"the model takes numeric arrays of shape {expected}"}.get(err.kind)
            problems[f] = f"{err}" + (f" ({advice})" if advice else "")
            continue
        if image.shape != expected:
            problems[f] = shape_problem(image.shape, expected)
        images.append(image)
    if problems:
        (first, problem), others = next(iter(problems.items())), list(problems)[1:]
        more = f" ({len(others)} more of the {len(files)} files: {', '.join(map(str, others[:3]))}" \
               f"{', ...' if len(others) > 3 else ''})" if others else ""
        raise DataError(f"cannot predict on {first}: {problem}{more}")
    return np.stack(images)


def shape_problem(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """What the images are, what the run's model takes and what to do, in one line."""
    if tuple(shape[:2]) != tuple(expected[:2]):
        todo = f"resize them to {expected[0]}x{expected[1]} or use a run trained on {shape[0]}x{shape[1]} images"
    else:
        todo = f"pass {expected[2]}-channel images or use a run trained on {shape[2]}-channel images"
    return f"images of shape {tuple(shape)} (height, width, channels), the run's model takes {tuple(expected)}: {todo}"


def predict_files(run_dir: Path, files: list[Path], batch_size: int = 64, allow_pickle: bool = False) -> pd.DataFrame:
    return predict_inputs(run_dir, files, batch_size, allow_pickle)[0]


def predict_inputs(run_dir: Path, inputs: list[Path], batch_size: int = 64,
                   allow_pickle: bool = False) -> tuple[pd.DataFrame, np.ndarray]:
    """The predictions table (lens finding: ranked, most lens-like first) and the images in its order."""
    import tensorflow as tf

    run_dir = runs.require_run_dir(run_dir)
    info = runs.read_json(run_dir / runs.DATA_INFO)
    if not (run_dir / runs.SAVED_MODEL).is_dir():
        raise DataError(f"{run_dir} has no {runs.SAVED_MODEL}: the run did not finish (resume it first)")
    model = tf.saved_model.load(str(run_dir / runs.SAVED_MODEL))
    images, table = read_inputs(list(inputs), allow_pickle, tuple(info["input_shape"]))
    served = [model.serve(tf.constant(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    if isinstance(served[0], dict):  # named outputs (export format 2)
        outputs = {name: np.concatenate([batch[name].numpy() for batch in served]) for name in served[0]}
    else:  # a run exported before the named outputs: the bare model output
        outputs = np.concatenate([batch.numpy() for batch in served])
    calibration = json.loads(model.metadata().numpy())["calibration"] if hasattr(model, "metadata") else {}
    frame = format_predictions(info, table, outputs, calibration)
    if info["task"] == "lens_finding":
        order = rank_candidates(frame["lens_probability"].to_numpy())
        frame = frame.iloc[order].reset_index(drop=True)
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        images = images[order]
    return frame, images


def rank_candidates(probability: np.ndarray) -> np.ndarray:
    """Row order, most lens-like first; ties keep the input order (a stable sort)."""
    return np.argsort(-np.asarray(probability, np.float64), kind="stable")


def named(task: str, outputs) -> dict[str, np.ndarray]:
    """The export's named outputs; a format-1 export's bare output is named here."""
    if isinstance(outputs, dict):
        return outputs
    outputs = np.asarray(outputs)
    if task == "classification":
        return {"probabilities": outputs}
    if task == "regression":
        return {"mean": outputs[:, 0], **({"sigma": outputs[:, 1]} if outputs.shape[-1] == 2 else {})}
    return {"anomaly_score" if task == "anomaly" else "lens_probability": outputs.reshape(-1)}


def format_predictions(info: dict, files, outputs, calibration: dict | None = None) -> pd.DataFrame:
    """``files``: a list of paths, or a table whose ``file`` (and ``ID``) columns name the images.

    Regression: the columns of ``evaluate``'s predictions (``tasks.regression_columns``): ``pred_<target>``
    (the mean), ``sigma_<target>`` (``--uncertainty gaussian``), the calibrated ``lower68_<target>`` ...
    ``upper95_<target>``, the same in physical units for ``log10_*`` targets (``pred_axion_mass``, ... in
    eV), and ``outside_training_range`` where the prediction lies
    outside the targets the model was trained on. Every supervised task: ``feature_distance`` and
    ``far_from_training`` (beyond the 99th percentile of the validation images' distance: the image is
    unlike anything the model was trained on, and its output should not be trusted)."""
    frame = files.reset_index(drop=True).copy() if isinstance(files, pd.DataFrame) else \
        pd.DataFrame({"file": [str(f) for f in files]})
    task, calibration = info["task"], calibration or {}
    out = named(task, outputs)
    if task == "classification":
        names = np.asarray(info["class_names"])
        frame["predicted"] = names[out["probabilities"].argmax(1)]
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = out["probabilities"][:, i]
    elif task == "regression":
        bounds = {f"{side}{level}": out[f"{side}{level}"] for level in (68, 95) for side in ("lower", "upper")
                  if f"{side}{level}" in out}
        for column, values in regression_columns(info["target"], out["mean"], out.get("sigma"), bounds).items():
            frame[column] = values
        if "target_range" in calibration:
            low, high = calibration["target_range"]
            frame["outside_training_range"] = (out["mean"] < low) | (out["mean"] > high)
    elif task == "anomaly":
        frame["anomaly_score"] = out["anomaly_score"]
    else:
        frame["lens_probability"] = out["lens_probability"]
    if "feature_distance" in out:
        frame["feature_distance"] = out["feature_distance"]
        if "feature_distance_threshold" in calibration:
            frame["far_from_training"] = out["feature_distance"] > calibration["feature_distance_threshold"]
    return frame


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment(args.verbose)

    def job():
        if args.mosaic is not None and args.mosaic < 1:
            raise DataError(f"--mosaic takes the number of candidates to draw (>= 1). Received: {args.mosaic}")
        frame, images = predict_inputs(args.model, args.inputs, args.batch_size, args.allow_pickle)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(args.out, index=False)
            print(f"wrote {len(frame)} predictions to {args.out}")
        else:
            print_rows(frame, SHOWN_ROWS)
        print("\n".join(summary(frame, runs.read_json(args.model / runs.DATA_INFO))))
        if args.mosaic:
            write_mosaic(frame, images, args.mosaic, args.out)

    return run_cli(job)


def print_rows(frame: pd.DataFrame, limit: int) -> None:
    with pd.option_context("display.width", 160):
        print(frame.head(limit).to_string(index=False))
    if len(frame) > limit:
        print(f"... {len(frame) - limit} more rows; use --out FILE to write them all")


def summary(frame: pd.DataFrame, info: dict) -> list[str]:
    """What the predictions say, in a few lines: counts per predicted class, the regression range,
    lens candidates above 0.5, and the images the model should not be trusted on."""
    task = info["task"]
    lines = [f"{len(frame)} image{'' if len(frame) == 1 else 's'}"]
    if task == "classification":
        counts = frame["predicted"].value_counts()
        lines.append("predicted: " + ", ".join(f"{name} {counts.get(name, 0)}" for name in info["class_names"]))
    elif task == "lens_finding":
        p = frame["lens_probability"]
        lines.append(f"lens probability above 0.5: {int((p > 0.5).sum())} (highest {p.max():.3f})")
    else:
        column = info["target"] if task == "regression" else "anomaly_score"
        values = frame[f"pred_{column}" if task == "regression" else column].to_numpy(np.float64)
        units = f" [{target_units(column)}]" if task == "regression" and target_units(column) else ""
        lines.append(f"{column}{units}: mean {values.mean():.4g}, range {values.min():.4g} .. {values.max():.4g}")
        if task == "regression" and column.startswith("log10_"):
            lines.append(f"{column[6:]}: {10 ** values.min():.3g} .. {10 ** values.max():.3g}")
    for flag, what in (("outside_training_range", "outside the range of the training targets"),
                       ("far_from_training", "far from every training image (feature distance), not to be trusted")):
        if flag in frame.columns and frame[flag].any():
            count = int(frame[flag].sum())
            lines.append(f"{count} image{'' if count == 1 else 's'} {what}")
    return lines


def write_mosaic(frame: pd.DataFrame, images: np.ndarray, k: int, out: Path | None) -> Path:
    from deeplense_tf.evaluation.plots import candidate_mosaic

    if "lens_probability" not in frame.columns:
        raise UserError("--mosaic draws lens candidates: it needs a lens_finding run")
    path = (out.with_name(f"{out.stem}_top{k}.png") if out else Path(f"candidates_top{k}.png"))
    names = frame["ID"].astype(str) if "ID" in frame.columns else frame["file"].map(lambda f: Path(f).name)
    candidate_mosaic(images[:k], frame["lens_probability"].to_numpy()[:k], names.tolist()[:k], path)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    sys.exit(main())
