"""Tiny real runs on simulated Model II data: train -> metrics -> checkpoints -> SavedModel."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deeplense_tf import evaluate, predict, train
from deeplense_tf.evaluation.calibration import apply_temperature
from tests.helpers import TINY_SIM_FLAGS, train_tiny_sim_run

ARCH = "mobilenet_v3_small"
COMMON = [*TINY_SIM_FLAGS, "--epochs", "1"]


def _train(out: Path, *flags: str) -> Path:
    return train_tiny_sim_run(out, "--epochs", "1", *flags)


@pytest.fixture(scope="module")
def classification_run(sim_cache, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cls"), "--task", "classification")


@pytest.fixture(scope="module")
def regression_run(sim_cache, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("reg"), "--task", "regression")


@pytest.mark.parametrize("name", ["config.json", "data.json", "split.csv", "history.csv", "metrics.json",
                                  "predictions.csv", "model.keras", "checkpoints/last.keras",
                                  "checkpoints/best.keras", "checkpoints/state.json", "export/saved_model", "logs"])
def test_run_directory_is_complete(classification_run, name):
    assert (classification_run / name).exists()


def test_classification_metrics(classification_run):
    doc = json.loads((classification_run / "metrics.json").read_text())
    m = doc["metrics"]
    assert doc["split"] == "test" and doc["n"] == 6
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["roc_auc_macro_ovr"] <= 1 and 0 <= m["roc_auc_macro_ovo"] <= 1
    assert set(m["per_class_auc"]) == {"axion", "cdm", "no_sub"}
    assert np.asarray(m["confusion_matrix"]).sum() == 6
    assert len(list((classification_run / "plots").glob("*.png"))) >= 2


def test_regression_metrics_in_dex(regression_run):
    m = json.loads((regression_run / "metrics.json").read_text())["metrics"]
    assert {"mae", "rmse", "r2"} <= set(m) and m["rmse"] >= m["mae"] > 0
    frame = pd.read_csv(regression_run / "predictions.csv")
    assert frame["true_log10_axion_mass"].between(-24, -22).all()
    np.testing.assert_allclose(frame["pred_axion_mass"], 10 ** frame["pred_log10_axion_mass"], rtol=1e-5)


def test_the_kept_checkpoint_scores_on_validation_what_fit_logged(regression_run):
    """finish re-measures best.keras on the validation split (training/revalidate.py): a sound run agrees."""
    check = json.loads((regression_run / "metrics.json").read_text())["revalidation"]
    (best,) = check["checkpoints"].values()
    assert check["monitor"] == "val_loss" and check["disagreement"] is False and check["kept"] == best["epoch"] == 1
    assert best["measured"] == pytest.approx(best["logged"], rel=1e-4)


def test_saved_model_in_fresh_process_matches_keras(classification_run, tmp_path):
    import keras

    images = np.random.default_rng(0).random((5, 64, 64, 1)).astype(np.float32) * 10
    temperature = json.loads((classification_run / "calibration.json").read_text())["temperature"]
    raw = keras.models.load_model(classification_run / "model.keras").predict(images, verbose=0)
    expected = apply_temperature(raw, temperature)  # the export serves calibrated probabilities
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(classification_run / "export/saved_model")!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        a, b = m.serve(x)["probabilities"].numpy(), m.signatures["serving_default"](images=x)["probabilities"]
        b = b.numpy()
        assert np.allclose(a, b, atol=1e-6), "two calls differ: augmentation is on in the export"
        np.save({str(tmp_path / "y.npy")!r}, a)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def test_predict_prints_class_names(classification_run, sim_cache, capsys, tmp_path):
    files = sorted(sim_cache.rglob("cdm/*.npy"))[:3]
    assert predict.main(["--model", str(classification_run), *map(str, files), "--out", str(tmp_path / "p.csv")]) == 0
    frame = pd.read_csv(tmp_path / "p.csv")
    assert len(frame) == 3 and set(frame["predicted"]) <= {"axion", "cdm", "no_sub"}
    np.testing.assert_allclose(frame.filter(like="prob_").sum(1), 1, atol=1e-4)


def test_predict_regression_in_ev(regression_run, sim_cache, tmp_path):
    files = sorted(sim_cache.rglob("axion/*.npy"))[:2]
    assert predict.main(["--model", str(regression_run), *map(str, files), "--out", str(tmp_path / "p.csv")]) == 0
    frame = pd.read_csv(tmp_path / "p.csv")
    assert (frame["pred_axion_mass"] > 0).all() and frame["pred_log10_axion_mass"].notna().all()


def test_evaluate_with_tta(classification_run, tmp_path):
    assert evaluate.main([str(classification_run), "--tta", "--out", str(tmp_path / "ev")]) == 0
    doc = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert doc["tta"] is True and "roc_auc_macro_ovr" in doc["metrics"]


def test_resume_continues_from_last_epoch(regression_run, capsys):
    assert train.main(["--resume", str(regression_run), "--epochs", "2"]) == 0
    history = pd.read_csv(regression_run / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert json.loads((regression_run / "checkpoints/state.json").read_text())["epochs_done"] == 2
    assert "resuming" in capsys.readouterr().out


@pytest.mark.slow  # two tiny runs (about 100 s in CI); restart_run, the same path, runs in CI in
# test_requeue_and_plots.py::test_resume_with_no_loadable_checkpoint_starts_over
def test_resume_of_a_run_killed_in_its_first_epoch_starts_it_over(sim_cache, tmp_path, capsys):
    """What a requeued job finds after a kill in epoch 1: config, data.json, split.csv, no checkpoint."""
    run = _train(tmp_path / "killed", "--task", "classification")
    split = (run / "split.csv").read_text()
    for name in ("checkpoints/last.keras", "checkpoints/best.keras", "checkpoints/state.json", "metrics.json",
                 "model.keras"):
        (run / name).unlink()
    assert train.main(["--resume", str(run)]) == 0
    assert "starting it over from its saved config" in capsys.readouterr().out
    assert (run / "metrics.json").is_file() and (run / "checkpoints/last.keras").is_file()
    assert (run / "split.csv").read_text() == split and pd.read_csv(run / "history.csv")["epoch"].tolist() == [0]


def test_out_under_a_file_fails_before_any_data_are_read(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert train.main([*COMMON, "--data", str(tmp_path / "no_data_here"), "--out", str(tmp_path / "file" / "runs")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "no such file or folder" not in err
