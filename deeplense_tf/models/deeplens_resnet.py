"""A compact pre-activation ResNet for lens finding, in the spirit of CMU DeepLens.

    python -m deeplense_tf.train --task lens_finding --data sim:lens_finding --arch deeplens_resnet

Lanusse et al. 2017 (arXiv:1703.02642) won the ground-based Bologna lens-finding challenge
(AUROC 0.98) with a 46-layer residual network of pre-activation units (He et al. 2016,
"Identity mappings in deep residual networks"): BatchNorm and the activation come *before*
each convolution, and the sum of a unit is left un-activated, so the identity path runs
untouched from the stem to the pooling. Depth: one 7x7 stem convolution and five stages of
three bottleneck units of three convolutions each, 46 convolutions on the main path (plus the
four strided 1x1 shortcut projections), then the one-unit sigmoid head of every lens-finding
model (``heads.lens_finding_head``). ELU activations as in the paper.

Written from the paper's description with Keras layers; the widths below are our choice for
45-101 px stamps (3.5M weights), trained from scratch (no ImageNet weights exist).
"""

from __future__ import annotations

import functools

import keras

from deeplense_tf.models.convnets import scratch_only

STEM_WIDTH = 32
# (bottleneck width, output width) of each stage; every stage after the first halves H and W.
STAGES = ((16, 32), (32, 64), (64, 128), (128, 256), (256, 512))
UNITS_PER_STAGE = 3
ACTIVATION = "elu"


def _bn_act(x, name: str):
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)
    return keras.layers.Activation(ACTIVATION, name=f"{name}_act")(x)


def _conv(x, filters: int, kernel: int, strides: int, name: str):
    return keras.layers.Conv2D(filters, kernel, strides, padding="same", use_bias=False,
                               kernel_initializer="he_normal", name=name)(x)


def preact_bottleneck(x, width: int, out: int, strides: int = 1, name: str = "unit"):
    """BN-act-1x1, BN-act-3x3 (strided), BN-act-1x1, added to the input.

    When the shape changes, the shortcut is a strided 1x1 convolution of the *pre-activated*
    input (He et al. 2016), so no BatchNorm or activation sits on the identity path.
    """
    pre = _bn_act(x, f"{name}_pre")
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        shortcut = _conv(pre, out, 1, strides, f"{name}_shortcut")
    y = _conv(pre, width, 1, 1, f"{name}_conv1")
    y = _conv(_bn_act(y, f"{name}_mid1"), width, 3, strides, f"{name}_conv2")
    y = _conv(_bn_act(y, f"{name}_mid2"), out, 1, 1, f"{name}_conv3")
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def deeplens_resnet(input_shape, stages=STAGES, units: int = UNITS_PER_STAGE, stem: int = STEM_WIDTH,
                    name: str = "deeplens_resnet") -> keras.Model:
    """Images (N, H, W, C) -> pooled features (N, stages[-1][1])."""
    inputs = keras.Input(input_shape)
    x = _conv(inputs, stem, 7, 1, "stem_conv")  # no stride: ground-based stamps are only 45 px
    for s, (width, out) in enumerate(stages):
        for u in range(units):
            x = preact_bottleneck(x, width, out, 2 if (s and not u) else 1, name=f"stage{s}_unit{u}")
    x = _bn_act(x, "final")  # pre-activation nets normalise once more before pooling
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="avg_pool")(x), name=name)


# Imported here, not at the top, for the same reason as in convnets.py: the registry imports
# the builtin modules when it is first imported.
from deeplense_tf.models.registry import ArchSpec, register_arch  # noqa: E402

register_arch(ArchSpec(
    name="deeplens_resnet",
    builder=functools.partial(scratch_only, functools.partial(deeplens_resnet, name="deeplens_resnet")),
    default_size=45,
    min_size=32,
    family="resnet",
    source="deeplense_tf",
    notes="pre-activation bottleneck ResNet, 46 layers, ELU (CMU DeepLens, Lanusse et al. 2017); "
          "written in deeplense_tf.models.deeplens_resnet.",
))
