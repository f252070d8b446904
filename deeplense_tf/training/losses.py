"""The loss of a run: the task's default, or ``--loss`` (regression) / ``--label-smoothing``."""

from __future__ import annotations

import keras

from deeplense_tf.config import TrainConfig


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


REGRESSION_LOSSES = {
    "mse": lambda: keras.losses.MeanSquaredError(name="mse"),
    "huber": lambda: keras.losses.Huber(delta=1.0, name="huber"),
    "mae": lambda: keras.losses.MeanAbsoluteError(name="mae"),
}


def task_loss(task_name: str, default, train: TrainConfig):
    """What ``model.compile`` gets as ``loss`` for this task and training config."""
    if task_name == "regression" and train.loss:
        return REGRESSION_LOSSES[train.loss]()
    if train.label_smoothing and task_name == "classification":
        return SparseSmoothedCrossentropy(train.label_smoothing)
    if train.label_smoothing and task_name == "lens_finding":
        return keras.losses.BinaryCrossentropy(label_smoothing=train.label_smoothing)
    return default
