"""Schedules, BatchNorm recalibration, losses, class weights, SAM and their train flags."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deeplense_tf import train
from deeplense_tf.training.batchnorm import BatchNormRecalibrator, batch_norm_layers
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.errors import ConfigError
from deeplense_tf.training.losses import SparseSmoothedCrossentropy
from deeplense_tf.training.sam import enable_sam
from deeplense_tf.training.schedules import OneCycle, WarmupCosine, learning_rate
from deeplense_tf.training.trainer import class_weight_table, with_class_weights
from tests.helpers import TINY_SIM_FLAGS, train_tiny_sim_run


def _rates(schedule, steps):
    return np.array([float(schedule(s)) for s in range(steps)])


def test_warmup_cosine_shape():
    lr = _rates(WarmupCosine(1e-3, total_steps=100, warmup_steps=10, final_ratio=0.01), 120)
    np.testing.assert_allclose(lr[:10], 1e-3 * np.arange(1, 11) / 10, rtol=1e-5)
    assert lr[10:].max() <= 1e-3 + 1e-9 and np.all(np.diff(lr[9:100]) <= 1e-12)
    np.testing.assert_allclose(lr[99:], 1e-5, rtol=1e-3)
    np.testing.assert_allclose(lr[54], 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + np.cos(np.pi * 45 / 90)), rtol=1e-4)


def test_one_cycle_shape():
    lr = _rates(OneCycle(1e-2, total_steps=100, pct_start=0.3, div=25, final_div=1e4), 100)
    assert lr[0] == pytest.approx(1e-2 / 25, rel=1e-4)
    assert lr.argmax() == 30 and lr.max() == pytest.approx(1e-2, rel=1e-4)
    assert lr[-1] < 1e-5 and np.all(np.diff(lr[:30]) > 0) and np.all(np.diff(lr[30:]) < 0)


def test_schedule_round_trips_through_optimizer_config():
    optimizer = keras.optimizers.Adam(learning_rate("cosine", 1e-3, steps_per_epoch=10, epochs=3, warmup_epochs=1))
    again = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert isinstance(again._learning_rate, WarmupCosine) and again._learning_rate.total_steps == 30
    assert learning_rate("plateau", 1e-3, 10, 3) == 1e-3


def _bn_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, kernel_initializer="ones", use_bias=False)(inputs)
    outputs = keras.layers.BatchNormalization(momentum=0.99)(x)
    return keras.Model(inputs, outputs)


def test_recalibration_gives_the_population_statistics():
    model = _bn_model()
    rng = np.random.default_rng(0)
    x = (5.0 + 2.0 * rng.standard_normal((640, 4))).astype("float32")
    features = x.sum(axis=1)  # every Dense unit sums the 4 inputs
    (bn,) = batch_norm_layers(model)
    assert np.allclose(bn.moving_mean.numpy(), 0)  # never trained: the initial statistics
    used = BatchNormRecalibrator(model, batches=20)(tf.data.Dataset.from_tensor_slices(x).batch(32))
    assert used == 20
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(), rtol=0.02)
    np.testing.assert_allclose(bn.moving_variance.numpy(), features.var(), rtol=0.15)
    out = model.predict(x, verbose=0)
    assert abs(out.mean()) < 0.1 and out.std() == pytest.approx(1.0, abs=0.1)
    assert bn.momentum == 0.99  # restored


def test_recalibration_skips_frozen_batchnorm():
    model = _bn_model()
    model.layers[-1].trainable = False
    assert batch_norm_layers(model) == []


def test_class_weight_table_and_dataset():
    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(class_weight_table(y), [4 / 6, 2.0])
    ds = with_class_weights(tf.data.Dataset.from_tensor_slices((np.zeros((4, 2)), y)).batch(4), y)
    _, _, w = next(iter(ds))
    np.testing.assert_allclose(w.numpy(), [4 / 6] * 3 + [2.0])


def test_smoothed_sparse_crossentropy_matches_keras_categorical():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    y = np.array([0, 2])
    ours = SparseSmoothedCrossentropy(0.1)(y, probs)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], probs)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)
    assert float(SparseSmoothedCrossentropy(0.0)(y, probs)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(y, probs)), rel=1e-6)
    again = keras.losses.deserialize(keras.losses.serialize(SparseSmoothedCrossentropy(0.2)))
    assert again.label_smoothing == 0.2


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(4, activation="tanh")(inputs)))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def test_sam_step_differs_from_plain_and_vanishes_with_rho():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    results = {}
    for name, rho in (("plain", 0.0), ("tiny", 1e-6), ("sam", 0.5)):
        model = enable_sam(_linear_model(), rho)
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        results[name] = np.concatenate([w.ravel() for w in model.get_weights()])
        assert np.isfinite(history.history["loss"][0])
    np.testing.assert_allclose(results["tiny"], results["plain"], atol=1e-5)
    assert np.abs(results["sam"] - results["plain"]).max() > 1e-3


def test_sam_leaves_batchnorm_statistics_as_one_plain_forward_pass():
    """The pass at the perturbed weights must not move BatchNorm's averages a second time."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(3.0, 2.0, size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    statistics = {}
    for name, rho in (("forward", None), ("plain", 0.0), ("sam", 0.5)):
        model = _bn_model()  # the same weights every time (constant initialisers)
        model.compile(keras.optimizers.SGD(0.1), "mse")
        if rho is None:
            model(x, training=True)  # one forward pass in training mode, at the starting weights
        else:
            enable_sam(model, rho).fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
        (bn,) = batch_norm_layers(model)
        statistics[name] = np.concatenate([bn.moving_mean.numpy(), bn.moving_variance.numpy()])
    assert not np.allclose(statistics["forward"], [0, 0, 0, 1, 1, 1])  # the pass did move them
    np.testing.assert_allclose(statistics["plain"], statistics["forward"], rtol=1e-6)
    np.testing.assert_allclose(statistics["sam"], statistics["forward"], rtol=1e-6)


def test_config_rejects_bad_optimisation_values():
    for changes, word in (({"schedule": "linear"}, "schedule"), ({"loss": "l1"}, "loss"),
                          ({"label_smoothing": 1.0}, "label_smoothing"), ({"class_weights": "auto"}, "class_weights"),
                          ({"sam_rho": -1.0}, "sam_rho"), ({"early_stopping": -1}, "early_stopping")):
        with pytest.raises(ConfigError, match=word):
            replace(RunConfig(), train=changes)
    with pytest.raises(ConfigError, match="regression only"):
        replace(RunConfig(), model={"task": "classification"}, train={"loss": "huber"})


COMMON = list(TINY_SIM_FLAGS)


def _train(out: Path, *flags: str) -> Path:
    return train_tiny_sim_run(out, *flags)


def test_train_flags_reach_the_run(sim_cache, tmp_path):
    run = _train(tmp_path, "--task", "classification", "--epochs", "2", "--schedule", "onecycle",
                 "--label-smoothing", "0.1", "--class-weights", "balanced", "--clipnorm", "1.0",
                 "--sam", "0.05", "--optimizer", "sgd", "--momentum", "0.8", "--bn-recalibration", "2")
    t = json.loads((run / "config.json").read_text())["train"]
    assert (t["schedule"], t["label_smoothing"], t["class_weights"], t["sam_rho"], t["momentum"]) == \
        ("onecycle", 0.1, "balanced", 0.05, 0.8)
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and "learning_rate" in history
    steps = -(-len(pd.read_csv(run / "split.csv").query("split == 'train'")) // 4)
    expected = [float(OneCycle(1e-3, 2 * steps)(steps * e)) for e in (1, 2)]  # the rate after each epoch
    np.testing.assert_allclose(history["learning_rate"], expected, rtol=1e-4)
    model = keras.models.load_model(run / "checkpoints/last.keras", compile=True)
    assert isinstance(model.loss, SparseSmoothedCrossentropy) and model.optimizer.clipnorm == 1.0


def test_regression_huber_with_early_stopping_and_plateau(sim_cache, tmp_path):
    run = _train(tmp_path, "--task", "regression", "--epochs", "3", "--loss", "huber", "--schedule", "plateau",
                 "--early-stopping", "1", "--bn-recalibration", "0")
    history = pd.read_csv(run / "history.csv")
    assert 2 <= len(history) <= 3  # stops when val_loss fails to improve once
    np.testing.assert_allclose(history["learning_rate"], 1e-3, rtol=1e-6)  # stored as float32
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["mae"])


def test_mixed_precision_run_keeps_float32_outputs(sim_cache, tmp_path):
    try:
        run = _train(tmp_path, "--task", "classification", "--epochs", "1", "--mixed-precision")
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # no GPU here
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the other tests build float32 models
    assert json.loads((run / "config.json").read_text())["train"]["mixed_precision"] is True
    probs = pd.read_csv(run / "predictions.csv").filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)


def test_lr_suggestion_on_a_known_curve():
    from deeplense_tf.lr_find import smooth, suggest

    lrs = np.logspace(-6, 0, 60)
    loss = 1.0 / (1.0 + np.exp(4 * (np.log10(lrs) + 3)))  # falls fastest at 1e-3
    loss[50:] = np.linspace(loss[49], 5, 10)  # then diverges
    np.testing.assert_allclose(smooth(np.ones(5)), 1.0)
    rate = suggest(lrs, loss)
    assert 3e-4 < rate < 2e-3
    assert suggest(lrs[:6], loss[:6]) is None


def test_lr_find_command(sim_cache, tmp_path, capsys):
    from deeplense_tf import lr_find

    assert lr_find.main([*COMMON, "--out", str(tmp_path), "--task", "classification", "--steps", "12",
                         "--min-lr", "1e-5", "--max-lr", "1"]) == 0
    (out,) = tmp_path.iterdir()
    table = pd.read_csv(out / "lr_find.csv")
    assert 6 <= len(table) <= 12 and np.all(np.diff(table["learning_rate"]) > 0)
    assert table["learning_rate"].iloc[0] == pytest.approx(1e-5)
    assert (out / "lr_find.png").stat().st_size > 0
    assert "deeplense_tf.train" in capsys.readouterr().out
    assert lr_find.main([*COMMON, "--out", str(tmp_path), "--min-lr", "1", "--max-lr", "0.1"]) == 2


def test_lr_find_refuses_multiworker(tmp_path, capsys):
    from deeplense_tf import lr_find

    assert lr_find.main([*COMMON, "--out", str(tmp_path), "--strategy", "multiworker"]) == 2
    assert "lr_find runs on one machine" in capsys.readouterr().err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_check_room_refuses_full_disk_and_read_only_folder(tmp_path, monkeypatch):
    import os
    import shutil

    from deeplense_tf import runs
    from deeplense_tf.errors import UserError

    runs.check_room(tmp_path / "new" / "runs", 1000)  # a folder still to be created is fine
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(UserError, match="not enough disk space.*1 MiB free"):
        runs.check_room(tmp_path, 1000)
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(UserError, match="not writable"):
        runs.check_room(tmp_path, 1000)


def test_recalibration_follows_layers_unfrozen_later():
    model = _bn_model()
    bn = model.layers[-1]
    bn.trainable = False
    recalibrate = BatchNormRecalibrator(model, batches=4)
    x = (3.0 + np.random.default_rng(1).standard_normal((128, 4))).astype("float32")
    assert recalibrate(tf.data.Dataset.from_tensor_slices(x).batch(32)) == 0
    bn.trainable = True
    assert recalibrate(tf.data.Dataset.from_tensor_slices(x).batch(32)) == 4
    np.testing.assert_allclose(bn.moving_mean.numpy(), x.sum(axis=1).mean(), rtol=0.05)


@pytest.mark.parametrize("mode", ["minmax", "asinh", "clip"])
def test_normalizations(mode):
    from deeplense_tf.models.preprocess import PerImageNormalize

    rng = np.random.default_rng(2)
    x = (100.0 + 5.0 * rng.standard_normal((3, 16, 16, 1))).astype("float32")
    x[0, 3, 3, 0] = 1e6  # a hot pixel
    y = np.asarray(PerImageNormalize(mode)(x))
    assert y.shape == x.shape and np.isfinite(y).all()
    if mode == "minmax":
        np.testing.assert_allclose(y.min(axis=(1, 2, 3)), 0, atol=1e-6)
        np.testing.assert_allclose(y.max(axis=(1, 2, 3)), 1, atol=1e-6)
    elif mode == "asinh":
        assert y[0].max() < 6  # asinh(255 sigma) ~ 6.2 compresses the hot pixel
    else:
        def standardize(a):
            return (a - a.mean(axis=(1, 2, 3), keepdims=True)) / a.std(axis=(1, 2, 3), keepdims=True)

        np.testing.assert_allclose(y, standardize(np.clip(standardize(x.astype("float64")), -3, 10)), atol=1e-3)
    again = PerImageNormalize.from_config(PerImageNormalize(mode).get_config())
    assert again.mode == mode


def test_model_options_reach_the_model():
    from deeplense_tf.models.build import create_model

    config = replace(RunConfig(), model={"arch": "mobilenet_v3_small", "task": "classification",
                                         "normalization": "asinh", "shift": 0.1, "noise": 0.05})
    model = create_model(config.model, (32, 32, 1), n_classes=3, seed=0)
    names = [layer.name for layer in model.layers]
    assert "random_shift" in names and "random_noise" in names
    assert any(type(layer).__name__ == "PerImageNormalize" for layer in model.layers)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=False)))
    in_pipeline = replace(config, model={"augment_in_pipeline": True})
    names = [layer.name for layer in create_model(in_pipeline.model, (32, 32, 1), n_classes=3).layers]
    assert not any(name.startswith("random_") for name in names)
    with pytest.raises(ConfigError, match="normalization"):
        replace(RunConfig(), model={"normalization": "log"})


def test_cmu_normalization_masks_clips_and_scales():
    from deeplense_tf.models.preprocess import PerImageNormalize

    x = np.array([100.0, 5e-10, -3e-9, 2e-9, 0.0], "float32").reshape(1, 1, 5, 1)
    np.testing.assert_allclose(np.asarray(PerImageNormalize("cmu")(x)).ravel(), [0, 50, -100, 100, 0], rtol=1e-5)
