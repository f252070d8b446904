"""Lens finding and anomaly detection end to end: balanced batches, the ranked candidate list
and mosaic, example reconstructions.

    python -m pytest -q tests/test_lensfinding_anomaly.py      # ~1-2 min on a loaded 2-core CPU
"""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from tests.helpers import tiny_images, write_class_folders
from deeplense_tf.evaluation import plots
from deeplense_tf import predict, train
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.data.npy import NpyFileImages
from deeplense_tf.data.pipeline import balanced_order, class_ids, create_dataset
from deeplense_tf.errors import ConfigError
from deeplense_tf.models.registry import create_backbone, get_arch

# 12 images, 2 of class 1: a 1-in-6 imbalance, the lens-finding situation in miniature.
IMBALANCED = np.array([0] * 5 + [1] + [0] * 5 + [1], np.float32).reshape(-1, 1)


def drain(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return xs, ys


@pytest.fixture(scope="module")
def sources(image_sources):
    assert isinstance(image_sources["files"], NpyFileImages)
    return image_sources


# ---- balanced sampling ------------------------------------------------------------------

def test_balanced_order_draws_classes_equally():
    classes = np.array([0] * 18 + [1] * 2 + [2] * 4)
    order = balanced_order(classes, seed=5)
    assert len(order) == 24 and np.bincount(classes[order]).tolist() == [8, 8, 8]
    assert all(sorted(classes[order[i:i + 3]]) == [0, 1, 2] for i in range(0, 24, 3))
    assert set(order[classes[order] == 1]) == {18, 19}  # the minority repeats, every row used
    assert np.bincount(order[classes[order] == 1]).max() == 4  # each minority row 4 times, not 8 + 0
    np.testing.assert_array_equal(order, balanced_order(classes, seed=5))
    assert not np.array_equal(order, balanced_order(classes, seed=6))


@pytest.mark.parametrize("kind, reader", [("array", "blocks"), ("files", "blocks"), ("files", "tf"),
                                          ("shards", "blocks")])
def test_balanced_batches_keep_pairs(sources, kind, reader):
    images = sources[kind]
    ds = create_dataset(images, IMBALANCED, 4, training=True, seed=1, balance=True, file_reader=reader)
    (xs1, ys1), (xs2, ys2) = drain(ds), drain(ds)
    assert [len(y) for y in ys1] == [4, 4, 4]
    assert all(int(y.sum()) == 2 for y in ys1)  # every batch: 2 of each class
    x1, y1 = np.concatenate(xs1), np.concatenate(ys1)
    reference = np.asarray(sources["array"])
    for x, y in zip(x1, y1):  # each image still carries its own label
        (row,) = [i for i in range(12) if np.array_equal(reference[i], x)]
        assert IMBALANCED[row] == y
    assert not all(np.array_equal(a, b) for a, b in zip(xs1, xs2))  # a new draw each epoch
    again = drain(create_dataset(images, IMBALANCED, 4, training=True, seed=1, balance=True, file_reader=reader))[0]
    np.testing.assert_array_equal(np.concatenate(again), x1)  # seeded


def test_balance_leaves_evaluation_alone(sources):
    x, y = drain(create_dataset(sources["array"], IMBALANCED, 5, training=False, balance=True))
    np.testing.assert_array_equal(np.concatenate(y), IMBALANCED)
    np.testing.assert_array_equal(np.concatenate(x), sources["array"])


def test_balance_refuses_what_it_cannot_do(sources):
    with pytest.raises(ValueError, match="non-integer"):
        class_ids(np.linspace(-24, -22, 12, dtype=np.float32).reshape(-1, 1))
    with pytest.raises(ValueError, match="cache"):
        create_dataset(sources["files"], IMBALANCED, 4, training=True, balance=True, cache=True)
    with pytest.raises(ConfigError, match="balance needs class labels"):
        replace(RunConfig(), train={"balance": True})  # regression, the default task
    config = train.config_from_args(train.build_parser().parse_args(["--task", "lens_finding", "--balance"]))
    assert config.train.balance is True and RunConfig().train.balance is False


# ---- the DeepLens ResNet ----------------------------------------------------------------

def test_deeplens_resnet_is_a_46_layer_preactivation_net():
    spec = get_arch("deeplens_resnet")
    assert spec.source == "deeplense_tf" and not spec.has_imagenet and spec.min_size <= 45
    backbone = create_backbone("deeplens_resnet", (45, 45, 4))  # the ground-based challenge stamps
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len([c for c in convs if "shortcut" not in c.name]) == 46 and backbone.output_shape == (None, 512)
    assert sum(isinstance(layer, keras.layers.Add) for layer in backbone.layers) == 15
    # pre-activation: every ELU follows a BatchNorm, none follows a residual sum
    acts = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Activation)]
    assert {type(a.input._keras_history.operation) for a in acts} == {keras.layers.BatchNormalization}
    assert isinstance(convs[1].input._keras_history.operation, keras.layers.Activation)  # no conv on raw sums


# ---- lens finding: train -> metrics -> ranked candidates -> mosaic ----------------------

def write_fits_survey(root, n=18, lenses=(1, 5, 9, 13, 16), size=16):
    """A Bologna-style tree: Band1/, Band2/ FITS per object, classifications.csv; lenses are brighter rings."""
    from astropy.io import fits

    ids = [200001 + i for i in range(n)]
    for k in (1, 2):
        (root / f"Band{k}").mkdir(parents=True, exist_ok=True)
        for i, obj in enumerate(ids):
            image = tiny_images(1, size, seed=i)[0] * (3.0 if i in lenses else 0.3) + k
            fits.writeto(root / f"Band{k}" / f"imageEUC_B{k}-{obj}.fits", image)
    pd.DataFrame({"ID": ids, "is_lens": [int(i in lenses) for i in range(n)]}).to_csv(
        root / "classifications.csv", index=False)
    return root


@pytest.fixture(scope="module")
def lens_run(tmp_path_factory, tiny_deeplens):
    tmp = tmp_path_factory.mktemp("lens")
    data = write_fits_survey(tmp / "survey")
    argv = ["--task", "lens_finding", "--arch", tiny_deeplens, "--data", str(data), "--balance",
            "--epochs", "1", "--batch-size", "4", "--out", str(tmp / "runs")]
    assert train.main(argv) == 0
    (run,) = (tmp / "runs").iterdir()
    return run, data


def test_lens_run_reports_imbalance_honest_metrics(lens_run):
    run, _ = lens_run
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["balance"] is True and config["model"]["arch"].endswith("deeplens_resnet")
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert {"auc", "tpr0", "tpr10", "average_precision", "prevalence"} <= set(metrics)
    for name in ("lens_roc.png", "lens_precision_recall.png", "lens_score_hist.png"):
        assert (run / "plots" / name).stat().st_size > 1000


def test_predict_ranks_candidates_and_draws_mosaic(lens_run, tmp_path):
    run, survey = lens_run
    out = tmp_path / "candidates.csv"
    assert predict.main(["--model", str(run), str(survey), "--out", str(out), "--mosaic", "4"]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 18 and frame["rank"].tolist() == list(range(1, 19))
    assert frame["lens_probability"].is_monotonic_decreasing
    assert set(frame["ID"]) == set(range(200001, 200019))
    assert frame["file"].str.startswith(str(survey)).all()
    assert (tmp_path / "candidates_top4.png").stat().st_size > 1000


def test_rank_is_stable_and_descending():
    np.testing.assert_array_equal(predict.rank_candidates([0.2, 0.9, 0.2, 0.95]), [3, 1, 0, 2])


def test_mosaic_checks_its_inputs(tmp_path):
    path = plots.candidate_mosaic(tiny_images(3, 16, channels=4), [0.9, 0.8, 0.1], ["a", "b", "c"],
                                  tmp_path / "m.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="as many scores and names"):
        plots.candidate_mosaic(tiny_images(3, 16, channels=1), [0.9, 0.8], ["a", "b", "c"], tmp_path / "n.png")


# ---- anomaly: reconstructions ---------------------------------------------------------------

def test_reconstruction_pair_is_what_the_score_compares():
    from deeplense_tf.models.autoencoders import create_autoencoder, reconstruction_model

    model = create_autoencoder("conv_autoencoder", (32, 32, 1), seed=0)
    x = tiny_images(3, 32, channels=1)
    standardised, reconstruction = reconstruction_model(model).predict(x, verbose=0)
    assert standardised.shape == reconstruction.shape == (3, 32, 32, 1)
    np.testing.assert_allclose(standardised.std(axis=(1, 2, 3)), 1.0, rtol=1e-3)  # not the raw image
    score = np.asarray(model(x, training=False))
    np.testing.assert_allclose(((standardised - reconstruction) ** 2).mean(axis=(1, 2, 3)), score, rtol=1e-4)


def test_reconstruction_examples_span_each_class():
    scores = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 9.0, 7.0])
    labels = ["cdm", "no_sub", "no_sub", "no_sub", "no_sub", "cdm", "axion"]
    rows = plots.reconstruction_examples(scores, labels, "no_sub", per_class=3)
    assert rows.tolist() == [1, 2, 4, 6, 0, 5]  # no_sub lowest/median/highest, then axion, then cdm


def test_anomaly_run_draws_reconstructions(tmp_path):
    data = write_class_folders(tmp_path / "data", per_class=6)
    argv = ["--task", "anomaly", "--arch", "conv_autoencoder", "--data", str(data), "--epochs", "1",
            "--batch-size", "2", "--out", str(tmp_path / "runs")]
    assert train.main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    for name in ("anomaly_reconstructions.png", "anomaly_score_hist.png", "anomaly_roc.png"):
        assert (run / "plots" / name).stat().st_size > 1000
