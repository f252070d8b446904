"""Keras Applications backbones: every ``keras.applications`` model of Keras 3.15, headless.

Each builds with ``include_top=False, pooling="avg"`` for any channel count and any size
at or above its ``min_size``. Our ``PerImageStandardize`` runs before every backbone, so
Keras' built-in input scaling is switched off wherever a switch exists and is kept only
for ImageNet weights (which then receive 0-255 RGB, see ``preprocess.ImageNetInput``).
Two rebuilds keep the library's layers and weights but fix what hurts here:

- grouped -> depthwise: ConvNeXt's 7x7 depthwise convolution is ``Conv2D(groups=dim)``,
  ~37x slower on CPU than ``DepthwiseConv2D``; ``grouped_to_depthwise`` swaps every such
  layer (same weights, kernel reshaped) for a ``convnets.FastDepthwiseConv2D``: a
  ``DepthwiseConv2D`` whose kernel gradient is faster on maps smaller than its kernel,
  as ConvNeXt's last two stages are at 64 px. Every ``DepthwiseConv2D`` on such a map
  (EfficientNet's and MobileNet's last stages) becomes one too. Applied by default to every
  family; a model with no such layer is returned as built.
- EfficientNet V1 always divides its input by 255 (no switch). On standardised input
  that leaves the stem convolution's output variance (~1e-6) far below the stem
  BatchNorm's epsilon (1e-3), shrinking activations ~30x; built without ImageNet weights
  that ``Rescaling`` becomes an ``Identity``. Its ``Normalization`` stays: without
  ImageNet weights it holds mean 0, variance 1, the identity, and keeps the weights
  layout equal to Keras' ImageNet files.
- EfficientNet V1's stochastic depth (``drop_connect_rate`` 0.2, no switch on ``EfficientNetB0``..``B7``)
  is removed when it trains from scratch: each block's per-sample ``Dropout`` becomes an
  ``Identity``. On 64 px Model II regression (2,100 training images, 12 epochs) efficientnet_b0
  reached test MAE 0.38 dex with it and 0.30 without it (BENCHMARKS.md, "EfficientNet at
  64 px"): with a few thousand images the dropped blocks mostly add noise to the gradient.
  Fine-tuning from ImageNet weights keeps the published recipe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import keras
import numpy as np

from deeplense_tf.models.convnets import FastDepthwiseConv2D
from deeplense_tf.models.registry import ArchSpec, register_arch


@dataclass(frozen=True)
class Family:
    imagenet_scaling: str  # preprocess.ImageNetInput scaling (Keras preprocess_input mode)
    preprocessing_switch: bool = False  # constructor takes include_preprocessing
    drops_rescaling: bool = False  # EfficientNet V1: built-in 1/255 removed when scratch
    drops_stochastic_depth: bool = False  # EfficientNet V1: per-block drop-path removed when scratch
    notes: str = ""


FAMILIES = {
    "convnext": Family("builtin", preprocessing_switch=True,
                       notes="7x7 Conv2D(groups=dim) rebuilt as (Fast)DepthwiseConv2D"),
    "densenet": Family("torch"),
    "efficientnet": Family("builtin", drops_rescaling=True, drops_stochastic_depth=True,
                           notes="without ImageNet weights: built-in Rescaling(1/255) and the blocks' stochastic "
                                 "depth replaced by Identity; Normalization is the identity then"),
    "efficientnet_v2": Family("builtin", preprocessing_switch=True),
    "inception": Family("tf"),
    "mobilenet": Family("tf"),
    "mobilenet_v3": Family("builtin", preprocessing_switch=True),
    "nasnet": Family("tf"),
    "resnet": Family("caffe"),
    "resnet_v2": Family("tf"),
    "vgg": Family("caffe"),
    "xception": Family("tf"),
}

# name, Keras class, family, default size, minimum size (checked: builds with 1 channel).
KERAS_APPLICATIONS = (
    ("convnext_tiny", "ConvNeXtTiny", "convnext", 224, 32),
    ("convnext_small", "ConvNeXtSmall", "convnext", 224, 32),
    ("convnext_base", "ConvNeXtBase", "convnext", 224, 32),
    ("convnext_large", "ConvNeXtLarge", "convnext", 224, 32),
    ("convnext_xlarge", "ConvNeXtXLarge", "convnext", 224, 32),
    ("densenet121", "DenseNet121", "densenet", 224, 32),
    ("densenet169", "DenseNet169", "densenet", 224, 32),
    ("densenet201", "DenseNet201", "densenet", 224, 32),
    ("efficientnet_b0", "EfficientNetB0", "efficientnet", 224, 32),
    ("efficientnet_b1", "EfficientNetB1", "efficientnet", 240, 32),
    ("efficientnet_b2", "EfficientNetB2", "efficientnet", 260, 32),
    ("efficientnet_b3", "EfficientNetB3", "efficientnet", 300, 32),
    ("efficientnet_b4", "EfficientNetB4", "efficientnet", 380, 32),
    ("efficientnet_b5", "EfficientNetB5", "efficientnet", 456, 32),
    ("efficientnet_b6", "EfficientNetB6", "efficientnet", 528, 32),
    ("efficientnet_b7", "EfficientNetB7", "efficientnet", 600, 32),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "efficientnet_v2", 224, 32),
    ("efficientnet_v2_b1", "EfficientNetV2B1", "efficientnet_v2", 240, 32),
    ("efficientnet_v2_b2", "EfficientNetV2B2", "efficientnet_v2", 260, 32),
    ("efficientnet_v2_b3", "EfficientNetV2B3", "efficientnet_v2", 300, 32),
    ("efficientnet_v2_s", "EfficientNetV2S", "efficientnet_v2", 384, 32),
    ("efficientnet_v2_m", "EfficientNetV2M", "efficientnet_v2", 480, 32),
    ("efficientnet_v2_l", "EfficientNetV2L", "efficientnet_v2", 480, 32),
    ("inception_v3", "InceptionV3", "inception", 299, 75),
    ("inception_resnet_v2", "InceptionResNetV2", "inception", 299, 75),
    ("mobilenet", "MobileNet", "mobilenet", 224, 32),
    ("mobilenet_v2", "MobileNetV2", "mobilenet", 224, 32),
    ("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224, 32),
    ("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224, 32),
    ("nasnet_mobile", "NASNetMobile", "nasnet", 224, 32),
    ("nasnet_large", "NASNetLarge", "nasnet", 331, 32),
    ("resnet50", "ResNet50", "resnet", 224, 32),
    ("resnet101", "ResNet101", "resnet", 224, 32),
    ("resnet152", "ResNet152", "resnet", 224, 32),
    ("resnet50_v2", "ResNet50V2", "resnet_v2", 224, 32),
    ("resnet101_v2", "ResNet101V2", "resnet_v2", 224, 32),
    ("resnet152_v2", "ResNet152V2", "resnet_v2", 224, 32),
    ("vgg16", "VGG16", "vgg", 224, 32),
    ("vgg19", "VGG19", "vgg", 224, 32),
    ("xception", "Xception", "xception", 299, 71),
)


def rebuild(model: keras.Model, replace) -> keras.Model:
    """Clone ``model`` with ``replace(layer)`` (a new layer, or None to keep a copy) and
    carry every weight over, reshaped to the new layer's variables; ``model`` itself when
    nothing is replaced."""
    replacements = {}
    for layer in model.layers:
        new = replace(layer)
        if new is not None:
            replacements[layer.name] = new
    if not replacements:
        return model

    def clone(layer):
        if layer.name in replacements:
            return replacements[layer.name]
        return layer.__class__.from_config(layer.get_config())

    clone_ = keras.models.clone_model(model, clone_function=clone)
    for old in model.layers:
        if not old.weights:
            continue
        new = clone_.get_layer(old.name)
        values = old.get_weights()
        if len(values) != len(new.weights):
            raise RuntimeError(f"rebuild of layer {old.name}: {len(values)} weights became {len(new.weights)}")
        new.set_weights([np.reshape(v, tuple(w.shape)) for v, w in zip(values, new.weights)])
    return clone_


def _depthwise_for(layer):
    """A (Fast)DepthwiseConv2D doing what a Conv2D with one group per input channel does, else None."""
    if type(layer) is not keras.layers.Conv2D or layer.groups == 1:
        return None
    # Grouped kernel: (kh, kw, in_channels / groups, filters); depthwise: 1 input per group.
    if layer.groups != layer.filters or layer.kernel.shape[-2] != 1:
        return None
    return FastDepthwiseConv2D(
        kernel_size=layer.kernel_size,
        strides=layer.strides,
        padding=layer.padding,
        data_format=layer.data_format,
        dilation_rate=layer.dilation_rate,
        activation=layer.activation,
        use_bias=layer.use_bias,
        depthwise_initializer=layer.kernel_initializer,
        bias_initializer=layer.bias_initializer,
        dtype=layer.dtype_policy,
        name=layer.name,
    )


def _fast_for_small_map(layer):
    """A FastDepthwiseConv2D for a DepthwiseConv2D whose input map is smaller than its kernel
    (the only place where the two differ), else None."""
    if type(layer) is not keras.layers.DepthwiseConv2D:
        return None
    fast = FastDepthwiseConv2D.from_config(layer.get_config())
    return fast if fast._small_map(layer.input.shape) else None


def grouped_to_depthwise(model: keras.Model) -> keras.Model:
    """Same model, each Conv2D(groups=channels) a FastDepthwiseConv2D, and so is each
    DepthwiseConv2D on a map smaller than its kernel (EfficientNet, MobileNet at 64 px);
    the model itself if none."""
    return rebuild(model, lambda layer: _depthwise_for(layer) or _fast_for_small_map(layer))


def _identity_for_stem_rescaling(layer):
    if isinstance(layer, keras.layers.Rescaling) and np.allclose(layer.scale, 1 / 255) and not np.any(layer.offset):
        return keras.layers.Identity(name=layer.name)
    return None


def _identity_for_stochastic_depth(layer):
    """EfficientNet's drop-path: a Dropout whose noise is shared by a sample's every position and channel."""
    if isinstance(layer, keras.layers.Dropout) and layer.noise_shape is not None and \
            all(v == 1 for v in tuple(layer.noise_shape)[1:]):
        return keras.layers.Identity(name=layer.name)
    return None


def build_keras_application(class_name, family, input_shape, weights=None, fast_depthwise=True):
    """Headless ``keras.applications.<class_name>`` -> (N, F) pooled features."""
    facts = FAMILIES[family]
    kwargs = dict(include_top=False, weights=weights, input_shape=tuple(input_shape), pooling="avg")
    if facts.preprocessing_switch:
        kwargs["include_preprocessing"] = weights == "imagenet"
    model = getattr(keras.applications, class_name)(**kwargs)
    if weights is None and (facts.drops_rescaling or facts.drops_stochastic_depth):
        model = rebuild(model, lambda layer: (facts.drops_rescaling and _identity_for_stem_rescaling(layer))
                        or (facts.drops_stochastic_depth and _identity_for_stochastic_depth(layer)) or None)
    if fast_depthwise:
        model = grouped_to_depthwise(model)
    return model


for _name, _class, _family, _default, _min in KERAS_APPLICATIONS:
    register_arch(ArchSpec(
        name=_name,
        builder=functools.partial(build_keras_application, _class, _family),
        default_size=_default,
        min_size=_min,
        family=_family,
        source="keras.applications",
        imagenet_scaling=FAMILIES[_family].imagenet_scaling,
        notes=" ".join(filter(None, (f"keras.applications.{_class}.", FAMILIES[_family].notes))),
    ))
