"""Learning-rate schedules by optimiser step: cosine with linear warm-up, and one-cycle.

Both are ``LearningRateSchedule`` objects, so the position in the schedule is the optimiser's
own ``iterations`` counter, saved in every checkpoint: a resumed run continues exactly where
it stopped. ``plateau`` (halve on a stalled validation loss) and ``constant`` use a plain
float learning rate instead (``ReduceLROnPlateau`` can only change a float).
"""

from __future__ import annotations

import math

import keras

from deeplense_tf.config import SCHEDULES


@keras.saving.register_keras_serializable(package="deeplense_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from ``peak / warmup_steps`` to ``peak`` over ``warmup_steps``, then cosine down to
    ``peak * final_ratio`` at ``total_steps`` (held there after).

    Warm-up matters for BatchNorm networks trained from scratch: the first steps' large
    gradients otherwise push the batch statistics far from where they settle.
    """

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, final_ratio: float = 0.01):
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.final_ratio = float(final_ratio)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32") + 1.0  # the first step already gets a non-zero rate
        warm = self.peak * step / max(1, self.warmup_steps)
        span = max(1, self.total_steps - self.warmup_steps)
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        floor = self.peak * self.final_ratio
        cosine = floor + (self.peak - floor) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step <= self.warmup_steps, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "final_ratio": self.final_ratio}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's one-cycle policy (learning rate only): cosine up from ``peak / div`` to ``peak``
    over the first ``pct_start`` of the steps, then cosine down to ``peak / (div * final_div)``."""

    def __init__(self, peak: float, total_steps: int, pct_start: float = 0.3, div: float = 25.0,
                 final_div: float = 1e4):
        self.peak = float(peak)
        self.total_steps = max(2, int(total_steps))
        self.pct_start = float(pct_start)
        self.div = float(div)
        self.final_div = float(final_div)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        up = max(1.0, self.pct_start * self.total_steps)
        down = max(1.0, self.total_steps - up)
        start, end = self.peak / self.div, self.peak / (self.div * self.final_div)

        def anneal(a, b, t):  # cosine from a (t=0) to b (t=1)
            t = ops.clip(t, 0.0, 1.0)
            return b + (a - b) * 0.5 * (1.0 + ops.cos(math.pi * t))

        return ops.where(step < up, anneal(start, self.peak, step / up), anneal(self.peak, end, (step - up) / down))

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "div": self.div, "final_div": self.final_div}


def learning_rate(schedule: str, lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0):
    """The optimiser's ``learning_rate`` argument for a schedule name (a float for plateau/constant)."""
    total = max(1, steps_per_epoch * epochs)
    if schedule == "cosine":
        return WarmupCosine(lr, total, warmup_steps=round(warmup_epochs * steps_per_epoch))
    if schedule == "onecycle":
        return OneCycle(lr, total)
    if schedule in ("plateau", "constant"):
        return float(lr)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def current_lr(optimizer) -> float:
    """The rate the optimiser uses at its current step, whatever kind of schedule it has."""
    lr = optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))
