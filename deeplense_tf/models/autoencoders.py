"""Autoencoders for anomaly detection: learn lenses without substructure, flag what deviates.

The model takes raw images and returns one anomaly score per image: the mean squared
reconstruction error of the standardised image (``conv_autoencoder``), plus the KL term for
the variational one (``vae``: the negative ELBO up to constants). Training minimises the
mean score over the normal class (``--normal-class``) via ``add_loss``, so ``fit`` needs no
targets and the exported SavedModel serves the score directly.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from deeplense_tf.errors import ConfigError
from deeplense_tf.models.preprocess import preprocessing_block
from deeplense_tf.models.registry import ArchSpec, check_arch_task, register_arch

WIDTHS = (32, 64, 128)  # three stride-2 stages: the side must be a multiple of 8


@keras.saving.register_keras_serializable(package="deeplense_tf")
class ReconstructionScore(layers.Layer):
    """Per-image mean squared error between input and reconstruction; adds the batch mean as loss."""

    def call(self, images, reconstruction):
        score = ops.mean(ops.square(ops.cast(images, "float32") - ops.cast(reconstruction, "float32")),
                         axis=(1, 2, 3))
        self.add_loss(ops.mean(score))
        return score

    def compute_output_shape(self, images_shape, reconstruction_shape):
        return (images_shape[0],)


@keras.saving.register_keras_serializable(package="deeplense_tf")
class GaussianSample(layers.Layer):
    """Reparameterised sample z = mu + sigma * eps during training (mu at inference); adds the KL term."""

    def __init__(self, kl_weight: float = 1e-3, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, mean, log_var, training=None):
        kl = -0.5 * ops.mean(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        self.add_loss(self.kl_weight * ops.mean(kl))
        if not training:
            return mean
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, mean_shape, log_var_shape):
        return mean_shape

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight, "seed": self.seed}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class KLScore(layers.Layer):
    """Adds the per-image KL divergence (times ``kl_weight``) to the reconstruction score."""

    def __init__(self, kl_weight: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight

    def call(self, score, mean, log_var):
        kl = -0.5 * ops.mean(1 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)
        return score + self.kl_weight * kl

    def compute_output_shape(self, score_shape, mean_shape, log_var_shape):
        return score_shape

    def get_config(self):
        return {**super().get_config(), "kl_weight": self.kl_weight}


def _encoder(x, latent: int):
    for i, width in enumerate(WIDTHS, start=1):
        x = layers.Conv2D(width, 3, strides=2, padding="same", name=f"enc_conv{i}")(x)
        x = layers.BatchNormalization(name=f"enc_bn{i}")(x)
        x = layers.Activation("relu", name=f"enc_relu{i}")(x)
    return layers.Dense(latent, name="enc_latent")(layers.Flatten(name="enc_flat")(x))


def _decoder(z, side: int, channels: int):
    cell = side // 2 ** len(WIDTHS)
    x = layers.Dense(cell * cell * WIDTHS[-1], activation="relu", name="dec_dense")(z)
    x = layers.Reshape((cell, cell, WIDTHS[-1]), name="dec_reshape")(x)
    for i, width in enumerate(reversed(WIDTHS[:-1]), start=1):
        x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", name=f"dec_up{i}")(x)
        x = layers.BatchNormalization(name=f"dec_bn{i}")(x)
        x = layers.Activation("relu", name=f"dec_relu{i}")(x)
    return layers.Conv2DTranspose(channels, 3, strides=2, padding="same", dtype="float32", name="reconstruction")(x)


def _side(image_side: int) -> int:
    """Round up to a multiple of 8 (three stride-2 stages); never below 32."""
    return max(32, -(-image_side // 8) * 8)


def conv_autoencoder(inputs, side: int, channels: int, latent: int = 64, seed: int | None = None, augment=()):
    x = preprocessing_block(inputs, side, channels)
    for layer in augment:
        x = layer(x)
    reconstruction = _decoder(_encoder(x, latent), side, channels)
    return ReconstructionScore(name="anomaly_score")(x, reconstruction)


def variational_autoencoder(inputs, side: int, channels: int, latent: int = 32, seed: int | None = None,
                            augment=()):
    x = preprocessing_block(inputs, side, channels)
    for layer in augment:
        x = layer(x)
    h = _encoder(x, 2 * latent)
    mean = layers.Dense(latent, name="z_mean")(h)
    log_var = layers.Dense(latent, name="z_log_var")(h)
    z = GaussianSample(seed=seed, name="z")(mean, log_var)
    score = ReconstructionScore(name="reconstruction_error")(x, _decoder(z, side, channels))
    return KLScore(name="anomaly_score")(score, mean, log_var)


def reconstruction_model(model: keras.Model) -> keras.Model:
    """The autoencoder's images -> (standardised image, reconstruction) at inference, for plots.

    Both are the two inputs of its ``ReconstructionScore`` layer, so the pair is exactly what
    the anomaly score compares.
    """
    layer = next((each for each in model.layers if isinstance(each, ReconstructionScore)), None)
    if layer is None:
        raise ConfigError(f"{model.name} is not an autoencoder of deeplense_tf: it has no ReconstructionScore layer")
    standardised, reconstruction = layer.input
    return keras.Model(model.inputs, [standardised, reconstruction], name=f"{model.name}_reconstruction")


def create_autoencoder(name: str, input_shape: tuple[int, int, int], image_size: int | None = None,
                       seed: int | None = None, augment=()) -> keras.Model:
    spec = check_arch_task(name, "anomaly")
    side = _side(image_size or input_shape[0])
    inputs = keras.Input(input_shape, name="image")
    score = spec.builder(inputs, side, input_shape[-1], seed=seed, augment=augment)
    return keras.Model(inputs, score, name=f"{name}_anomaly")


for _name, _builder, _notes in (
    ("conv_autoencoder", conv_autoencoder, "convolutional autoencoder, score = reconstruction MSE"),
    ("vae", variational_autoencoder, "variational autoencoder, score = reconstruction MSE + KL"),
):
    register_arch(ArchSpec(_name, _builder, default_size=64, min_size=32, family="autoencoder", source="deeplense_tf",
                           notes=_notes, tasks=("anomaly",)))
