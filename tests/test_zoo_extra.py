"""Architectures written in this package (convnets, transformers) and feature fusion: what is
particular to them (every architecture built and trained as a whole model: test_archs.py)."""

import keras
import numpy as np
import pytest

from deeplense_tf.errors import ConfigError
from deeplense_tf.models import convnets, fusion, transformers
from deeplense_tf.models.registry import ARCHS, create_backbone, get_arch, input_plan, list_archs
from tests.helpers import assert_config_roundtrip, random_images

OURS = [name for name in list_archs() if ARCHS[name].source == "deeplense_tf"]
def assert_features(backbone, size):
    y = np.asarray(backbone(random_images(2, size), training=False))
    assert y.shape == (2, backbone.output_shape[-1]) and np.all(np.isfinite(y))


def assert_trains(backbone, size):
    """One step of a Dense head on top changes the backbone's weights, first layer to last.

    Run eagerly: tracing the training graph of a 50-layer net takes ~1 min on a loaded
    2-core machine, one eager step ~5 s. (Zero-initialised last BatchNorms leave most
    residual-branch convolutions, and ECA gates behind them, without gradient in the first
    step, hence the first weight and one of the last three.)
    """
    model = keras.Sequential([backbone, keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    before = [np.array(w) for w in backbone.trainable_weights]
    loss = model.train_on_batch(random_images(2, size), np.array([0, 2]))
    assert np.isfinite(loss)
    changed = [not np.allclose(b, np.asarray(w)) for b, w in zip(before, backbone.trainable_weights)]
    assert changed[0] and any(changed[-3:])


def test_seed_archs_are_registered():
    expected = {"vit", "vit_small", "cvt_13", "convnext_atto", "convnext_femto", "convnext_pico",
                "convnext_nano", "resnext50", "resnext101", "cspresnet50", "eca_resnet50",
                "densenet264", "efficientnet_lite0", "resnet200", "resnet18", "resnet34", "xresnet18", "xresnet34"}
    assert expected <= set(OURS)
    assert all(not ARCHS[name].has_imagenet for name in OURS)


def test_resnet18_and_34_match_torchvision_parameter_counts():
    # torchvision resnet18 / resnet34 without the 1000-class fc layer (BatchNorm moving
    # statistics are buffers there, not parameters)
    for name, expected in (("resnet18", 11_689_512 - 513_000), ("resnet34", 21_797_672 - 513_000)):
        backbone = create_backbone(name, (64, 64, 3))
        assert sum(int(np.prod(w.shape)) for w in backbone.trainable_weights) == expected


def test_shallow_densenet_trains():
    backbone = convnets.densenet((32, 32, 1), blocks=(1, 1, 1, 1))
    assert backbone.output_shape == (None, (((64 + 32) // 2 + 32) // 2 + 32) // 2 + 32)
    assert_trains(backbone, 32)


def test_no_imagenet_weights():
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        input_plan("vit", (64, 64, 1), "imagenet")
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        create_backbone("resnext50", (32, 32, 3), weights="imagenet")


@pytest.mark.parametrize("size, tokens", [(64, 8 * 8), (150, 19 * 19)])
def test_vit_sizes(size, tokens):
    keras.backend.clear_session()
    backbone = create_backbone("vit", (size, size, 1))
    assert backbone.get_layer("position_embedding").embedding.shape == (1, tokens + 1, 192)
    assert_features(backbone, size)


def test_vit_mean_pooling():
    backbone = transformers.vit((40, 40, 1), dim=32, depth=2, heads=2, pooling="mean")
    assert backbone.output_shape == (None, 32)
    assert "class_token" not in [layer.name for layer in backbone.layers]


def test_grouped_conv_equals_keras_grouped_conv():
    x = random_images(2, 8)[..., [0] * 8] * np.arange(1, 9, dtype="float32")
    ours = convnets.GroupedConv2D(12, 3, groups=4, strides=2)
    reference = keras.layers.Conv2D(12, 3, strides=2, padding="same", groups=4, use_bias=False)
    y = np.asarray(ours(x))
    reference.build(x.shape)
    reference.set_weights(ours.get_weights())
    np.testing.assert_allclose(y, np.asarray(reference(x)), atol=1e-4)
    assert y.shape == ours.compute_output_shape(x.shape)


def test_attention_equals_keras_multi_head_attention():
    rng = np.random.default_rng(4)
    q, kv = rng.normal(size=(2, 5, 8)).astype("float32"), rng.normal(size=(2, 3, 8)).astype("float32")
    ours, reference = transformers.Attention(2), keras.layers.MultiHeadAttention(2, 4)
    ours(q, kv), reference(q, kv)
    w = reference.get_weights()  # query, key, value kernels (8, 2, 4) and biases; output (2, 4, 8)
    for i, dense in enumerate([ours.query_dense, ours.key_dense, ours.value_dense, ours.output_dense]):
        dense.set_weights([w[2 * i].reshape(8, 8), w[2 * i + 1].reshape(8)])
    np.testing.assert_allclose(np.asarray(ours(q, kv)), np.asarray(reference(q, kv)), atol=1e-5)


@pytest.mark.parametrize("layer", [
    convnets.GroupedConv2D(64, 3, groups=32, strides=2, padding="valid", use_bias=True),
    convnets.LayerScale(1e-5),
    transformers.ClassToken(),
    transformers.PositionEmbedding(stddev=0.05),
    transformers.Attention(num_heads=3),
])
def test_config_roundtrip(layer):
    assert_config_roundtrip(layer)


def test_custom_layers_save_and_load(tmp_path):
    inputs = keras.Input((16, 16, 1))
    x = convnets.GroupedConv2D(8, 3, groups=2)(keras.layers.Conv2D(4, 1)(inputs))
    x = keras.layers.Reshape((-1, 8))(convnets.LayerScale(0.5)(x))
    x = transformers.PositionEmbedding()(transformers.ClassToken()(x))
    model = keras.Model(inputs, transformers.Attention(2)(x))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(random_images(2, 16))), np.asarray(model(random_images(2, 16))))


def test_fusion_concatenates_member_features():
    keras.backend.clear_session()
    name = "fusion:convnext_atto+efficientnet_lite0"
    spec = get_arch(name)
    assert spec.min_size == 32 and spec.family == "fusion" and name not in list_archs()
    assert input_plan(name, (64, 64, 1)).shape == (64, 64, 1)
    backbone = create_backbone(name, (32, 32, 1))
    assert backbone.output_shape == (None, 320 + 1280)
    assert_features(backbone, 32)
    assert_trains(backbone, 32)


def test_fusion_input_is_largest_minimum():
    assert input_plan("fusion:vit+inception_v3", (64, 64, 1)).shape == (75, 75, 1)
    assert get_arch("fusion:efficientnet_b0+densenet121").imagenet_scaling == "torch"
    assert get_arch("fusion:efficientnet_b0+vit").imagenet_scaling is None


@pytest.mark.parametrize("name, message", [
    ("fusion:efficientnet_b0+densenet12", "densenet121"),
    ("fusion:efficientnet_b0", "two or more"),
    ("fusion:vit+vit", "once"),
    ("fusion:vit+", "two or more"),
])
def test_fusion_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        input_plan(name, (64, 64, 1))


def test_fusion_imagenet_plan_and_member_scaling():
    plan = input_plan("fusion:efficientnet_b0+densenet121", (64, 64, 1), "imagenet")
    assert plan.shape == (64, 64, 3) and plan.imagenet_scaling == "torch"
    assert fusion.members("fusion: resnet50 + vgg16") == ("resnet50", "vgg16")
