"""KerasTuner searches on tiny simulated data: trials.csv, resume, failures, space files, workers.

The searches train eagerly (``eager`` fixture): tracing a MobileNetV3 train step takes about
a minute on two busy cores and is covered by the end-to-end tests; the search logic is the same.
"""

import json
import os
import shlex
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from deeplense_tf import train

from deeplense_tf.training import trainer
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.errors import ConfigError, UserError
from tuning import bayes, common, hyperband
from tuning import random as random_search
from tuning.report import train_command
from tuning.space import DEFAULT_SPACE, load_space

ROOT = Path(__file__).resolve().parents[1]
TINY_SPACE = {"arch": "mobilenet_v3_small", "batch_size": {"values": [4, 8]},
              "fc_units_1": {"values": [8, 16]}, "fc_units_2": 8}


@pytest.fixture
def tiny_space(tmp_path) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(TINY_SPACE))
    return path


@pytest.fixture
def eager(monkeypatch):
    original = trainer.compile_model

    def compile_eagerly(model, config, *args):
        original(model, config, *args)
        model.run_eagerly = True

    monkeypatch.setattr(trainer, "compile_model", compile_eagerly)


def _argv(space: Path, out: Path, *flags: str) -> list[str]:
    return ["--samples", "12", "--epochs", "1", "--workers", "2", "--space", str(space), "--out", str(out), *flags]


def _trials(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "trials.csv", dtype={"trial": str})


def test_bayes_search_resumes_an_interrupted_trial(sim_cache, tiny_space, eager, monkeypatch, tmp_path, capsys):
    out, original = tmp_path / "bayes", trainer.fit_model
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "fit_model", interrupt_second)
    assert bayes.main(_argv(tiny_space, out, "--max-trials", "2")) == 130
    assert list(_trials(out)["status"]) == ["COMPLETED", "RUNNING"]
    first_trial = (out / "trials/trial_0/tuning.json").stat().st_mtime_ns
    monkeypatch.setattr(trainer, "fit_model", original)
    capsys.readouterr()
    assert bayes.main(_argv(tiny_space, out, "--max-trials", "2")) == 0
    log = capsys.readouterr().out
    frame = _trials(out)
    assert list(frame["status"]) == ["COMPLETED", "COMPLETED"] and frame["val_mae"].gt(0).all()
    assert "trial 0 starts" not in log and "trial 1 starts" in log
    assert (out / "trials/trial_0/tuning.json").stat().st_mtime_ns == first_trial
    assert set(frame["batch_size"]) <= {4, 8} and set(frame["arch"]) == {"mobilenet_v3_small"}
    assert (out / "trials.png").stat().st_size > 0
    for name in ("config.json", "data.json", "split.csv", "history.csv", "checkpoints/last.keras", "logs"):
        assert (out / "trials/trial_1" / name).exists()
    _assert_reproduces_best(log, frame)


def _assert_reproduces_best(log: str, frame: pd.DataFrame) -> None:
    """The printed command parses back into the best trial's saved config."""
    (line,) = [x for x in log.splitlines() if x.startswith("reproduce it: python -m deeplense_tf.train")]
    argv = shlex.split(line.split("deeplense_tf.train", 1)[1])
    best = frame.loc[frame["val_mae"].idxmin()]
    saved = RunConfig.load(Path(best["run_dir"]) / "config.json")
    expected = replace(saved, data={"workers": None}, train={"out": "runs"})  # machine flags are left out
    assert train.config_from_args(train.build_parser().parse_args(argv)) == expected


def test_hyperband_continues_the_best_trial(sim_cache, tiny_space, eager, tmp_path):
    out = tmp_path / "hyperband"
    assert hyperband.main(_argv(tiny_space, out, "--max-trials", "3", "--max-epochs", "2", "--factor", "2")) == 0
    frame = _trials(out)
    assert list(frame["status"]) == ["COMPLETED"] * 3
    continued = frame.iloc[2]
    assert str(int(continued["tuner/trial_id"])) in ("0", "1") and continued["epochs"] == 2
    history = pd.read_csv(out / "trials/trial_2/history.csv")
    assert list(history["epoch"]) == [0, 1]  # the inherited epoch, then its own


def test_executions_of_a_trial_start_from_different_weights(sim_cache, tiny_space, eager, tmp_path):
    out = tmp_path / "random"
    assert random_search.main(_argv(tiny_space, out, "--max-trials", "1", "--executions-per-trial", "2")) == 0
    trial = out / "trials/trial_0"
    first, second = (pd.read_csv(d / "history.csv") for d in (trial, trial / "execution_1"))
    assert first["loss"][0] != second["loss"][0]
    config = json.loads((trial / "execution_1/config.json").read_text())
    assert config["train"]["seed"] == 42  # the split stays that of the search
    assert _trials(out)["val_mae"][0] == pytest.approx((first["val_mae"].min() + second["val_mae"].min()) / 2)


def test_failed_trials_are_recorded_and_the_search_goes_on(sim_cache, tiny_space, monkeypatch, tmp_path, capsys):
    import tensorflow as tf

    errors = [UserError("loss became nan at epoch 1, step 1; training stopped"),
              tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")]

    def fail(*args, **kwargs):
        raise errors.pop(0)

    monkeypatch.setattr(trainer, "fit_model", fail)
    out = tmp_path / "random"
    assert random_search.main(_argv(tiny_space, out, "--max-trials", "2")) == 2
    assert "error: no trial completed (2 failed)" in capsys.readouterr().err
    frame = _trials(out)
    assert list(frame["status"]) == ["FAILED", "FAILED"]
    assert "loss became nan" in frame["message"][0] and "out of memory" in frame["message"][1]
    assert frame["wall_s"].notna().all() and frame["rss_mb"].gt(0).all()


def test_space_file_overrides_ranges(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"lr": {"max": 1e-3}, "optimizer": "adamw", "dropout": {"values": [0.0, 0.3]}}))
    space = load_space(path, archs=["resnet50_v2"])
    assert space["lr"] == {**DEFAULT_SPACE["lr"], "max": 1e-3}
    assert space["optimizer"] == {"fixed": "adamw"} and space["dropout"] == {"values": [0.0, 0.3]}
    assert space["arch"] == {"values": ["resnet50_v2"]} and space["batch_size"] == DEFAULT_SPACE["batch_size"]


@pytest.mark.parametrize("overrides, conditional, absent", [
    ({}, {"weight_decay": ("optimizer", "adamw"), "shift": ("augment", True), "noise": ("augment", True)}, set()),
    ({"optimizer": "adamw", "augment": True}, {}, set()),
    ({"optimizer": {"values": ["adam", "sgd"]}, "augment": False}, {}, {"weight_decay", "shift", "noise"}),
])
def test_dependent_hyperparameters_exist_only_where_they_act(tmp_path, overrides, conditional, absent):
    """A weight decay only for AdamW, augmentation strengths only with augmentation: conditional
    where the parent is searched, plain where it is fixed to the value that uses them, absent otherwise."""
    import keras_tuner

    from tuning.search_space import declare

    path = tmp_path / "space.json"
    path.write_text(json.dumps(overrides))
    hp = keras_tuner.HyperParameters()
    values = declare(hp, load_space(path), "regression")
    declared = {p.name: p for p in hp.space}
    assert absent.isdisjoint(declared) and absent.isdisjoint(values)
    for name in {"weight_decay", "shift", "noise"} - absent:
        conditions = [(c.name, c.values) for c in declared[name].conditions]
        if name in conditional:
            parent, active = conditional[name]
            assert conditions == [(parent, [active])], (name, conditions)
        else:
            assert conditions == [] and values[name] is not None, (name, conditions)


@pytest.mark.parametrize("entry, message", [
    ({"learning_rate": {"max": 1}}, "unknown hyperparameter(s) ['learning_rate']"),
    ({"lr": {"min": 0, "max": 1e-3}}, "log sampling needs min > 0"),
    ({"lr": {"min": 1e-2, "max": 1e-3}}, "needs min < max"),
    ({"optimizer": {"values": ["adam", "rmsprop"]}}, "Received: ['rmsprop']"),
    ({"arch": {"min": 1, "max": 2}}, "not a range"),
    ({"batch_size": {"values": []}}, "non-empty list"),
    ({"dropout": {"value": 0.1}}, "unknown field(s) ['value']"),
])
def test_bad_space_files_are_refused(tmp_path, entry, message):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(entry))
    with pytest.raises(ConfigError) as info:
        load_space(path)
    assert message in str(info.value)


def test_bad_space_key_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "space.json"
    path.write_text('{"lr": {"max": 0.01}, "fc_units": [64, 32]}')
    assert bayes.main(["--space", str(path), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown hyperparameter(s) ['fc_units']" in err and "fc_units_1" in err


def test_continuing_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "search"
    settings = {"tuner": "bayes", "objective": ["val_mae", "min"], "flags": {"epochs": 1}, "space": {}, "config": {}}
    common._prepare_out(out, settings, overwrite=False)
    common._prepare_out(out, {**settings, "flags": {"epochs": 3}}, overwrite=False)  # no trial yet: a fresh start
    (out / "trials/trial_0").mkdir(parents=True)
    (out / "trials/trial_0/trial.json").write_text("{}")
    with pytest.raises(UserError, match="--epochs differ"):
        common._prepare_out(out, {**settings, "flags": {"epochs": 1}}, overwrite=False)
    common._prepare_out(out, settings, overwrite=True)
    assert not (out / "trials").exists()


def test_train_command_round_trips():
    config = replace(RunConfig(), data={"samples": 50, "image_size": 96},
                     model={"arch": "resnet50_v2", "fc_units": (128, 32), "augment": False, "dropout": 0.3},
                     train={"optimizer": "adamw", "lr": 0.000123456789, "weight_decay": 3e-5, "batch_size": 16,
                            "epochs": 4})
    argv = shlex.split(train_command(config))[3:]
    assert "--no-augment" in argv
    assert train.config_from_args(train.build_parser().parse_args(argv)) == config


@pytest.mark.slow
def test_chief_and_two_workers_split_the_trials(sim_cache, tiny_space, tmp_path):
    from deeplense_tf.data.prepare import prepare_data

    prepare_data(replace(RunConfig(), data={"samples": 12}))  # simulate once, before three processes start
    out = tmp_path / "dist"
    runner = tmp_path / "run_eager.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        from deeplense_tf.training import trainer
        original = trainer.compile_model
        def compile_eagerly(model, config, *args):
            original(model, config, *args)
            model.run_eagerly = True
        trainer.compile_model = compile_eagerly
        from tuning import random
        sys.exit(random.main({_argv(tiny_space, out, "--max-trials", "4")!r}))
    """))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = {}
    for tuner_id in ("chief", "worker0", "worker1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": "127.0.0.1",
               "KERASTUNER_ORACLE_PORT": str(port), "PYTHONPATH": str(ROOT)}
        procs[tuner_id] = subprocess.Popen([sys.executable, str(runner)], cwd=ROOT, env=env, text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:  # a chief whose workers died waits for their trials forever
        logs = {name: proc.communicate(timeout=400)[0] for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.kill()
    assert all(proc.returncode == 0 for proc in procs.values()), {k: v[-2000:] for k, v in logs.items()}
    started = [line.split()[1] for name in ("worker0", "worker1") for line in logs[name].splitlines()
               if line.startswith("trial ") and " starts on " in line]
    assert sorted(started) == ["0", "1", "2", "3"]  # every trial once, none twice
    frame = _trials(out)
    assert list(frame["status"]) == ["COMPLETED"] * 4
    assert set(frame["tuner_id"]) == {"worker0", "worker1"}


def test_anomaly_search_tries_the_autoencoders(sim_cache, eager, tmp_path):
    out = tmp_path / "anomaly"
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"batch_size": {"values": [4]}}))
    assert random_search.main(_argv(space, out, "--task", "anomaly", "--max-trials", "2")) == 0
    trials = _trials(out)
    assert list(trials["status"]) == ["COMPLETED", "COMPLETED"]
    assert set(trials["arch"]) <= {"conv_autoencoder", "vae"} and trials["val_loss"].notna().all()
    config = json.loads((Path(trials["run_dir"][0]) / "config.json").read_text())
    assert config["model"]["task"] == "anomaly"
    with pytest.raises(ConfigError, match="Architectures for anomaly: conv_autoencoder, vae"):
        common.run_search(common.build_parser("random", "", 1).parse_args(
            _argv(space, tmp_path / "bad", "--task", "anomaly", "--archs", "resnet18")), "random", None)


def test_tuners_take_every_train_flag(tmp_path):
    """One set of flags: a searched one given is fixed for the search, any other reaches every trial."""
    RunConfig().save(tmp_path / "base.json")
    argv = ["--task", "lens_finding", "--balance", "--schedule", "onecycle", "--sam", "0.05",
            "--config", str(tmp_path / "base.json"), "--lr", "0.003", "--batch-size", "16", "--fc-units", "8", "4",
            "--arch", "resnet18", "--epochs", "2", "--out", str(tmp_path / "search")]
    for module in (bayes, hyperband, random_search):
        parser = common.build_parser(module.__name__.split(".")[-1], "")
        args = parser.parse_args(argv)
        base = common.base_config(args)
        assert (base.model.task, base.train.balance, base.train.schedule, base.train.sam_rho, base.train.epochs) == \
            ("lens_finding", True, "onecycle", 0.05, 2)
        space = common.search_space(args, base.model.task)
        assert space["lr"] == {"fixed": 0.003} and space["batch_size"] == {"fixed": 16}
        assert (space["fc_units_1"], space["arch"]) == ({"fixed": 8}, {"values": ["resnet18"]})
        assert common.search_folder(args) == tmp_path / "search"
        with pytest.raises(SystemExit):
            parser.parse_args(["--resume", "runs/x"])
    with pytest.raises(ConfigError, match="not both"):
        common.search_space(common.build_parser("bayes", "").parse_args(["--arch", "vit", "--archs", "vit"]), "regression")
