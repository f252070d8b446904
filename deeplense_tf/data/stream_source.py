"""``--data sim-stream:<preset>``: train on an endless stream of freshly simulated lenses.

    python -m deeplense_tf.train --data sim-stream:model_ii --workers 2 --samples 3000

Training images come from ``sim_stream.stream`` (``--workers`` simulator processes) and are
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

import numpy as np
import pandas as pd

from deeplense_tf.errors import ConfigError, DataError

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


def stream_preset(spec) -> str:
    """The preset of ``sim-stream:<preset>`` (checked); the stream must be the only ``--data``."""
    from deeplense_tf.data.simulate import get_preset

    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if len(specs) != 1:
        raise ConfigError(f"{PREFIX}<preset> trains from the stream alone; it cannot be joined with other --data. "
                          f"Received: --data {' '.join(map(str, specs))}")
    return get_preset(str(specs[0]).strip()[len(PREFIX):]).name


def prepare_stream(config):
    """The fixed val/test set as ``PreparedData`` (empty train split) plus the training ``StreamPlan``."""
    from deeplense_tf.data.prepare import label_index, normal_class_splits
    from deeplense_tf.data.sources import load_data
    from deeplense_tf.tasks import get_task

    d, t, task = config.data, config.train, config.model.task
    preset = stream_preset(d.data)
    if d.val_data is not None or d.test_data is not None:
        raise ConfigError(f"{PREFIX}{preset} evaluates on its own fixed simulated set; --val-data / --test-data "
                          "are not supported with it (train on sim:<preset> or files instead)")
    if t.strategy == "multiworker":
        raise ConfigError(f"{PREFIX}{preset} runs on one machine (all its GPUs with --strategy mirrored); "
                          "--strategy multiworker is not supported with it")
    if not 0 <= t.seed < STREAM_SEED_OFFSET:
        raise ConfigError(f"--seed must be in [0, 2**32) with {PREFIX}. Received: seed={t.seed}")
    index = load_data(f"sim:{preset}", samples=d.samples, seed=t.seed, workers=d.workers, validate=d.validate,
                      skip_bad=d.skip_bad, label_column=d.label_column, classes=d.classes, stream=False)
    data, strata = label_index(index, task, d.target)
    data.source, data.skipped = d.data, list(index.skipped)
    data.splits = evaluation_splits(strata, d.val_fraction, d.test_fraction, t.seed)
    if get_task(task).trains_on_normal_class_only:
        data.splits = normal_class_splits(data, d.normal_class)
        classes = (d.normal_class,)
    else:
        simulated = data.table["file"].astype(str).str.split("/").str[0]  # <class>/<class>_<index>.npy
        classes = tuple(sorted(set(simulated), key=_preset_order(preset)))
    if task == "regression":
        val_y = data.y[data.splits["val"]]
        data.target_mean, data.target_std = float(np.mean(val_y)), float(np.std(val_y)) or 1.0
    steps = max(1, -(-d.samples * len(classes) // t.batch_size))
    data.stream = StreamPlan(d.data, preset, t.seed + STREAM_SEED_OFFSET, classes, task, d.target,
                             tuple(data.class_names), d.label_column, data.input_shape, t.batch_size, steps,
                             d.workers)
    print(f"data: training stream {d.data}: classes {', '.join(classes)}, {steps} steps of {t.batch_size} per "
          f"epoch, seed {data.stream.seed}; val/test: {index.describe()}", flush=True)
    return data


def _preset_order(preset: str):
    from deeplense_tf.data.simulate import get_preset

    known = get_preset(preset).classes
    return lambda c: known.index(c) if c in known else len(known)


def evaluation_splits(strata: np.ndarray, val_fraction: float, test_fraction: float,
                      seed: int) -> dict[str, np.ndarray]:
    """Val and test cut from the fixed set (per stratum, seeded, in the ratio val:test); train empty."""
    rng = np.random.default_rng(seed)
    share = test_fraction / (val_fraction + test_fraction)
    val, test = [], []
    for value in sorted(set(strata.tolist()), key=str):
        idx = rng.permutation(np.flatnonzero(strata == value))
        n_test = min(len(idx) - 1, max(1, round(len(idx) * share))) if len(idx) >= 2 else 0
        test.append(idx[:n_test])
        val.append(idx[n_test:])
    splits = {"train": np.zeros(0, np.int64), "val": np.sort(np.concatenate(val)),
              "test": np.sort(np.concatenate(test))}
    if not len(splits["val"]) or not len(splits["test"]):
        raise DataError(f"too few images ({len(strata)}) for a validation and a test set; raise --samples")
    return splits


def batch_labels(plan: StreamPlan, metas: list[dict]) -> np.ndarray:
    """The task's labels of streamed images, from their metadata, exactly as the stored path makes them."""
    from deeplense_tf.data.sources import label_table
    from deeplense_tf.tasks import get_task

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
        import keras
        import tensorflow as tf

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

    @classmethod
    def for_model(cls, model, config, data, initial_epoch: int, fit_labels) -> "StreamSource":
        """The stream of ``data`` for ``fit`` under the model's strategy, from ``initial_epoch``'s position."""
        import tensorflow as tf

        from deeplense_tf.distributed import strategy_share

        strategy, batch = model.distribute_strategy, config.train.batch_size
        if strategy is not tf.distribute.get_strategy():  # per-replica batches; a step takes one per replica
            batch = strategy_share(strategy, None, np.zeros(0), batch)[2]
        return cls(data.stream, batch, fit_labels, first_epoch=initial_epoch, keep_last=config.train.bn_recalibration,
                   replicas=strategy.num_replicas_in_sync)

    def batches(self, first_batch: int):
        """(images, labels) batches from batch ``first_batch`` of the stream on, until closed."""
        from deeplense_tf.data.npy import to_hwc
        from deeplense_tf.data.sim_stream import stream

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
            self._kept.setdefault(epoch, {})[step] = (x, y)
            for old in [e for e in list(self._kept) if e < epoch - 1]:
                self._kept.pop(old, None)

    def dataset(self, augment: bool = False, seed: int = 0):
        """Batches ``(float32 (B,H,W,C), labels)``, endless, prefetched: give ``fit`` ``steps_per_epoch``."""
        import tensorflow as tf

        from deeplense_tf.data.pipeline import AUTOTUNE, augmenter

        ds = tf.data.Dataset.from_generator(self._start, output_signature=self.signature)
        if augment:
            ds = ds.map(augmenter(seed), num_parallel_calls=AUTOTUNE)
        options = tf.data.Options()
        options.threading.max_intra_op_parallelism = 1  # leave the cores' thread pool to the model's ops
        return ds.with_options(options).prefetch(AUTOTUNE)

    def recalibration_dataset(self):
        """The kept last batches of the epoch ``fit`` is in (read before its validation)."""
        import tensorflow as tf

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

