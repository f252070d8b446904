"""The Python API, for notebooks and scripts: ``import deeplense_tf as dl``.

    import deeplense_tf as dl
    dl.list_archs("resnet*")                                  # names in the registry
    index = dl.load_data("sim:model_ii", samples=100)         # any --data: images + table
    run = dl.train(arch="resnet18", epochs=2, samples=100)    # a RunConfig or train flags' names
    run.metrics["metrics"]["mae"], run.predict(index.images[:8])
    dl.evaluate(run, data="sim:model_iii")                    # metrics document of another set
    run = dl.load_run("runs/resnet18-regression-...")         # config, model, metrics, predict
    model = dl.load_model("runs/<run>/model.keras")           # a .keras file or a run folder

Each function does what the command of the same name does, with the same files written, so a
run made here is a run like any other (``--resume``, ``evaluate``, ``ensemble`` read it). The
commands are thin layers over this module. No ``if __name__ == "__main__":`` guard is needed:
the simulator's workers never re-run the calling script (``sim/workers.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
import pandas as pd

from deeplense_tf import runs
from deeplense_tf.cli import FLAG_FIELDS, config_from_options, prepare_environment
from deeplense_tf.config import ModelConfig, RunConfig, replace
from deeplense_tf.data.index import DataIndex
from deeplense_tf.data.prepare import evaluation_set
from deeplense_tf.data.sources import load_data as _load_data
from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.evaluation.report import evaluate_predictions, predict, summary_line
from deeplense_tf.models.build import create_model as _create_model
from deeplense_tf.models.export import load_run_model
from deeplense_tf.models.registry import list_archs
from deeplense_tf.sim.generate import cached_simulation, simulate as _simulate
from deeplense_tf.training.calibrate import calibrate_run, read_calibration
from deeplense_tf.training.trainer import resume_run, train_run

__all__ = ["Run", "RunConfig", "create_model", "evaluate", "list_archs", "load_data", "load_model", "load_run", "simulate",
           "train"]


@dataclass
class Run:
    """A run directory read back: its config, data facts (``data.json``), metrics and model."""

    path: Path
    config: RunConfig
    info: dict
    _model: keras.Model | None = field(default=None, repr=False)

    @property
    def metrics(self) -> dict:
        """``metrics.json`` (test metrics of the best checkpoint); {} before the run finished."""
        path = self.path / "metrics.json"
        return runs.read_json(path) if path.is_file() else {}

    @property
    def history(self) -> pd.DataFrame:
        """Loss and metrics per epoch (``history.csv``)."""
        return pd.read_csv(self.path / "history.csv")

    @property
    def model(self) -> keras.Model:
        """The trained model (``model.keras``, else the best or last checkpoint), loaded once."""
        if self._model is None:
            self._model = load_run_model(self.path)
        return self._model

    def predict(self, images: np.ndarray, batch_size: int = 64, tta: bool = False) -> np.ndarray:
        """Outputs for raw images as stored on disk, (N, H, W) or (N, H, W, C): the target in its own
        units (regression), class probabilities (classification), lens probability, anomaly score."""
        x = np.asarray(images, np.float32)
        if x.ndim == 3:
            x = x[..., None]
        expected = tuple(self.info["input_shape"])
        if x.shape[1:] != expected:
            raise UserError(f"images of shape {x.shape[1:]}; the model of {self.path} takes {expected} "
                            "(N, H, W, C), or (N, H, W) for one channel")
        out = predict(self.model, x, batch_size, tta)
        return out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out


def load_run(run_dir: str | Path) -> Run:
    """A run directory written by ``train`` (or ``dl.train``)."""
    path = runs.require_run_dir(Path(run_dir))
    return Run(path, RunConfig.load(path / runs.CONFIG), runs.read_json(path / runs.DATA_INFO))


def load_model(path: str | Path) -> keras.Model:
    """A ``.keras`` file written by this package (checkpoints, ``model.keras``) or a run folder's model.

    Importing ``deeplense_tf.api`` has registered every custom layer, schedule and loss; the file is
    loaded without its training state (``compile=False``)."""
    path = Path(path)
    if path.is_dir():
        return load_run_model(path)
    if not path.is_file():
        raise UserError(f"{path}: no such .keras file or run folder")
    return keras.models.load_model(path, compile=False)


def create_model(arch: str = "resnet18", task: str = "regression", input_shape: Sequence[int] = (64, 64, 1), *,
                 n_classes: int = 3, target_mean: float = 0.0, target_std: float = 1.0,
                 image_size: int | None = None, seed: int | None = None, **model_options: Any) -> keras.Model:
    """Raw images -> preprocessing -> augmentation -> backbone -> head, as ``train`` builds it.

    ``model_options``: any other ``ModelConfig`` field (``weights``, ``dropout``, ``normalization``...)."""
    config = _config_section(ModelConfig, {"arch": arch, "task": task, **model_options}, "model")
    return _create_model(config, tuple(int(v) for v in input_shape), n_classes=n_classes, target_mean=target_mean,
                         target_std=target_std, image_size=image_size, seed=seed)


def load_data(spec: str | Sequence[str] = "sim:model_ii", **options: Any) -> DataIndex:
    """Read and check any ``--data``: ``index.images`` (N, H, W, C) and ``index.table`` (one row per image).

    ``options``: ``samples``, ``seed``, ``allow_pickle``, ``workers``, ``validate``, ``skip_bad``,
    ``label_column``, ``classes``, ``stream`` (see ``deeplense_tf.data.sources.load_data``)."""
    return _load_data(spec, **options)


def simulate(preset: str = "model_ii", n_per_class: int = 100, out: str | Path | None = None, *, seed: int = 0,
             workers: int | None = None, noise: str = "on", geometry: str = "deeplensesim",
             progress: bool = True) -> Path:
    """Simulate ``n_per_class`` images per class into ``out`` (``<class>/*.npy`` + ``metadata.csv``),
    or, without ``out``, into the cache that ``sim:<preset>`` data reads. Returns the folder."""
    if out is None:
        return cached_simulation(preset, n_per_class, seed, workers=workers, progress=progress, noise=noise,
                                 geometry=geometry)
    return _simulate(preset, n_per_class, seed, out, workers=workers, noise=noise, progress=progress,
                     geometry=geometry)


def train(config: RunConfig | None = None, *, resume: str | Path | None = None, **options: Any) -> Run:
    """Train, evaluate on the test split and export, as ``python -m deeplense_tf.train``; returns the run.

    ``options`` are the train flags' names (``arch``, ``task``, ``data``, ``samples``, ``epochs``,
    ``batch_size``, ``lr``, ``out``...), applied over ``config`` (default: the defaults). ``resume``:
    a run folder to continue (``options`` may then hold ``epochs`` only)."""
    prepare_environment()
    if resume is not None:
        unknown = sorted(set(options) - {"epochs"})
        if unknown or config is not None:
            raise ConfigError(f"train(resume=...) continues a run with its saved config; only epochs may be given. "
                              f"Received: {', '.join(unknown) or 'config'}")
        return load_run(resume_run(Path(resume), epochs=options.get("epochs")))
    return load_run(train_run(config_from_options(options, config)))


def evaluate(run: Run | str | Path, data: str | Sequence[str] | None = None, *, tta: bool = False,
             out: str | Path | None = None, batch_size: int = 64, allow_pickle: bool = False,
             verbose: bool = True, plot_format: str | None = None) -> dict:
    """Metrics of a run on its own test split or on every labelled image of ``data``, as
    ``python -m deeplense_tf.evaluate``: writes ``metrics.json``, ``predictions.csv`` and the plots
    into ``out`` (default ``RUN/eval-<data>``; plots as ``plot_format``, default the run's own) and
    returns the metrics document (``document["out"]`` names the folder)."""
    run = run if isinstance(run, Run) else load_run(run)
    images, y, table, split = evaluation_set(run.config, run.info, run.path, data, allow_pickle)
    name = "test" if data is None else re.sub(r"[^\w.-]+", "_", Path(str(data)).name)
    out_dir = Path(out) if out else run.path / f"eval-{name}{'-tta' if tta else ''}"
    calibration = read_calibration(run.path)[0]
    if calibration is None and run.config.model.task != "anomaly":
        calibration = calibrate_run(run.path, run.config, run.model, batch_size)
    outputs = predict(run.model, images, batch_size, tta)
    document = evaluate_predictions(run.config.model.task, y, outputs, run.info, table, out_dir,
                                    {"run": str(run.path), "data": data or run.info["source"], "split": split,
                                     "tta": tta, "n": int(len(y))}, model=run.model, images=images,
                                    calibration=calibration,
                                    plot_format=plot_format or run.config.train.plot_format)
    if verbose:
        print(summary_line(document))
        print(f"metrics, predictions and plots in {out_dir}")
    return {**document, "out": str(out_dir)}


def _config_section(cls: type, values: dict, section: str):
    unknown = sorted(set(values) - set(FLAG_FIELDS[section]))
    if unknown:
        raise ConfigError(f"unknown {section} setting(s) {unknown}; expected fields of {cls.__name__}")
    return getattr(replace(RunConfig(), **{section: values}), section)
