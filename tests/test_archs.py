"""Every registered architecture, as the model it becomes (timm's test_model_forward/backward habit).

    python -m pytest tests/test_archs.py -m "not slow"   # every architecture but HEAVY and SIBLINGS
    python -m pytest tests/test_archs.py -m slow         # those two

Each is built through ``create_model`` (preprocessing, augmentation, backbone, head) at
``max(32, min_size)`` px with 1 channel, for a 3-class classification head and the regression
head (autoencoders: their anomaly score), and run forward on 2 images (finite outputs of the
right shape, a finite loss under the run's own loss). The classification model and the
autoencoders are also trained one step with the run's optimiser (the first and last weights
move); the regression model shares that backbone code, so its step would test nothing new for
the same seconds. A newly registered architecture is tested here without any edit. The two
models of one architecture share one backbone build (the tests run architecture by architecture).
"""

import functools

import keras
import numpy as np
import pytest

from deeplense_tf.config import RunConfig, replace
from deeplense_tf.models import build
from deeplense_tf.models.build import create_model
from deeplense_tf.models.registry import ARCHS, create_backbone, list_archs
from deeplense_tf.training.trainer import compile_model, fit_labels
from tests.helpers import tiny_batch

HEADS = ("classification", "regression")
# Over 50 M parameters: one training step holds four copies of the weights (weights, gradients, two
# Adam moments), 0.8-5.6 GB, too much beside the other CI process. Measured (-m slow, sequential, idle
# 2-core machine, 2026-11-30): 8-23 s per architecture and head, the whole set 3 minutes.
HEAVY = {"convnext_xlarge", "convnext_large", "efficientnet_v2_l", "convnext_base", "nasnet_large", "efficientnet_b7",
         "resnet200", "resnet152", "resnet152_v2", "inception_resnet_v2", "efficientnet_v2_m"}
# Larger members of a family whose smaller member runs in CI (the same builder at another depth or width:
# efficientnet_b0 and the card's b4, efficientnet_v2_b0, densenet121, resnet18/50/50_v2, xresnet18,
# resnext50, convnext_atto/femto/pico, vgg16, vit). Slow-marked to keep the CI suite under 15 minutes on
# 2 cores: with a test process beside them they took 4-28 s each, about 5 minutes of the suite (2026-12-02).
SIBLINGS = {"efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b5", "efficientnet_b6",
            "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3", "efficientnet_v2_s",
            "densenet169", "densenet201", "densenet264", "resnet34", "resnet101", "resnet101_v2", "xresnet34",
            "resnext101", "convnext_nano", "convnext_tiny", "convnext_small", "vgg19", "vit_small"}
# Seen with -m slow on 2026-11-30 at the test size (32 px, a 1x1 final map, batch 2), not on every run:
# EfficientNetV2-M's and -L's stems got exactly zero gradient in the first step (V2-M: 380 of 649
# weights moved), and V2-L's inference was NaN after one step. Issue 17 studies EfficientNets at small inputs.
UNSTABLE = "EfficientNetV2-M/L at 32 px: the stem may get no gradient in the first step, or inference turn NaN"
KNOWN_FAILURES = {(name, head): UNSTABLE for name in ("efficientnet_v2_m", "efficientnet_v2_l") for head in HEADS}
SUPERVISED = list_archs(task="classification")
AUTOENCODERS = list_archs(task="anomaly")


def marked(names):
    return [pytest.param(n, marks=marks(n, "anomaly")) for n in names]


def cases():
    """(architecture, head), architecture by architecture, so its two models share a backbone build."""
    return [pytest.param(n, head, id=f"{n}-{head}", marks=marks(n, head)) for n in SUPERVISED for head in HEADS]


def marks(name: str, head: str) -> list:
    found = [pytest.mark.slow] if name in HEAVY | SIBLINGS else []
    if (name, head) in KNOWN_FAILURES:
        found.append(pytest.mark.xfail(reason=KNOWN_FAILURES[name, head], strict=False))
    return found


@functools.lru_cache(maxsize=1)
def last_backbone(name: str, shape: tuple, weights):
    return create_backbone(name, shape, weights)


@pytest.fixture(autouse=True)
def share_backbone_between_heads(monkeypatch):
    """Building a backbone is half a test's time: the second head of an architecture reuses it."""
    monkeypatch.setattr(build, "create_backbone",
                        lambda name, shape, weights=None: last_backbone(name, tuple(shape), weights))


def side(name: str) -> int:
    return max(32, ARCHS[name].min_size)


def build_and_compile(name: str, task: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    config = replace(RunConfig(), model={"arch": name, "task": task}, train={"lr": 1e-3})
    model = create_model(config.model, (side(name), side(name), 1), n_classes=3, target_mean=-23.0,
                         target_std=0.5, seed=0)
    compile_model(model, config, steps=1)
    model.run_eagerly = True  # one eager step costs seconds; tracing a deep net's training graph, a minute
    return model


def assert_one_step_trains(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    before = [np.array(w) for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.all(np.isfinite(loss))
    # Zero-initialised last BatchNorms leave some residual branches without gradient in the first
    # step: the first weight and one of the last three must move.
    moved = [not np.allclose(b, np.asarray(w)) for b, w in zip(before, model.trainable_weights)]
    assert moved[0] and any(moved[-3:])


@pytest.mark.parametrize("name, head", cases())
def test_model_forward_and_one_step(name, head):
    model = build_and_compile(name, head)
    x, labels = tiny_batch(side(name))
    out = np.asarray(model(x, training=False))
    assert np.all(np.isfinite(out))
    if head == "classification":
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)
        assert_one_step_trains(model, x, fit_labels("classification", labels))
    else:
        assert out.shape == (2, 1)
        loss = model.test_on_batch(x, fit_labels("regression", np.array([-23.5, -22.5], np.float32)))
        assert np.all(np.isfinite(loss))


@pytest.mark.parametrize("name", marked(AUTOENCODERS))
def test_autoencoder_forward_and_one_step(name):
    keras.backend.clear_session()
    model = build_and_compile(name, "anomaly")
    x, labels = tiny_batch(side(name))
    score = np.asarray(model(x, training=False))
    assert score.shape == (2,) and np.all(np.isfinite(score)) and np.all(score >= 0)
    assert_one_step_trains(model, x, fit_labels("anomaly", labels))


def test_every_registered_name_is_tested_here():
    assert set(SUPERVISED) | set(AUTOENCODERS) == set(list_archs())
    assert HEAVY <= set(list_archs()), "a HEAVY name that is not registered"
    assert len(HEAVY) <= 12, "HEAVY is for the few largest; a new entry is tested by default"
