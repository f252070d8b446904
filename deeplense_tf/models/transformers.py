"""Vision transformers for 64-150 px single-channel lensing images: ViT and CvT.

    python -m deeplense_tf.train --arch vit          # or vit_small, cvt_13

- ``vit``, ``vit_small``: ViT-Tiny / ViT-Small widths with 8x8 patches (a 64 px image is an
  8x8 grid of tokens, 150 px a 19x19 grid), learnable position embeddings, a class token.
  An input side that is not a multiple of the patch is zero-padded (symmetrically) up to
  one: after ``PerImageStandardize`` zero is the image mean, and no pixel is resampled.
  The position embeddings are sized when the model is built, so a model serves the size it
  was built for; ``min_size`` 32 keeps at least a 4x4 token grid.
- ``cvt_13``: the hybrid. Convolutional Vision Transformer (Wu et al. 2021), CvT-13 widths
  and depths: every stage opens with an overlapping strided convolution ("convolutional
  token embedding") and every attention layer projects queries, keys and values through a
  depthwise 3x3 convolution + BatchNorm (keys and values at stride 2) before the linear
  projections of the attention. Convolutions carry position, so no position embedding is
  needed and any size works; ``min_size`` is 64 because at 32 px the last stage (stride 32)
  would attend over a single key. Pooled by a mean over the last
  stage's tokens instead of CvT's class token. DOMAIN.md: CvT-13 reached 0.140 dex on
  Model III axion regression.

Everything is trained from scratch (no ImageNet weights).
"""

from __future__ import annotations

import functools

import keras

from deeplense_tf.models.convnets import drop_rates, residual, scratch_only
from deeplense_tf.models.registry import ArchSpec, register_arch

LN_EPSILON = 1e-6


@keras.saving.register_keras_serializable(package="deeplense_tf")
class ClassToken(keras.layers.Layer):
    """Prepend one learnt token to a (N, T, D) sequence: (N, T + 1, D)."""

    def build(self, input_shape):
        self.token = self.add_weight(name="token", shape=(1, 1, input_shape[-1]),
                                     initializer=keras.initializers.TruncatedNormal(stddev=0.02))

    def call(self, inputs):
        ops = keras.ops
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype), (ops.shape(inputs)[0], 1, inputs.shape[-1]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        n, t, d = input_shape
        return (n, None if t is None else t + 1, d)


@keras.saving.register_keras_serializable(package="deeplense_tf")
class PositionEmbedding(keras.layers.Layer):
    """Add a learnt (1, T, D) embedding to a (N, T, D) sequence; T is fixed when built."""

    def __init__(self, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)

    def build(self, input_shape):
        self.embedding = self.add_weight(name="embedding", shape=(1, *input_shape[1:]),
                                         initializer=keras.initializers.TruncatedNormal(stddev=self.stddev))

    def call(self, inputs):
        return inputs + keras.ops.cast(self.embedding, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}


@keras.saving.register_keras_serializable(package="deeplense_tf")
class Attention(keras.layers.Layer):
    """Multi-head scaled dot-product attention of (N, T, D) queries over (N, S, D) keys and
    values (``key`` defaults to the queries, ``value`` to the keys), each linearly projected,
    with a D-wide output projection.

    Written out instead of ``keras.layers.MultiHeadAttention``: that layer projects with
    ``EinsumDense``, which TensorFlow runs as a broadcast BatchMatMul whose kernel gradient
    is a per-sample product plus a Sum; here each projection is one ``Dense`` (one 2-D
    matmul) and only the attention itself is batched. Same function (tested against
    ``MultiHeadAttention``); 3-4 % faster training of vit and cvt_13 on the 2-core CPU.
    """

    def __init__(self, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)

    def build(self, query_shape, key_shape=None, value_shape=None):
        dim = query_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"Attention: width {dim} does not divide into {self.num_heads} heads")
        for part in ("query", "key", "value", "output"):
            dense = keras.layers.Dense(dim, dtype=self.dtype_policy, name=part)
            dense.build((None, dim))
            setattr(self, f"{part}_dense", dense)

    def _heads(self, x):
        """(N, T, D) -> (N, heads, T, D / heads)."""
        ops = keras.ops
        n, t = ops.shape(x)[0], ops.shape(x)[1]
        return ops.transpose(ops.reshape(x, (n, t, self.num_heads, x.shape[-1] // self.num_heads)), (0, 2, 1, 3))

    def call(self, query, key=None, value=None):
        ops = keras.ops
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.query_dense(query))
        k = self._heads(self.key_dense(key))
        v = self._heads(self.value_dense(value))
        scale = ops.cast(1.0 / (q.shape[-1] ** 0.5), q.dtype)
        weights = ops.softmax(ops.matmul(q * scale, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        return self.output_dense(ops.reshape(out, ops.shape(query)))

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        return tuple(query_shape)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads}


# ---- building blocks --------------------------------------------------------------------

def mlp(x, ratio: float, name: str):
    dim = x.shape[-1]
    x = keras.layers.Dense(int(dim * ratio), activation="gelu", name=f"{name}_fc1")(x)
    return keras.layers.Dense(dim, name=f"{name}_fc2")(x)


def layer_norm(x, name: str):
    return keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=name)(x)


def transformer_block(x, heads: int, mlp_ratio: float, drop: float, name: str):
    """Pre-norm block on (N, T, D) tokens: x + attention(LN x), then x + MLP(LN x)."""
    y = layer_norm(x, f"{name}_ln1")
    y = Attention(heads, name=f"{name}_attn")(y)
    x = residual(x, y, drop, f"{name}_attn")
    return residual(x, mlp(layer_norm(x, f"{name}_ln2"), mlp_ratio, f"{name}_mlp"), drop, f"{name}_mlp")


def conv_projection(x, strides: int, name: str):
    """CvT's projection of a (N, H, W, D) map: depthwise 3x3 + BatchNorm, flattened to tokens."""
    x = keras.layers.DepthwiseConv2D(3, strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_bn")(x)
    return keras.layers.Reshape((-1, x.shape[-1]), name=f"{name}_tokens")(x)


def cvt_block(x, heads: int, mlp_ratio: float, drop: float, name: str):
    """CvT block on a (N, H, W, D) map: convolutional attention (keys / values at stride 2)."""
    h, w, dim = x.shape[1:]
    y = layer_norm(x, f"{name}_ln1")
    q = conv_projection(y, 1, f"{name}_q")
    k = conv_projection(y, 2, f"{name}_k")
    v = conv_projection(y, 2, f"{name}_v")
    y = Attention(heads, name=f"{name}_attn")(q, k, v)
    y = keras.layers.Reshape((h, w, dim), name=f"{name}_map")(y)
    x = residual(x, y, drop, f"{name}_attn")
    return residual(x, mlp(layer_norm(x, f"{name}_ln2"), mlp_ratio, f"{name}_mlp"), drop, f"{name}_mlp")


# ---- whole networks: (input_shape) -> keras.Model images -> (N, F) ----------------------

def vit(input_shape, patch_size=8, dim=192, depth=12, heads=3, mlp_ratio=4.0, pooling="token",
        drop_path_rate=0.1, name="vit"):
    """Vision Transformer; ``pooling`` "token" (class token) or "mean" (over patch tokens)."""
    inputs = keras.Input(input_shape)
    pads = [(-side) % patch_size for side in input_shape[:2]]
    x = inputs
    if any(pads):
        x = keras.layers.ZeroPadding2D(tuple((p // 2, p - p // 2) for p in pads), name="pad_to_patches")(x)
    x = keras.layers.Conv2D(dim, patch_size, patch_size, name="patch_embed")(x)
    x = keras.layers.Reshape((-1, dim), name="patch_tokens")(x)
    if pooling == "token":
        x = ClassToken(name="class_token")(x)
    x = PositionEmbedding(name="position_embedding")(x)
    for i, rate in enumerate(drop_rates([depth], drop_path_rate)):
        x = transformer_block(x, heads, mlp_ratio, rate, f"block{i}")
    x = layer_norm(x, "final_ln")
    if pooling == "token":  # the class token is position 0: crop the rest away
        x = keras.layers.Cropping1D((0, x.shape[1] - 1), name="take_class_token")(x)
        x = keras.layers.Flatten(name="class_features")(x)
    else:
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name)


def cvt(input_shape, dims=(64, 192, 384), depths=(1, 2, 10), heads=(1, 3, 6), mlp_ratio=4.0,
        drop_path_rate=0.1, name="cvt"):
    inputs = keras.Input(input_shape)
    x = inputs
    rates = iter(drop_rates(depths, drop_path_rate))
    # Convolutional token embedding: 7x7 stride 4, then 3x3 stride 2 (overlapping patches).
    for s, (dim, depth, n_heads, kernel, stride) in enumerate(zip(dims, depths, heads, (7, 3, 3), (4, 2, 2))):
        x = keras.layers.Conv2D(dim, kernel, stride, padding="same", name=f"stage{s}_embed")(x)
        x = layer_norm(x, f"stage{s}_embed_ln")
        for b in range(depth):
            x = cvt_block(x, n_heads, mlp_ratio, next(rates), f"stage{s}_block{b}")
    x = layer_norm(x, "final_ln")
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="avg_pool")(x), name=name)


# name, builder, family, default size, minimum size, what it is. CvT's minimum is 64 px:
# below that its last stage (stride 32) attends over a single key, a constant softmax.
TRANSFORMERS = (
    ("vit", functools.partial(vit, dim=192, depth=12, heads=3, name="vit"), "vit", 64, 32,
     "ViT-Tiny width (192, 12 blocks, 3 heads), 8x8 patches, class token"),
    ("vit_small", functools.partial(vit, dim=384, depth=12, heads=6, name="vit_small"), "vit", 64, 32,
     "ViT-Small width (384, 12 blocks, 6 heads), 8x8 patches, class token"),
    ("cvt_13", functools.partial(cvt, name="cvt_13"), "cvt", 224, 64,
     "CvT-13 (conv token embedding + conv q/k/v projections), mean-pooled"),
)

for _name, _build, _family, _default, _min, _notes in TRANSFORMERS:
    register_arch(ArchSpec(
        name=_name,
        builder=functools.partial(scratch_only, _build),
        default_size=_default,
        min_size=_min,
        family=_family,
        source="deeplense_tf",
        notes=f"{_notes}; written in deeplense_tf.models.transformers.",
    ))
