"""Convolutions of our CNN families start He-normal over fan-out, as torchvision's and timm's do."""

import keras
import numpy as np

from deeplense_tf.models import convnets


def kernel_std(model, name):
    return float(np.std(keras.ops.convert_to_numpy(model.get_layer(name).kernel)))


def test_resnet18_convolutions_scale_by_fan_out():
    keras.utils.set_random_seed(0)
    model = convnets.resnet_basic((64, 64, 1), (2, 2, 2, 2))
    # the 1-channel 7x7 stem: fan-out 64 x 49 gives std 0.025; Keras' he_normal (fan-in 49) gave 0.20
    assert abs(kernel_std(model, "stem_conv") / np.sqrt(2 / (64 * 49)) - 1) < 0.1
    # a 1x1 shortcut from 64 to 128 channels: fan-out 128 (std 0.125), not fan-in 64 (0.177)
    assert abs(kernel_std(model, "stage1_block0_down_conv") / np.sqrt(2 / 128) - 1) < 0.1


def test_grouped_convolution_scales_by_fan_out():
    keras.utils.set_random_seed(0)
    layer = convnets.GroupedConv2D(64, 3, groups=8)
    layer.build((None, 16, 16, 32))
    kernel = keras.ops.convert_to_numpy(layer.kernel)  # (3, 3, 4, 64): fan-out 9 x 64, as torch counts it
    assert abs(np.std(kernel) / np.sqrt(2 / (9 * 64)) - 1) < 0.1
