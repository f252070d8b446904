"""create_dataset over every kind of images: arrays, memory-mapped shards, per-file .npy (read_file + decode_raw)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_images, write_class_folders
from deeplense_tf.data.npy import NpyFileImages, read_npy, read_npy_header
from deeplense_tf.data.pipeline import _take, create_dataset, decode_npy, epoch_order
from deeplense_tf.models.augment import augmenter
from deeplense_tf.models.autoencoders import create_autoencoder
from deeplense_tf.data.sources import load_data


def drain(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def sources(image_sources):
    return image_sources


KINDS = ["array", "files", "files_tf", "shards"]


def dataset(sources, kind, labels, batch_size, training, **kwargs):
    reader = "tf" if kind == "files_tf" else "blocks"
    return create_dataset(sources[kind.replace("_tf", "")], labels, batch_size, training, file_reader=reader, **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_evaluation_order_and_values(sources, kind):
    labels = np.arange(12, dtype=np.int32)
    x, y = drain(dataset(sources, kind, labels, 5, training=False))
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x, sources["array"])


@pytest.mark.parametrize("kind", KINDS)
def test_training_shuffles_each_epoch_and_keeps_pairs(sources, kind):
    labels = np.arange(12, dtype=np.int32)
    ds = dataset(sources, kind, labels, 4, training=True, seed=3)
    (x1, y1), (x2, y2) = drain(ds), drain(ds)
    assert sorted(y1) == list(range(12)) and not np.array_equal(y1, y2)
    assert [len(x) for x, _ in ds] == [4, 4, 4]  # blocks of any length are re-cut into full batches
    np.testing.assert_array_equal(x1, sources["array"][y1])  # each image still carries its own label
    again = drain(dataset(sources, kind, labels, 4, training=True, seed=3))[1]
    np.testing.assert_array_equal(y1, again)  # seeded


def test_cache_gives_the_same_images(sources):
    labels = np.arange(12, dtype=np.int32)
    ds = create_dataset(sources["files"], labels, 4, training=True, cache=True)
    for _ in range(2):
        x, y = drain(ds)
        np.testing.assert_array_equal(x, sources["array"][y])


@pytest.mark.parametrize("reader", ["blocks", "tf"])
def test_pipeline_names_nan_file_when_only_headers_were_checked(tmp_path, reader):
    root = write_class_folders(tmp_path / "d", per_class=2, size=16)
    bad = np.ones((16, 16), np.float32)
    bad[2, 2] = np.nan
    np.save(root / "cdm" / "nan_pixels.npy", bad)
    index = load_data(str(root), validate="quick")
    with pytest.raises(tf.errors.InvalidArgumentError, match="nan_pixels.npy"):
        drain(create_dataset(index.images, np.zeros(7, np.int32), 7, training=False, file_reader=reader))


@pytest.mark.parametrize("stored", [
    np.arange(256, dtype=np.float32).reshape(16, 16) + 1,
    (np.arange(768, dtype=np.float64).reshape(3, 16, 16) + 1),
    np.arange(768, dtype=np.uint16).reshape(16, 16, 3) + 1,
    np.append(np.arange(256, dtype=np.float32) + 1, 7.0),
], ids=["hw_f4", "chw_f8", "hwc_u2", "flat_label"])
def test_decode_npy_eager_and_in_dataset_map(tmp_path, stored):
    np.save(tmp_path / "a.npy", stored)
    header, expected = read_npy_header(tmp_path / "a.npy"), read_npy(tmp_path / "a.npy").image
    np.testing.assert_array_equal(NpyFileImages([tmp_path / "a.npy"], header).read(np.array([0]))[0], expected)
    raw = tf.io.read_file(str(tmp_path / "a.npy"))[None]
    np.testing.assert_array_equal(decode_npy(raw, header)[0].numpy(), expected)
    ds = tf.data.Dataset.from_tensors(str(tmp_path / "a.npy")).map(lambda p: decode_npy(tf.io.read_file(p)[None], header))
    np.testing.assert_array_equal(next(iter(ds))[0].numpy(), expected)


def test_epoch_order_is_shard_local_and_complete():
    shards = np.repeat(np.arange(6), 10)
    blocks = epoch_order(60, seed=1, shards=shards, window=2, block=4)
    order = np.concatenate(blocks)
    assert sorted(order) == list(range(60))
    assert all(len(set(shards[b])) == 1 for b in blocks)  # every block is read from one shard
    assert len(set(shards[order[:20]])) == 2  # the first 20 rows come from one window of 2 shards
    assert not np.array_equal(order, np.concatenate(epoch_order(60, seed=2, shards=shards, window=2, block=4)))


def test_augmentation_in_the_pipeline_keeps_shapes_and_pixels():
    x = tf.constant(tiny_images(4, 16)[..., None])
    eager, _ = augmenter(seed=0)(x, None)
    mapped = next(iter(tf.data.Dataset.from_tensors((x, tf.zeros(4))).map(augmenter(seed=0))))[0]
    for out in (eager, mapped):
        assert out.shape == x.shape
        np.testing.assert_allclose(np.sort(out.numpy(), axis=None), np.sort(x.numpy(), axis=None))


@pytest.mark.parametrize("label_shape", [(), (1,), (3,)])
def test_old_signature_and_label_shapes(label_shape):
    images = tiny_images(10, 16)[..., None]
    labels = np.repeat(np.arange(10, dtype=np.float32).reshape(10, *([1] * len(label_shape))), max(label_shape, default=1), -1) \
        if label_shape else np.arange(10, dtype=np.float32)
    ds = create_dataset(images, labels, 4, True, 0)
    assert ds.element_spec[1].shape.as_list() == [None, *label_shape]
    x, y = drain(ds)
    assert x.shape == (10, 16, 16, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x, images[y.reshape(10, -1)[:, 0].astype(int)])


@pytest.mark.parametrize("balance", [False, True])
def test_resumed_pipeline_repeats_the_epochs_it_continues(balance):
    images = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    labels = (np.arange(40) % 2).astype(np.int32)
    full = create_dataset(images, labels, 8, training=True, seed=5, balance=balance)
    epochs = [drain(full)[0].ravel() for _ in range(3)]
    assert not np.array_equal(epochs[0], epochs[1])
    resumed = create_dataset(images, labels, 8, training=True, seed=5, balance=balance, first_epoch=2)
    np.testing.assert_array_equal(drain(resumed)[0].ravel(), epochs[2])


def _aligned_images(n: int, seed: int = 0) -> np.ndarray:
    """(n, 64, 64, 1) float32 whose every row starts on a 64-byte boundary: TensorFlow takes such
    arrays from ``tf.numpy_function`` without copying them."""
    buffer = np.empty(n * 64 * 64 + 16, np.float32)
    start = (-buffer.ctypes.data % 64) // 4
    images = buffer[start:start + n * 64 * 64].reshape(n, 64, 64, 1)
    images[...] = np.random.default_rng(seed).gamma(2.0, 1.0, images.shape) + 5
    return images


def test_batches_never_share_memory_with_the_source_array():
    """The batches are the pipeline's own copies: a kernel that reuses its input buffer (TensorFlow
    forwards buffers it holds the only reference to) must not write into the caller's images."""
    images = _aligned_images(64)
    for rows in (np.arange(8, 40), np.array([3, 1, 2])):  # in order (one slice) and gathered
        block = _take(images, rows)
        assert not np.shares_memory(block, images)
        block[...] = 0
    assert images.min() > 0


def test_evaluating_again_and_again_leaves_the_validation_images_as_they_were():
    """Seen in fit (BENCHMARKS.md, "In-fit validation that drifted"): the autoencoder's loss wrote
    its residuals into the validation images, so each later pass scored other images."""
    images = _aligned_images(448)
    before = images.copy()
    model = create_autoencoder("conv_autoencoder", (64, 64, 1), seed=0)
    model.compile(optimizer="adam")
    val = create_dataset(images, np.zeros(len(images), np.int64), 32, training=False)
    losses = [model.evaluate(val, verbose=0, return_dict=True)["loss"] for _ in range(8)]
    np.testing.assert_array_equal(images, before)
    assert max(losses) - min(losses) < 1e-6 * max(losses)
