"""A run killed mid-training keeps a loadable checkpoint and resumes to completion."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pandas as pd
import pytest

from tests.helpers import write_class_folders
from deeplense_tf import train
import deeplense_tf.api  # noqa: F401  (registers the layers, schedules and losses for load_model)


def _start(tmp_path, epochs):
    data = write_class_folders(tmp_path / "data", per_class=8)
    argv = [sys.executable, "-m", "deeplense_tf.train", "--arch", "mobilenet_v3_small", "--task", "classification",
            "--data", str(data), "--epochs", str(epochs), "--batch-size", "2", "--out", str(tmp_path / "runs")]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _wait_for_epoch(tmp_path, proc, epochs_done, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        states = list((tmp_path / "runs").glob("*/checkpoints/state.json"))
        if states and json.loads(states[0].read_text())["epochs_done"] >= epochs_done:
            return states[0].parents[1]
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no epoch {epochs_done} checkpoint: {proc.communicate()[1][-2000:]}")


def test_terminated_run_says_how_to_resume_and_resumes(tmp_path):
    """SIGTERM (a scheduler's stop) is caught: temporaries cleaned, exit 2 with the resume command.
    SIGKILL, which nothing can catch, is the repeated-kill test below."""
    proc = _start(tmp_path, epochs=3)
    run = _wait_for_epoch(tmp_path, proc, 1)
    time.sleep(0.5)  # into the next epoch (or its checkpoint write)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--resume" in err, err[-2000:]
    assert not list(run.rglob(".*.tmp*")), "a caught signal must clean up its temporary files"
    keras.models.load_model(run / "checkpoints" / "last.keras")  # never half-written
    assert train.main(["--resume", str(run)]) == 0
    assert not list(run.rglob(".*.tmp*"))
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert (run / "export" / "saved_model").is_dir()


def _numbers(tree, prefix="") -> dict:
    """The numeric leaves of a JSON document, by path."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _numbers(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f"{prefix}/{i}").items()}
    return {prefix: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


# How close "within noise" is. Measured on this setup (mobilenet_v3_small, 24 images, 3 epochs, seed 42):
# two uninterrupted runs gave bit-identical training losses, test predictions and test metrics; only
# val_loss moved, by at most 2e-5 relative (float summation order in BatchNorm recalibration, magnified by
# near-saturated softmax outputs). A resumed run that does not restore the run's state (the data order,
# or the augmentation and dropout streams) is a different run: its test probabilities moved by O(1) and
# its accuracy by 1/3 of the 3 test images. 1e-3 is 50x the measured noise and far below such a change.
NOISE = 1e-3


def test_repeated_sigkill_at_random_steps_then_resume_matches_uninterrupted(tmp_path):
    """Killed twice at random moments, resumed each time: every checkpoint stays loadable, the
    run completes, its learning-rate schedule (the optimiser's step counter, restored from the
    checkpoint) is exactly that of an uninterrupted run, and so are its history and its final
    test metrics and predictions, within noise (NOISE)."""
    import random

    rng = random.Random(7)
    epochs = 3
    reference = tmp_path / "reference"
    reference.mkdir()
    proc = _start(reference, epochs)
    assert proc.wait(timeout=600) == 0, proc.communicate()[1][-2000:]
    (expected_run,) = (reference / "runs").iterdir()

    killed = tmp_path / "killed"
    killed.mkdir()
    proc = _start(killed, epochs)
    run = _wait_for_epoch(killed, proc, 1)
    for round_ in range(2):
        time.sleep(rng.uniform(0.0, 2.0))  # a random step of the epoch in progress (or its checkpoint write)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=120)
        # a SIGKILL mid-write may leave a temporary beside the checkpoint; the checkpoint itself is whole
        keras.models.load_model(run / "checkpoints" / "last.keras")
        done = json.loads((run / "checkpoints" / "state.json").read_text())["epochs_done"]
        if round_ == 1 or done >= epochs - 1:
            break
        proc = subprocess.Popen([sys.executable, "-m", "deeplense_tf.train", "--resume", str(run)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        _wait_for_epoch(killed, proc, done + 1)
    assert train.main(["--resume", str(run)]) == 0
    assert not list(run.rglob(".*.tmp*")), "resume sweeps what a SIGKILL left behind"
    assert (run / "export" / "saved_model").is_dir()
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(epochs))
    expected = pd.read_csv(expected_run / "history.csv")
    pd.testing.assert_series_equal(history["learning_rate"], expected["learning_rate"], rtol=1e-6)
    columns = ["loss", "accuracy", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(history[columns], expected[columns], rtol=NOISE)
    metrics, reference_metrics = (_numbers(json.loads((r / "metrics.json").read_text())) for r in (run, expected_run))
    assert metrics.keys() == reference_metrics.keys() and metrics["/n"] == reference_metrics["/n"]
    for key, value in reference_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=NOISE, abs=NOISE), key
    predictions, reference = (pd.read_csv(r / "predictions.csv") for r in (run, expected_run))
    assert predictions["file"].tolist() == reference["file"].tolist()
    probabilities = [c for c in reference.columns if c.startswith("prob_")]
    np.testing.assert_allclose(predictions[probabilities], reference[probabilities], atol=NOISE)


def test_reseed_makes_an_epochs_random_draws_a_function_of_seed_and_epoch():
    """What --resume relies on: a fresh model (as load_model builds it) and one that has trained
    for a while draw the same augmentation / dropout numbers once both are reseeded for epoch e."""
    from deeplense_tf.training.reseed import reseed

    x = np.ones((4, 64), "float32")
    trained, fresh = (keras.Sequential([keras.Input((64,)), keras.layers.Dropout(0.5, seed=1)]) for _ in range(2))
    for _ in range(3):
        trained(x, training=True)  # its stream has moved on
    draws = {}
    for name, model, epoch in (("trained", trained, 3), ("fresh", fresh, 3), ("next", fresh, 4)):
        assert reseed(model, 42, epoch) == 1
        draws[name] = model(x, training=True).numpy()
    np.testing.assert_array_equal(draws["trained"], draws["fresh"])
    assert not np.array_equal(draws["fresh"], draws["next"])


def test_stale_temporaries_are_swept_and_real_files_kept(tmp_path):
    """What a SIGKILL leaves mid-write (a temporary file, a temporary or half-swapped export folder)
    goes; the checkpoint and export beside it stay."""
    from deeplense_tf import runs

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last.keras").write_bytes(b"real")
    (checkpoints / ".last.keras.abc123.tmp.keras").write_bytes(b"half")
    export = tmp_path / "export"
    (export / "saved_model").mkdir(parents=True)
    (export / ".saved_model.xyz.tmp").mkdir()
    (export / ".saved_model.old").mkdir()
    removed = runs.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".last.keras.abc123.tmp.keras", ".saved_model.old", ".saved_model.xyz.tmp"]
    assert (checkpoints / "last.keras").read_bytes() == b"real"
    assert (export / "saved_model").is_dir()
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []


@pytest.mark.parametrize("val_loss, recovered", [(0.4, True), (0.6, False)])
@pytest.mark.parametrize("ema", [False, True])
def test_a_best_checkpoint_lost_to_a_kill_is_recovered_from_last(tmp_path, val_loss, recovered, ema):
    """Killed after last.keras and state.json, before best.keras, in an epoch that improved (0.4 < 0.5):
    the weights last.keras holds become best.keras (with --ema their average, as the checkpoint saves);
    an epoch that did not improve changes nothing."""
    from deeplense_tf import runs
    from deeplense_tf.training.trainer import recover_lost_best

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.1, use_ema=ema, ema_momentum=0.5), "mse")
    for _ in range(3):  # not fit: at its end it copies the average into the weights
        model.train_on_batch(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"))
    (tmp_path / "checkpoints").mkdir()
    runs.save_keras_model(model, tmp_path / runs.LAST)
    (tmp_path / runs.BEST).write_bytes(b"epoch 1 weights")
    runs.write_json(tmp_path / runs.STATE, {"epochs_done": 2, "monitor": "val_loss", "best": 0.5, "best_epoch": 1})
    pd.DataFrame({"epoch": [0, 1], "val_loss": [0.5, val_loss]}).to_csv(tmp_path / "history.csv", index=False)
    loaded = keras.models.load_model(tmp_path / runs.LAST)
    raw = [v.numpy() for v in loaded.trainable_variables]
    recover_lost_best(tmp_path, loaded, "classification", done=2)
    state = runs.read_json(tmp_path / runs.STATE)
    assert (state["best"], state["best_epoch"]) == ((0.4, 2) if recovered else (0.5, 1))
    if not recovered:
        assert (tmp_path / runs.BEST).read_bytes() == b"epoch 1 weights"
        return
    saved = [v.numpy() for v in keras.models.load_model(tmp_path / runs.BEST).trainable_variables]
    expected = [v.numpy() for v in loaded.optimizer._model_variables_moving_average] if ema else raw
    for got, want in zip(saved, expected):
        np.testing.assert_allclose(got, want)
    assert not ema or not np.allclose(saved[0], raw[0])  # the average differs from the raw weights
    for got, want in zip(loaded.trainable_variables, raw):  # the loaded model keeps its raw weights
        np.testing.assert_allclose(got.numpy(), want)
