"""Average several trained runs: metrics of each member and of the ensemble, one exported model.

    python -m deeplense_tf.ensemble runs/a runs/b runs/c              # their shared test split

A deep ensemble: members trained on one data set and split (the same ``--seed``) from different
initialisations (``--init-seed 1``, ``--init-seed 2``, ...).
    python -m deeplense_tf.ensemble runs/a runs/b --data /data/model_ii_test --tta --allow-pickle

The ensemble averages what the members output: class probabilities (classification), lens
probabilities (lens finding), anomaly scores; for regression it reports a mean and a total sigma
(the members' own sigmas with ``--uncertainty gaussian``, plus their disagreement). Its intervals
(conformal) and temperature are fitted again on the members' shared validation split. The
runs must share the task, the class names, the regression target and the input shape, and
the test split (``split.csv``), since otherwise one member may have trained on the images
another is tested on. ``--data`` evaluates on another set, where splits do not matter;
``--any-split`` skips the check on the first run's test split at your own risk.

Writes into ``--out`` (default ``<first run's parent>/ensemble-<task>-<time>/``):
``ensemble.json`` (members and their checkpoints), ``data.json`` (class names, target, input
shape, as in a run), ``metrics.json`` (the ensemble's ``metrics`` and each of the
``members``), ``predictions.csv`` and ``plots/`` of the ensemble, ``members/<k>-<run>/``
(each member's own metrics, predictions, plots), and one model that takes raw images:
``export/saved_model`` (``tf.saved_model.load(path).serve(images)``) and ``model.keras``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.cli import command_parser, prepare_environment, run_cli
from deeplense_tf.config import RunConfig
from deeplense_tf.errors import UserError

TABLE_KEYS = ("mae", "rmse", "r2", "accuracy", "roc_auc_macro_ovr", "auc", "tpr0", "tpr10", "average_precision",
              "auc_vs_all")


@dataclass
class Member:
    run_dir: Path
    config: RunConfig
    info: dict  # the run's data.json
    checkpoint: Path


# What members must share, read from each run: (what to call it, how to read it).
SHARED = (
    ("task", lambda m: m.config.model.task),
    ("class names", lambda m: list(m.info["class_names"])),
    ("regression target", lambda m: m.info.get("target") if m.config.model.task == "regression" else None),
    ("normal class", lambda m: m.info.get("normal_class") if m.config.model.task == "anomaly" else None),
    ("input shape (H, W, C)", lambda m: list(m.info["input_shape"])),
    # A member without its own sigma would enter the total sigma as perfectly certain.
    ("--uncertainty", lambda m: m.config.model.uncertainty if m.config.model.task == "regression" else None),
)


def load_member(run_dir: Path) -> Member:
    """A run's config, data.json and best checkpoint (``model.keras`` of a finished run is the same model)."""
    run_dir = runs.require_run_dir(run_dir)
    for name in (runs.BEST, runs.KERAS_MODEL, runs.LAST):
        if (run_dir / name).is_file():
            return Member(run_dir, RunConfig.load(run_dir / runs.CONFIG), runs.read_json(run_dir / runs.DATA_INFO),
                          run_dir / name)
    raise UserError(f"{run_dir} has no trained model ({runs.BEST}, {runs.KERAS_MODEL} or {runs.LAST})")


def check_compatible(members: list[Member], same_split: bool = True) -> None:
    """Raise naming the first run that differs from the first member, and in what."""
    if len(members) < 2:
        raise UserError(f"an ensemble needs two or more runs. Received: {len(members)}")
    first = members[0]
    for member in members[1:]:
        for what, read in SHARED:
            if read(member) != read(first):
                raise UserError(f"{member.run_dir} cannot join an ensemble with {first.run_dir}: its {what} is "
                                f"{read(member)!r}, not {read(first)!r}")
        if same_split and not test_rows(member).equals(test_rows(first)):
            raise UserError(f"{member.run_dir} has a different test split (split.csv) than {first.run_dir}: one "
                            "member may have trained on another's test images. Ensemble runs trained on the same "
                            "data with the same --seed (members differ by --init-seed), or evaluate on another set with --data")


def test_rows(member: Member) -> pd.DataFrame:
    split = pd.read_csv(member.run_dir / "split.csv")
    return split.loc[split["split"] == "test"].drop(columns="split").reset_index(drop=True)


def load_test_data(member: Member, data: str | None, allow_pickle: bool):
    """(images, labels, table, split name): the run's own test split, or every labelled image of ``data``."""
    from deeplense_tf.data.prepare import evaluation_set  # TensorFlow loads after parsing: --help stays fast

    return evaluation_set(member.config, member.info, member.run_dir, data, allow_pickle)


def build_ensemble(models: list, name: str = "ensemble", task: str = "classification"):
    """Raw images -> every member -> their mean (regression: ``[mean, total sigma]``, ``GaussianEnsemble``).
    Each member is re-wrapped under a unique name, since two runs of one architecture carry the same
    model and layer names."""
    import keras

    from deeplense_tf.models.heads import GaussianEnsemble

    inputs = keras.Input(tuple(models[0].input_shape[1:]), name="image")
    outputs = [keras.Model(m.input, m.output, name=f"member{i}_{m.name}")(inputs) for i, m in enumerate(models)]
    combined = GaussianEnsemble(name="target")(outputs) if task == "regression" else \
        keras.layers.Average(name="mean")(outputs)
    return keras.Model(inputs, combined, name=name)


def combine(task: str, outputs: list[np.ndarray]) -> np.ndarray:
    """The members' outputs combined as ``build_ensemble`` does (numpy)."""
    if task != "regression":
        return np.mean(outputs, axis=0)
    from deeplense_tf.evaluation.report import regression_outputs
    from deeplense_tf.evaluation.intervals import ensemble_gaussian

    parts = [regression_outputs(o) for o in outputs]
    sigmas = None if parts[0][1] is None else np.stack([s for _, s in parts])  # check_compatible: all or none
    mean, total, _ = ensemble_gaussian(np.stack([m for m, _ in parts]), sigmas)
    return np.stack([mean, total], axis=-1)


def run_ensemble(run_dirs: list[Path], out: Path | None = None, data: str | None = None, tta: bool = False,
                 batch_size: int = 64, allow_pickle: bool = False, same_split: bool = True) -> Path:
    import keras  # TensorFlow loads only once the arguments are parsed: --help stays fast

    from deeplense_tf.evaluation.report import evaluate_predictions, predict
    from deeplense_tf.models.export import export_metadata, export_run
    from deeplense_tf.training.calibrate import CALIBRATION, read_calibration

    members = [load_member(Path(r)) for r in run_dirs]
    check_compatible(members, same_split=same_split and data is None)
    first, task = members[0], members[0].config.model.task
    images, y, table, split = load_test_data(first, data, allow_pickle)
    out = out or default_out(first.run_dir.parent, task)
    header = {"data": data or first.info["source"], "split": split, "tta": tta, "n": int(len(y))}
    models, outputs, documents = [], [], []
    for k, member in enumerate(members, start=1):
        models.append(keras.models.load_model(member.checkpoint, compile=False))
        outputs.append(predict(models[-1], images, batch_size, tta))
        documents.append(evaluate_predictions(task, y, outputs[-1], first.info, table,
                                              out / "members" / f"{k}-{member.run_dir.name}",
                                              {"run": str(member.run_dir), "checkpoint": str(member.checkpoint),
                                               **header}, calibration=read_calibration(member.run_dir)[0],
                                              plot_format=member.config.train.plot_format))
    member_rows = [{"run": d["run"], "checkpoint": d["checkpoint"], "metrics": d["metrics"]} for d in documents]
    calibration = calibrate_ensemble(task, models, first, batch_size, tta) if same_split else None
    if calibration is not None:
        runs.write_json(out / CALIBRATION, calibration)
    document = evaluate_predictions(task, y, combine(task, outputs), first.info, table, out,
                                    {"runs": [str(m.run_dir) for m in members], **header, "members": member_rows},
                                    calibration=calibration, plot_format=first.config.train.plot_format)
    runs.write_json(out / "ensemble.json", {"task": task, "members": [
        {"run": str(m.run_dir), "checkpoint": str(m.checkpoint), "arch": m.config.model.arch} for m in members]})
    runs.write_json(out / runs.DATA_INFO, first.info)
    paths = export_run(build_ensemble(models, name=f"ensemble_{task}", task=task), out,
                       export_metadata(first.info, calibration))
    print(metrics_table([(f"{k} {m.run_dir.name}", d["metrics"]) for k, (m, d) in
                         enumerate(zip(members, documents), start=1)] + [("ensemble", document["metrics"])]))
    print(f"{task} on {len(y)} images ({split}{', tta' if tta else ''})\nmetrics, predictions and plots in {out}\n"
          f"SavedModel:  {paths['saved_model']}\nKeras model: {paths['keras']}")
    return out


def calibrate_ensemble(task: str, models: list, first: Member, batch_size: int, tta: bool) -> dict | None:
    """The ensemble's own calibration (conformal quantiles, temperature) on the members' shared
    validation split; None for anomaly ensembles."""
    if task == "anomaly":
        return None
    from deeplense_tf.data.prepare import evaluation_set
    from deeplense_tf.evaluation.calibration import fit_temperature
    from deeplense_tf.evaluation.intervals import fit_conformal
    from deeplense_tf.evaluation.report import predict, regression_outputs
    from deeplense_tf.training.calibrate import LEVELS

    images, y, _, _ = evaluation_set(first.config, first.info, first.run_dir, split="val")
    outputs = combine(task, [predict(m, images, batch_size, tta) for m in models])
    calibration: dict = {"split": "val", "n": int(len(y)), "levels": list(LEVELS)}
    if task == "regression":
        mean, sigma = regression_outputs(outputs)
        calibration["conformal"] = fit_conformal(y, mean, sigma if np.all(sigma > 0) else None, LEVELS)
    else:
        probs = outputs if task == "classification" else outputs.reshape(-1)
        calibration["temperature"] = float(fit_temperature(y, probs))
    return calibration


def default_out(parent: Path, task: str) -> Path:
    out = runs.new_run_dir(parent, "ensemble", task)
    (out / "checkpoints").rmdir()  # a run folder's layout, minus what an ensemble never writes
    return out


def metrics_table(rows: list[tuple[str, dict]]) -> str:
    """One line per member and one for the ensemble, over the task's headline metrics."""
    keys = [k for k in TABLE_KEYS if isinstance(rows[-1][1].get(k), (int, float))]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{'':<{width}}" + "".join(f"{k:>19}" for k in keys)]
    lines += [f"{name:<{width}}" + "".join(f"{m[k]:>19.4f}" for k in keys) for name, m in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("python -m deeplense_tf.ensemble", __doc__, verbose=True)
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories written by train")
    parser.add_argument("--out", type=Path,
                        help="output folder (default <parent of the first run>/ensemble-<task>-<time>)")
    parser.add_argument("--data", help="evaluate on this data set (path or sim:<preset>) instead of the test split")
    parser.add_argument("--tta", action="store_true", help="test-time augmentation: mean over the 8 flips/rotations")
    parser.add_argument("--batch-size", type=int, default=64, help="images per prediction batch")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="allow pickled .npy files in --data (runs code from them)")
    parser.add_argument("--any-split", action="store_true",
                        help="use the first run's test split even if the others differ "
                        "(members may have trained on it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prepare_environment(args.verbose)
    return run_cli(lambda: run_ensemble(args.run_dirs, args.out, args.data, args.tta, args.batch_size,
                                        args.allow_pickle, same_split=not args.any_split))


if __name__ == "__main__":
    sys.exit(main())
