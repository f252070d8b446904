"""Distribution strategies, and training across several machines without ``model.fit``.

    python -m deeplense_tf.train --strategy mirrored        # all local GPUs (or the CPU)
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m deeplense_tf.train --strategy multiworker  # the same command on every machine

``make_strategy`` turns ``--strategy`` into a ``tf.distribute.Strategy``. Under
``MultiWorkerMirroredStrategy`` Keras 3.15's ``fit`` fails (keras issue 20585, STACK.md), so
``fit_distributed`` runs the model's own ``train_step`` / ``test_step`` (its compiled loss,
optimizer, metrics; SAM and class weights included) through ``strategy.run`` and drives the
callbacks by hand, in the order ``fit`` calls them.

BatchNorm: each replica updates its own copy of the moving statistics from its own batches
(batchnorm.py), so after each epoch's steps the copies are averaged over all replicas, and
``--bn-recalibration`` recalibrates on every replica and averages the result: validation, the
chief's checkpoint and every worker see the same statistics.

``--batch-size`` is the global batch (images per optimiser step, all workers and GPUs
together), as under ``MirroredStrategy`` + ``fit``: each of W workers reads batch / W images a
step from its own slice of the training rows (``worker_share``), so the learning rate, the
schedule and the steps per epoch mean the same as on one machine. Every worker evaluates the
whole validation split; the summed metrics are then the validation metrics of one machine,
identical on every worker, so EarlyStopping / ReduceLROnPlateau decide alike everywhere.
Files (checkpoints, history.csv, TensorBoard, evaluation, export) are written by the chief only.
"""

from __future__ import annotations

import json
import os
from typing import Callable, TypeVar

import keras
import numpy as np
import tensorflow as tf

from deeplense_tf.config import STRATEGIES
from deeplense_tf.errors import ConfigError
from deeplense_tf.training.batchnorm import BatchNormRecalibrator, RecalibrateBatchNorm
from deeplense_tf.training.callbacks import AtomicCheckpoint

T = TypeVar("T")

TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


# One machine: from the GPUs TensorFlow sees (an empty list on a CPU-only machine).
LOCAL_STRATEGIES = {
    "auto": lambda gpus: tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy(),
    "mirrored": lambda gpus: tf.distribute.MirroredStrategy(),  # all local GPUs; the CPU when there are none
    "one-device": lambda gpus: tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0"),
}


def make_strategy(name: str, device: str = "auto") -> tf.distribute.Strategy:
    """The strategy for ``--strategy name``; call before any other TensorFlow op (MultiWorker needs it)."""
    if name not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {STRATEGIES}. Received: strategy={name!r}")
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    if name == "multiworker":  # before listing devices: that starts the runtime without the cluster
        tf_config()  # a clear error before TensorFlow tries to reach the other workers
        return tf.distribute.MultiWorkerMirroredStrategy()
    return LOCAL_STRATEGIES[name](tf.config.list_logical_devices("GPU"))


def tf_config() -> dict:
    """``TF_CONFIG`` parsed and checked: a cluster of chief/worker addresses and this task in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(f"--strategy multiworker needs the TF_CONFIG environment variable on every machine "
                          f"(the cluster's addresses and this machine's place in it), e.g. {TF_CONFIG_EXAMPLE}; "
                          "see README, 'Several machines'")
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        members = [a for role in ("chief", "worker") for a in cluster.get(role, [])]
        ok = kind in ("chief", "worker") and 0 <= index < len(cluster.get(kind, [])) and members \
            and all(isinstance(a, str) and ":" in a for a in members)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ConfigError(f"TF_CONFIG is not valid: {err!r}. Expected JSON like {TF_CONFIG_EXAMPLE}. "
                          f"Received: TF_CONFIG={raw!r}") from None
    if not ok:
        raise ConfigError(f"TF_CONFIG must list 'host:port' addresses under cluster.chief / cluster.worker and "
                          f"name this machine's task (type chief or worker, an index into its list). "
                          f"Received: TF_CONFIG={raw!r}")
    return config


def is_chief() -> bool:
    """The task that writes files: type chief, or worker 0 when the cluster has no chief (or no TF_CONFIG)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    config = tf_config()
    kind, index = config["task"]["type"], int(config["task"]["index"])
    return kind == "chief" or (kind == "worker" and index == 0 and not config["cluster"].get("chief"))


def worker_place() -> tuple[int, int]:
    """(this worker's index among all chief + worker tasks, their number) from ``TF_CONFIG``."""
    config = tf_config()
    cluster, task = config["cluster"], config["task"]
    chiefs = len(cluster.get("chief", []))
    index = int(task["index"]) if task["type"] == "chief" else chiefs + int(task["index"])
    return index, chiefs + len(cluster.get("worker", []))


def worker_share(x, y, batch_size: int, replicas: int, index: int = 0,
                 workers: int = 1) -> tuple[object, np.ndarray, int]:
    """Worker ``index``'s training rows and the per-replica batch (``batch_size`` is global, over
    ``replicas`` = all GPUs of all ``workers``): rows ``index::workers`` of the first
    ``workers * (n // workers)``, equal shares so that every worker runs the same number of
    steps (at most workers - 1 images are left out)."""
    if batch_size % replicas:
        raise ConfigError(f"--batch-size is the global batch and must be divisible by the {replicas} replicas "
                          f"({workers} worker(s), {replicas // workers} device(s) each). "
                          f"Received: batch_size={batch_size}")
    if workers == 1:
        return x, y, batch_size // replicas
    rows = np.arange(index, workers * (len(y) // workers), workers)
    return x[rows], y[rows], batch_size // replicas


def strategy_share(strategy: tf.distribute.Strategy, x, y, batch_size: int) -> tuple[object, np.ndarray, int]:
    """``worker_share`` for this process under ``strategy`` (one worker unless MultiWorker)."""
    place = worker_place() if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) else (0, 1)
    return worker_share(x, y, batch_size, strategy.num_replicas_in_sync, *place)


def whole_steps(dataset: tf.data.Dataset, replicas: int, training: bool = True) -> tuple[tf.data.Dataset, int | None]:
    """A one-pass pipeline of per-replica batches for ``fit`` over ``replicas`` local replicas
    (``--strategy mirrored``), repeated, with the steps of one pass to give ``fit``
    (``steps_per_epoch``, ``validation_steps``); ``(dataset, None)`` where nothing needs doing.

    Why: a step takes one batch per replica, but Keras counts the distributed dataset's length in
    batches. On two replicas, training ran past the data every epoch (Keras showed 12/12 steps for
    6 steps of data; ``optimizer.iterations`` was 14 after 2 epochs) and validation ended on "ran
    out of data", after a step that gave one replica an empty batch. Training is cut to whole steps:
    the fewer than ``replicas`` batches left over are others every epoch (the order is drawn per
    epoch). Evaluation keeps every batch, so it is only repeated when its batches fill whole steps
    (``whole_step_batch``); otherwise it stays as it is (Keras warns, the metrics are right)."""
    batches = int(dataset.cardinality())
    if replicas == 1 or batches < 0 or (not training and batches % replicas):
        return dataset, None
    steps = batches // replicas
    if steps == 0:
        raise ConfigError(f"{batches} training batch(es) for {replicas} replicas: lower --batch-size so that "
                          "every replica gets at least one batch a step")
    return dataset.take(steps * replicas).repeat(), steps


def whole_step_batch(rows: int, batch: int, replicas: int) -> int:
    """The largest per-replica batch <= ``batch`` that cuts ``rows`` into whole steps (a multiple of
    ``replicas`` batches), for evaluation under ``whole_steps``; ``batch`` when none does."""
    for size in range(batch, 0, -1):
        if -(-rows // size) % replicas == 0:
            return size
    return batch


def distribute(strategy: tf.distribute.Strategy, dataset: tf.data.Dataset):
    """Each replica reads its own batches of ``dataset`` as they are. (``fit`` would otherwise pass it
    through ``experimental_distribute_dataset``, whose rebatching rewrite turned the pipeline's
    ``rebatch`` into whole blocks of rows a step: 1 step of 24 images instead of 6 of 4.)"""
    if strategy is tf.distribute.get_strategy():
        return dataset
    return strategy.distribute_datasets_from_function(lambda _: dataset)


# ---------------------------------------------------------------------------------------------
# The training loop

def _metric_results(model: keras.Model) -> dict:
    """``model.get_metrics_result`` without converting to floats (works inside a tf.function).
    Read in cross-replica context, the metrics' on-read variables are summed over all replicas."""
    results = {}
    for metric in model.metrics:
        value = metric.result()
        results.update(value if isinstance(value, dict) else {metric.name: value})
    return results


def _floats(logs: dict) -> dict:
    return {k: float(np.asarray(v)) for k, v in logs.items()}


def _train_function(model: keras.Model, strategy: tf.distribute.Strategy):
    @tf.function
    def step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))  # gradients all-reduced by the optimizer
        return _metric_results(model)

    return step


def _test_function(model: keras.Model, strategy: tf.distribute.Strategy):
    @tf.function
    def step(batch):
        strategy.run(model.test_step, args=(batch,))

    return step


def _step_key(model: keras.Model) -> tuple:
    """Changes when --unfreeze-at rebuilds the optimizer over new variables: the step is retraced."""
    return id(model.optimizer), tuple(id(v) for v in model.trainable_variables)


def fit_distributed(model: keras.Model, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None, epochs: int,
                    initial_epoch: int = 0, callbacks=(), strategy: tf.distribute.Strategy | None = None,
                    chief: bool = True, verbose: int = 2) -> keras.callbacks.History:
    """``model.fit`` for strategies whose ``fit`` fails (MultiWorkerMirroredStrategy).

    ``train_ds`` / ``val_ds``: this worker's batches (per-replica size). Every worker must call this
    with the same number of training batches. ``chief=False`` drops the callbacks that write files;
    they run outside the strategy's scope, so they start no collective op that the others would miss.
    """
    strategy = strategy or model.distribute_strategy
    chief_only = (AtomicCheckpoint, keras.callbacks.CSVLogger, keras.callbacks.TensorBoard,
                  keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)
    # Recalibration (on every worker: it all-reduces) runs on the replicas, each from its own batches.
    kept = [RecalibrateBatchNorm(c.dataset, c.batches, strategy=strategy) if isinstance(c, RecalibrateBatchNorm) else c
            for c in callbacks if chief or not isinstance(c, chief_only)]
    batch_norm = BatchNormRecalibrator(model, batches=0, strategy=strategy)  # averages the replicas' statistics
    history = keras.callbacks.History()
    local = strategy.extended.worker_devices  # replicas on this worker: each takes its own batch
    steps = max(1, int(train_ds.cardinality()) // len(local))
    callback_list = keras.callbacks.CallbackList([*kept, history], add_progbar=verbose > 0, model=model,
                                                 verbose=verbose, epochs=epochs, steps=steps)
    # Callbacks run outside the strategy's scope: a variable created there (model.save creates some) would
    # be a collective broadcast that the other workers never join. Epoch starts stay inside it, so that
    # --unfreeze-at builds its new optimizer's variables as distributed ones, on every worker alike.
    train_dist = distribute(strategy, train_ds)
    val_dist = distribute(strategy, val_ds) if val_ds is not None else None
    model.stop_training, epoch_logs = False, None
    train_step, key = _train_function(model, strategy), _step_key(model)
    test_step = _test_function(model, strategy)
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        with strategy.scope():
            callback_list.on_epoch_begin(epoch)
        if _step_key(model) != key:
            train_step, key = _train_function(model, strategy), _step_key(model)
        iterator, logs = iter(train_dist), {}
        for batch in range(steps):
            callback_list.on_train_batch_begin(batch)
            logs = _floats(train_step(iterator))
            callback_list.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        batch_norm.average_over_replicas()  # before validation and the epoch's checkpoint
        if val_dist is not None and not model.stop_training:
            epoch_logs.update({f"val_{k}": v for k, v in _evaluate(model, val_dist, test_step, callback_list).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        model.stop_training = _any_worker(strategy, model.stop_training)
        if model.stop_training:
            break
    callback_list.on_train_end(epoch_logs)
    return history


def _evaluate(model, val_dist, test_step, callback_list) -> dict:
    model.reset_metrics()
    callback_list.on_test_begin()
    for batch, data in enumerate(val_dist):
        callback_list.on_test_batch_begin(batch)
        test_step(data)
        callback_list.on_test_batch_end(batch)
    logs = _floats(tf.function(_metric_results)(model))  # summed over the workers, each saw the whole split
    callback_list.on_test_end(logs)
    return logs


def _any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """A stop on one worker stops all: a worker that left the loop would leave the others waiting."""
    return bool(_sum_over_replicas(strategy, tf.constant(float(flag))) > 0)


@tf.function
def _sum_over_replicas(strategy, value):
    return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(value)), axis=None)


def on_chief(strategy: tf.distribute.Strategy, work: Callable[[], T]) -> T | None:
    """``work()`` on the chief (evaluation, export), while the other workers wait for it at a
    collective: a worker that exits early is reported to the chief as crashed."""
    chief = is_chief()
    if not chief:
        print("worker finished training; waiting for the chief, which writes the checkpoints, evaluation "
              "and export", flush=True)
    result = work() if chief else None
    _any_worker(strategy, False)
    return result
