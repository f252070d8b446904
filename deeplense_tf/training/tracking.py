"""Experiment trackers beside TensorBoard: ``--tracker mlflow`` logs every run to MLflow.

MLflow is an optional extra (``pip install -e ".[mlflow]"``); ``--tracker mlflow`` without it is
refused before any data are read. The tracking server is MLflow's own setting
(``MLFLOW_TRACKING_URI``); without it the runs go to a local SQLite store, ``<--out>/mlflow.db``, with
their artifacts in ``<--out>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///<--out>/mlflow.db``).
MLflow 3 refuses its plain file store (``./mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE`` is set: a
database is its supported local backend. Each run directory keeps its MLflow run id
(``mlflow_run_id.txt``), so ``--resume`` continues the same MLflow run: a requeued job adds its
epochs to the run it started, not a new one. Logged: every config field as a parameter
(``train.lr``, ``model.arch``, ...), the epoch's logs as metrics (step = epoch), and at the end the
test metrics (``test_mae``, ``test_roc_auc_macro_ovr``, ...) with ``metrics.json`` and the plots as
artifacts.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import keras

from deeplense_tf import runs
from deeplense_tf.errors import ConfigError

MLFLOW_RUN_ID = "mlflow_run_id.txt"
EXPERIMENT = "deeplense_tf"
LOCAL_STORE, LOCAL_ARTIFACTS = "mlflow.db", "mlartifacts"


def load_mlflow():
    """The ``mlflow`` module, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError("--tracker mlflow needs MLflow, which is not installed: pip install -e \".[mlflow]\" "
                          "(or pip install mlflow), or leave --tracker at none") from None


def check_tracker(tracker: str) -> None:
    """Refuse a tracker whose library is missing (before any data are read)."""
    if tracker == "mlflow":
        load_mlflow()


def flat_params(config: dict) -> dict[str, str]:
    """``{"train": {"lr": 0.001}}`` -> ``{"train.lr": "0.001"}`` (MLflow parameters are strings)."""
    return {f"{section}.{name}": str(value) for section, fields in config.items() for name, value in fields.items()}


def numeric(logs: dict | None, prefix: str = "") -> dict[str, float]:
    out = {}
    for name, value in (logs or {}).items():
        try:
            out[f"{prefix}{name}"] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def use_local_store(mlflow, out: Path) -> None:
    """Track into ``out/mlflow.db``; the experiment, made here the first time, keeps its artifacts in
    ``out/mlartifacts`` (MLflow would put them under the working directory)."""
    mlflow.set_tracking_uri(f"sqlite:///{out / LOCAL_STORE}")
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        try:
            mlflow.create_experiment(EXPERIMENT, artifact_location=(out / LOCAL_ARTIFACTS).as_uri())
        except mlflow.exceptions.MlflowException:  # a run started beside this one made it first
            if mlflow.get_experiment_by_name(EXPERIMENT) is None:
                raise


def start_run(mlflow, run_dir: Path, params: dict[str, str] | None = None):
    """Open the run directory's MLflow run (a new one the first time, the same one on --resume)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        use_local_store(mlflow, Path(run_dir).resolve().parent)
    mlflow.set_experiment(EXPERIMENT)
    id_file = Path(run_dir) / MLFLOW_RUN_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    active = mlflow.start_run(run_id=run_id, run_name=None if run_id else Path(run_dir).name)
    if run_id is None:
        runs.atomic_write_text(id_file, active.info.run_id + "\n")
        if params:
            mlflow.log_params(params)
    return active


class MLflowLogger(keras.callbacks.Callback):
    """Parameters when the run starts, the epoch's logs after each epoch (step = the epoch number)."""

    def __init__(self, run_dir: Path, config: dict, mlflow=None):
        super().__init__()
        self.run_dir, self.config_params = Path(run_dir), flat_params(config)  # Keras owns self.params
        self.mlflow = mlflow or load_mlflow()

    def on_train_begin(self, logs=None):
        start_run(self.mlflow, self.run_dir, self.config_params)

    def on_epoch_end(self, epoch, logs=None):
        self.mlflow.log_metrics(numeric(logs), step=epoch + 1)

    def on_train_end(self, logs=None):
        self.mlflow.end_run()


def log_results(run_dir: Path, metrics: dict, mlflow=None) -> None:
    """The test metrics (``test_<name>``) and the run's ``metrics.json`` and plots, into its MLflow run."""
    mlflow = mlflow or load_mlflow()
    start_run(mlflow, run_dir)
    try:
        mlflow.log_metrics(numeric(metrics, "test_"))
        for name in ("metrics.json", "predictions.csv"):
            if (Path(run_dir) / name).is_file():
                mlflow.log_artifact(str(Path(run_dir) / name))
        if (Path(run_dir) / "plots").is_dir():
            mlflow.log_artifacts(str(Path(run_dir) / "plots"), artifact_path="plots")
    finally:
        mlflow.end_run()
