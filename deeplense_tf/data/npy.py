"""One tolerant reader for a DeepLense ``.npy`` file, whatever variant the community saved.

Accepted: ``(H,W)``, ``(1,H,W)``/``(C,H,W)``, ``(H,W,C)``, a flat square ``(H*W,)``, a flat
square with the label appended ``(H*W+1,)``, and the pickled ``[image, axion_mass]`` object
arrays of the released axion sets (only when the caller allows unpickling: it runs code
from the file). Images come back as float32 ``(H, W, C)``; integer data is converted
without loss (never through int16, which destroys Model II/III values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHANNEL_COUNTS = (1, 3, 4)


class BadFile(Exception):
    """The file cannot be used; ``kind`` groups files with the same problem in error reports."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


PICKLED = "pickled object array"
UNREADABLE = "unreadable or truncated"
BAD_SHAPE = "unsupported shape"
NON_FINITE = "NaN/Inf pixels"
ALL_ZERO = "all-zero image"


@dataclass(frozen=True)
class NpyImage:
    image: np.ndarray  # float32 (H, W, C)
    label: float | None  # the per-file label when the file carries one (axion mass in eV, appended value)


def read_npy(path: str | Path, allow_pickle: bool = False) -> NpyImage:
    """Read and check one file; raises ``BadFile`` with the problem, never a bare numpy error."""
    try:
        raw = np.load(path, allow_pickle=allow_pickle)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise BadFile(PICKLED) from None
        raise BadFile(UNREADABLE, str(err)) from None
    except Exception as err:  # EOFError, UnpicklingError, OSError: all mean the file is broken
        raise BadFile(UNREADABLE, f"{type(err).__name__}: {err}") from None
    image, label = _split_label(raw)
    image = to_hwc(image)
    if not np.all(np.isfinite(image)):
        raise BadFile(NON_FINITE, f"{int(np.size(image) - np.isfinite(image).sum())} non-finite pixels")
    if not np.any(image):
        raise BadFile(ALL_ZERO)
    return NpyImage(image, label)


def _split_label(raw: np.ndarray) -> tuple[np.ndarray, float | None]:
    if raw.dtype == object:
        if raw.shape != (2,):
            raise BadFile(BAD_SHAPE, f"object array of shape {raw.shape}, expected [image, label]")
        return np.asarray(raw[0]), float(raw[1])
    if raw.ndim == 1:
        side = math.isqrt(raw.size)
        if side * side == raw.size:
            return raw.reshape(side, side), None
        side = math.isqrt(raw.size - 1)
        if side * side == raw.size - 1:
            return raw[:-1].reshape(side, side), float(raw[-1])
        raise BadFile(BAD_SHAPE, f"flat array of {raw.size} values is neither H*W nor H*W+1 for a square image")
    return raw, None


def to_hwc(image: np.ndarray) -> np.ndarray:
    """``(H,W)``, ``(C,H,W)`` or ``(H,W,C)`` -> float32 ``(H,W,C)``."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    elif image.ndim == 3 and image.shape[0] in CHANNEL_COUNTS and image.shape[-1] not in CHANNEL_COUNTS:
        image = np.moveaxis(image, 0, -1)
    elif not (image.ndim == 3 and image.shape[-1] in CHANNEL_COUNTS):
        raise BadFile(BAD_SHAPE, f"shape {image.shape}; expected (H,W), (C,H,W) or (H,W,C) with C in {CHANNEL_COUNTS}")
    if image.dtype.kind not in "fiub":
        raise BadFile(BAD_SHAPE, f"dtype {image.dtype} is not numeric")
    return np.ascontiguousarray(image, dtype=np.float32)
