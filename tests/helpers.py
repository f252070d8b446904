"""Helpers shared by the test modules: tiny images and data sets, and the assertions every layer passes."""

from pathlib import Path

import keras
import numpy as np

CLASSES = ("axion", "cdm", "no_sub")
# A tiny run on the cached simulated Model II set (conftest's sim_cache): 12 images per class, batch 4.
TINY_SIM_FLAGS = ("--arch", "mobilenet_v3_small", "--samples", "12", "--batch-size", "4", "--workers", "2")


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


def random_images(n: int = 2, size: int = 32, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Standard-normal float32 images (n, size, size, channels): every pixel differs between images."""
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")


def tiny_batch(size: int = 32, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two random images and their class indices (0 and 2 of three classes)."""
    return random_images(2, size, channels), np.array([0, 2], np.int32)


def assert_config_roundtrip(layer: keras.layers.Layer) -> None:
    """get_config -> from_config -> get_config gives the same dict (keras-hub's discipline)."""
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config


def train_tiny_sim_run(out: Path, *flags: str) -> Path:
    """Train one tiny run (TINY_SIM_FLAGS, then ``flags``) into the empty folder ``out``; its run directory."""
    from deeplense_tf import train

    assert train.main([*TINY_SIM_FLAGS, "--out", str(out), *flags]) == 0
    (run,) = [p for p in Path(out).iterdir() if p.is_dir()]
    return run
