"""``--data sim-stream:<preset>``: train on an endless stream of freshly simulated lenses.

    python -m deeplense_tf.train --data sim-stream:model_ii --workers 2 --samples 3000

Training images come from ``deeplense_tf.sim.stream.stream`` (``--workers`` simulator processes) and are
never repeated: the stream's seed is the run's ``--seed`` + ``STREAM_SEED_OFFSET`` (2**32), and
epoch ``e`` is stream positions ``e*P .. (e+1)*P - 1`` (``P`` = steps per epoch x batch), so
``--resume`` after epoch ``e`` starts at position ``e*P`` and sees the same images, in the same
order, as an uninterrupted run. Steps per epoch: ``--samples`` images per streamed class (what a
stored ``sim:`` run of the same ``--samples`` holds), rounded up to whole batches.

Validation and test: one fixed set of ``--samples`` images per class drawn with the run's own
``--seed`` (the cached ``sim:<preset>`` set, ``simulate.cached_simulation``), split into val and
test in the ratio val_fraction : test_fraction (seeded, stratified), held in memory. Its seed
(< 2**32) is never a stream's seed (>= 2**32), so no evaluation image is ever trained on, and
every epoch, run and later ``evaluate`` scores the same images.

Streamed classes: those with a label for the task in the fixed set, in preset order and in
turn (so batches are class-balanced): regression of log10 axion mass streams the axion class
only, ``--task anomaly`` the normal class only. The regression target is standardised with the
fixed set's validation mean and std (the stored path uses its training split's).
Measured against training speed: ``python -m pipelines.stream_speed``.
"""

from __future__ import annotations

import itertools
import time
import weakref
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from deeplense_tf.data.index import label_table
from deeplense_tf.data.npy import to_hwc
from deeplense_tf.data.pipeline import AUTOTUNE
from deeplense_tf.errors import ConfigError, DataError
from deeplense_tf.sim.stream import stream
from deeplense_tf.tasks import get_task

PREFIX = "sim-stream:"
STREAM_SEED_OFFSET = 1 << 32  # run seeds stay below it (TensorFlow takes 32-bit seeds), stream seeds above


@dataclass(frozen=True)
class StreamPlan:
    """Everything that fixes a run's training stream (recorded in ``data.json`` as ``stream``)."""

    spec: str
    preset: str
    seed: int  # the stream's own seed: run seed + STREAM_SEED_OFFSET
    classes: tuple[str, ...]  # streamed, in preset order
    task: str
    target: str
    class_names: tuple[str, ...]  # the task's class names (classification / anomaly label indices)
    label_column: str | None
    image_shape: tuple[int, int, int]
    batch_size: int  # global batch
    steps_per_epoch: int
    workers: int | None

    @property
    def images_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def start(self, epoch: int) -> int:
        """The stream position epoch ``epoch`` (0-based) begins at."""
        return int(epoch) * self.images_per_epoch

    def info(self) -> dict:
        return {"spec": self.spec, "preset": self.preset, "seed": self.seed, "seed_offset": STREAM_SEED_OFFSET,
                "classes": list(self.classes), "images_per_epoch": self.images_per_epoch,
                "steps_per_epoch": self.steps_per_epoch, "batch_size": self.batch_size,
                "epoch_start": "epoch e (0-based) = stream positions e*images_per_epoch onwards"}


def is_stream(spec) -> bool:
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    return any(str(s).strip().startswith(PREFIX) for s in specs)


def batch_labels(plan: StreamPlan, metas: list[dict]) -> np.ndarray:
    """The task's labels of streamed images, from their metadata, exactly as the stored path makes them."""
    table = label_table(pd.DataFrame(metas), plan.label_column, plan.spec)
    if plan.task in ("classification", "anomaly"):  # indices into the fixed set's class names
        names = table["class"].astype(str).tolist()
        unknown = sorted(set(names) - set(plan.class_names))
        if unknown:
            raise DataError(f"{plan.spec}: streamed class(es) {unknown} are not among {list(plan.class_names)}")
        return np.array([plan.class_names.index(n) for n in names], np.int32)
    labels = get_task(plan.task).labels(table, plan.target)
    if not labels.keep.all():
        bad = [f"{m['class']} {m['index']}" for m, ok in zip(metas, labels.keep) if not ok]
        raise DataError(f"{plan.spec}: streamed image(s) {bad[:5]} have no {plan.task} label ({plan.target})")
    return labels.y


class StreamSource:
    """The training input of a stream run: ``dataset()`` (batches from the stream), ``callback``
    (keeps the stream's start on the epoch ``fit`` is in) and ``recalibration_dataset()``.

    ``batch_size`` is the per-replica batch; a step takes ``replicas`` of them. Each new iteration
    of ``dataset()`` starts at the current epoch's position; Keras keeps one iterator across
    epochs when ``steps_per_epoch`` is given, and each epoch then takes exactly its own positions.
    ``keep_last``: the last batches of each epoch are kept for BatchNorm recalibration, so it
    sees images of the epoch just trained, the same ones in a resumed run, at no simulation cost.
    """

    def __init__(self, plan: StreamPlan, batch_size: int, fit_labels, first_epoch: int = 0, keep_last: int = 0,
                 replicas: int = 1, block: int = 32):
        self.plan, self.batch_size, self.fit_labels = plan, int(batch_size), fit_labels
        self.batches_per_epoch = plan.steps_per_epoch * int(replicas)
        if self.batches_per_epoch * self.batch_size != plan.images_per_epoch:
            raise ConfigError(f"--batch-size {plan.batch_size} must be divisible by the {replicas} replicas")
        self.epoch, self.keep_last, self.block = int(first_epoch), int(keep_last), int(block)
        self.starts: list[int] = []  # stream position of each iteration's first batch (tests, logs)
        self._kept: dict[int, dict[int, tuple]] = {}
        self._generators: weakref.WeakSet = weakref.WeakSet()
        self._closed = False
        raw = np.zeros(self.batch_size, np.float32 if plan.task == "regression" else np.int32)
        probe = np.asarray(fit_labels(raw))
        self.signature = (tf.TensorSpec((self.batch_size, *plan.image_shape), tf.float32),
                          tf.TensorSpec(probe.shape, tf.as_dtype(probe.dtype)))
        # First in fit's callback list: which epoch fit is in, so a new iteration starts at its position.
        self.callback = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: self._set_epoch(epoch))

    def _set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, first_batch: int):
        """(images, labels) batches from batch ``first_batch`` of the stream on, until closed."""
        plan = self.plan
        items = stream(plan.preset, plan.seed, plan.workers, start=first_batch * self.batch_size,
                       block=self.block, classes=plan.classes)
        try:
            for b in itertools.count(first_batch):
                if self._closed:
                    return
                chunk = list(itertools.islice(items, self.batch_size))
                x = np.stack([to_hwc(image) for image, _, _ in chunk])
                if x.shape[1:] != plan.image_shape:
                    raise DataError(f"{plan.spec}: streamed images have shape {x.shape[1:]}, the fixed set "
                                    f"{plan.image_shape}")
                y = np.asarray(self.fit_labels(batch_labels(plan, [m for _, _, m in chunk])))
                self._keep(b, x, y)
                yield x, y
        finally:
            items.close()  # shuts the worker processes down

    def _start(self):
        self.starts.append(self.plan.start(self.epoch))
        generator = self.batches(self.epoch * self.batches_per_epoch)
        self._generators.add(generator)
        return generator

    def _keep(self, b: int, x: np.ndarray, y: np.ndarray) -> None:
        if self.keep_last <= 0:
            return
        epoch, step = divmod(b, self.batches_per_epoch)
        if step >= self.batches_per_epoch - self.keep_last:
            # copies: the yielded arrays go to TensorFlow without a copy, and a kernel may reuse their memory
            self._kept.setdefault(epoch, {})[step] = (x.copy(), y.copy())
            for old in [e for e in list(self._kept) if e < epoch - 1]:
                self._kept.pop(old, None)

    def dataset(self, augment: Callable | None = None):
        """Batches ``(float32 (B,H,W,C), labels)``, endless, prefetched: give ``fit`` ``steps_per_epoch``.

        ``augment``: a ``(images, labels) -> (images, labels)`` map (``models.augment.augmenter``), or None.
        """
        ds = tf.data.Dataset.from_generator(self._start, output_signature=self.signature)
        if augment is not None:
            ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
        options = tf.data.Options()
        options.threading.max_intra_op_parallelism = 1  # leave the cores' thread pool to the model's ops
        return ds.with_options(options).prefetch(AUTOTUNE)

    def recalibration_dataset(self):
        """The kept last batches of the epoch ``fit`` is in (read before its validation)."""
        def kept():
            batches = self._kept.get(self.epoch, {})
            yield from (batches[step] for step in sorted(batches))

        return tf.data.Dataset.from_generator(kept, output_signature=self.signature)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the stream and its worker processes (a generator busy in another thread stops at its next batch)."""
        self._closed = True
        deadline = time.monotonic() + timeout
        for generator in list(self._generators):
            while True:
                try:
                    generator.close()
                    break
                except ValueError:  # running in tf.data's thread right now
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)

