"""Exponential moving average of the weights (``--ema MOMENTUM``), on Keras' own ``use_ema``.

The optimiser keeps the average of every trainable weight beside its moments, so each checkpoint
saves it with them. The training steps move the raw weights; what is judged and kept is the average:

- ``ValidateWithEMA`` puts the average into the model for each validation pass and the raw weights
  back afterwards. It runs before BatchNorm recalibration (batchnorm.py), so the statistics are
  re-estimated for the averaged network; with ``--bn-recalibration 0`` the average is validated
  with the running statistics of the raw training (BatchNorm's moving statistics are not trainable
  weights, so Keras does not average them).
- ``AtomicCheckpoint`` writes ``best.keras`` inside ``ema_weights``: the network that scored, the
  average in its weights (and in the optimiser's). ``finish`` evaluates and exports that file.
- ``last.keras`` holds the raw weights and the average: ``--resume`` continues exactly. A run
  resumed from ``best.keras`` (its last checkpoint unreadable) continues from the averaged weights.
- Keras' ``fit`` overwrites the model's weights with the average when it ends
  (``finalize_variable_values``), after the last checkpoint is written: nothing reads that copy.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Iterator

import keras


def _averages(model: keras.Model) -> tuple[list, list]:
    """(trainable variables, their averages) of an optimiser with ``use_ema``; two empty lists otherwise."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer (mixed_float16)
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "built", False):
        return [], []
    return list(optimizer._trainable_variables), list(optimizer._model_variables_moving_average)


@contextmanager
def ema_weights(model: keras.Model) -> Iterator[bool]:
    """Inside the block the model holds the optimiser's moving averages (True), or nothing changes
    (False: no ``--ema``); the raw weights come back at its end and the averages stay as they were."""
    variables, averages = _averages(model)
    if not variables:
        yield False
        return
    raw = [keras.ops.convert_to_numpy(v) for v in variables]
    for variable, average in zip(variables, averages):
        variable.assign(average)
    try:
        yield True
    finally:
        for variable, value in zip(variables, raw):
            variable.assign(value)


class ValidateWithEMA(keras.callbacks.Callback):
    """Validation passes see the averaged weights (place before BatchNorm recalibration)."""

    def __init__(self):
        super().__init__()
        self._swap = ExitStack()

    def on_test_begin(self, logs=None):
        self._swap.enter_context(ema_weights(self.model))

    def on_test_end(self, logs=None):
        self._swap.close()
