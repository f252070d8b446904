"""Architecture registry and Keras Applications backbones (every architecture built and trained
as a whole model: test_archs.py)."""

import functools

import keras
import numpy as np
import pytest

from deeplense_tf.errors import ConfigError, UserError
from deeplense_tf.models import applications, registry
from deeplense_tf.models.convnets import FastDepthwiseConv2D
from deeplense_tf.models.preprocess import preprocessing_block
from tests.helpers import random_images
from deeplense_tf.models.registry import (
    ARCHS,
    SUPERVISED_TASKS,
    check_arch_task,
    ArchSpec,
    create_backbone,
    get_arch,
    input_plan,
    list_archs,
    register_arch,
)

def size_for(name):
    return max(32, get_arch(name).min_size)


@functools.cache
def built(name):
    """Each test-size backbone is built once per session."""
    return create_backbone(name, (size_for(name), size_for(name), 1))


def test_every_keras_application_is_registered():
    classes = {n for n in dir(keras.applications) if n[0].isupper()}
    registered = {row[1] for row in applications.KERAS_APPLICATIONS}
    assert classes == registered
    assert all(get_arch(row[0]).source == "keras.applications" for row in applications.KERAS_APPLICATIONS)


def test_specs_are_consistent():
    for spec in ARCHS.values():
        assert spec.min_size <= spec.default_size and spec.family and spec.source
        assert spec.name == spec.name.lower() and " " not in spec.name


def test_unknown_name_lists_close_names():
    with pytest.raises(ConfigError) as err:
        get_arch("efficientnet_b9")
    assert "efficientnet_b" in str(err.value) and "--list-archs" in str(err.value)
    with pytest.raises(ConfigError):
        create_backbone("convnext_tinyy", (32, 32, 1))


def test_duplicate_register_raises(monkeypatch):
    monkeypatch.setattr(registry, "ARCHS", dict(ARCHS))
    spec = ArchSpec("dummy_net", lambda shape, weights: None, 64, 32, "dummy", "tests")
    assert register_arch(spec) is spec and registry.get_arch("dummy_net") is spec
    with pytest.raises(ValueError):
        register_arch(spec)


def test_list_archs_pattern():
    convnext = list_archs("convnext_*")
    assert convnext == sorted(convnext) and all(name.startswith("convnext_") for name in convnext)
    assert {"convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "convnext_xlarge"} <= set(convnext)
    assert list_archs() == sorted(ARCHS) and len(list_archs()) >= 40
    assert list_archs("no_such_*") == []


def test_architectures_serve_their_tasks():
    assert list_archs(task="anomaly") == ["conv_autoencoder", "vae"]
    assert set(list_archs(task="regression")) == set(list_archs()) - {"conv_autoencoder", "vae"}
    assert check_arch_task("resnet18", "lens_finding").tasks == SUPERVISED_TASKS
    with pytest.raises(ConfigError, match="serves --task anomaly, not regression"):
        check_arch_task("vae", "regression")
    with pytest.raises(ConfigError, match="Architectures for anomaly: conv_autoencoder, vae"):
        check_arch_task("resnet18", "anomaly")
    with pytest.raises(ConfigError, match="autoencoder, not a backbone"):
        create_backbone("vae", (32, 32, 1))


def test_input_plan():
    assert input_plan("inception_v3", (64, 64, 1)) == registry.InputPlan((75, 75, 1), None)
    assert input_plan("inception_v3", (64, 64, 1), "imagenet") == registry.InputPlan((75, 75, 3), "tf")
    assert input_plan("efficientnet_b0", (64, 64, 1), "none").shape == (64, 64, 1)
    with pytest.raises(ConfigError):
        input_plan("resnet50", (64, 64, 5), "imagenet")


def test_too_small_input_is_rejected():
    with pytest.raises(ConfigError, match="at least 71"):
        create_backbone("xception", (64, 64, 1))


def test_imagenet_offline_is_a_clear_user_error(monkeypatch):
    def offline(**kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/keras-applications/"
                        "efficientnetb0_notop.h5: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", offline)
    with pytest.raises(UserError) as err:
        create_backbone("efficientnet_b0", (32, 32, 3), weights="imagenet")
    message = str(err.value)
    assert "\n" not in message and "efficientnet_b0" in message
    assert "~/.keras/models" in message and "--weights PATH" in message


def test_imagenet_needs_three_channels():
    with pytest.raises(ConfigError, match="3 input channels"):
        create_backbone("efficientnet_b0", (32, 32, 1), weights="imagenet")


def test_weights_file_round_trip(tmp_path):
    model = built("convnext_tiny")
    path = tmp_path / "backbone.weights.h5"
    model.save_weights(path)
    fresh = create_backbone("convnext_tiny", (32, 32, 1), weights=str(path))
    x = random_images(2, 32, seed=1)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(fresh(x)))
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("convnext_tiny", (32, 32, 1), weights=str(tmp_path / "missing.h5"))


def test_convnext_depthwise_swap_keeps_outputs():
    grouped = applications.build_keras_application("ConvNeXtTiny", "convnext", (32, 32, 1),
                                                   fast_depthwise=False)
    swapped = applications.grouped_to_depthwise(grouped)
    kinds = [type(layer) for layer in swapped.layers]
    assert kinds.count(FastDepthwiseConv2D) == 18
    assert not any(type(l) is keras.layers.Conv2D and l.groups > 1 for l in swapped.layers)
    x = random_images(2, 32, seed=2)
    np.testing.assert_allclose(np.asarray(swapped(x)), np.asarray(grouped(x)), atol=1e-4)


def test_efficientnet_stem_keeps_standardised_scale():
    model = built("efficientnet_b0")
    assert not any(isinstance(l, keras.layers.Rescaling) for l in model.layers)
    stem = keras.Model(model.input, model.get_layer("stem_activation").output)
    # Without the fix the 1/255 input scale leaves this at ~0.01 (below BatchNorm's epsilon).
    assert np.std(np.asarray(stem(random_images(2, 32), training=True))) > 0.2


def test_efficientnet_from_scratch_has_no_stochastic_depth():
    model = built("efficientnet_b0")
    assert not any(isinstance(l, keras.layers.Dropout) for l in model.layers)
    assert isinstance(model.get_layer("block2b_drop"), keras.layers.Identity)
    x = random_images(2, 32, seed=4)  # training mode is then deterministic (BatchNorm uses the batch)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), np.asarray(model(x, training=True)))


def test_model_with_backbone_saves_and_loads(tmp_path):
    plan = input_plan("efficientnet_b0", (32, 32, 1))
    inputs = keras.Input((32, 32, 1))
    features = built("efficientnet_b0")(preprocessing_block(inputs, plan.shape[:2], plan.shape[2]))
    model = keras.Model(inputs, features)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = 100 * random_images(2, 32, seed=3)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
