"""Preprocessing layers that open every model, so an exported model takes raw images.

Order inside a model (``preprocessing_block``): per-image standardisation, resize up to the
backbone's input size, grey -> 3 channels when the backbone wants RGB, and, for ImageNet
weights only, the pixel scaling those weights were trained with (``ImageNetInput``).
Each layer works eagerly, in a functional model and inside ``tf.data.Dataset.map``, and its
``get_config`` returns exactly its ``__init__`` arguments.

    python -m pytest tests/test_preprocess.py
"""

from __future__ import annotations

import keras
import tensorflow as tf

from deeplense_tf.config import NORMALIZATIONS
from deeplense_tf.errors import ConfigError

# ImageNet per-channel statistics (RGB, 0-1 scale) that the Keras weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def _spatial(shape):
    """(H, W) of an (H, W, C) or (N, H, W, C) shape."""
    return shape[-3], shape[-2]


def standardize(x, epsilon: float):
    """(x - mean) / max(std, epsilon) over H, W and C of each image."""
    mean, variance = tf.nn.moments(x, axes=[-3, -2, -1], keepdims=True)
    return (x - mean) / tf.maximum(tf.sqrt(variance), epsilon)


@keras.saving.register_keras_serializable(package="deeplense_tf")
class PerImageStandardize(keras.layers.Layer):
    """(x - mean) / max(std, epsilon), mean and std over H, W and C of each image.

    Lensing images differ in brightness by orders of magnitude between data sets; this
    makes every image mean 0, std 1 whatever its units. Always float32 (squares of raw
    counts overflow float16), also under a mixed-precision policy.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        return standardize(tf.cast(inputs, tf.float32), self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}




@keras.saving.register_keras_serializable(package="deeplense_tf")
class PerImageNormalize(keras.layers.Layer):
    """Per-image scaling other than plain standardisation (``PerImageStandardize``), float32.

    - ``minmax``: (x - min) / (max - min), to [0, 1];
    - ``asinh``: standardise, then ``asinh(x / softening)``: keeps faint arcs and the noise
      linear and compresses the bright cores (the usual display stretch of survey images);
    - ``clip``: standardise, then clip to [-``low``, ``high``] standard deviations (hot pixels,
      cosmic rays, masked values such as the Bologna 100s stop dominating), then standardise again;
    - ``cmu``: CMU DeepLens' fixed scaling of the Bologna ground-based images (DOMAIN.md):
      masked pixels (exactly 100) to 0, clip to [-1e-9, 1e-9], scale to [-100, 100]. Not per image:
      it assumes that challenge's flux units.
    """

    def __init__(self, mode: str = "minmax", softening: float = 1.0, low: float = 3.0, high: float = 10.0,
                 epsilon: float = 1e-6, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS[1:]:
            raise ConfigError(f"normalization must be one of {NORMALIZATIONS}. Received: {mode!r}")
        self.mode, self.softening, self.low, self.high, self.epsilon = mode, softening, low, high, epsilon

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.mode == "cmu":
            x = tf.where(tf.equal(x, 100.0), tf.zeros_like(x), x)
            return tf.clip_by_value(x, -1e-9, 1e-9) * 1e11
        if self.mode == "minmax":
            low = tf.reduce_min(x, axis=[-3, -2, -1], keepdims=True)
            high = tf.reduce_max(x, axis=[-3, -2, -1], keepdims=True)
            return (x - low) / tf.maximum(high - low, self.epsilon)
        x = standardize(x, self.epsilon)
        if self.mode == "asinh":
            return tf.asinh(x / self.softening)
        return standardize(tf.clip_by_value(x, -self.low, self.high), self.epsilon)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "softening": self.softening, "low": self.low,
                "high": self.high, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class ResizeToAtLeast(keras.layers.Layer):
    """Resize up each spatial side that is smaller than ``min_size``; never resize down.

    Decided when the model is built if H and W are known, at run time otherwise, so one
    model accepts images of any size at or above an architecture's minimum.
    """

    def __init__(self, min_size: int, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.min_size = int(min_size)
        self.interpolation = interpolation

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        h, w = _spatial(x.shape)
        if h is not None and w is not None:
            if h >= self.min_size and w >= self.min_size:
                return x
            size = [max(h, self.min_size), max(w, self.min_size)]
            return tf.cast(tf.image.resize(x, size, method=self.interpolation), x.dtype)
        h, w = _spatial(tf.shape(x))
        size = tf.stack([tf.maximum(h, self.min_size), tf.maximum(w, self.min_size)])
        smaller = tf.logical_or(h < self.min_size, w < self.min_size)
        return tf.cond(
            smaller,
            lambda: tf.cast(tf.image.resize(x, size, method=self.interpolation), x.dtype),
            lambda: x,
        )

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis in (-3, -2):
            if shape[axis] is not None:
                shape[axis] = max(shape[axis], self.min_size)
        return tuple(shape)

    def get_config(self):
        return {
            **super().get_config(),
            "min_size": self.min_size,
            "interpolation": self.interpolation,
        }


@keras.saving.register_keras_serializable(package="deeplense_tf")
class RepeatChannels(keras.layers.Layer):
    """Repeat a single-channel image ``channels`` times (grey -> RGB for ImageNet weights)."""

    def __init__(self, channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def call(self, inputs):
        return tf.repeat(inputs, self.channels, axis=-1)

    def compute_output_shape(self, input_shape):
        if input_shape[-1] not in (1, None):
            raise ConfigError(
                f"RepeatChannels expects 1-channel images. Received: shape={tuple(input_shape)}"
            )
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _imagenet_raw(x):
    """Standardised image -> 0-255 RGB with ImageNet's per-channel mean and std."""
    return 255.0 * (tf.constant(IMAGENET_MEAN) + tf.constant(IMAGENET_STD) * x)


# What each family's ImageNet weights expect, applied to 0-255 RGB (Keras' preprocess_input
# modes; "builtin" = the backbone scales inside itself, so it receives 0-255).
_IMAGENET_SCALINGS = {
    "builtin": lambda x: _imagenet_raw(x),
    "tf": lambda x: _imagenet_raw(x) / 127.5 - 1.0,
    # torch: (raw / 255 - mean) / std, which is exactly the standardised input again.
    "torch": lambda x: x,
    "caffe": lambda x: _imagenet_raw(x)[..., ::-1] - tf.constant(CAFFE_MEAN_BGR),
}
IMAGENET_SCALINGS = tuple(sorted(_IMAGENET_SCALINGS))


@keras.saving.register_keras_serializable(package="deeplense_tf")
class ImageNetInput(keras.layers.Layer):
    """Map a standardised 3-channel image to the input scale of ImageNet weights.

    The grey image (mean 0, std 1) is first given ImageNet's per-channel statistics in
    0-255 RGB, i.e. it looks, in first and second moments, like the photos the weights
    saw; then the family's own scaling (``scaling``: builtin | tf | torch | caffe) is
    applied, the same arithmetic as ``keras.applications.*.preprocess_input``.
    """

    def __init__(self, scaling: str, **kwargs):
        if scaling not in _IMAGENET_SCALINGS:
            raise ConfigError(
                f"unknown ImageNet input scaling {scaling!r}; expected one of "
                f"{', '.join(IMAGENET_SCALINGS)}"
            )
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.scaling = scaling

    def call(self, inputs):
        return _IMAGENET_SCALINGS[self.scaling](tf.cast(inputs, tf.float32))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "scaling": self.scaling}


def preprocessing_block(x, target_size, channels: int, imagenet_scaling: str | None = None,
                        normalization: str = "standardize"):
    """Raw images -> what a backbone receives: standardise, resize, channels, scaling.

    ``target_size``: an int (square) or (H, W); the resize happens only when the static
    size differs (use ``registry.input_plan`` to get a size that only ever resizes up).
    ``channels``: the backbone's channel count; 1 -> 3 repeats grey, otherwise the input
    must already have it. ``imagenet_scaling``: ``ArchSpec.imagenet_scaling`` when the
    backbone carries ImageNet weights, else None. ``normalization``: one of ``NORMALIZATIONS``.
    """
    size = (target_size, target_size) if isinstance(target_size, int) else tuple(target_size)
    x = PerImageStandardize()(x) if normalization == "standardize" else PerImageNormalize(normalization)(x)
    if tuple(_spatial(x.shape)) != size:
        x = keras.layers.Resizing(*size, interpolation="bilinear")(x)
    in_channels = x.shape[-1]
    if in_channels != channels:
        if in_channels != 1:
            raise ConfigError(
                f"cannot turn {in_channels}-channel images into {channels} channels; "
                "only 1 -> N (repeating grey) is supported"
            )
        x = RepeatChannels(channels)(x)
    if imagenet_scaling is not None:
        x = ImageNetInput(imagenet_scaling)(x)
    return x
