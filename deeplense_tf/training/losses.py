"""The loss of a run: the task's default, or ``--loss`` (regression) / ``--label-smoothing``, or the
Gaussian likelihood of ``--uncertainty gaussian`` with the metrics of its ``[mean, sigma]`` output."""

from __future__ import annotations

import math

import keras

from deeplense_tf.config import ModelConfig, TrainConfig


@keras.saving.register_keras_serializable(package="deeplense_tf")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of integer labels with label smoothing (Keras' sparse loss has none).

    The target is ``(1 - s) * one_hot + s / classes``, as in ``CategoricalCrossentropy``.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class GaussianNLL(keras.losses.Loss):
    """Negative log-likelihood of the target under N(mean, sigma^2); ``y_pred`` is ``[mean, sigma]``.

    ``beta`` > 0 weights each image's term by sigma^(2 beta), held constant in the gradient
    (beta-NLL, Seitzer et al. 2022): plain NLL (beta 0) lets the network explain a hard image by a
    large sigma and stop fitting its mean (its gradient is (mean - y) / sigma^2); beta 1 gives the
    mean the gradient of MSE, (mean - y), and beta 0.5 lies between.
    """

    def __init__(self, beta: float = 1.0, name: str = "gaussian_nll", **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = float(beta)

    def call(self, y_true, y_pred):
        y = keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1,))
        mean, sigma = y_pred[:, 0], y_pred[:, 1]
        nll = 0.5 * math.log(2 * math.pi) + keras.ops.log(sigma) + 0.5 * keras.ops.square((y - mean) / sigma)
        if self.beta:
            nll = nll * keras.ops.stop_gradient(keras.ops.power(sigma, 2 * self.beta))
        return nll

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="deeplense_tf")
def absolute_error_of_mean(y_true, y_pred):
    """|y - mean| of a ``[mean, sigma]`` output: the ``mae`` metric of a Gaussian head."""
    return keras.ops.abs(keras.ops.reshape(keras.ops.cast(y_true, y_pred.dtype), (-1,)) - y_pred[:, 0])


@keras.saving.register_keras_serializable(package="deeplense_tf")
def predicted_sigma(y_true, y_pred):
    """The sigma of a ``[mean, sigma]`` output: its mean is logged as the ``sigma`` metric."""
    return y_pred[:, 1]


def gaussian_metrics() -> list:
    return [keras.metrics.MeanMetricWrapper(absolute_error_of_mean, name="mae"),
            keras.metrics.MeanMetricWrapper(predicted_sigma, name="sigma")]


REGRESSION_LOSSES = {
    "mse": lambda: keras.losses.MeanSquaredError(name="mse"),
    "huber": lambda: keras.losses.Huber(delta=1.0, name="huber"),
    "mae": lambda: keras.losses.MeanAbsoluteError(name="mae"),
}


def task_loss(task_name: str, default, train: TrainConfig, model: ModelConfig | None = None):
    """What ``model.compile`` gets as ``loss`` for this task and training config."""
    if task_name == "regression" and model is not None and model.uncertainty == "gaussian":
        return GaussianNLL(beta=train.nll_beta)
    if task_name == "regression" and train.loss:
        return REGRESSION_LOSSES[train.loss]()
    if train.label_smoothing and task_name == "classification":
        return SparseSmoothedCrossentropy(train.label_smoothing)
    if train.label_smoothing and task_name == "lens_finding":
        return keras.losses.BinaryCrossentropy(label_smoothing=train.label_smoothing)
    return default
