"""Models: the architecture registry, backbones, heads, preprocessing and augmentation layers.

Importing this package registers every architecture (each module below calls ``register_arch``
for what it builds; ``registry.py`` imports none of them) and every custom Keras layer, so
``keras.models.load_model`` can read a run's ``.keras`` files afterwards. A module that fails
to import is an error here, never a silently missing architecture.
"""

from deeplense_tf.models import (  # noqa: F401  (imported for their registrations)
    applications,
    augment,
    autoencoders,
    convnets,
    deeplens_resnet,
    fusion,
    heads,
    preprocess,
    transformers,
)
