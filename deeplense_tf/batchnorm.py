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
    """

    def __init__(self, model: keras.Model, batches: int = 20, momentum: float = 0.9):
        self.model = model
        self.batches = int(batches)
        self.momentum = float(momentum)
        self.layers = batch_norm_layers(model)
        self._forward = None

    def __call__(self, dataset: tf.data.Dataset) -> int:
        """Recalibrate from the first ``batches`` batches of ``dataset``; returns the batches used."""
        layers = batch_norm_layers(self.model)  # again: --unfreeze-at may have made more trainable
        if [id(layer) for layer in layers] != [id(layer) for layer in self.layers]:
            self.layers, self._forward = layers, None  # retrace: frozen layers ran in inference mode
        if not self.layers or self.batches <= 0:
            return 0
        saved = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.momentum = self.momentum
            layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
            layer.moving_variance.assign(tf.zeros_like(layer.moving_variance))
        try:
            if self._forward is None:
                self._forward = tf.function(lambda x: self.model(x, training=True), reduce_retracing=True)
            used = 0
            for batch in dataset.take(self.batches):
                self._forward(batch[0] if isinstance(batch, tuple) else batch)
                used += 1
        finally:
            for layer, momentum in zip(self.layers, saved):
                layer.momentum = momentum
        correction = 1.0 - self.momentum ** max(used, 1)
        for layer in self.layers:
            layer.moving_mean.assign(layer.moving_mean / correction)
            layer.moving_variance.assign(layer.moving_variance / correction)
        return used


class RecalibrateBatchNorm(keras.callbacks.Callback):
    """During ``fit``: recalibrate BatchNorm just before each validation pass (and so before the
    epoch's checkpoint), from a training-data pipeline ``dataset``."""

    def __init__(self, dataset: tf.data.Dataset, batches: int = 20):
        super().__init__()
        self.dataset = dataset
        self.batches = int(batches)
        self._recalibrate = None
        self._fitting = False
        self._done_this_epoch = False

    def on_train_begin(self, logs=None):
        self._fitting = True
        self._recalibrate = BatchNormRecalibrator(self.model, self.batches)

    def on_train_end(self, logs=None):
        self._fitting = False

    def on_epoch_begin(self, epoch, logs=None):
        self._done_this_epoch = False

    def on_test_begin(self, logs=None):
        if self._fitting and not self._done_this_epoch:
            self._recalibrate(self.dataset)
            self._done_this_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        # No validation data: the checkpoint written at this epoch's end still gets fresh statistics
        # (this callback runs before the checkpoint callback).
        if not self._done_this_epoch:
            self._recalibrate(self.dataset)
            self._done_this_epoch = True

