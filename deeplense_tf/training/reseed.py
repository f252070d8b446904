"""Random layers draw epoch ``e``'s numbers from ``(seed, e)`` alone, so ``--resume`` repeats them.

The model's random layers (augmentation, dropout, noise) keep their position in the random
stream in ``SeedGenerator`` state variables, which ``model.save`` does not store: a run resumed
at epoch ``e`` would restart every stream from its initial seed and so replay epoch 0's flips,
rotations and dropout masks. ``ReseedRandomLayers`` sets every stream at the start of each
epoch from the run's seed, the epoch and the stream's place in the model, as the input pipeline
draws each epoch's order from ``(seed, epoch)`` (``pipeline.epoch_seed``): an interrupted and
resumed run then takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import keras
import numpy as np


def seed_states(model: keras.Model) -> list:
    """The ``SeedGenerator`` state variables of ``model`` and its nested layers, in a fixed order."""
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def reseed(model: keras.Model, seed: int, epoch: int) -> int:
    """Set every random stream of ``model`` to its start for ``epoch``; returns how many there are."""
    states = seed_states(model)
    if states:
        starts = np.random.SeedSequence([int(seed) & 0x7FFFFFFF, int(epoch)]).generate_state(len(states))
        for variable, start in zip(states, starts):
            value = np.array([int(start) >> 1, 0])  # 31 bits: fits every seed dtype
            variable.assign(value.astype(keras.backend.standardize_dtype(variable.dtype)))
    return len(states)


class ReseedRandomLayers(keras.callbacks.Callback):
    """``reseed`` at the start of every epoch (put it first among the callbacks)."""

    def __init__(self, seed: int):
        super().__init__()
        self.seed = int(seed)

    def on_epoch_begin(self, epoch, logs=None):
        reseed(self.model, self.seed, epoch)
