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
``--mosaic K`` a PNG of the top K stamps beside ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.cli import prepare_environment, run_cli
from deeplense_tf.data import readers_astro
from deeplense_tf.data.index import PICKLE_ADVICE
from deeplense_tf.data.npy import PICKLED, BadFile, read_npy
from deeplense_tf.data.shards import MANIFEST
from deeplense_tf.data.sources import load_data
from deeplense_tf.errors import DataError, UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deeplense_tf.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="run directory (uses its export/saved_model)")
    p.add_argument("inputs", nargs="+", type=Path, help=".npy files or folders of them")
    p.add_argument("--out", type=Path, help="also write the predictions to this CSV file")
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
                raise DataError(f"{path}: images of shape {tuple(index.images.shape[1:])}, the model takes {expected}")
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
    images, problems = [], []
    for f in files:
        try:
            image = read_npy(f, allow_pickle).image
        except BadFile as err:
            problems.append(f"{f}: {err}" + (f" ({PICKLE_ADVICE})" if err.kind == PICKLED else ""))
            continue
        if image.shape != expected:
            problems.append(f"{f}: shape {image.shape}, the model takes {expected}")
        images.append(image)
    if problems:
        raise DataError("cannot predict on these files:\n  " + "\n  ".join(problems[:20]))
    return np.stack(images)


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
    outputs = np.concatenate([model.serve(tf.constant(images[i:i + batch_size])).numpy()
                              for i in range(0, len(images), batch_size)])
    frame = format_predictions(info, table, outputs)
    if info["task"] == "lens_finding":
        order = rank_candidates(frame["lens_probability"].to_numpy())
        frame = frame.iloc[order].reset_index(drop=True)
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        images = images[order]
    return frame, images


def rank_candidates(probability: np.ndarray) -> np.ndarray:
    """Row order, most lens-like first; ties keep the input order (a stable sort)."""
    return np.argsort(-np.asarray(probability, np.float64), kind="stable")


def format_predictions(info: dict, files, outputs: np.ndarray) -> pd.DataFrame:
    """``files``: a list of paths, or a table whose ``file`` (and ``ID``) columns name the images."""
    frame = files.reset_index(drop=True).copy() if isinstance(files, pd.DataFrame) else \
        pd.DataFrame({"file": [str(f) for f in files]})
    task = info["task"]
    if task == "classification":
        names = np.asarray(info["class_names"])
        frame["predicted"] = names[outputs.argmax(1)]
        for i, name in enumerate(names):
            frame[f"prob_{name}"] = outputs[:, i]
    elif task == "regression":
        target = info["target"]
        frame[target] = outputs.reshape(-1)
        if target.startswith("log10_"):
            frame[target[6:]] = 10.0 ** outputs.reshape(-1).astype(np.float64)
    elif task == "anomaly":
        frame["anomaly_score"] = outputs.reshape(-1)
    else:
        frame["lens_probability"] = outputs.reshape(-1)
    return frame


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment()

    def job():
        if args.mosaic is not None and args.mosaic < 1:
            raise DataError(f"--mosaic takes the number of candidates to draw (>= 1). Received: {args.mosaic}")
        frame, images = predict_inputs(args.model, args.inputs, args.batch_size, args.allow_pickle)
        with pd.option_context("display.max_rows", 200, "display.width", 160):
            print(frame.to_string(index=False))
        if args.out:
            frame.to_csv(args.out, index=False)
            print(f"wrote {args.out}")
        if args.mosaic:
            write_mosaic(frame, images, args.mosaic, args.out)

    return run_cli(job)


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
