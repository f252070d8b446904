"""Predict with a trained run's exported SavedModel, in physical units.

    python -m deeplense_tf.predict --model RUN_DIR image1.npy image2.npy ...
    python -m deeplense_tf.predict --model RUN_DIR some_folder/ --out predictions.csv

Files are read with the same tolerant reader as training (every DeepLense ``.npy`` variant;
folders are searched for ``.npy`` files). Classification prints the class and its
probabilities; regression prints the target, and for ``log10_*`` targets the value itself
(e.g. the axion mass in eV).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.cli import prepare_environment, run_cli
from deeplense_tf.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m deeplense_tf.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="run directory (uses its export/saved_model)")
    p.add_argument("inputs", nargs="+", type=Path, help=".npy files or folders of them")
    p.add_argument("--out", type=Path, help="also write the predictions to this CSV file")
    p.add_argument("--batch-size", type=int, default=64, help="images per call of the model")
    p.add_argument("--allow-pickle", action="store_true", help="read pickled .npy files (runs code from them)")
    return p


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
    from deeplense_tf.data.npy import PICKLED, BadFile, read_npy
    from deeplense_tf.data.sources import PICKLE_ADVICE

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
    import tensorflow as tf

    from deeplense_tf import runs

    run_dir = runs.require_run_dir(run_dir)
    info = runs.read_json(run_dir / runs.DATA_INFO)
    if not (run_dir / runs.SAVED_MODEL).is_dir():
        raise DataError(f"{run_dir} has no {runs.SAVED_MODEL}: the run did not finish (resume it first)")
    model = tf.saved_model.load(str(run_dir / runs.SAVED_MODEL))
    images = read_images(files, allow_pickle, tuple(info["input_shape"]))
    outputs = np.concatenate([model.serve(tf.constant(images[i:i + batch_size])).numpy()
                              for i in range(0, len(images), batch_size)])
    return format_predictions(info, files, outputs)


def format_predictions(info: dict, files: list[Path], outputs: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"file": [str(f) for f in files]})
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
        frame = predict_files(args.model, collect_files(args.inputs), args.batch_size, args.allow_pickle)
        with pd.option_context("display.max_rows", 200, "display.width", 160):
            print(frame.to_string(index=False))
        if args.out:
            frame.to_csv(args.out, index=False)
            print(f"wrote {args.out}")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
