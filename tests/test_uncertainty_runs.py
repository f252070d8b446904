"""Uncertainty end to end on tiny runs: --uncertainty gaussian, calibration on the validation split,
metrics with intervals, predict's columns, the ensemble's total sigma, the export read by plain TensorFlow."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from deeplense_tf import ensemble, predict, train
from deeplense_tf.models.heads import GaussianEnsemble, GaussianOutput
from deeplense_tf.cli import config_from_args
from deeplense_tf.config import replace, validate
from deeplense_tf.errors import ConfigError
from deeplense_tf.train import build_parser
from deeplense_tf.training.losses import GaussianNLL, task_loss
from tests.helpers import TINY_SIM_FLAGS, train_tiny_sim_run



def _train(out: Path, *flags: str) -> Path:
    return train_tiny_sim_run(out, "--epochs", "1", *flags)


@pytest.fixture(scope="module")
def gaussian_run(sim_cache, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("gauss"), "--uncertainty", "gaussian")


def test_gaussian_nll_by_hand():
    y_pred = np.array([[0.0, 1.0], [1.0, 2.0]], np.float32)
    y = np.array([0.5, -1.0], np.float32)
    by_hand = np.mean([0.5 * np.log(2 * np.pi) + np.log(s) + 0.5 * ((t - m) / s) ** 2
                       for t, (m, s) in zip(y, y_pred)])
    assert float(GaussianNLL(beta=0.0)(y, y_pred)) == pytest.approx(by_hand, rel=1e-5)


def test_nll_beta_flag_sets_the_loss_and_is_refused_without_gaussian():
    config = config_from_args(build_parser().parse_args(["--uncertainty", "gaussian", "--nll-beta", "0"]))
    validate(config)
    loss = task_loss("regression", None, config.train, config.model)
    assert isinstance(loss, GaussianNLL) and loss.beta == 0.0
    assert task_loss("regression", None, config_from_args(build_parser().parse_args(
        ["--uncertainty", "gaussian"])).train, config.model).beta == 1.0
    with pytest.raises(ConfigError, match="--nll-beta .*--uncertainty gaussian"):
        config_from_args(build_parser().parse_args(["--nll-beta", "0"]))
    # a saved point-estimate config holds nll_beta too (0.5 before the default became 1): it still loads
    validate(replace(config, model={"uncertainty": "none"}, train={"nll_beta": 0.5}))
    with pytest.raises(ConfigError, match="nll_beta must be in"):
        validate(config_from_args(build_parser().parse_args(["--uncertainty", "gaussian", "--nll-beta", "2"])))


def test_gaussian_output_is_physical_mean_and_sigma():
    layer = GaussianOutput(mean=-23.0, std=0.5)
    out = np.asarray(layer(np.array([[1.0, np.log(4.0)]], np.float32)))
    np.testing.assert_allclose(out, [[-22.5, 1.0]], rtol=1e-6)  # sigma = exp(0.5 log 4) x 0.5


def test_ensemble_total_sigma_of_known_members():
    a = keras.ops.convert_to_tensor(np.array([[0.0, 1.0]], np.float32))
    b = keras.ops.convert_to_tensor(np.array([[2.0, 1.0]], np.float32))
    np.testing.assert_allclose(np.asarray(GaussianEnsemble()([a, b])), [[1.0, np.sqrt(2.0)]], rtol=1e-6)
    point = [keras.ops.convert_to_tensor(np.array([[v]], np.float32)) for v in (0.0, 2.0)]
    np.testing.assert_allclose(np.asarray(GaussianEnsemble()(point)), [[1.0, 1.0]], rtol=1e-6)


def test_gaussian_run_reports_intervals(gaussian_run):
    run = gaussian_run
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["conformal"]["normalised"] and len(calibration["conformal"]["quantiles"]) == 2
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert set(metrics["ci95"]) >= {"mae", "rmse"} and metrics["uncertainty"]["nll"] is not None
    low, high = metrics["ci95"]["mae"]
    assert low <= metrics["mae"] <= high
    frame = pd.read_csv(run / "predictions.csv")
    assert (frame["sigma_log10_axion_mass"] > 0).all()
    assert (frame["lower95_log10_axion_mass"] <= frame["lower68_log10_axion_mass"]).all()
    assert {"coverage.png", "residual_over_sigma.png"} <= {p.name for p in (run / "plots").iterdir()}


def test_predict_writes_mean_sigma_interval_and_flags(gaussian_run, sim_cache, tmp_path):
    run = gaussian_run
    files = sorted(Path(sim_cache).rglob("axion/*.npy"))[:3]
    out = tmp_path / "p.csv"
    assert predict.main(["--model", str(run), *map(str, files), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    for column in ("pred_log10_axion_mass", "sigma_log10_axion_mass", "lower68_log10_axion_mass",
                   "upper95_axion_mass", "outside_training_range", "feature_distance", "far_from_training"):
        assert column in frame, column
    assert (frame["lower68_log10_axion_mass"] < frame["pred_log10_axion_mass"]).all()
    # the same columns as the run's own predictions.csv (evaluate), less the truth and the simulator's
    evaluated = pd.read_csv(run / "predictions.csv")
    regression = [c for c in evaluated.columns if c.startswith(("pred_", "sigma_", "lower", "upper"))]
    assert regression and set(regression) <= set(frame.columns)


@pytest.mark.slow
def test_ensemble_reports_total_sigma(gaussian_run, tmp_path):
    """A second member on the same data and split (same seed), another initialisation (--init-seed)."""
    member = _train(tmp_path / "m2", "--uncertainty", "gaussian", "--init-seed", "1")
    out = tmp_path / "ens"
    assert ensemble.main([str(gaussian_run), str(member), "--out", str(out)]) == 0
    assert "conformal" in json.loads((out / "calibration.json").read_text())
    frame = pd.read_csv(out / "predictions.csv")
    assert (frame["sigma_log10_axion_mass"] > 0).all()


def test_ensemble_refuses_members_without_their_own_sigma(gaussian_run, tmp_path, capsys):
    import shutil

    plain = shutil.copytree(gaussian_run, tmp_path / "plain")
    config = json.loads((plain / "config.json").read_text())
    config["model"]["uncertainty"] = "none"
    (plain / "config.json").write_text(json.dumps(config))
    assert ensemble.main([str(gaussian_run), str(plain), "--out", str(tmp_path / "ens")]) == 2
    err = capsys.readouterr().err
    assert str(plain) in err and "--uncertainty" in err and not (tmp_path / "ens").exists()


def test_export_serves_named_outputs_and_metadata_in_plain_tensorflow(gaussian_run):
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(gaussian_run / "export/saved_model")!r})
        meta = json.loads(m.metadata().numpy())
        out = m.serve(tf.zeros([2, *meta["input_shape"]]))
        try:
            m.serve(tf.zeros([2, 32, 32, 1]))
            error = ""
        except tf.errors.InvalidArgumentError as exc:
            error = str(exc)
        print(json.dumps({{"outputs": sorted(out), "meta": meta, "error": error}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"mean", "sigma", "lower68", "upper95", "feature_distance"} <= set(result["outputs"])
    meta = result["meta"]
    assert meta["target"] == "log10_axion_mass" and meta["target_units"] == "log10(m_a / eV)"
    assert meta["input_shape"] == [64, 64, 1] and "conformal" in meta["calibration"]
    # A wrong shape: a short error naming the expected and the received shape.
    assert "shape (N, 64, 64, 1); received shape] [2 32 32 1]" in result["error"] and len(result["error"]) < 600


def test_evaluate_calibrates_a_run_made_before_calibration(gaussian_run, tmp_path):
    import shutil

    import deeplense_tf.api as dl

    old = shutil.copytree(gaussian_run, tmp_path / "old-run")
    (old / "calibration.json").unlink()
    (old / "calibration_features.npz").unlink()
    document = dl.evaluate(old, verbose=False)
    assert (old / "calibration.json").is_file()
    assert document["metrics"]["uncertainty"]["coverage_68_calibrated"] is not None


def test_shift_check_reports_flag_share_and_coverage(gaussian_run):
    from pipelines.shift_check import markdown, shift_rows

    (row,) = shift_rows(str(gaussian_run), [])
    assert row["images"] == 2 and 0 <= row["far_from_training"] <= 1 and row["coverage_68"] is not None
    assert markdown([row]).startswith("| data | images | far_from_training")
