"""Strided convolutions of the ResNet-family blocks sample the grid their strided 1x1 shortcut samples."""

import keras
import numpy as np

from deeplense_tf.models import convnets


def centre_tap_conv(x, kernel: int, strides: int):
    """A convolution whose kernel is 1 at its centre: it copies the pixel each window centres on."""
    x, padding = convnets.symmetric_padding(x, kernel, strides, "probe")
    weights = np.zeros((kernel, kernel, 1, 1), "float32")
    weights[kernel // 2, kernel // 2] = 1.0
    conv = keras.layers.Conv2D(1, kernel, strides, padding=padding, use_bias=False)
    y = conv(x)
    conv.set_weights([weights])
    return conv(x)


def test_strided_windows_centre_on_the_shortcut_grid():
    image = np.arange(64 * 64, dtype="float32").reshape(1, 64, 64, 1)
    shortcut = image[:, ::2, ::2]  # what a strided 1x1 convolution reads
    for kernel in (3, 7):
        centred = keras.ops.convert_to_numpy(centre_tap_conv(image, kernel, 2))
        np.testing.assert_array_equal(centred, shortcut)


def test_keras_same_padding_would_be_a_pixel_off():
    """Why the padding exists: Keras' "same" centres a stride-2 3x3 window on the odd pixels."""
    image = np.arange(16 * 16, dtype="float32").reshape(1, 16, 16, 1)
    weights = np.zeros((3, 3, 1, 1), "float32")
    weights[1, 1] = 1.0
    conv = keras.layers.Conv2D(1, 3, 2, padding="same", use_bias=False)
    conv(image)
    conv.set_weights([weights])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(conv(image)), image[:, 1::2, 1::2])


def test_resnet18_map_sizes_unchanged():
    model = convnets.resnet_basic((64, 64, 1), (2, 2, 2, 2))
    sizes = {layer.name: layer.output.shape[1] for layer in model.layers}
    assert sizes["stem_conv"] == 32 and sizes["stem_pool"] == 16
    assert sizes["stage1_block0_1_conv"] == sizes["stage1_block0_down_conv"] == 8
    assert sizes["stage3_block0_1_conv"] == sizes["stage3_block0_down_conv"] == 2
