"""python -m deeplense_tf.ensemble: two tiny runs averaged, exported, and mismatched runs refused."""

import json
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pandas as pd
import pytest

from tests.helpers import CLASSES, tiny_images
from deeplense_tf import ensemble, train
from deeplense_tf.evaluation.calibration import apply_temperature
from deeplense_tf.training import trainer
import deeplense_tf.api  # noqa: F401  (registers the layers, schedules and losses for load_model)

ARCHS = ("mobilenet", "mobilenet_v3_small")  # the quickest to train here; two architectures, a realistic ensemble


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens_data")
    np.save(root / "images.npy", tiny_images(24, 32, seed=7))
    np.save(root / "labels.npy", np.array(CLASSES * 8))
    return root


@pytest.fixture(scope="module")
def member_runs(data_dir, tmp_path_factory):
    """Two trained runs; the test-set evaluation and export at the end of train are skipped (not used here)."""
    runs = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "finish", lambda config, data, run_dir: run_dir)
        for arch in ARCHS:
            out = tmp_path_factory.mktemp(arch)
            assert train.main(["--data", str(data_dir), "--task", "classification", "--arch", arch, "--epochs", "1",
                               "--batch-size", "4", "--workers", "1", "--out", str(out)]) == 0
            runs += list(out.iterdir())
    return runs


@pytest.fixture(scope="module")
def ensemble_dir(member_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble_out")
    assert ensemble.main([*map(str, member_runs), "--out", str(out)]) == 0
    return out


def test_writes_metrics_of_members_and_ensemble(ensemble_dir, member_runs):
    doc = json.loads((ensemble_dir / "metrics.json").read_text())
    assert [m["run"] for m in doc["members"]] == [str(r) for r in member_runs]
    assert all(m["checkpoint"].endswith("best.keras") for m in doc["members"])
    assert all(0 <= m["metrics"]["accuracy"] <= 1 for m in doc["members"])
    split = pd.read_csv(member_runs[0] / "split.csv")
    assert doc["n"] == (split["split"] == "test").sum()
    assert 0 <= doc["metrics"]["accuracy"] <= 1 and "roc_auc_macro_ovr" in doc["metrics"]
    for name in ("predictions.csv", "export/saved_model", "model.keras", "ensemble.json", "data.json", "plots"):
        assert (ensemble_dir / name).exists()


def test_ensemble_predictions_are_the_members_mean(ensemble_dir):
    frames = [pd.read_csv(p) for p in sorted((ensemble_dir / "members").glob("*/predictions.csv"))]
    mean = np.mean([f.filter(like="prob_").to_numpy() for f in frames], axis=0)
    temperature = json.loads((ensemble_dir / "calibration.json").read_text())["temperature"]
    ours = pd.read_csv(ensemble_dir / "predictions.csv").filter(like="prob_").to_numpy()
    np.testing.assert_allclose(ours, apply_temperature(mean, temperature), atol=1e-5)  # calibrated on the val split


def test_exported_model_is_the_mean_in_keras_and_plain_tensorflow(ensemble_dir, member_runs, data_dir, tmp_path):
    split = pd.read_csv(member_runs[0] / "split.csv")
    images = np.load(data_dir / "images.npy")[split.loc[split["split"] == "test", "row"].to_numpy(), :, :, None]
    expected = pd.read_csv(ensemble_dir / "predictions.csv").filter(like="prob_").to_numpy()  # calibrated mean
    temperature = json.loads((ensemble_dir / "calibration.json").read_text())["temperature"]
    ours = keras.models.load_model(ensemble_dir / "model.keras", compile=False).predict(images, verbose=0)
    np.testing.assert_allclose(apply_temperature(ours, temperature), expected, atol=1e-5)
    np.save(tmp_path / "x.npy", images)
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(ensemble_dir / "export/saved_model")!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        a, b = m.serve(x)["probabilities"].numpy(), m.serve(x)["probabilities"].numpy()
        assert np.array_equal(a, b), "two calls differ: augmentation is on in the export"
        np.save({str(tmp_path / "y.npy")!r}, a)
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / f"copy-of-{run.name}")


def test_different_test_split_is_refused_naming_the_run(member_runs, tmp_path, capsys):
    other = _copy(member_runs[1], tmp_path)
    split = pd.read_csv(other / "split.csv")
    split["split"] = split["split"].to_numpy()[::-1]
    split.to_csv(other / "split.csv", index=False)
    assert ensemble.main([str(member_runs[0]), str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "different test split" in err


def test_different_classes_are_refused_naming_the_run(member_runs, tmp_path, capsys):
    other = _copy(member_runs[1], tmp_path)
    info = json.loads((other / "data.json").read_text())
    info["class_names"] = ["lens", "no_lens", "other"]
    (other / "data.json").write_text(json.dumps(info))
    assert ensemble.main([str(member_runs[0]), str(other), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "class names" in err


def test_one_run_is_not_an_ensemble(member_runs, capsys):
    assert ensemble.main([str(member_runs[0])]) == 2
    assert "two or more runs" in capsys.readouterr().err
