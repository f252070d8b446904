"""FastDepthwiseConv2D: Keras' DepthwiseConv2D with a faster kernel gradient on maps smaller than the kernel."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplense_tf.models.convnets import FastDepthwiseConv2D
from tests.helpers import assert_config_roundtrip


def outputs_and_gradients(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.sin(y))  # a gradient that is not just ones
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize("kernel, shape, use_bias, small", [
    (7, (3, 4, 4, 8), True, True),  # ConvNeXt stage 3 at 64 px
    (7, (2, 2, 2, 8), False, True),  # stage 4
    (5, (2, 3, 4, 6), True, True),  # not square
    (4, (2, 3, 3, 4), True, True),  # even kernel: "same" pads 1 before, 2 after
    (3, (2, 8, 8, 4), True, False),  # a map larger than the kernel: Keras' own path
])
def test_same_outputs_and_gradients_as_keras(kernel, shape, use_bias, small):
    fast = FastDepthwiseConv2D(kernel, padding="same", use_bias=use_bias)
    ref = keras.layers.DepthwiseConv2D(kernel, padding="same", use_bias=use_bias)
    fast.build(shape)
    ref.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=w.shape).astype("float32") for w in ref.weights]
    fast.set_weights(weights)
    ref.set_weights(weights)
    assert fast._small_map(shape) is small
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    for got, want in zip(outputs_and_gradients(fast, x), outputs_and_gradients(ref, x)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_trains_saves_and_loads_with_an_unknown_batch(tmp_path):
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, FastDepthwiseConv2D(7, padding="same", name="dw")(inputs))
    assert_config_roundtrip(model.get_layer("dw"))
    model.compile("adam", "mse")
    x = np.random.default_rng(1).normal(size=(5, 4, 4, 8)).astype("float32")
    model.fit(x, np.zeros_like(x), batch_size=2, epochs=1, verbose=0)  # 2 + 2 + 1: the last batch differs
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("dw")) is FastDepthwiseConv2D
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
