"""Shared fixtures: tiny data sets on disk and a session-wide simulator cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

CLASSES = ("axion", "cdm", "no_sub")


def tiny_images(n: int = 4, size: int = 32, channels: int | None = None, seed: int = 0) -> np.ndarray:
    """Positive float32 images with a ring, (n, size, size) or (n, size, size, channels)."""
    rng = np.random.default_rng(seed)
    y, x = np.indices((size, size)) - (size - 1) / 2
    ring = np.exp(-((np.hypot(x, y) - size / 5) ** 2) / 4)
    images = ring[None] + 0.1 * rng.random((n, size, size))
    images = images.astype(np.float32)
    return images if channels is None else np.repeat(images[..., None], channels, axis=-1)


def write_class_folders(root: Path, per_class: int = 4, size: int = 32, pickled_axion: bool = False) -> Path:
    """ROOT/<class>/*.npy like the DeepLense sets; axion files as [image, mass] when pickled."""
    rng = np.random.default_rng(1)
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(tiny_images(per_class, size, seed=c)):
            if cls == "axion" and pickled_axion:
                obj = np.empty(2, dtype=object)
                obj[0], obj[1] = image, 10 ** rng.uniform(-24, -22)
                np.save(root / cls / f"{cls}_{i}.npy", obj, allow_pickle=True)
            else:
                np.save(root / cls / f"{cls}_{i}.npy", image)
    return root


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory) -> Path:
    """One simulator cache for the whole session, so each tiny preset is generated once."""
    path = tmp_path_factory.mktemp("sim_cache")
    old = os.environ.get("DEEPLENSE_TF_CACHE")
    os.environ["DEEPLENSE_TF_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DEEPLENSE_TF_CACHE", None)
    else:
        os.environ["DEEPLENSE_TF_CACHE"] = old


@pytest.fixture(scope="module")
def image_sources(tmp_path_factory):
    """The same 12 images (16 px) as a resident array, as per-file .npy and as shards (both streamed)."""
    from deeplense_tf.data.pack import write_shards
    from deeplense_tf.data.sources import load_data

    tmp = tmp_path_factory.mktemp("sources")
    root = write_class_folders(tmp / "files", per_class=4, size=16)
    resident = load_data(str(root))
    write_shards(resident, tmp / "shards", shard_size=5, seed=None)
    return {"array": resident.images, "files": load_data(str(root), validate="quick").images,
            "shards": load_data(str(tmp / "shards"), stream=True).images}
