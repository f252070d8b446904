"""After fit, the kept checkpoints are measured on the validation split again (training/revalidate.py)."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from deeplense_tf import runs
from deeplense_tf.training.revalidate import revalidate

X = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
TRUE_KERNEL = np.array([[1.0], [-2.0], [0.5]], "float32")
Y = X @ TRUE_KERNEL


def _save(run_dir, name, kernel):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.Adam(0.1), "mse")
    model.optimizer.build(model.trainable_variables)  # as compile_model does: its slots are saved and loaded
    model.layers[0].kernel.assign(kernel)
    runs.save_keras_model(model, run_dir / name)
    return float(np.mean((X @ kernel - Y) ** 2))


def _run(tmp_path, logged_best, logged_last, last_kernel=TRUE_KERNEL):
    """A run folder whose best.keras (epoch 1) holds poor weights and last.keras (epoch 2) ``last_kernel``
    (the exact one); history.csv logs ``logged_best`` / ``logged_last`` for them (None: what they score)."""
    (tmp_path / "checkpoints").mkdir()
    poor = _save(tmp_path, runs.BEST, np.zeros((3, 1), "float32"))
    exact = _save(tmp_path, runs.LAST, last_kernel)
    best_logged = poor if logged_best is None else logged_best
    runs.write_json(tmp_path / runs.STATE, {"epochs_done": 2, "monitor": "val_loss", "best": best_logged,
                                            "best_epoch": 1})
    last_logged = exact if logged_last is None else logged_last
    pd.DataFrame({"epoch": [0, 1], "val_loss": [best_logged, last_logged]}).to_csv(tmp_path / "history.csv",
                                                                                   index=False)
    return poor, exact


def _val():
    return tf.data.Dataset.from_tensor_slices((X, Y)).batch(5)


def test_a_lying_in_fit_validation_is_reported_and_the_better_checkpoint_kept(tmp_path, capsys):
    """What the 40-epoch regression rerun needed: fit logged the last epoch worse than epoch 1 (0.9 > 0.5),
    but the last epoch's weights score better on the same images: they become best.keras."""
    poor, exact = _run(tmp_path, logged_best=0.5, logged_last=0.9)
    report = revalidate(tmp_path, "regression", _val())
    assert report["disagreement"] is True and report["kept"] == 2
    checkpoints = report["checkpoints"]
    assert checkpoints[runs.BEST] == {"epoch": 1, "logged": 0.5, "measured": pytest.approx(poor, rel=1e-5)}
    assert checkpoints[runs.LAST] == {"epoch": 2, "logged": 0.9, "measured": pytest.approx(exact, abs=1e-9)}
    out = capsys.readouterr().out
    assert "warning: fit logged val_loss 0.5 for epoch 1" in out and "keeping epoch 2" in out
    kept = keras.models.load_model(tmp_path / runs.BEST)
    np.testing.assert_allclose(kept.layers[0].kernel.numpy(), TRUE_KERNEL)
    state = runs.read_json(tmp_path / runs.STATE)
    assert state["best_epoch"] == 2 and state["best"] == pytest.approx(exact, abs=1e-9) and state["epochs_done"] == 2


def test_an_honest_in_fit_validation_changes_nothing(tmp_path, capsys):
    """Logged values equal to what the checkpoints score: no warning, best.keras and state.json untouched."""
    _run(tmp_path, logged_best=None, logged_last=None, last_kernel=np.full((3, 1), 3.0, "float32"))  # worse
    best_bytes, state = (tmp_path / runs.BEST).read_bytes(), runs.read_json(tmp_path / runs.STATE)
    report = revalidate(tmp_path, "regression", _val())
    assert report["disagreement"] is False and report["kept"] == 1
    assert capsys.readouterr().out == ""
    assert (tmp_path / runs.BEST).read_bytes() == best_bytes and runs.read_json(tmp_path / runs.STATE) == state


def test_one_checkpoint_is_measured_when_best_is_the_last_epoch(tmp_path):
    _run(tmp_path, logged_best=None, logged_last=None)
    runs.write_json(tmp_path / runs.STATE, {"epochs_done": 2, "monitor": "val_loss", "best": 0.0, "best_epoch": 2})
    report = revalidate(tmp_path, "regression", _val())
    assert list(report["checkpoints"]) == [runs.BEST] and report["checkpoints"][runs.BEST]["epoch"] == 2


def test_a_run_without_history_is_not_revalidated(tmp_path):
    _run(tmp_path, logged_best=None, logged_last=None)
    (tmp_path / "history.csv").unlink()
    assert revalidate(tmp_path, "regression", _val()) == {}
