"""``create_model``: raw images -> preprocessing -> augmentation -> backbone -> task head.

The model takes images exactly as stored on disk (``(H, W, C)`` float32), so an exported
model needs no preprocessing code: per-image standardisation, the resize up to the
architecture's minimum size and grey -> RGB for ImageNet weights are its first layers, and
the training-only augmentation follows them.
"""

from __future__ import annotations

import keras

from deeplense_tf.config import ModelConfig
from deeplense_tf.models.augment import augmentation_layers
from deeplense_tf.models import heads
from deeplense_tf.models.autoencoders import create_autoencoder
from deeplense_tf.models.preprocess import preprocessing_block
from deeplense_tf.models.registry import create_backbone, input_plan


def create_model(config: ModelConfig, input_shape: tuple[int, int, int], *, n_classes: int = 0,
                 target_mean: float = 0.0, target_std: float = 1.0, image_size: int | None = None,
                 seed: int | None = None) -> keras.Model:
    in_model = config.augment and not config.augment_in_pipeline
    augment = augmentation_layers(seed, config.shift, config.noise) if in_model else []
    if config.task == "anomaly":
        return create_autoencoder(config.arch, input_shape, image_size, seed=seed, augment=augment)
    side = image_size or input_shape[0]
    plan = input_plan(config.arch, (side, side, input_shape[-1]), config.weights)
    inputs = keras.Input(input_shape, name="image")
    x = preprocessing_block(inputs, plan.shape[:2], plan.shape[-1], plan.imagenet_scaling, config.normalization)
    for layer in augment:
        x = layer(x)
    backbone = create_backbone(config.arch, plan.shape, weights=config.weights)
    features = backbone(x)
    head = {
        "regression": lambda: heads.regression_head(features, config, target_mean, target_std),
        "classification": lambda: heads.classification_head(features, config, n_classes),
        "lens_finding": lambda: heads.lens_finding_head(features, config),
    }[config.task]
    return keras.Model(inputs, head(), name=f"{config.arch.replace(':', '_').replace('+', '_')}_{config.task}")
