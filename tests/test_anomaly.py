"""Anomaly detection: autoencoders trained on the normal class, scored on every class."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import write_class_folders
from deeplense_tf import train
from deeplense_tf.models.autoencoders import GaussianSample, KLScore, create_autoencoder
from helpers import assert_config_roundtrip


@pytest.mark.parametrize("arch", ["conv_autoencoder", "vae"])
def test_anomaly_run_scores_every_class(tmp_path, arch):
    data = write_class_folders(tmp_path / "data", per_class=6)
    argv = ["--task", "anomaly", "--arch", arch, "--normal-class", "no_sub", "--data", str(data),
            "--epochs", "1", "--batch-size", "2", "--out", str(tmp_path / "runs")]
    assert train.main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    doc = json.loads((run / "metrics.json").read_text())
    assert doc["n"] == 1 + 12  # the normal class's test image plus every other image
    assert {"auc_vs_all", "auc_vs_axion", "auc_vs_cdm"} <= set(doc["metrics"])
    exported = tf.saved_model.load(str(run / "export/saved_model"))
    served = exported.serve(tf.constant(np.random.default_rng(0).random((3, 32, 32, 1), np.float32)))
    score = served["anomaly_score"]
    assert score.shape == (3,) and np.all(np.asarray(score) >= 0)


def test_unknown_normal_class(tmp_path, capsys):
    data = write_class_folders(tmp_path / "data", per_class=4)
    assert train.main(["--task", "anomaly", "--normal-class", "lenses", "--data", str(data),
                       "--out", str(tmp_path / "r")]) == 2
    assert "no images of that class" in capsys.readouterr().err


def test_backbone_is_not_an_autoencoder():
    with pytest.raises(Exception, match="autoencoder"):
        create_autoencoder("efficientnet_b0", (32, 32, 1))


def test_score_is_deterministic_at_inference():
    model = create_autoencoder("vae", (32, 32, 1), seed=0)
    x = np.random.default_rng(1).random((2, 32, 32, 1), np.float32)
    np.testing.assert_allclose(model(x, training=False), model(x, training=False))


@pytest.mark.parametrize("layer", [GaussianSample(kl_weight=0.01, seed=2), KLScore(kl_weight=0.5)])
def test_layer_config_roundtrip(layer):
    assert_config_roundtrip(layer)
