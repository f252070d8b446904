"""A run killed mid-training keeps a loadable checkpoint and resumes to completion."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import pandas as pd
import pytest

from conftest import write_class_folders
from deeplense_tf import train
from deeplense_tf.models import build  # noqa: F401  (registers the custom layers for load_model)


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


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes(tmp_path, sig):
    proc = _start(tmp_path, epochs=3)
    run = _wait_for_epoch(tmp_path, proc, 1)
    time.sleep(0.5)  # into the next epoch (or its checkpoint write)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 2 and "--resume" in err, err[-2000:]
        assert not list(run.rglob(".*.tmp*")), "a caught signal must clean up its temporary files"
    keras.models.load_model(run / "checkpoints" / "last.keras")  # never half-written
    assert train.main(["--resume", str(run)]) == 0
    assert not list(run.rglob(".*.tmp*")), "resume sweeps what a SIGKILL left behind"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [0, 1, 2]
    assert (run / "export" / "saved_model").is_dir()


def test_repeated_sigkill_at_random_steps_then_resume_matches_uninterrupted(tmp_path):
    """Killed twice at random moments, resumed each time: every checkpoint stays loadable, the
    run completes, and its learning-rate schedule (the optimiser's step counter, restored from
    the checkpoint) is exactly that of an uninterrupted run."""
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
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == list(range(epochs))
    expected = pd.read_csv(expected_run / "history.csv")
    pd.testing.assert_series_equal(history["learning_rate"], expected["learning_rate"], rtol=1e-6)
    assert json.loads((run / "metrics.json").read_text())["n"] == json.loads((expected_run / "metrics.json").read_text())["n"]


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
