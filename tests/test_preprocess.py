"""Preprocessing layers: eager, inside tf.data.Dataset.map, config round trip, maths."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplense_tf.errors import ConfigError
from deeplense_tf.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_SCALINGS,
    IMAGENET_STD,
    ImageNetInput,
    PerImageStandardize,
    RepeatChannels,
    ResizeToAtLeast,
    preprocessing_block,
)

from tests.helpers import assert_config_roundtrip

LAYERS = [
    PerImageStandardize(),
    PerImageStandardize(epsilon=1e-3),
    ResizeToAtLeast(75),
    ResizeToAtLeast(16, interpolation="nearest"),
    RepeatChannels(3),
    *[ImageNetInput(scaling) for scaling in IMAGENET_SCALINGS],
]


def images_in_wild_units(n=3, size=64, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 3, size=(n, 1, 1, 1))  # wildly different units per image
    return (scale * rng.normal(1.0, 0.5, size=(n, size, size, channels))).astype("float32")



@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: f"{type(l).__name__}")
def test_layer_config_roundtrip(layer):
    assert_config_roundtrip(layer)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: f"{type(l).__name__}")
def test_layer_eager_equals_dataset_map(layer):
    x = images_in_wild_units()
    x = x / x.std(axis=(1, 2, 3), keepdims=True) if isinstance(layer, ImageNetInput) else x
    x = np.repeat(x, 3, axis=-1) if isinstance(layer, ImageNetInput) else x
    eager = np.asarray(layer(x))
    batched = next(iter(tf.data.Dataset.from_tensor_slices(x).batch(3).map(layer)))
    single = np.stack(list(tf.data.Dataset.from_tensor_slices(x).map(layer).as_numpy_iterator()))
    np.testing.assert_allclose(batched.numpy(), eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(single, eager, rtol=1e-5, atol=1e-5)


def test_standardize_gives_zero_mean_unit_std_per_image():
    y = np.asarray(PerImageStandardize()(images_in_wild_units()))
    np.testing.assert_allclose(y.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(1, 2, 3)), 1.0, atol=1e-3)
    assert y.dtype == np.float32
    flat = np.asarray(PerImageStandardize()(np.full((1, 8, 8, 1), 7, dtype="uint8")))
    assert np.all(flat == 0.0)


def test_resize_only_up():
    small, large = images_in_wild_units(size=64), images_in_wild_units(size=80)
    assert ResizeToAtLeast(75)(small).shape == (3, 75, 75, 1)
    np.testing.assert_array_equal(np.asarray(ResizeToAtLeast(75)(large)), large)
    inputs = keras.Input(shape=(None, None, 1))
    dynamic = keras.Model(inputs, ResizeToAtLeast(75)(inputs))
    assert dynamic(small).shape == (3, 75, 75, 1)
    np.testing.assert_array_equal(np.asarray(dynamic(large)), large)


def test_imagenet_scalings():
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ImageNetInput("torch")(x)), x)
    raw = np.asarray(ImageNetInput("builtin")(x))
    np.testing.assert_allclose(raw.mean(axis=(0, 1, 2)) / 255, IMAGENET_MEAN, atol=0.05)
    np.testing.assert_allclose(np.asarray(ImageNetInput("tf")(x)), raw / 127.5 - 1, rtol=1e-5, atol=1e-5)
    caffe = np.asarray(ImageNetInput("caffe")(np.zeros((1, 2, 2, 3), "float32")))
    np.testing.assert_allclose(caffe[0, 0, 0], [0.406 * 255 - 103.939, 0.456 * 255 - 116.779,
                                                0.485 * 255 - 123.68], atol=1e-3)
    assert IMAGENET_STD[0] == 0.229
    with pytest.raises(ConfigError):
        ImageNetInput("bgr")


def test_preprocessing_block_builds_and_serialises(tmp_path):
    inputs = keras.Input(shape=(64, 64, 1))
    model = keras.Model(inputs, preprocessing_block(inputs, 75, 3, imagenet_scaling="tf"))
    assert model.output_shape == (None, 75, 75, 3)
    same = keras.Model(inputs, preprocessing_block(inputs, 64, 1))
    assert [type(l).__name__ for l in same.layers] == ["InputLayer", "PerImageStandardize"]
    model.save(tmp_path / "pre.keras")
    loaded = keras.models.load_model(tmp_path / "pre.keras")
    x = images_in_wild_units()
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    with pytest.raises(ConfigError):
        preprocessing_block(keras.Input(shape=(64, 64, 2)), 64, 3)
