"""Re-estimate BatchNorm's moving statistics from training batches before each validation.

Why: BatchNorm normalises with the batch's statistics in training and with moving averages
(momentum 0.99 in Keras and its applications) at inference. A short run from scratch (the
default CPU job: ~40 steps an epoch) ends with moving averages that still remember the
random initialisation, so validation, checkpoints and the exported model see a different
network from the one that trained: measured on the default Model II set, efficientnet_b0
and a plain 8-layer CNN predicted one class for every validation image (val accuracy exactly
1/3) while the same weights with batch statistics scored 0.42 on train and validation alike.
Recomputing the averages over a few hundred training images ("precise BN", Wu & Johnson
2021, arXiv:2105.07576) removes the gap for the price of a few forward passes.

Under a ``tf.distribute`` strategy Keras' BatchNorm keeps one copy of its moving statistics per
replica (their variables have no aggregation: each replica updates its own copy from its own
batches), so GPUs and workers drift apart. ``strategy=`` recalibrates on every replica from its
own batches and then replaces every copy by the mean over all replicas (one all-reduce);
``average_over_replicas`` does only the latter. Both leave identical statistics everywhere.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Trainable BatchNorm layers of a model, nested models included."""
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif hasattr(layer, "layers"):
            stack.extend(layer.layers)
    return found


class BatchNormRecalibrator:
    """``__call__(dataset)``: moving mean/variance := bias-corrected exponential average of
    ``batches`` training batches' statistics (momentum ``momentum``, from zero).

    The forward pass is compiled once (BatchNorm reads its momentum when traced), so each
    recalibration costs about ``batches`` forward passes of the model in training mode.
    ``strategy`` (MultiWorkerMirroredStrategy, ``distributed.fit_distributed``): every replica
    reads its own batches of ``dataset`` (this worker's pipeline, per-replica batches), then the
    statistics are averaged over all replicas; call it on every worker at the same point.
    """

    def __init__(self, model: keras.Model, batches: int = 20, momentum: float = 0.9,
                 strategy: tf.distribute.Strategy | None = None):
        self.model = model
        self.batches = int(batches)
        self.momentum = float(momentum)
        self.strategy = strategy
        self.layers = batch_norm_layers(model)
        self._forward = self._average = None

    def _refresh_layers(self) -> None:
        layers = batch_norm_layers(self.model)  # again: --unfreeze-at may have made more trainable
        if [id(layer) for layer in layers] != [id(layer) for layer in self.layers]:
            self.layers, self._forward, self._average = layers, None, None  # retrace: frozen ones ran in inference mode

    def __call__(self, dataset: tf.data.Dataset) -> int:
        """Recalibrate from the first ``batches`` batches of ``dataset``; returns the batches used."""
        self._refresh_layers()
        if not self.layers or self.batches <= 0:
            return 0
        saved = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = self.momentum
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
        try:
            used = self._run_local(dataset) if self.strategy is None else self._run_replicas(dataset)
        finally:
            for layer, momentum in zip(self.layers, saved):
                layer.momentum = momentum
        correction = 1.0 - self.momentum ** max(used, 1)
        if self.strategy is None:
            for layer in self.layers:
                layer.moving_mean.assign(layer.moving_mean / correction)
                layer.moving_variance.assign(layer.moving_variance / correction)
        else:
            self.average_over_replicas(1.0 / correction)
        return used

    def _run_local(self, dataset: tf.data.Dataset) -> int:
        if self._forward is None:
            self._forward = tf.function(lambda x: self.model(x, training=True), reduce_retracing=True)
        used = 0
        for batch in dataset.take(self.batches):
            self._forward(_images(batch))
            used += 1
        return used

    def _run_replicas(self, dataset: tf.data.Dataset) -> int:
        strategy, model = self.strategy, self.model
        if self._forward is None:
            @tf.function
            def forward(iterator):
                strategy.run(lambda batch: model(_images(batch), training=True), args=(next(iterator),))

            self._forward = forward
        # The same number of steps on every worker (a collective op waits for all of them): the
        # workers' shares are equally long, so their pipelines have the same known length.
        local = len(strategy.extended.worker_devices)
        available = int(dataset.cardinality())
        steps = self.batches if available < 0 else min(self.batches, available // local)
        iterator = iter(strategy.distribute_datasets_from_function(lambda _: dataset))  # as distributed.distribute
        for _ in range(steps):
            self._forward(iterator)
        return steps

    def average_over_replicas(self, scale: float = 1.0) -> None:
        """Every replica's moving statistics := ``scale`` x their mean over all replicas (all workers).
        A no-op without a strategy or BatchNorm layers; otherwise every worker must call it."""
        self._refresh_layers()
        if self.strategy is None or not self.layers:
            return
        if self._average is None:
            variables = [v for layer in self.layers for v in (layer.moving_mean, layer.moving_variance)]
            strategy = self.strategy

            def replica_fn(factor):
                context = tf.distribute.get_replica_context()
                means = context.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v.value) for v in variables])
                for variable, mean in zip(variables, means):
                    variable.assign(mean * factor)  # in replica context: this replica's own copy

            self._average = tf.function(lambda factor: strategy.run(replica_fn, args=(factor,)))
        self._average(tf.constant(scale, tf.float32))


def _images(batch):
    return batch[0] if isinstance(batch, tuple) else batch


class _BeforeValidation(keras.callbacks.Callback):
    """Runs ``_update()`` once an epoch during ``fit``: just before the validation pass, or at the
    epoch's end when there is none; either way before the checkpoint callback placed after it."""

    def __init__(self):
        super().__init__()
        self._fitting = False
        self._done_this_epoch = False

    def _update(self) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        self._fitting = True

    def on_train_end(self, logs=None):
        self._fitting = False

    def on_epoch_begin(self, epoch, logs=None):
        self._done_this_epoch = False

    def on_test_begin(self, logs=None):
        if self._fitting and not self._done_this_epoch:
            self._update()
            self._done_this_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        if not self._done_this_epoch:
            self._update()
            self._done_this_epoch = True


class RecalibrateBatchNorm(_BeforeValidation):
    """During ``fit``: recalibrate BatchNorm just before each validation pass (and so before the
    epoch's checkpoint), from a training-data pipeline ``dataset``."""

    def __init__(self, dataset: tf.data.Dataset, batches: int = 20, strategy: tf.distribute.Strategy | None = None):
        super().__init__()
        self.dataset = dataset
        self.batches = int(batches)
        self.strategy = strategy  # see BatchNormRecalibrator
        self._recalibrate = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._recalibrate = BatchNormRecalibrator(self.model, self.batches, strategy=self.strategy)

    def _update(self) -> None:
        self._recalibrate(self.dataset)


class AverageBatchNormOverReplicas(_BeforeValidation):
    """During a ``fit`` under a several-replica strategy without recalibration (``--bn-recalibration 0``):
    replace every replica's BatchNorm averages by their mean before each validation pass, so that
    validation, the checkpoint (which saves replica 0's copy) and the export see one network."""

    def __init__(self, strategy: tf.distribute.Strategy):
        super().__init__()
        self.strategy = strategy
        self._average = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._average = BatchNormRecalibrator(self.model, batches=0, strategy=self.strategy)

    def _update(self) -> None:
        self._average.average_over_replicas()
