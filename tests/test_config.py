import json

import pytest

from deeplense_tf.config import DataConfig, RunConfig, TrainConfig, replace
from deeplense_tf.errors import ConfigError


def test_round_trip_through_json(tmp_path):
    config = replace(RunConfig(), model={"arch": "densenet121", "fc_units": (32, 8)}, train={"epochs": 3})
    config.save(tmp_path / "config.json")
    loaded = RunConfig.load(tmp_path / "config.json")
    assert loaded == config
    assert loaded.model.fc_units == (32, 8)


@pytest.mark.parametrize("raw, name", [
    ({"modle": {}}, "modle"),
    ({"train": {"epochs": 2, "learning_rate": 0.1}}, "learning_rate"),
    ({"data": {"sampels": 3}}, "sampels"),
])
def test_unknown_keys_are_rejected_by_name(raw, name):
    with pytest.raises(ConfigError, match=name):
        RunConfig.from_dict(raw)


@pytest.mark.parametrize("section, change, word", [
    ("model", {"task": "segmentation"}, "task"),
    ("train", {"optimizer": "rmsprop"}, "optimizer"),
    ("train", {"epochs": 0}, "epochs"),
    ("data", {"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
    ("model", {"dropout": 1.5}, "dropout"),
])
def test_invalid_values_are_rejected(section, change, word):
    with pytest.raises(ConfigError, match=word):
        replace(RunConfig(), **{section: change})


def test_partial_dict_keeps_defaults():
    config = RunConfig.from_dict({"train": {"epochs": 2}})
    assert config.train.epochs == 2 and config.model == RunConfig().model


def test_unreadable_config_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        RunConfig.load(tmp_path / "bad.json")


def test_to_dict_is_json():
    assert json.loads(json.dumps(RunConfig().to_dict()))["model"]["arch"] == "resnet18"


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.train import build_parser

    replace(RunConfig(), train={"epochs": 7, "lr": 0.01}, model={"arch": "densenet121"}).save(tmp_path / "c.json")
    args = build_parser().parse_args(["--config", str(tmp_path / "c.json"), "--lr", "0.002", "--fc-units", "16", "8"])
    config = config_from_args(args)
    assert (config.train.epochs, config.train.lr, config.model.arch) == (7, 0.002, "densenet121")
    assert config.model.fc_units == (16, 8)


def test_anomaly_defaults_to_an_autoencoder():
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.train import build_parser

    assert config_from_args(build_parser().parse_args(["--task", "anomaly"])).model.arch == "conv_autoencoder"


@pytest.mark.parametrize("argv, lr", [
    (["--arch", "efficientnet_b4"], 3e-3),                          # the architecture's from-scratch default
    (["--arch", "efficientnet_b4", "--lr", "1e-4"], 1e-4),          # a flag wins
    (["--arch", "efficientnet_b4", "--weights", "imagenet"], 1e-3),  # fine-tuning keeps the common default
    (["--arch", "efficientnet_v2_b0"], 1e-3),
    (["--arch", "resnet18"], 1e-3),
])
def test_architecture_training_defaults(argv, lr):
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.train import build_parser

    assert config_from_args(build_parser().parse_args(argv)).train.lr == pytest.approx(lr)


@pytest.mark.parametrize("argv, epochs, samples", [
    (["--arch", "efficientnet_b4"], 10, 20000),                  # the large EfficientNets need more data from scratch
    (["--arch", "efficientnet_b4", "--epochs", "5"], 5, 20000),
    (["--arch", "efficientnet_b4", "--samples", "500"], 10, 500),
    (["--arch", "efficientnet_b4", "--weights", "imagenet"], TrainConfig().epochs, DataConfig().samples),
    (["--arch", "efficientnet_b0"], TrainConfig().epochs, DataConfig().samples),
    (["--arch", "resnet18"], TrainConfig().epochs, DataConfig().samples),
])
def test_architecture_budget_defaults(argv, epochs, samples):
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.train import build_parser

    config = config_from_args(build_parser().parse_args(argv))
    assert (config.train.epochs, config.data.samples) == (epochs, samples)


def test_api_train_takes_architecture_defaults(monkeypatch):
    import deeplense_tf.api as api

    seen = {}
    monkeypatch.setattr(api, "prepare_environment", lambda: None)
    monkeypatch.setattr(api, "train_run", lambda config: seen.setdefault("config", config) and "run")
    monkeypatch.setattr(api, "load_run", lambda run: run)
    api.train(arch="efficientnet_b4", samples=800)
    assert (seen["config"].data.samples, seen["config"].train.epochs) == (800, 10)


def test_config_file_wins_over_architecture_defaults(tmp_path):
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.config import with_arch_defaults
    from deeplense_tf.train import build_parser

    replace(RunConfig(), model={"arch": "efficientnet_b0"}).save(tmp_path / "c.json")
    assert config_from_args(build_parser().parse_args(["--config", str(tmp_path / "c.json")])).train.lr == 1e-3
    changes = with_arch_defaults({"model": {"arch": "efficientnet_b0"}, "train": {}}, RunConfig())
    assert changes["train"] == {"lr": 3e-3}


def test_init_seed_seeds_training_only():
    from deeplense_tf.cli import config_from_args
    from deeplense_tf.config import model_seed
    from deeplense_tf.train import build_parser

    member = config_from_args(build_parser().parse_args(["--seed", "7", "--init-seed", "3"])).train
    assert (member.seed, model_seed(member)) == (7, 3)  # data and split from 7, weights and batches from 3
    plain = config_from_args(build_parser().parse_args(["--seed", "7"])).train
    assert model_seed(plain) == 7
    with pytest.raises(ConfigError, match="init_seed"):
        replace(RunConfig(), train={"init_seed": -1})


@pytest.mark.parametrize("task, given, rate", [("classification", None, 0.0), ("regression", None, 0.2),
                                               ("lens_finding", None, 0.2), ("classification", 0.3, 0.3)])
def test_head_dropout_is_the_tasks_default_unless_given(task, given, rate):
    from deeplense_tf.config import ModelConfig, head_dropout

    assert head_dropout(ModelConfig(task=task, dropout=given)) == rate


def test_classification_head_has_no_dropout_by_default():
    import keras

    from deeplense_tf.config import ModelConfig
    from deeplense_tf.models.heads import classification_head

    features = keras.Input((8,))
    model = keras.Model(features, classification_head(features, ModelConfig(task="classification"), 3))
    assert model.get_layer("head_dropout").rate == 0.0  # the layer stays: features_model finds the head by it
