import numpy as np
import pytest
import tensorflow as tf

from deeplense_tf.models.augment import RandomRot90, augmentation_layers
from deeplense_tf.models.heads import Destandardize
from helpers import assert_config_roundtrip

BATCH = np.arange(6 * 5 * 5, dtype=np.float32).reshape(6, 5, 5, 1)


def _is_dihedral_copy(out, image):
    views = [np.rot90(image, k) for k in range(4)]
    views += [np.flip(v, axis) for v in views for axis in (0, 1)]
    return any(np.array_equal(out, v) for v in views)


@pytest.mark.parametrize("graph", [False, True])
def test_rot90_gives_exact_rotations_eager_and_in_tf_data(graph):
    layer = RandomRot90(seed=1)
    if graph:
        ds = tf.data.Dataset.from_tensors(BATCH).map(lambda x: layer(x, training=True))
        out = next(iter(ds)).numpy()
    else:
        out = np.asarray(layer(BATCH, training=True))
    assert all(_is_dihedral_copy(o, b) for o, b in zip(out, BATCH))
    ks = {next(k for k in range(4) if np.array_equal(o, np.rot90(b, k))) for o, b in zip(out, BATCH)}
    assert len(ks) > 1, "every image got the same rotation"


def test_augmentation_is_identity_at_inference():
    x = BATCH
    for layer in augmentation_layers(seed=0):
        x = layer(x, training=False)
    np.testing.assert_array_equal(np.asarray(x), BATCH)


def test_flip_and_rot90_compose_to_dihedral_copies():
    x = BATCH
    for layer in augmentation_layers(seed=5):
        x = layer(x, training=True)
    assert all(_is_dihedral_copy(o, b) for o, b in zip(np.asarray(x), BATCH))


def test_augmentation_draws_all_eight_symmetries_evenly():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)  # no symmetry of its own: 8 distinct views
    views = [np.rot90(np.fliplr(image) if mirrored else image, k) for mirrored in (False, True) for k in range(4)]
    x = np.repeat(image[None, :, :, None], 4000, axis=0)
    for layer in augmentation_layers(seed=1):
        x = layer(x, training=True)
    counts = np.zeros(8, int)
    for out in np.asarray(x)[..., 0]:
        counts[next(i for i, v in enumerate(views) if np.array_equal(out, v))] += 1
    # 500 expected each; Keras' RandomFlip("horizontal_and_vertical") gave 0 for the 4 mirrored views
    assert counts.min() > 400 and counts.max() < 600, counts


@pytest.mark.parametrize("layer", [RandomRot90(seed=3), Destandardize(mean=-23.0, std=0.5)])
def test_custom_layer_config_roundtrip(layer):
    assert_config_roundtrip(layer)


def test_destandardize():
    out = Destandardize(mean=-23.0, std=0.5)(np.array([[0.0], [2.0]], np.float32))
    np.testing.assert_allclose(np.asarray(out), [[-23.0], [-22.0]])
