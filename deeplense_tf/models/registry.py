"""Architecture registry: one name -> one ``ArchSpec``; ``create_backbone`` builds it.

Adding an architecture means one ``register_arch(ArchSpec(...))`` call in the module that
builds it (applications.py for Keras Applications) and, for a new module, one import line in
``models/__init__.py``; nothing else names architectures. This module imports none of them.
Autoencoders (``--task anomaly``) are registered here too, with ``tasks=("anomaly",)``.

    >>> from deeplense_tf.models.registry import create_backbone, input_plan, list_archs
    >>> list_archs("convnext_*")
    >>> plan = input_plan("inception_v3", (64, 64, 1))      # -> shape (75, 75, 1)
    >>> backbone = create_backbone("inception_v3", plan.shape)  # images -> (N, F)
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Callable

import keras

from deeplense_tf.errors import ConfigError, UserError

WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".keras")
SUPERVISED_TASKS = ("regression", "classification", "lens_finding")


@dataclass(frozen=True)
class ArchSpec:
    """The facts about one architecture that scripts would otherwise restate.

    ``builder(input_shape, weights)`` returns a ``keras.Model`` from (N, H, W, C) images to
    pooled features (N, F); it receives ``weights`` None or "imagenet" only (a weights
    file is loaded by ``create_backbone`` after building). ``imagenet_scaling`` is the
    input scaling the ImageNet weights expect (``preprocess.ImageNetInput``), None when no
    ImageNet weights exist. ``tasks``: the tasks it serves; an autoencoder's ``("anomaly",)``
    builder is ``builder(inputs, side, channels, seed=, augment=)`` -> the anomaly score.
    """

    name: str
    builder: Callable[..., keras.Model]
    default_size: int  # the size the architecture was designed / pretrained at
    min_size: int  # smallest H and W it builds at; smaller inputs are resized up
    family: str
    source: str  # "keras.applications" or "deeplense_tf" or the library that builds it
    imagenet_scaling: str | None = None
    notes: str = field(default="", compare=False)
    tasks: tuple[str, ...] = SUPERVISED_TASKS

    @property
    def has_imagenet(self) -> bool:
        return self.imagenet_scaling is not None


@dataclass(frozen=True)
class InputPlan:
    """What ``preprocessing_block`` must produce for a backbone, and what it is built with."""

    shape: tuple[int, int, int]  # backbone input (H, W, C) after preprocessing
    imagenet_scaling: str | None  # pass to preprocessing_block; None unless ImageNet weights


ARCHS: dict[str, ArchSpec] = {}
# Composite names "prefix:..." (e.g. fusion:a+b, see fusion.py) are resolved by a function
# of the whole name instead of being registered one combination at a time.
RESOLVERS: dict[str, Callable[[str], ArchSpec]] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    if spec.name in ARCHS:
        raise ValueError(f"architecture {spec.name!r} is already registered ({ARCHS[spec.name].source})")
    ARCHS[spec.name] = spec
    return spec


def register_resolver(prefix: str, resolve: Callable[[str], ArchSpec]) -> None:
    if prefix in RESOLVERS:
        raise ValueError(f"architecture prefix {prefix!r} is already registered")
    RESOLVERS[prefix] = resolve


def get_arch(name: str) -> ArchSpec:
    prefix, colon, _ = str(name).partition(":")
    if colon and prefix in RESOLVERS:
        return RESOLVERS[prefix](name)
    try:
        return ARCHS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), ARCHS, n=3)
        hint = f"closest: {', '.join(close)}" if close else "no close match"
        raise ConfigError(
            f"unknown architecture {name!r} ({hint}); "
            f"`python -m deeplense_tf.train --list-archs` lists all {len(ARCHS)}"
        ) from None


def list_archs(pattern: str = "*", task: str | None = None) -> list[str]:
    """Registered names matching the glob ``pattern``; with ``task``, only those that serve it."""
    return sorted(name for name in fnmatch.filter(ARCHS, pattern) if task is None or task in ARCHS[name].tasks)


def check_arch_task(name: str, task: str) -> ArchSpec:
    """The spec of ``name`` if it serves ``task`` (an autoencoder only ``anomaly``, a backbone the rest)."""
    spec = get_arch(name)
    if task not in spec.tasks:
        fits = list_archs(task=task)
        shown = ", ".join(fits) if len(fits) <= 5 else f"{len(fits)} architectures"
        raise ConfigError(f"--arch {name} serves --task {' / '.join(spec.tasks)}, not {task}. Architectures for "
                          f"{task}: {shown} (`python -m deeplense_tf.train --list-archs`)")
    return spec


def normalize_weights(weights: str | None) -> str | None:
    """None / "none" -> None, "imagenet", or an existing weights file path."""
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ConfigError(
            f"weights file not found: {path!r}; expected none, imagenet or the path of a "
            f"{' / '.join(WEIGHT_SUFFIXES)} file"
        )
    return path


def check_weights(name: str, weights: str | None) -> str | None:
    """``normalize_weights``, and ``imagenet`` only for an architecture that has ImageNet weights:
    cheap, so the commands check it before any data are read or simulated."""
    weights = normalize_weights(weights)
    if weights == "imagenet":
        _check_imagenet(get_arch(name), 1)  # the channels are checked once the data are read
    return weights


def input_plan(name: str, image_shape: tuple[int, int, int], weights: str | None = None) -> InputPlan:
    """Backbone input for raw images of ``image_shape``: sides resized up to ``min_size``;
    with ImageNet weights, grey repeated to 3 channels and the weights' input scaling."""
    spec = get_arch(name)
    h, w, c = (int(v) for v in image_shape)
    weights = normalize_weights(weights)
    if weights == "imagenet":
        _check_imagenet(spec, c)
        c = 3
    return InputPlan(
        shape=(max(h, spec.min_size), max(w, spec.min_size), c),
        imagenet_scaling=spec.imagenet_scaling if weights == "imagenet" else None,
    )


def _check_imagenet(spec: ArchSpec, channels: int) -> None:
    if not spec.has_imagenet:
        raise ConfigError(f"{spec.name} has no ImageNet weights: train it from scratch (--weights none), load a "
                          "weights file (--weights PATH), or pick an architecture with ImageNet weights (--list-archs, "
                          "column imagenet; e.g. resnet50, efficientnet_b0)")
    if channels not in (1, 3):
        raise ConfigError(
            f"ImageNet weights need 3 channels (or 1, repeated); {spec.name} received "
            f"{channels}-channel images: use --weights none"
        )


def _is_download_failure(exc: Exception) -> bool:
    # Keras' get_file raises a bare Exception("URL fetch failure on <url>: ...").
    return isinstance(exc, OSError) or "URL fetch failure" in str(exc)


def create_backbone(
    name: str, input_shape: tuple[int, int, int], weights: str | None = None
) -> keras.Model:
    """Build ``name`` for (already preprocessed) inputs of ``input_shape`` (H, W, C).

    ``weights``: None / "none" (scratch), "imagenet" (Keras' cache ~/.keras/models; needs
    C == 3), or a path to weights saved from the same backbone (``save_weights``).
    """
    spec = get_arch(name)
    if "anomaly" in spec.tasks:
        raise ConfigError(f"{name} is an autoencoder, not a backbone: use it with --task anomaly")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (H, W, C). Received: input_shape={input_shape}")
    if min(shape[:2]) < spec.min_size:
        raise ConfigError(
            f"{name} needs inputs of at least {spec.min_size}x{spec.min_size}. Received: "
            f"input_shape={shape}; resize up first (registry.input_plan + preprocessing_block)"
        )
    weights = normalize_weights(weights)
    if weights == "imagenet":
        _check_imagenet(spec, shape[2])
        if shape[2] != 3:
            raise ConfigError(
                f"ImageNet weights need 3 input channels. Received: input_shape={shape}; "
                "repeat grey to 3 channels (registry.input_plan does)"
            )
    try:
        model = spec.builder(shape, "imagenet" if weights == "imagenet" else None)
    except Exception as exc:
        if weights == "imagenet" and _is_download_failure(exc):
            detail = " ".join(str(exc).split())
            raise UserError(
                f"could not download the ImageNet weights of {name} ({detail}). Keras caches "
                "them in ~/.keras/models: copy the file named in that URL there (same name) "
                "from a machine with network access and run again, or pass a local weights "
                "file saved from this backbone with --weights PATH, or train from scratch "
                "with --weights none"
            ) from exc
        raise
    if weights not in (None, "imagenet"):
        _load_weights_file(model, weights, name)
    return model


def _load_weights_file(model: keras.Model, path: str, name: str) -> None:
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as exc:
        detail = " ".join(str(exc).split())
        raise UserError(
            f"could not load weights {path!r} into {name} with input shape "
            f"{tuple(model.input_shape[1:])}: {detail}. The file must come from the same "
            "architecture and input channels (backbone.save_weights(...))"
        ) from exc
