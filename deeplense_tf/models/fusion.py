"""Feature fusion: ``fusion:a+b+...`` concatenates the pooled features of several backbones.

    python -m deeplense_tf.train --arch fusion:efficientnet_b0+densenet121

A fusion name is resolved when it is asked for (``registry.get_arch``), never registered,
so every combination of registered backbones works without being listed. Each member sees
the same preprocessed image (the input size is the largest of the members' minimum sizes)
and keeps its own layers and weights; the head follows the concatenation.

With ``--weights imagenet`` (allowed when every member has ImageNet weights) the fusion
model receives the standardised 3-channel image (``imagenet_scaling="torch"``, which
``ImageNetInput`` leaves unchanged) and gives each member its own family's scaling inside.
"""

from __future__ import annotations

import functools

import keras

from deeplense_tf.errors import ConfigError
from deeplense_tf.models.preprocess import ImageNetInput
from deeplense_tf.models.registry import ArchSpec, create_backbone, get_arch, register_resolver

PREFIX = "fusion"


def members(name: str) -> tuple[str, ...]:
    """``fusion:a+b`` -> ("a", "b"), each checked against the registry."""
    _, _, rest = name.partition(":")
    names = tuple(part.strip() for part in rest.split("+"))
    if len(names) < 2 or not all(names):
        raise ConfigError(f"a fusion needs two or more backbones joined by '+'. Received: arch={name!r}; "
                          f"e.g. {PREFIX}:efficientnet_b0+densenet121")
    if len(set(names)) != len(names):
        raise ConfigError(f"a fusion lists each backbone once. Received: arch={name!r}")
    for member in names:
        if ":" in member:
            raise ConfigError(f"fusion members are plain backbone names. Received: {member!r} in arch={name!r}")
        get_arch(member)  # an unknown member raises the registry's error with close names
    return names


def build_fusion(names, input_shape, weights=None) -> keras.Model:
    """Images (already preprocessed, ``input_shape``) -> concatenated pooled features."""
    inputs = keras.Input(tuple(input_shape), name="fusion_input")
    features = []
    for i, member in enumerate(names):
        spec = get_arch(member)
        x = ImageNetInput(spec.imagenet_scaling, name=f"{member}_imagenet_input")(inputs) if weights else inputs
        backbone = create_backbone(member, input_shape, weights=weights)
        # Re-wrapped under a name unique in this model: two Keras models may share one.
        backbone = keras.Model(backbone.input, backbone.output, name=f"member{i}_{member}")
        features.append(backbone(x))
    outputs = keras.layers.Concatenate(name="fused_features")(features)
    return keras.Model(inputs, outputs, name="fusion_" + "_".join(names))


@functools.cache
def fusion_spec(name: str) -> ArchSpec:
    names = members(name)
    specs = [get_arch(member) for member in names]
    return ArchSpec(
        name=name,
        builder=functools.partial(build_fusion, names),
        default_size=max(spec.default_size for spec in specs),
        min_size=max(spec.min_size for spec in specs),
        family="fusion",
        source="deeplense_tf",
        imagenet_scaling="torch" if all(spec.has_imagenet for spec in specs) else None,
        notes="concatenated pooled features of " + ", ".join(names),
    )


register_resolver(PREFIX, fusion_spec)
