"""Callbacks that keep a run recoverable: atomic last/best checkpoints and a resume state."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import keras

from deeplense_tf import runs
from deeplense_tf.errors import UserError
from deeplense_tf.training.ema import ema_weights
from deeplense_tf.training.schedules import current_lr


class AtomicCheckpoint(keras.callbacks.Callback):
    """After every epoch: ``last.keras`` (with optimizer state) and, when the monitored value
    improved, ``best.keras``; then ``state.json``. Each file is renamed into place, so a kill at
    any moment leaves the previous complete checkpoint loadable."""

    def __init__(self, run_dir: Path, monitor: str = "val_loss", mode: str = "min", best: float | None = None):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.sign = 1.0 if mode == "min" else -1.0
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        previous_best_epoch = _previous_best_epoch(self.run_dir)
        runs.save_keras_model(self.model, self.run_dir / runs.LAST)
        # state.json follows last.keras at once: a kill while best.keras is written must not leave the
        # state an epoch behind the weights (the resumed run would repeat an epoch at a later rate).
        self._write_state(epoch, previous_best_epoch)
        improved = value is not None and math.isfinite(value) and (
            self.best is None or self.sign * value < self.sign * self.best)
        if improved:
            self.best = float(value)
            with ema_weights(self.model):  # --ema: the averaged weights that scored (ema.py); else as is
                runs.save_keras_model(self.model, self.run_dir / runs.BEST)
            self._write_state(epoch, epoch + 1)

    def _write_state(self, epoch: int, best_epoch) -> None:
        runs.write_json(self.run_dir / runs.STATE, {"epochs_done": epoch + 1, "monitor": self.monitor,
                                                    "best": self.best, "best_epoch": best_epoch})


def _previous_best_epoch(run_dir: Path):
    path = run_dir / runs.STATE
    return runs.read_json(path).get("best_epoch") if path.exists() else None


class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first non-finite loss and say where; the last good checkpoint stays."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure: str | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = (f"loss became {loss} at epoch {self.epoch + 1}, step {batch + 1}; training stopped. "
                            "The last good checkpoint is kept; try a lower --lr")
            self.model.stop_training = True

    def raise_if_failed(self):
        if self.failure:
            raise UserError(self.failure)


class LogEpochTime(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall time of the epoch: training, recalibration, validation) to the
    logs, so history.csv says what a run cost (``python -m deeplense_tf.runs``, the study leaderboard)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self.started


class LogEpochPhases(keras.callbacks.Callback):
    """Adds where an epoch's time went to the logs (history.csv), for ``pipelines.fit_overhead``:

    - ``step_ms``: the median training step inside ``fit`` (input wait included; the first two left
      out where more remain), to set beside the bare step of ``pipelines.train_speed``;
    - ``steps_seconds``: the epoch's training loop, from its start to the end of its last step;
    - ``recalibration_seconds``: from the last step to the start of validation, i.e. the BatchNorm
      recalibration (and the EMA swap), so this callback must come after those in the list;
    - ``validation_seconds``: the validation pass;
    - ``between_epochs_seconds``: from the previous epoch's end (this callback's) to this epoch's start:
      the previous epoch's checkpoint, history row and TensorBoard write (0 for a run's first epoch).

    Its per-batch hook (and StopOnNaN's) costs fit no asynchronous dispatch: Keras 3 dispatches batch
    callbacks on a thread pool only where the backend is thread-safe, and its TensorFlow backend says it
    is not (``keras.src.backend.tensorflow.core.IS_THREAD_SAFE = False``), so they run in line there anyway.
    """

    def __init__(self):
        super().__init__()
        self._ended = None
        self.step_ends, self.validation = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.between = self.started - self._ended if self._ended is not None else 0.0
        self.step_ends, self.validation = [], None

    def on_train_batch_end(self, batch, logs=None):
        self.step_ends.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        if self.validation is None and self.step_ends:  # fit's validation pass, not a later evaluate()
            self.validation = [time.perf_counter(), None]

    def on_test_end(self, logs=None):
        if self.validation is not None and self.validation[1] is None:
            self.validation[1] = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        if logs is None or not self.step_ends:
            return
        last_step = self.step_ends[-1]
        ends = [self.started, *self.step_ends]
        steps = [b - a for a, b in zip(ends, ends[1:])]
        begin, end = self.validation or (now, now)
        logs.update(step_ms=1000 * statistics.median(steps[2:] or steps),
                    steps_seconds=last_step - self.started, recalibration_seconds=begin - last_step,
                    validation_seconds=(end or now) - begin, between_epochs_seconds=self.between)
        self._ended = time.perf_counter()


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate at the epoch's end (that of the next step) to the logs (history.csv,
    TensorBoard), whatever the schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_lr(self.model.optimizer)


def hparams_callback(log_dir: Path, values: dict, session: str) -> keras.callbacks.Callback:
    """A TensorBoard HParams session in a run's ``logs/`` folder (the HParams tab of ``tensorboard
    --logdir runs``): ``values`` by name, tuples written as text (HParams takes bool, int, float and
    str). None is left out: a setting that is a number where given (``--ema``, ``--clipnorm``) keeps
    a numeric column, which one text "None" among the runs would turn into text."""
    from tensorboard.plugins.hparams import api as hparams_api

    def scalar(value):
        return value if isinstance(value, (bool, int, float, str)) else str(value)

    hparams = {name: scalar(value) for name, value in values.items() if value is not None}
    return hparams_api.KerasCallback(str(log_dir), hparams, trial_id=session)
