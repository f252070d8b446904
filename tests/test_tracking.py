"""--tracker mlflow: parameters, epoch metrics, test metrics and artifacts reach MLflow; --resume continues the
same MLflow run; without MLflow the flag is refused before any data are read. MLflow is an optional extra
that this machine lacks: a recording stand-in with its API checks what we send, and the last test uses
the real library with its local SQLite store wherever it is installed."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from deeplense_tf import train
from deeplense_tf.config import RunConfig
from deeplense_tf.training import tracking
from tests.helpers import train_tiny_sim_run


class RecordingMlflow:
    """The part of the ``mlflow`` module the tracker uses, recording every call."""

    exceptions = SimpleNamespace(MlflowException=RuntimeError)

    def __init__(self):
        self.runs, self.active, self.uri, self.experiment, self.experiments = {}, None, None, None, {}

    def get_experiment_by_name(self, name):
        return self.experiments.get(name)

    def create_experiment(self, name, artifact_location=None):
        if name in self.experiments:
            raise self.exceptions.MlflowException(f"experiment {name} exists")
        self.experiments[name] = SimpleNamespace(name=name, artifact_location=artifact_location)

    def set_tracking_uri(self, uri):
        self.uri = uri

    def set_experiment(self, name):
        self.experiment = name

    def start_run(self, run_id=None, run_name=None):
        assert self.active is None, "a run is already active"
        if run_id is None:
            run_id = f"run{len(self.runs) + 1}"
            self.runs[run_id] = {"name": run_name, "params": {}, "metrics": [], "artifacts": [], "starts": 0}
        self.active = run_id
        self.runs[run_id]["starts"] += 1
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_params(self, params):
        self.runs[self.active]["params"].update(params)

    def log_metrics(self, metrics, step=None):
        self.runs[self.active]["metrics"].append((step, dict(metrics)))

    def log_artifact(self, path):
        self.runs[self.active]["artifacts"].append(Path(path).name)

    def log_artifacts(self, folder, artifact_path=None):
        self.runs[self.active]["artifacts"].append(f"{artifact_path}/")

    def end_run(self):
        self.active = None


def test_logger_logs_params_once_and_resume_continues_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fake, run_dir = RecordingMlflow(), tmp_path / "runs" / "resnet18-regression-1"
    run_dir.mkdir(parents=True)
    logger = tracking.MLflowLogger(run_dir, RunConfig().to_dict(), mlflow=fake)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 1.5, "val_mae": 0.4, "note": "text"})
    logger.on_train_end()
    (run_id,) = fake.runs
    record = fake.runs[run_id]
    assert (run_dir / tracking.MLFLOW_RUN_ID).read_text().strip() == run_id
    assert record["name"] == run_dir.name and fake.experiment == tracking.EXPERIMENT
    out = (tmp_path / "runs").resolve()
    assert fake.uri == f"sqlite:///{out / 'mlflow.db'}"
    assert fake.experiments[tracking.EXPERIMENT].artifact_location == (out / "mlartifacts").as_uri()
    assert record["params"]["train.lr"] == "0.001" and record["params"]["model.arch"] == "resnet18"
    assert record["metrics"] == [(1, {"loss": 1.5, "val_mae": 0.4})]
    # --resume: the same MLflow run, parameters not logged again, epochs continue
    resumed = tracking.MLflowLogger(run_dir, {"train": {"lr": 0.5}}, mlflow=fake)
    resumed.on_train_begin()
    resumed.on_epoch_end(1, {"loss": 1.0})
    resumed.on_train_end()
    assert list(fake.runs) == [run_id] and record["starts"] == 2
    assert record["params"]["train.lr"] == "0.001" and record["metrics"][-1] == (2, {"loss": 1.0})


def test_a_tracking_server_set_by_mlflow_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    fake = RecordingMlflow()
    tracking.start_run(fake, tmp_path, {})
    assert fake.uri is None  # MLflow reads the variable itself


def test_training_run_logs_to_mlflow(sim_cache, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fake = RecordingMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    run = train_tiny_sim_run(tmp_path, "--epochs", "2", "--tracker", "mlflow")
    (record,) = fake.runs.values()
    assert record["params"]["train.tracker"] == "mlflow"
    assert [step for step, _ in record["metrics"][:2]] == [1, 2] and "val_mae" in record["metrics"][0][1]
    final = record["metrics"][-1][1]
    assert "test_mae" in final and final["test_mae"] >= 0
    assert {"metrics.json", "predictions.csv", "plots/"} <= set(record["artifacts"])
    assert fake.active is None and (run / tracking.MLFLOW_RUN_ID).is_file()


def test_tracker_without_mlflow_is_refused_before_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    assert train.main(["--data", str(tmp_path / "not_read"), "--tracker", "mlflow", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "--tracker mlflow needs MLflow" in err and "not_read" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_real_mlflow_local_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    logger = tracking.MLflowLogger(run_dir, RunConfig().to_dict(), mlflow=mlflow)
    logger.on_train_begin()
    logger.on_epoch_end(0, {"loss": 2.0})
    logger.on_train_end()
    (run_dir / "metrics.json").write_text("{}")
    tracking.log_results(run_dir, {"mae": 0.1}, mlflow=mlflow)
    run_id = (run_dir / tracking.MLFLOW_RUN_ID).read_text().strip()
    run = mlflow.get_run(run_id)
    assert run.data.params["train.lr"] == "0.001" and run.data.metrics["test_mae"] == pytest.approx(0.1)
    (point,) = mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss")
    assert (point.step, point.value) == (1, 2.0)
    assert (tmp_path / "runs" / "mlflow.db").is_file()
    assert list((tmp_path / "runs" / "mlartifacts").rglob("metrics.json"))  # beside the runs, not in the cwd
