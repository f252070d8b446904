"""Sharpness-aware minimisation (Foret et al. 2021, arXiv:2010.01412) around any optimiser.

Each step: gradient g at the weights w, climb to w + rho * g / |g| (the worst nearby point to
first order), take the gradient there, step from w with it using the run's own optimiser
(Adam, AdamW, SGD; its schedule and clipping). Two forward/backward passes a step. Both run
in training mode (batch statistics, dropout), but only the first updates BatchNorm's moving
statistics: they are put back after the pass at the perturbed weights, so a SAM step leaves
them as a plain step would (the perturbed weights never serve at inference).

``enable_sam`` replaces the train step of one model instance; the model stays a plain
functional model, so checkpoints, ``.keras`` files and the SavedModel are unchanged and
``--resume`` calls ``enable_sam`` again on the loaded model.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf
from keras.src.losses.loss import unscale_loss_for_distribution  # what Keras' train_step uses

from deeplense_tf.training.batchnorm import batch_norm_layers


def _loss(model, x, y, sample_weight):
    y_pred = model(x, training=True)
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    return y_pred, loss


def _moving_statistics(model) -> list:
    """The variables a training-mode forward pass updates: BatchNorm's moving statistics."""
    return [v for layer in batch_norm_layers(model) for v in layer.non_trainable_variables]


def sam_train_step(self, data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = self.trainable_variables
    with tf.GradientTape() as tape:
        y_pred, loss = _loss(self, x, y, sample_weight)
        scaled = self.optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    norm = tf.linalg.global_norm([g for g in grads if g is not None])
    scale = self._sam_rho / (norm + 1e-12)
    steps = [None if g is None else tf.cast(g * scale, v.dtype) for g, v in zip(grads, variables)]
    for v, e in zip(variables, steps):
        if e is not None:
            v.assign_add(e)
    statistics = _moving_statistics(self)
    kept = [tf.identity(v.value) for v in statistics]  # this replica's copy, under a strategy
    with tf.GradientTape() as tape:
        _, perturbed = _loss(self, x, y, sample_weight)
        perturbed = self.optimizer.scale_loss(perturbed)
    sharp_grads = tape.gradient(perturbed, variables)
    for v, value in zip(statistics, kept):
        v.assign(value)
    for v, e in zip(variables, steps):
        if e is not None:
            v.assign_sub(e)
    self.optimizer.apply_gradients(zip(sharp_grads, variables))
    first = next(t for t in tf.nest.flatten(x) if t is not None)
    # As Keras' own train step: under a strategy the loss is scaled by 1/replicas for the gradient sum.
    self._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=tf.shape(first)[0])
    return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def enable_sam(model: keras.Model, rho: float) -> keras.Model:
    """Make ``model.fit`` take SAM steps of radius ``rho`` (call before the first ``fit``)."""
    if rho <= 0:
        return model
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("SAM is implemented for the TensorFlow backend only")
    model._sam_rho = float(rho)
    model.train_step = types.MethodType(sam_train_step, model)
    model.train_function = None  # retrace with the new step
    return model
