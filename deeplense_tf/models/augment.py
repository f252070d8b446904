"""Training-only augmentation as Keras layers inside the model, so it runs on the accelerator.

Lensing images have no preferred orientation: flips and 90-degree rotations are exact
symmetries of the data (no interpolation, unlike ``RandomRotation``, which would also turn
XLA off for the whole model). At inference (``training=False``) every layer is the identity.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="deeplense_tf")
class RandomRot90(keras.layers.Layer):
    """Rotate each image of a square batch by a random multiple of 90 degrees."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        k = keras.random.randint((ops.shape(images)[0],), 0, 4, seed=self.seed_generator)
        rotated = images
        out = images
        for quarter in range(1, 4):
            rotated = ops.flip(ops.transpose(rotated, (0, 2, 1, 3)), axis=2)  # one more 90 degrees
            choose = ops.reshape(ops.equal(k, quarter), (-1, 1, 1, 1))
            out = ops.where(choose, rotated, out)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def augmentation_layers(seed: int | None = None, shift: float = 0.0, noise: float = 0.0) -> list[keras.layers.Layer]:
    """Flips and 90-degree rotations; ``shift``: random translations up to that fraction of the
    side (Keras ``RandomTranslation``, reflected borders); ``noise``: Gaussian noise of that
    standard deviation, in units of the standardised image (Keras ``GaussianNoise``)."""
    layers = [
        # A mirror, then a random quarter turn: each of the 8 symmetries of the square with probability 1/8.
        # Not RandomFlip("horizontal_and_vertical"): it draws one coin per image for both axes, so it
        # only ever turns an image by 180 degrees, and with RandomRot90 no image was ever mirrored
        # (BENCHMARKS.md, "Level with timm").
        keras.layers.RandomFlip("horizontal", seed=seed, name="random_flip"),
        RandomRot90(seed=None if seed is None else seed + 1, name="random_rot90"),
    ]
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=None if seed is None
                                                     else seed + 2, name="random_shift"))
    if noise:
        layers.append(keras.layers.GaussianNoise(noise, seed=None if seed is None else seed + 3, name="random_noise"))
    return layers


def augmenter(seed: int | None = None):
    """The augmentation layers as a ``Dataset.map`` function on batches (always training): for
    ``create_dataset(augment=...)``, the flips / rotations in the pipeline instead of the model."""
    layers = augmentation_layers(seed)

    def apply(x, y):
        for layer in layers:
            x = layer(x, training=True)
        return x, y

    return apply
