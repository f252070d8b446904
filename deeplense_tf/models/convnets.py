"""CNNs that Keras Applications lacks, written on a few shared building blocks.

    python -m deeplense_tf.train --arch convnext_atto      # --list-archs 'res*' lists the ResNets

ConvNeXt atto/femto/pico/nano, ResNet-18/34 and XResNet-18/34 (basic blocks), ResNeXt-50/101 (32x4d), ResNet-200, ECA-ResNet-50,
CSPResNet-50, DenseNet-264 and EfficientNet-lite0, after the timm recipes (layer counts,
widths, zero-initialised last BatchNorm of each residual branch, convolutions drawn He-normal
over fan-out: ``conv_init``). All are trained from scratch here (no ImageNet weights),
channels-last, and build at 32 px and above.

CPU speed decides three blocks:

- ConvNeXt's 7x7 convolution is a ``DepthwiseConv2D`` (Keras' own ConvNeXt uses
  ``Conv2D(groups=dim)``, ~37x slower on CPU, see applications.py).
- That ``DepthwiseConv2D`` is a ``FastDepthwiseConv2D``: TensorFlow's kernel gradient of a depthwise convolution
  (``DepthwiseConv2dNativeBackpropFilter``) is slower than it need be on maps smaller
  than the kernel, which is where ConvNeXt's last two stages run at 64 px (4x4 and 2x2 maps,
  7x7 kernel): ~20 % of ConvNeXt-Tiny's training step in ``pipelines.profile``. That layer computes
  the same gradient as one depthwise convolution instead.
- ResNeXt's grouped 3x3 convolution is ``GroupedConv2D``: split the channels into the
  groups, one ordinary convolution per group, concatenate. Keras sends
  ``Conv2D(groups>1)`` through XLA on CPU: one training step of a (32, 16, 16, 128),
  32-group 3x3 layer took 13 s that way and 0.16 s split; TensorFlow's own grouped kernel
  (``tf.nn.conv2d``) is 2-3x faster than the split at 64 px inputs but only with oneDNN on,
  and its gradient fails with oneDNN off.
"""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

from deeplense_tf.errors import ConfigError

BN_EPSILON = 1e-5
LN_EPSILON = 1e-6


def conv_init() -> keras.initializers.Initializer:
    """He-normal over fan-out (untruncated), as torchvision and timm draw a ResNet's convolutions.

    Keras' "he_normal" scales by fan-in: 8x larger on the 1-channel 7x7 stem (std 0.20 against
    0.025), so Adam's steps, about the learning rate whatever the weight's size, moved those
    weights more slowly. Fan-out with a head without dropout brought resnet18 level with a plain
    timm loop on the same files (BENCHMARKS.md, "Level with timm").
    """
    return keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")


@keras.saving.register_keras_serializable(package="deeplense_tf")
class GroupedConv2D(keras.layers.Layer):
    """``Conv2D(filters, kernel_size, groups=groups)`` as one convolution per group.

    The kernel has Conv2D's grouped layout ``(k, k, in_channels / groups, filters)``, so
    weights move between the two; see the module docstring for why it exists.
    """

    def __init__(self, filters: int, kernel_size: int, groups: int, strides: int = 1,
                 padding: str = "same", use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        if filters % groups:
            raise ConfigError(f"GroupedConv2D: filters must divide into groups. Received: "
                              f"filters={filters}, groups={groups}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.groups = int(groups)
        self.strides = int(strides)
        self.padding = padding
        self.use_bias = bool(use_bias)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.groups:
            raise ConfigError(f"GroupedConv2D: input channels must divide into groups. Received: "
                              f"channels={channels}, groups={self.groups}")
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, channels // self.groups, self.filters),
                                      initializer=conv_init())
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        ops = keras.ops
        pieces = zip(ops.split(inputs, self.groups, axis=-1), ops.split(self.kernel, self.groups, axis=-1))
        y = ops.concatenate([ops.conv(x, k, self.strides, self.padding) for x, k in pieces], axis=-1)
        return y + self.bias if self.use_bias else y

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        if self.padding == "same":
            size = [None if s is None else -(-s // self.strides) for s in (h, w)]
        else:
            size = [None if s is None else (s - self.kernel_size) // self.strides + 1 for s in (h, w)]
        return (n, *size, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "groups": self.groups, "strides": self.strides, "padding": self.padding,
                "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class LayerScale(keras.layers.Layer):
    """Multiply each channel by a learnt factor that starts at ``init_value`` (CaiT, ConvNeXt):
    a residual branch begins close to the identity, which lets deep stacks train."""

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init_value))

    def call(self, inputs):
        return inputs * self.gamma

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


def _small_map_depthwise(x, kernel):
    """Stride-1 "same" depthwise convolution with the kernel gradient written as one convolution.

    dK[i, j, c] = sum over n, h, w of x_padded[n, h + i, w + j, c] * dy[n, h, w, c]: a VALID
    depthwise convolution of the padded input, batch moved into the channels (1, H', W', N*C),
    with dy as its (H, W, N*C, 1) kernel, then summed over n. The native gradient up to float32
    rounding; the input gradient is TensorFlow's own.
    """
    kh, kw = kernel.shape[:2]
    pads = [[0, 0], [(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0]]  # TensorFlow's "SAME"

    @tf.custom_gradient
    def conv(x, kernel):
        def grad(dy):
            dx = tf.nn.depthwise_conv2d_backprop_input(tf.shape(x), kernel, dy, [1, 1, 1, 1], "SAME")
            xp = tf.transpose(tf.pad(x, pads), [1, 2, 0, 3])
            xp = tf.reshape(xp, [1, xp.shape[0], xp.shape[1], -1])
            dy_kernel = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [dy.shape[1], dy.shape[2], -1, 1])
            dk = tf.nn.depthwise_conv2d(xp, dy_kernel, [1, 1, 1, 1], "VALID")  # (1, kh, kw, N*C)
            dk = tf.reduce_sum(tf.reshape(dk, [kh, kw, -1, x.shape[-1]]), axis=2)
            return dx, dk[..., None]

        return tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME"), grad

    return conv(x, kernel)


@keras.saving.register_keras_serializable(package="deeplense_tf")
class FastDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D``, same arguments, weights and outputs, faster to train
    on maps smaller than its kernel (see the module docstring): there, with "same" padding,
    stride 1, no dilation, depth multiplier 1 and channels last, its kernel gradient is one
    depthwise convolution (``_small_map_depthwise``); anywhere else it is Keras' layer."""

    def _small_map(self, shape) -> bool:
        h, w = shape[1:3]
        return (self.padding == "same" and self.strides == (1, 1) and self.dilation_rate == (1, 1)
                and self.depth_multiplier == 1 and self.data_format == "channels_last"
                and h is not None and w is not None and h < self.kernel_size[0] and w < self.kernel_size[1])

    def call(self, inputs):
        if not self._small_map(inputs.shape):
            return super().call(inputs)
        y = _small_map_depthwise(inputs, keras.ops.cast(self.kernel, inputs.dtype))
        if self.use_bias:
            y = y + keras.ops.cast(self.bias, y.dtype)
        return self.activation(y) if self.activation is not None else y


# ---- building blocks (functional: tensor in, tensor out) -------------------------------

def drop_path(x, rate: float, name: str):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``rate``
    (a Dropout whose noise is shared by every position and channel of a sample)."""
    if not rate:
        return x
    return keras.layers.Dropout(rate, noise_shape=(None,) + (1,) * (len(x.shape) - 1), name=name)(x)


def residual(shortcut, branch, rate: float, name: str):
    return keras.layers.Add(name=f"{name}_add")([shortcut, drop_path(branch, rate, f"{name}_drop_path")])


def activation(x, act: str, name: str):
    # timm's CSPNet uses LeakyReLU(0.01); Keras' "leaky_relu" string means slope 0.2.
    if act == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.01, name=name)(x)
    return keras.layers.Activation(act, name=name)(x)


def batch_norm(x, name: str, zero: bool = False):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name,
                                           gamma_initializer="zeros" if zero else "ones")(x)


def symmetric_padding(x, kernel: int, strides: int, name: str):
    """``(x, padding)`` for a ``kernel``-wide window moved by ``strides``: a strided window gets
    ``kernel // 2`` zeros on every side and "valid" (PyTorch's padding, which the timm recipes
    assume), anything else "same".

    Keras' "same" pads a stride-2 window on an even map only at the bottom and right, so the
    strided 3x3 of a residual block centres its outputs one pixel off the grid its strided 1x1
    shortcut samples, and every stem shifts the image by a pixel. Padding both sides keeps the
    two branches on one grid: resnet18 scored +0.010 macro AUC on 3-class Model II over 5 seeds
    (BENCHMARKS.md, "Our recipe against a plain timm loop")."""
    if strides == 1 or kernel == 1:
        return x, "same"
    return keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x), "valid"


def max_pool_3x3_s2(x, name: str = "stem_pool"):
    """The ResNet stem's 3x3 / 2 max pool, padded on both sides (zeros: it follows a ReLU)."""
    x, padding = symmetric_padding(x, 3, 2, name)
    return keras.layers.MaxPooling2D(3, 2, padding=padding, name=name)(x)


def conv_bn(x, filters: int, kernel: int = 1, strides: int = 1, act: str | None = "relu",
            groups: int = 1, name: str = "conv", zero_gamma: bool = False):
    """Convolution (grouped when ``groups`` > 1; strided ones padded symmetrically), BatchNorm,
    activation (None: linear)."""
    x, padding = symmetric_padding(x, kernel, strides, name)
    if groups > 1:
        x = GroupedConv2D(filters, kernel, groups, strides, padding=padding, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(filters, kernel, strides, padding=padding, use_bias=False,
                                kernel_initializer=conv_init(), name=f"{name}_conv")(x)
    x = batch_norm(x, f"{name}_bn", zero_gamma)
    return activation(x, act, f"{name}_act") if act else x


def eca(x, name: str):
    """Efficient Channel Attention: a 1-D convolution across the pooled channels, kernel size
    growing with log2(channels), gates each channel; no dimensionality reduction."""
    channels = x.shape[-1]
    t = int(abs((math.log2(channels) + 1) / 2))
    k = t if t % 2 else t + 1
    w = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    w = keras.layers.Reshape((channels, 1), name=f"{name}_to_seq")(w)
    w = keras.layers.Conv1D(1, k, padding="same", use_bias=False, activation="sigmoid", name=f"{name}_conv")(w)
    w = keras.layers.Reshape((1, 1, channels), name=f"{name}_to_map")(w)
    return keras.layers.Multiply(name=f"{name}_gate")([x, w])


def bottleneck(x, width: int, out: int, strides: int = 1, groups: int = 1, attention: str | None = None,
               act: str = "relu", drop: float = 0.0, name: str = "block"):
    """ResNet / ResNeXt bottleneck (stride on the 3x3, "v1.5"), optional ECA before the sum."""
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        shortcut = conv_bn(x, out, 1, strides, act=None, name=f"{name}_down")
    y = conv_bn(x, width, 1, act=act, name=f"{name}_1")
    y = conv_bn(y, width, 3, strides, act=act, groups=groups, name=f"{name}_2")
    y = conv_bn(y, out, 1, act=None, name=f"{name}_3", zero_gamma=True)
    if attention == "eca":
        y = eca(y, f"{name}_eca")
    return activation(residual(shortcut, y, drop, name), act, f"{name}_out")


def basic_block(x, out: int, strides: int = 1, act: str = "relu", drop: float = 0.0, avg_down: bool = False,
                name: str = "block"):
    """ResNet-18/34 basic block: two 3x3 convolutions. ``avg_down`` (XResNet, "bag of tricks"):
    the downsampling shortcut average-pools before its 1x1 convolution instead of striding it,
    so it sees every pixel."""
    shortcut = x
    if strides != 1 or x.shape[-1] != out:
        if avg_down and strides != 1:
            shortcut = keras.layers.AveragePooling2D(strides, padding="same", name=f"{name}_down_pool")(shortcut)
            strides_1x1 = 1
        else:
            strides_1x1 = strides
        shortcut = conv_bn(shortcut, out, 1, strides_1x1, act=None, name=f"{name}_down")
    y = conv_bn(x, out, 3, strides, act=act, name=f"{name}_1")
    y = conv_bn(y, out, 3, act=None, name=f"{name}_2", zero_gamma=True)
    return activation(residual(shortcut, y, drop, name), act, f"{name}_out")


def resnet_stem(x, filters: int = 64, act: str = "relu"):
    x = conv_bn(x, filters, 7, 2, act=act, name="stem")
    return max_pool_3x3_s2(x)


def mbconv(x, out: int, expand: int, kernel: int, strides: int, act: str, drop: float = 0.0,
           name: str = "mbconv"):
    """MobileNetV2 / EfficientNet-lite inverted residual: 1x1 expand, depthwise, 1x1 project
    (EfficientNet proper adds squeeze-excitation after the depthwise convolution)."""
    channels = x.shape[-1]
    y = conv_bn(x, channels * expand, 1, act=act, name=f"{name}_expand") if expand != 1 else x
    y = FastDepthwiseConv2D(kernel, strides, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = activation(batch_norm(y, f"{name}_dw_bn"), act, f"{name}_dw_act")
    y = conv_bn(y, out, 1, act=None, name=f"{name}_project")
    if strides == 1 and channels == out:
        return residual(x, y, drop, name)
    return y


def convnext_block(x, drop: float, name: str):
    """Depthwise 7x7, LayerNorm, 4x inverted MLP with GELU, layer scale, residual."""
    dim = x.shape[-1]
    y = FastDepthwiseConv2D(7, padding="same", name=f"{name}_dw")(x)
    y = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln")(y)
    y = keras.layers.Dense(4 * dim, activation="gelu", name=f"{name}_mlp1")(y)
    y = keras.layers.Dense(dim, name=f"{name}_mlp2")(y)
    return residual(x, LayerScale(1e-6, name=f"{name}_scale")(y), drop, name)


def drop_rates(depths, rate: float):
    """Stochastic-depth rate per block, rising linearly to ``rate`` at the last block."""
    total = sum(depths)
    return [rate * i / max(1, total - 1) for i in range(total)]


# ---- whole networks: (input_shape) -> keras.Model images -> (N, F) ----------------------

def _pooled(inputs, x, name):
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="avg_pool")(x), name=name)


def convnext(input_shape, depths, dims, drop_path_rate=0.0, name="convnext"):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(dims[0], 4, 4, name="stem_conv")(inputs)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="stem_ln")(x)
    rates = iter(drop_rates(depths, drop_path_rate))
    for s, (depth, dim) in enumerate(zip(depths, dims)):
        if s:
            x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"down{s}_ln")(x)
            x = keras.layers.Conv2D(dim, 2, 2, name=f"down{s}_conv")(x)
        for b in range(depth):
            x = convnext_block(x, next(rates), f"stage{s}_block{b}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="head_ln")(x), name=name)


def resnet(input_shape, depths, width=64, groups=1, attention=None, drop_path_rate=0.0, name="resnet"):
    """Bottleneck ResNet family: ``groups`` > 1 is ResNeXt (``width`` = groups x group width
    in the first stage), ``attention="eca"`` ECA-ResNet."""
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs)
    rates = iter(drop_rates(depths, drop_path_rate))
    for s, depth in enumerate(depths):
        for b in range(depth):
            x = bottleneck(x, width * 2 ** s, 256 * 2 ** s, 2 if (s and not b) else 1, groups, attention,
                           drop=next(rates), name=f"stage{s}_block{b}")
    return _pooled(inputs, x, name)


def resnet_basic(input_shape, depths, xresnet: bool = False, drop_path_rate=0.0, name="resnet18"):
    """ResNet-18/34 (basic blocks, widths 64-512). ``xresnet``: fastai's XResNet tweaks (a stem
    of three 3x3 convolutions 32-32-64 instead of one 7x7, average-pool shortcuts), the
    backbone of the best published DeepLense axion-mass regression (DOMAIN.md)."""
    inputs = keras.Input(input_shape)
    if xresnet:
        x = conv_bn(inputs, 32, 3, 2, name="stem_1")
        x = conv_bn(x, 32, 3, name="stem_2")
        x = conv_bn(x, 64, 3, name="stem_3")
        x = max_pool_3x3_s2(x)
    else:
        x = resnet_stem(inputs)
    rates = iter(drop_rates(depths, drop_path_rate))
    for s, depth in enumerate(depths):
        for b in range(depth):
            x = basic_block(x, 64 * 2 ** s, 2 if (s and not b) else 1, drop=next(rates), avg_down=xresnet,
                            name=f"stage{s}_block{b}")
    return _pooled(inputs, x, name)


def csp_stage(x, out: int, depth: int, strides: int, act: str, name: str):
    """Cross Stage Partial stage (timm ``CrossStage``: expand 2, bottleneck ratio 0.5, linear
    expansion): half of the expanded channels crosses the stage untouched, half goes through
    the blocks. The 1x1 expansion to 2 x out channels followed by a split is written as two
    1x1 convolutions of ``out`` channels each: the same function, no slicing layer."""
    if strides != 1:
        x = conv_bn(x, x.shape[-1], 3, strides, act=act, name=f"{name}_down")
    cross = conv_bn(x, out, 1, act=None, name=f"{name}_expand_cross")
    y = conv_bn(x, out, 1, act=None, name=f"{name}_expand_blocks")
    for b in range(depth):
        y = bottleneck(y, out // 2, out, act=act, name=f"{name}_block{b}")
    y = conv_bn(y, out, 1, act=act, name=f"{name}_transition_b")
    x = keras.layers.Concatenate(name=f"{name}_concat")([cross, y])
    return conv_bn(x, out, 1, act=act, name=f"{name}_transition")


def cspresnet(input_shape, depths=(3, 3, 5, 2), widths=(128, 256, 512, 1024), act="leaky_relu",
              name="cspresnet"):
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs, act=act)
    for s, (depth, out) in enumerate(zip(depths, widths)):
        x = csp_stage(x, out, depth, 2 if s else 1, act, f"stage{s}")
    return _pooled(inputs, x, name)


def densenet(input_shape, blocks, growth=32, name="densenet"):
    """DenseNet-BC: each layer (BN-ReLU-1x1 to 4k, BN-ReLU-3x3 to k) adds k channels;
    transitions halve channels and resolution."""
    inputs = keras.Input(input_shape)
    x = resnet_stem(inputs)
    for s, depth in enumerate(blocks):
        if s:
            x = _bn_relu(x, f"transition{s}")
            x = keras.layers.Conv2D(x.shape[-1] // 2, 1, use_bias=False, name=f"transition{s}_conv")(x)
            x = keras.layers.AveragePooling2D(2, 2, name=f"transition{s}_pool")(x)
        for b in range(depth):
            name_ = f"block{s}_layer{b}"
            y = keras.layers.Conv2D(4 * growth, 1, use_bias=False, name=f"{name_}_conv1")(_bn_relu(x, f"{name_}_1"))
            y = keras.layers.Conv2D(growth, 3, padding="same", use_bias=False,
                                    name=f"{name_}_conv2")(_bn_relu(y, f"{name_}_2"))
            x = keras.layers.Concatenate(name=f"{name_}_concat")([x, y])
    return _pooled(inputs, _bn_relu(x, "final"), name)


def _bn_relu(x, name):
    return keras.layers.Activation("relu", name=f"{name}_relu")(batch_norm(x, f"{name}_bn"))


# EfficientNet-B0 stages: (kernel, expansion, output channels, repeats, first stride).
EFFICIENTNET_B0_STAGES = ((3, 1, 16, 1, 1), (3, 6, 24, 2, 2), (5, 6, 40, 2, 2), (3, 6, 80, 3, 2),
                          (5, 6, 112, 3, 1), (5, 6, 192, 4, 2), (3, 6, 320, 1, 1))


def efficientnet_lite(input_shape, stages=EFFICIENTNET_B0_STAGES, drop_path_rate=0.2, name="efficientnet_lite"):
    """EfficientNet-lite: EfficientNet without squeeze-excitation, ReLU6 instead of swish
    (quantisation- and CPU-friendly), stem 32 and head 1280 channels fixed."""
    inputs = keras.Input(input_shape)
    x = conv_bn(inputs, 32, 3, 2, act="relu6", name="stem")
    rates = iter(drop_rates([s[3] for s in stages], drop_path_rate))
    for s, (kernel, expand, out, repeats, strides) in enumerate(stages):
        for b in range(repeats):
            x = mbconv(x, out, expand, kernel, strides if b == 0 else 1, "relu6", drop=next(rates),
                       name=f"stage{s}_block{b}")
    return _pooled(inputs, conv_bn(x, 1280, 1, act="relu6", name="head"), name)


def scratch_only(build, input_shape, weights=None):
    """Builder for ``ArchSpec``: these networks have no ImageNet weights (the registry
    already refuses ``--weights imagenet`` for them, since ``imagenet_scaling`` is None)."""
    if weights is not None:
        raise ConfigError(f"{build.keywords.get('name', 'this architecture')} has no ImageNet weights; "
                          "use --weights none or a PATH")
    return build(tuple(input_shape))


# name, builder, family, what it is.
CONVNETS = (
    ("convnext_atto", functools.partial(convnext, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320),
                                        name="convnext_atto"), "convnext", "ConvNeXt-atto (timm), 3.4M"),
    ("convnext_femto", functools.partial(convnext, depths=(2, 2, 6, 2), dims=(48, 96, 192, 384),
                                         name="convnext_femto"), "convnext", "ConvNeXt-femto (timm), 4.9M"),
    ("convnext_pico", functools.partial(convnext, depths=(2, 2, 6, 2), dims=(64, 128, 256, 512),
                                        name="convnext_pico"), "convnext", "ConvNeXt-pico (timm), 8.5M"),
    ("convnext_nano", functools.partial(convnext, depths=(2, 2, 8, 2), dims=(80, 160, 320, 640),
                                        name="convnext_nano"), "convnext", "ConvNeXt-nano (timm), 15M"),
    ("resnet18", functools.partial(resnet_basic, depths=(2, 2, 2, 2), name="resnet18"),
     "resnet", "ResNet-18 (basic blocks, torchvision layout), 11.2M"),
    ("resnet34", functools.partial(resnet_basic, depths=(3, 4, 6, 3), name="resnet34"),
     "resnet", "ResNet-34 (basic blocks); the published DeepLense Model II regression baseline"),
    ("xresnet18", functools.partial(resnet_basic, depths=(2, 2, 2, 2), xresnet=True, name="xresnet18"),
     "resnet", "XResNet-18 (fastai: 3-conv stem, average-pool shortcuts)"),
    ("xresnet34", functools.partial(resnet_basic, depths=(3, 4, 6, 3), xresnet=True, name="xresnet34"),
     "resnet", "XResNet-34 (fastai: 3-conv stem, average-pool shortcuts)"),
    ("resnext50", functools.partial(resnet, depths=(3, 4, 6, 3), width=128, groups=32, name="resnext50"),
     "resnext", "ResNeXt-50 32x4d; grouped 3x3 as GroupedConv2D (split-concat)"),
    ("resnext101", functools.partial(resnet, depths=(3, 4, 23, 3), width=128, groups=32, name="resnext101"),
     "resnext", "ResNeXt-101 32x4d (the paper's; torchvision's is 32x8d)"),
    ("resnet200", functools.partial(resnet, depths=(3, 24, 36, 3), name="resnet200"),
     "resnet", "ResNet-200, bottleneck v1.5"),
    ("eca_resnet50", functools.partial(resnet, depths=(3, 4, 6, 3), attention="eca", name="eca_resnet50"),
     "resnet", "ResNet-50 with ECA channel attention in every block"),
    ("cspresnet50", functools.partial(cspresnet, name="cspresnet50"),
     "cspnet", "CSPResNet-50 (timm CspModelCfg), LeakyReLU 0.01"),
    ("densenet264", functools.partial(densenet, blocks=(6, 12, 64, 48), name="densenet264"),
     "densenet", "DenseNet-264 (k=32, BC)"),
    ("efficientnet_lite0", functools.partial(efficientnet_lite, name="efficientnet_lite0"),
     "efficientnet", "EfficientNet-lite0: B0 without SE, ReLU6"),
)

# Imported here, not at the top: importing the registry imports transformers.py, which
# takes its building blocks from this module, so they must exist by then.
from deeplense_tf.models.registry import ArchSpec, register_arch  # noqa: E402

for _name, _build, _family, _notes in CONVNETS:
    register_arch(ArchSpec(
        name=_name,
        builder=functools.partial(scratch_only, _build),
        default_size=224,
        min_size=32,
        family=_family,
        source="deeplense_tf",
        notes=f"{_notes}; written in deeplense_tf.models.convnets (not in keras.applications).",
    ))
