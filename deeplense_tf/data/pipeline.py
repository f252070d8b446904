"""``create_dataset``: images (in memory or on disk) -> a shuffled, batched, prefetched ``tf.data.Dataset``.

Images stay raw (as stored on disk): normalisation, resizing and augmentation are layers of
the model, so they run on the accelerator and travel with the export (``augment=`` a map
function, ``models.augment.augmenter``, moves the augmentation into the pipeline, for comparison). Two readers, chosen by what ``images`` is:

- arrays, memory maps and project shards (``np.ndarray``, ``LazyImages``): the epoch's order
  is drawn in numpy (seeded, new each epoch; shard by shard for sets on disk), cut into blocks
  of rows, and each block is gathered with one numpy call and split into batches by
  ``rebatch``: per-image work in Python is zero, per-block it is one call;
- one ``.npy`` per image (``NpyFileImages``, all sharing one header): the same blocks, each file
  read with one ``pread`` past the shared header; or (``file_reader="tf"``, and for ``cache``)
  ``read_file`` on a chunk of paths and one ``decode_raw`` for the whole chunk, parallel and
  ``AUTOTUNE``d.

Measured on the 2-core machine in BENCHMARKS.md ("Input pipeline"): ``python -m pipelines.benchmark``.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import tensorflow as tf

from deeplense_tf.data.npy import LazyImages, NpyFileImages, NpyHeader
from deeplense_tf.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
BLOCK_BYTES = 2 << 20  # rows per numpy call: 2 MiB (128 rows at 64 px) was fastest of 0.5-32 MiB (BENCHMARKS.md)
FILE_CHUNK = 64  # files read per map call (one decode_raw for all of them); 64 was fastest of 32-256
SHARD_WINDOW = 4  # shards mixed together when a set on disk is shuffled shard by shard
BAD_PIXELS = "NaN/Inf or all-zero pixels in"


def create_dataset(images, labels: np.ndarray, batch_size: int, training: bool, seed: int = 0, *,
                   deterministic: bool = True, cache: bool | str = False, augment: Callable | None = None,
                   block: int | None = None, check_pixels: bool | None = None,
                   file_reader: str = "blocks", balance: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
    """Batches of ``(float32 images (B,H,W,C), labels (B,))``; training shuffles (seeded), others keep order.

    ``images``: ``np.ndarray`` (N,H,W,C), a memory map, or a ``LazyImages`` view (shards, per-file
    ``.npy``) from ``load_data``. ``deterministic=False`` lets parallel reads finish out of order
    (faster when files arrive unevenly). ``cache``: keep decoded per-file images in memory (True)
    or in a file (a path) after the first epoch. ``augment``: an ``(images, labels) -> (images,
    labels)`` map applied to each batch in the pipeline (``models.augment.augmenter``: the flips /
    rotations moved out of the model, for comparison), or None. ``check_pixels``: stop with the file's name on NaN/Inf
    or all-zero pixels (default: when the set was only validated quickly). ``file_reader`` for
    per-file ``.npy``: "blocks" (``pread`` past the shared header, a block of files per call; the
    fastest measured) or "tf" (``read_file`` + ``decode_raw``; always used with ``cache``).
    ``balance``: training draws every class equally often (``balanced_order``), for imbalanced
    sets such as lens finding; ignored when ``training`` is False, so validation and test keep
    the real class mix and their metrics stay honest. ``first_epoch``: the 0-based epoch the first
    iteration is; epoch ``e``'s order depends on ``(seed, e)`` only, so a run resumed at epoch ``e``
    sees the same batches as an uninterrupted one (the ``read_file`` reader and ``cache`` use
    ``tf.data`` shuffling instead and only keep the seed).
    """
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if file_reader not in ("blocks", "tf"):
        raise ValueError(f"file_reader={file_reader!r}; expected 'blocks' or 'tf'")
    files = isinstance(images, NpyFileImages)
    check = bool(files and not images.pixels_checked) if check_pixels is None else check_pixels
    classes = class_ids(labels) if balance and training else None
    if files and (cache or file_reader == "tf"):
        ds = file_dataset(images, labels, batch_size, training, seed, deterministic=deterministic, cache=cache,
                          check_pixels=check, classes=classes)
    else:
        ds = block_dataset(images, labels, batch_size, training, seed, deterministic=deterministic, block=block,
                           check_pixels=check, classes=classes, first_epoch=first_epoch)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # Known length: Keras shows "step k/N" and does not warn that the input "ran out of data".
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-len(labels) // batch_size)))
    options = tf.data.Options()
    options.deterministic = deterministic
    options.threading.max_intra_op_parallelism = 1  # leave the cores' thread pool to the model's ops
    return ds.with_options(options).prefetch(AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Arrays, memory maps, shards: blocks of rows gathered by numpy

def block_dataset(images, labels: np.ndarray, batch_size: int, training: bool, seed: int = 0, *,
                  deterministic: bool = True, block: int | None = None, check_pixels: bool = False,
                  classes: np.ndarray | None = None, first_epoch: int = 0) -> tf.data.Dataset:
    """Rows in an order drawn per epoch, read ``block`` rows per numpy call, re-cut into batches.

    ``classes`` (one id per row): training draws a class-balanced order (``balanced_order``)
    instead of a permutation; its blocks mix shards, since a balanced batch needs rows of every class.
    """
    n = len(images)
    image_shape = tuple(int(d) for d in images.shape[1:])
    block = block or _block_rows(image_shape, batch_size)
    shards = _shard_ids(images)
    label_dtype = tf.as_dtype(labels.dtype)

    def order(epoch_seed):
        if training and classes is not None:
            rows = balanced_order(classes, int(epoch_seed))
            blocks = [rows[i:i + block] for i in range(0, n, block)]
        elif training:
            blocks = epoch_order(n, int(epoch_seed), shards, block=block)
        else:
            blocks = [np.arange(i, min(i + block, n), dtype=np.int64) for i in range(0, n, block)]
        return np.concatenate(blocks), np.array([len(b) for b in blocks], np.int64)

    def gather(rows):
        x = images.read(rows) if isinstance(images, LazyImages) else _take(images, rows)
        if check_pixels:
            _raise_on_bad_pixels(x, rows, images)
        return x, labels[rows]

    epochs = itertools.count(first_epoch)  # one draw per iteration of the dataset = per epoch

    def next_order():
        return order(epoch_seed(seed, next(epochs)))

    def blocks(_):
        rows, lengths = tf.numpy_function(next_order, [], (tf.int64, tf.int64), stateful=True)
        rows.set_shape((None,))
        lengths.set_shape((None,))
        return tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(rows, lengths))

    ds = tf.data.Dataset.range(1).flat_map(blocks)
    ds = ds.map(lambda rows: _with_shapes(tf.numpy_function(gather, [rows], (tf.float32, label_dtype)),
                                          image_shape, labels.shape[1:]),
                num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.rebatch(batch_size)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's order: a function of the run's seed and the epoch index only."""
    return int(np.random.SeedSequence([int(seed) & 0x7FFFFFFF, int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


def epoch_order(n: int, seed: int, shards: np.ndarray | None = None, window: int = SHARD_WINDOW,
                block: int | None = None) -> list[np.ndarray]:
    """One epoch's rows as blocks: a permutation cut into ``block``-row blocks; for sets on disk,
    shard-local blocks (each from one shard, shards taken ``window`` at a time in random order).

    A block from one shard is one fancy-index of one memory map (a single copy), and a set larger
    than memory is read a few shards at a time. Rows were shuffled across shards when packing, so
    a batch drawn from one shard is still a random sample of the set.
    """
    rng = np.random.default_rng(seed & 0x7FFFFFFFFFFFFFFF)
    block = block or n
    if shards is None:
        order = rng.permutation(n).astype(np.int64)
        return [order[i:i + block] for i in range(0, n, block)]
    ids = np.unique(shards)
    rng.shuffle(ids)
    blocks: list[np.ndarray] = []
    for start in range(0, len(ids), window):
        pieces = []
        for k in ids[start:start + window]:
            rows = rng.permutation(np.flatnonzero(shards == k)).astype(np.int64)
            pieces += [rows[i:i + block] for i in range(0, len(rows), block)]
        blocks += [pieces[i] for i in rng.permutation(len(pieces))]
    return blocks


def class_ids(labels: np.ndarray) -> np.ndarray:
    """One integer class id per row from class indices (N,) or one-unit targets (N, 1) such as
    ``is_lens``; regression targets and multi-column labels cannot be balanced."""
    values = np.asarray(labels)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.dtype.kind not in "iubf" or not np.all(values == np.round(values)):
        raise ValueError(f"balance=True needs one class index per image (integers, or 0/1 for lens finding). "
                         f"Received: labels of dtype {values.dtype} and shape {np.shape(labels)}"
                         f"{' with non-integer values' if values.dtype.kind == 'f' else ''}; "
                         "balancing applies to classification and lens finding only")
    return np.unique(values, return_inverse=True)[1].astype(np.int64)


def balanced_order(classes: np.ndarray, seed: int) -> np.ndarray:
    """One epoch of ``len(classes)`` row indices in which every class is equally frequent.

    The slots are cycles of the K classes in random order, so any K consecutive rows hold
    each class once and a batch of B rows holds each class B/K times (+-1). Each class fills
    its slots from successive permutations of its rows: a minority class is repeated (every
    row once before any row twice), a majority class is subsampled afresh each epoch.
    """
    rng = np.random.default_rng(seed & 0x7FFFFFFFFFFFFFFF)
    n = len(classes)
    k = int(classes.max()) + 1 if n else 0
    slots = np.concatenate([rng.permutation(k) for _ in range(-(-n // max(k, 1)))])[:n] if n else classes
    order = np.empty(n, np.int64)
    for c in range(k):
        pool = np.flatnonzero(classes == c)
        need = np.flatnonzero(slots == c)
        cycles = -(-len(need) // len(pool))
        order[need] = np.concatenate([rng.permutation(pool) for _ in range(cycles)])[:len(need)]
    return order


def _shard_ids(images) -> np.ndarray | None:
    """Shard of each row for sets that live on disk in shards, else None (a global shuffle)."""
    if isinstance(images, LazyImages) and hasattr(images, "shard_of"):
        return images.shard_of(images.rows)
    return None


def _take(images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The rows as a new float32 array, never a view of ``images``.

    Why a copy: TensorFlow takes an aligned array from ``tf.numpy_function`` without copying it, and
    a kernel holding the only reference to a buffer may write its output into it. A view would let
    the model overwrite the caller's images: measured, the autoencoder's loss wrote its squared
    residuals into the validation images, so every later validation pass scored other images
    (BENCHMARKS.md, "In-fit validation that drifted").
    """
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return np.array(images[rows[0]:rows[-1] + 1], np.float32, copy=True)  # in order: one slice, copied
    return np.asarray(images.take(rows, axis=0) if type(images) is np.ndarray else images[rows], np.float32)


def _block_rows(image_shape: tuple[int, ...], batch_size: int) -> int:
    rows = max(1, BLOCK_BYTES // (4 * int(np.prod(image_shape))))
    return max(1, rows // batch_size) * batch_size


def _with_shapes(pair, image_shape, label_shape):
    x, y = pair
    x.set_shape((None, *image_shape))
    y.set_shape((None, *label_shape))
    return x, y


def _raise_on_bad_pixels(x: np.ndarray, rows: np.ndarray, images) -> None:
    ok = np.isfinite(x).all(axis=(1, 2, 3)) & x.any(axis=(1, 2, 3))
    if not ok.all():
        bad = rows[~ok][:20]
        names = images.view_paths[bad].tolist() if isinstance(images, NpyFileImages) else f"rows {bad.tolist()}"
        raise DataError(f"{BAD_PIXELS} {names}")


# ---------------------------------------------------------------------------------------------
# One .npy per image: read_file + decode_raw

def file_dataset(images: NpyFileImages, labels: np.ndarray, batch_size: int, training: bool, seed: int = 0, *,
                 deterministic: bool = True, cache: bool | str = False, check_pixels: bool = False,
                 chunk: int = FILE_CHUNK, classes: np.ndarray | None = None) -> tf.data.Dataset:
    """Paths shuffled per epoch (or decoded once and cached, then shuffled in memory), read in chunks;
    with ``classes`` (training), paths in a class-balanced order drawn per epoch."""
    paths = images.view_paths
    header = images.header
    n = len(paths)
    if training and classes is not None:
        if cache:
            raise ValueError("balance=True cannot be combined with cache (a balanced epoch repeats and skips "
                             "images, so it is not one pass over the files): use cache=False")
        ds = _epoch_rows(lambda epoch_seed: balanced_order(classes, int(epoch_seed)), seed)
        ds = ds.map(lambda i: (tf.gather(paths, i), tf.gather(labels, i)))
    else:
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if training and not cache and classes is None:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(chunk)
    ds = ds.map(lambda p, y: (read_npy_files(p, header, check_pixels), y), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic if not cache else True)
    if not cache:
        return ds.rebatch(batch_size)
    ds = ds.cache("" if cache is True else str(cache))
    if not training:
        return ds.rebatch(batch_size)
    buffer = min(n, max(1024, (256 << 20) // (4 * int(np.prod(header.image_shape)))))
    return ds.unbatch().shuffle(buffer, seed=seed, reshuffle_each_iteration=True).batch(batch_size)


def _epoch_rows(order, seed: int) -> tf.data.Dataset:
    """Row indices ``order(epoch_seed)``, with a new seed each epoch, reproducible from ``seed``."""
    def rows(epoch_seed):
        values = tf.numpy_function(order, [epoch_seed], tf.int64, stateful=False)
        values.set_shape((None,))
        return tf.data.Dataset.from_tensor_slices(values)

    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).flat_map(rows)


def read_npy_files(paths: tf.Tensor, header: NpyHeader, check_pixels: bool = False) -> tf.Tensor:
    """A vector of ``.npy`` paths sharing ``header`` -> float32 (n, H, W, C), one ``decode_raw`` for all."""
    raw = tf.map_fn(tf.io.read_file, paths, fn_output_signature=tf.string, parallel_iterations=2)
    x = decode_npy(raw, header)
    if check_pixels:
        ok = tf.reduce_all(tf.math.is_finite(x), axis=[1, 2, 3]) & tf.reduce_any(x != 0, axis=[1, 2, 3])
        check = tf.debugging.Assert(tf.reduce_all(ok), [BAD_PIXELS, tf.boolean_mask(paths, ~ok)], summarize=20)
        with tf.control_dependencies([check]):
            x = tf.identity(x)
    return x


def decode_npy(raw: tf.Tensor, header: NpyHeader) -> tf.Tensor:
    """Whole-file bytes (n,) -> float32 (n, H, W, C): skip the header, reshape, move channels last."""
    dtype = np.dtype(header.dtype)
    itemsize = dtype.itemsize
    count = int(np.prod(header.shape))
    if header.offset % itemsize:
        raw = tf.strings.substr(raw, header.offset, count * itemsize)
        start = 0
    else:
        start = header.offset // itemsize
    values = tf.io.decode_raw(raw, tf.as_dtype(dtype.newbyteorder("=")), little_endian=dtype.byteorder != ">")
    h, w, c = header.image_shape
    if header.layout in ("flat", "flat+label"):
        x = tf.reshape(values[:, start:start + h * w], (-1, h, w, 1))
    elif header.layout == "chw":
        x = tf.transpose(tf.reshape(values[:, start:start + count], (-1, c, h, w)), (0, 2, 3, 1))
    else:
        x = tf.reshape(values[:, start:start + count], (-1, h, w, c))
    return tf.cast(x, tf.float32)
