"""Task heads on top of a pooled feature vector."""

from __future__ import annotations

import keras

from deeplense_tf.config import ModelConfig, head_dropout


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


@keras.saving.register_keras_serializable(package="deeplense_tf")
class GaussianOutput(keras.layers.Layer):
    """``(mu, log variance)`` in standardised units -> ``[mean, sigma]`` in the target's units.

    The log variance is clipped to [-14, 6] (sigma from 1e-3 to 20 target standard deviations) so
    that one wild batch cannot overflow the likelihood.
    """

    def __init__(self, mean: float = 0.0, std: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, x):
        mu = x[:, :1] * self.std + self.mean
        sigma = keras.ops.exp(0.5 * keras.ops.clip(x[:, 1:2], -14.0, 6.0)) * self.std
        return keras.ops.concatenate([mu, sigma], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2)

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


def regression_head(features, config: ModelConfig, target_mean: float = 0.0, target_std: float = 1.0):
    """Dense-ReLU, BatchNorm, Dropout (twice), Dense(1), then back to physical units.

    With ``uncertainty="gaussian"`` the last layer has two units and the output is ``[mean, sigma]``
    per image (``(N, 2)``), trained with the Gaussian negative log-likelihood (``training/losses.py``).
    """
    x = features
    for i, units in enumerate(config.fc_units, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense{i}")(x)
        x = keras.layers.BatchNormalization(name=f"head_bn{i}")(x)
        x = keras.layers.Dropout(head_dropout(config), name=f"head_dropout{i}")(x)
    if config.uncertainty == "gaussian":
        x = keras.layers.Dense(2, dtype="float32", name="head_out")(x)
        return GaussianOutput(target_mean, target_std, dtype="float32", name="target")(x)
    x = keras.layers.Dense(1, dtype="float32", name="head_out")(x)
    return Destandardize(target_mean, target_std, dtype="float32", name="target")(x)


@keras.saving.register_keras_serializable(package="deeplense_tf")
class GaussianEnsemble(keras.layers.Layer):
    """Members' ``[mean]`` or ``[mean, sigma]`` outputs -> ``[mean, total sigma]``: the deep ensemble's
    predictive distribution as one Gaussian (variance = mean of the members' variances + variance of
    their means, so an ensemble of point estimates still reports its members' disagreement)."""

    def call(self, outputs):
        means = keras.ops.stack([o[:, 0] for o in outputs], axis=0)
        variances = keras.ops.stack([keras.ops.square(o[:, 1]) if o.shape[-1] == 2 else keras.ops.zeros_like(o[:, 0])
                                     for o in outputs], axis=0)
        mean = keras.ops.mean(means, axis=0)
        total = keras.ops.mean(variances, axis=0) + keras.ops.mean(keras.ops.square(means - mean), axis=0)
        return keras.ops.stack([mean, keras.ops.sqrt(total)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], 2)


FEATURE_LAYERS = ("head_dense1", "head_dropout")  # the first head layer of each task: its input is the features


def features_model(model: keras.Model) -> keras.Model:
    """The trained model up to the pooled backbone features (what the head reads)."""
    for name in FEATURE_LAYERS:
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        return keras.Model(model.inputs, layer.input, name="features")
    raise ValueError(f"{model.name} has no task head ({' or '.join(FEATURE_LAYERS)}): no feature layer to read")


def classification_head(features, config: ModelConfig, n_classes: int):
    """Dropout (none by default: ``config.head_dropout``) and a softmax layer initialised as PyTorch's ``nn.Linear`` (weights and bias uniform in
    +-1/sqrt(features)): resnet18 over 5 seeds, +0.001 macro AUC on our test split and +0.002 on the
    original generator's images against Keras' Glorot weights and zero bias (BENCHMARKS.md, "Head init")."""
    x = keras.layers.Dropout(head_dropout(config), name="head_dropout")(features)
    init = linear_init(int(features.shape[-1]))
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities",
                              kernel_initializer=init, bias_initializer=init)(x)


def linear_init(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch ``nn.Linear``'s default draw (kaiming-uniform with a = sqrt(5), which is U(+-1/sqrt(fan_in)),
    the bias alike): a third of Glorot's range for 512 features into 3 classes."""
    bound = 1.0 / fan_in ** 0.5
    return keras.initializers.RandomUniform(-bound, bound)


def lens_finding_head(features, config: ModelConfig):
    x = keras.layers.Dropout(head_dropout(config), name="head_dropout")(features)
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="lens_probability")(x)
