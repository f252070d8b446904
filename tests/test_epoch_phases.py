"""LogEpochPhases: where an epoch's time went, on a tiny fit with stand-ins that take known time."""

import time

import keras
import numpy as np
import pytest

from deeplense_tf.training.callbacks import LogEpochPhases

PAUSE = 0.05


class Pause(keras.callbacks.Callback):
    """Sleeps PAUSE at one hook: a recalibration (before validation) or a checkpoint (at the epoch's end)."""

    def __init__(self, hook):
        super().__init__()
        setattr(self, hook, lambda *args, **kwargs: time.sleep(PAUSE))


def test_epoch_phases_time_steps_recalibration_validation_and_checkpoint():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, validation_data=(x, y),
                        callbacks=[Pause("on_test_begin"), LogEpochPhases(), Pause("on_epoch_end")]).history
    assert history["recalibration_seconds"][0] >= PAUSE and history["recalibration_seconds"][1] >= PAUSE
    assert history["between_epochs_seconds"][0] == 0 and history["between_epochs_seconds"][1] >= PAUSE
    for epoch in (0, 1):
        assert 0 < history["step_ms"][epoch] < 1000 * history["steps_seconds"][epoch]
        assert 0 < history["validation_seconds"][epoch] < PAUSE + 1
    # a later evaluate() is not fit's validation: no error, nothing logged
    model.evaluate(x, y, verbose=0, callbacks=[LogEpochPhases()])


def test_epoch_phases_without_validation_counts_the_recalibration_at_the_epoch_end():
    x = np.ones((16, 2), "float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    history = model.fit(x, x[:, :1], batch_size=4, epochs=1, verbose=0,
                        callbacks=[Pause("on_epoch_end"), LogEpochPhases()]).history
    assert history["recalibration_seconds"][0] >= PAUSE and history["validation_seconds"][0] == pytest.approx(0)
