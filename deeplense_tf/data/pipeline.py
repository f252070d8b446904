"""``create_dataset``: in-memory arrays -> a batched, prefetched ``tf.data.Dataset``.

Images stay raw (as stored on disk): normalisation, resizing and augmentation are layers of
the model, so they run on the accelerator and travel with the export. The pipeline only
caches, shuffles (seeded, a new order each epoch), batches and prefetches.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def create_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, training: bool,
                   seed: int = 0) -> tf.data.Dataset:
    """Batches of ``(float32 images (B,H,W,C), labels (B,))``; training shuffles, others keep order."""
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32, copy=False), labels))
    ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(images), 10_000), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
