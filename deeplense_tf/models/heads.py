"""Task heads on top of a pooled feature vector."""

from __future__ import annotations

import keras

from deeplense_tf.config import ModelConfig


@keras.saving.register_keras_serializable(package="deeplense_tf")
class Destandardize(keras.layers.Layer):
    """``y = x * std + mean``: the network learns a standardised target, outputs are physical."""

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, x):
        return x * self.std + self.mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def regression_head(features, config: ModelConfig, target_mean: float = 0.0, target_std: float = 1.0):
    """Dense-ReLU, BatchNorm, Dropout (twice), Dense(1), then back to physical units."""
    x = features
    for i, units in enumerate(config.fc_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        x = keras.layers.BatchNormalization(name=f"head_bn{i}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"head_dropout{i}")(x)
    x = keras.layers.Dense(1, dtype="float32", name="head_out")(x)
    return Destandardize(target_mean, target_std, dtype="float32", name="target")(x)


def classification_head(features, config: ModelConfig, n_classes: int):
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(features)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def lens_finding_head(features, config: ModelConfig):
    x = keras.layers.Dropout(config.dropout, name="head_dropout")(features)
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="lens_probability")(x)
