"""--freeze-backbone / --unfreeze-at: what trains when, BatchNorm statistics, and --resume."""

import keras
import numpy as np
import pandas as pd
import pytest

from tests.helpers import CLASSES, tiny_images
from deeplense_tf.training import finetune, trainer
from deeplense_tf import train
from deeplense_tf.config import ModelConfig, RunConfig, replace
from deeplense_tf.errors import ConfigError
from deeplense_tf.data.prepare import PreparedData
from deeplense_tf.models.build import create_model

ARCH = "mobilenet"  # has BatchNorm layers; the quickest to build and train here


def tiny_run(freeze=True, unfreeze_at=None, epochs=1) -> RunConfig:
    return replace(RunConfig(), model={"arch": ARCH, "task": "classification", "freeze_backbone": freeze,
                                       "unfreeze_at": unfreeze_at, "augment": False},
                   train={"epochs": epochs, "batch_size": 4, "seed": 0})


def tiny_data(n=12) -> PreparedData:
    y = np.arange(n) % 3
    data = PreparedData(tiny_images(n, 32, channels=1, seed=3), y, pd.DataFrame({"class": np.array(CLASSES)[y]}),
                        list(CLASSES))
    data.splits = {"train": np.arange(n - 4), "val": np.arange(n - 4, n), "test": np.arange(n - 4, n)}
    return data


def weights(layer) -> list[np.ndarray]:
    return [np.array(v) for v in layer.weights]  # trainable and BatchNorm moving statistics


def changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


class Snapshots(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.backbone, self.head = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.backbone.append(weights(finetune.backbone_of(self.model)))
        self.head.append(weights(self.model.get_layer("probabilities")))


def fit(config, tmp_path, model=None):
    model = model or create_model(config.model, (32, 32, 1), n_classes=3, seed=0)
    finetune.set_finetune_state(model, config.model, epoch=0)
    trainer.compile_model(model, config)
    start = (weights(finetune.backbone_of(model)), weights(model.get_layer("probabilities")))
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    snaps = Snapshots()
    trainer.fit_model(model, config, tiny_data(), tmp_path, extra_callbacks=(snaps,))
    return model, start, snaps


def test_head_trains_on_a_frozen_backbone_then_the_backbone_from_unfreeze_at(tmp_path):
    model, (backbone0, head0), snaps = fit(tiny_run(unfreeze_at=1, epochs=2), tmp_path)
    assert not changed(backbone0, snaps.backbone[0])  # epoch 1: weights and BatchNorm statistics alike
    assert changed(head0, snaps.head[0])
    assert changed(snaps.backbone[0], snaps.backbone[1])  # epoch 2: the backbone trains too
    assert not finetune.is_frozen(model) and len(model.trainable_variables) > 2


def test_pretrained_unfreeze_keeps_batchnorm_in_inference_mode():
    model = create_model(ModelConfig(arch=ARCH, task="classification"), (32, 32, 1), n_classes=3)
    finetune.freeze_backbone(model)
    finetune.unfreeze_backbone(model, keep_batchnorm_frozen=True)
    layers = list(finetune._sublayers(finetune.backbone_of(model)))
    bn = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert any(layer.trainable for layer in layers if isinstance(layer, keras.layers.Conv2D))


@pytest.mark.parametrize("changes, message", [
    ({"unfreeze_at": 2}, "needs freeze_backbone"),
    ({"freeze_backbone": True, "unfreeze_at": 0}, "must be >= 1"),
    ({"freeze_backbone": True, "task": "anomaly", "arch": "vae"}, "no separate backbone"),
])
def test_config_rejects(changes, message):
    with pytest.raises(ConfigError, match=message):
        replace(RunConfig(), model=changes)


def test_flags_reach_the_config():
    args = train.build_parser().parse_args(["--freeze-backbone", "--unfreeze-at", "3"])
    config = train.config_from_args(args)
    assert config.model.freeze_backbone and config.model.unfreeze_at == 3


def test_resume_after_unfreeze_epoch_trains_the_backbone(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "finish", lambda config, data, run_dir: run_dir)  # test metrics, export: not needed
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "images.npy", tiny_images(24, 32, seed=5))
    np.save(data / "labels.npy", np.array(CLASSES * 8))
    flags = ["--data", str(data), "--task", "classification", "--arch", ARCH, "--batch-size", "4",
             "--workers", "1", "--out", str(tmp_path / "runs"), "--freeze-backbone", "--unfreeze-at", "1"]
    assert train.main([*flags, "--epochs", "1"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    first = keras.models.load_model(run / "checkpoints/last.keras")
    assert finetune.is_frozen(first)
    assert train.main(["--resume", str(run), "--epochs", "2"]) == 0
    second = keras.models.load_model(run / "checkpoints/last.keras")
    assert not finetune.is_frozen(second)
    assert changed(weights(finetune.backbone_of(first)), weights(finetune.backbone_of(second)))
