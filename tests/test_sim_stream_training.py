"""``--data sim-stream:<preset>``: training from an endless simulated stream (stream_source.py)."""

import json
from itertools import islice

import numpy as np
import pandas as pd
import pytest

from deeplense_tf import train

from deeplense_tf.training import trainer
from deeplense_tf.config import RunConfig, replace
from deeplense_tf.data import stream as data_stream
from deeplense_tf.sim import stream as sim_stream
from deeplense_tf.data.prepare import check_split, prepare_data
from deeplense_tf.sim.generate import simulate_one
from deeplense_tf.data.stream import STREAM_SEED_OFFSET, StreamSource
from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.training.trainer import fit_labels

SEED = 42


def _prepared(task="classification", preset="model_ii", samples=4, batch=4):
    config = replace(RunConfig(), data={"data": f"sim-stream:{preset}", "samples": samples, "workers": 1},
                     model={"task": task}, train={"batch_size": batch, "seed": SEED})
    return prepare_data(config)


def _source(data, first_epoch=0, keep_last=0):
    task = data.stream.task
    return StreamSource(data.stream, data.stream.batch_size, lambda y: fit_labels(task, y), first_epoch=first_epoch,
                        keep_last=keep_last)


def _batches(source, n):
    try:
        return [(x.numpy(), y.numpy()) for x, y in source.dataset().take(n)]
    finally:
        source.close()


def test_streaming_some_classes_gives_those_images_of_the_full_stream():
    axion = list(islice(sim_stream.stream("model_ii", 5, workers=1, block=2, start=1, classes=["axion"]), 2))
    assert [(c, m["class"], m["index"]) for _, c, m in axion] == [(2, "axion", 1), (2, "axion", 2)]
    np.testing.assert_array_equal(axion[0][0], simulate_one("model_ii", "axion", 1, 5)[0])
    with pytest.raises(ConfigError, match="distinct classes of preset model_ii"):
        next(sim_stream.stream("model_ii", 5, workers=1, classes=["lens"]))


def test_unknown_preset_names_the_presets(sim_cache, capsys, tmp_path):
    with pytest.raises(ConfigError, match="valid presets: model_i, model_ii"):
        _prepared(preset="nonsense")
    assert train.main(["--data", "sim-stream:nonsense", "--out", str(tmp_path)]) == 2
    assert "lens_finding" in capsys.readouterr().err


def test_epochs_take_successive_stream_positions_and_resume_continues(sim_cache):
    data = _prepared()  # 3 classes x 4 samples: 3 steps of 4 per epoch
    assert (data.stream.steps_per_epoch, data.stream.images_per_epoch) == (3, 12)
    two_epochs = _batches(_source(data), 6)
    second = _batches(_source(data, first_epoch=1), 3)
    for (x, y), (x2, y2) in zip(two_epochs[3:], second):  # a resumed run sees the same images
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    # batch 3 = stream positions 12..15: cycle (no_sub, cdm, axion), image index 4, 4, 4, 5
    np.testing.assert_array_equal(two_epochs[3][0][3, ..., 0], simulate_one("model_ii", "no_sub", 5, SEED + STREAM_SEED_OFFSET)[0])
    assert two_epochs[3][1].tolist() == [2, 1, 0, 2]  # class indices of no_sub, cdm, axion, no_sub
    first = np.concatenate([x for x, _ in two_epochs[:3]])
    later = np.concatenate([x for x, _ in two_epochs[3:]])
    assert not any((a == b).all() for a in first for b in later)  # epoch 2 never repeats an epoch-1 image


def test_evaluation_set_is_fixed_and_apart_from_the_stream(sim_cache):
    data = _prepared(task="regression", samples=6)
    assert data.stream.classes == ("axion",) and len(data.splits["train"]) == 0
    assert set(data.table["class"]) == {"axion"} and set(data.table["seed"]) == {SEED}
    assert data.stream.seed == SEED + STREAM_SEED_OFFSET
    assert np.isfinite(data.target_mean) and data.target_std > 0
    again = _prepared(task="regression", samples=6)
    for split in ("val", "test"):
        np.testing.assert_array_equal(data.subset(split)[0], again.subset(split)[0])
    (x, y), = _batches(_source(data), 1)
    assert y.shape == (4, 1) and np.all((y > -25) & (y < -21))  # log10 axion mass [eV], physical units
    assert not any((a == b).all() for a in x for b in data.images)
    with pytest.raises(UserError, match="no stored training split"):
        data.subset("train")


def test_lens_finding_stream_labels(sim_cache):
    data = _prepared(task="lens_finding", preset="lens_finding", samples=3, batch=2)
    (x, y), = _batches(_source(data), 1)
    assert x.shape == (2, 101, 101, 1) and y.ravel().tolist() == [1, 0]  # lens, non_lens in turn


def test_train_two_epochs_then_resume_on_the_same_evaluation_set(sim_cache, tmp_path, monkeypatch):
    starts = []
    original = sim_stream.stream
    monkeypatch.setattr(data_stream, "stream", lambda *a, **k: (starts.append(k["start"]), original(*a, **k))[1])
    flags = ["--data", "sim-stream:model_ii", "--arch", "mobilenet_v3_small", "--image-size", "32", "--samples", "8",
             "--batch-size", "4", "--workers", "1", "--out", str(tmp_path)]
    assert train.main([*flags, "--epochs", "2"]) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for name in ("config.json", "data.json", "split.csv", "history.csv", "metrics.json", "model.keras"):
        assert (run / name).exists()
    info = json.loads((run / "data.json").read_text())
    assert info["stream"]["classes"] == ["axion"] and info["stream"]["images_per_epoch"] == 8
    assert info["counts"]["train"] == 0 and info["counts"]["test"] > 0
    assert starts == [0]  # one stream, epoch 2 taking positions 8..15 after epoch 1's 0..7
    monkeypatch.setattr(trainer, "finish", lambda config, data, run_dir: run_dir)  # the first run evaluated and exported
    assert train.main(["--resume", str(run), "--epochs", "3"]) == 0
    assert starts == [0, 16]  # epoch 3 starts where an uninterrupted run's would
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    rebuilt = prepare_data(RunConfig.load(run / "config.json"))  # what evaluate RUN_DIR scores
    check_split(rebuilt, run / "split.csv")
    assert json.loads((run / "metrics.json").read_text())["n"] == len(rebuilt.splits["test"])


def test_recalibration_keeps_its_own_copies_of_the_batches(sim_cache):
    """The yielded batches go to TensorFlow without a copy (and a kernel may write into them), so the
    batches kept for BatchNorm recalibration must be copies (BENCHMARKS.md, "In-fit validation that drifted")."""
    source = _source(_prepared(), keep_last=1)  # 3 steps an epoch: step 2 is kept
    try:
        x, y = np.ones((4, 64, 64, 1), np.float32), np.arange(4)
        source._keep(2, x, y)
        kept_x, kept_y = source._kept[0][2]
        assert not np.shares_memory(kept_x, x) and not np.shares_memory(kept_y, y)
        np.testing.assert_array_equal(kept_x, x)
    finally:
        source.close()
