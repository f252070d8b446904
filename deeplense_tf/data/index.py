"""What every reader returns and the checks every reader shares.

``DataIndex``: images (in memory or a lazy view on disk) plus one table row per image.
``check_items``: read many items in threads, collect every problem, then raise one ``DataError``
naming the files (or, with ``skip_bad``, drop them and list them). The readers (``readers_npy``,
``readers_astro``, ``shards``) import this module; ``sources`` dispatches to the readers.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from deeplense_tf.data.npy import PICKLED, BadFile, LazyImages
from deeplense_tf.errors import DataError

log = logging.getLogger("deeplense_tf.data")

SHOW_PER_PROBLEM = 20
PICKLE_ADVICE = ("unpickling runs code from the file, so it is off by default: pass --allow-pickle if you trust "
                 "this data, or convert it once to plain arrays (np.save(path, np.asarray(obj[0], 'float32')) "
                 "and keep the label in metadata.csv)")
LABEL_KEYS = ("labels", "label", "y")
IMAGE_KEYS = ("images", "x", "X", "image")
DUPLICATE = "duplicated image"
NON_FINITE_LABEL = "non-finite label"
# Sets larger than this share of physical memory stay on disk (streamed) unless ``stream`` says otherwise.
RESIDENT_SHARE = 0.25


@dataclass
class DataIndex:
    """Images plus one table row per image (``file``, ``class``, numeric label columns, maybe ``split``).

    ``images`` is a float32 ``(N, H, W, C)`` array in memory, or a ``LazyImages`` view that reads
    from disk (memory-mapped shards, per-file ``.npy``) for sets larger than memory; both index
    alike (``images[rows]``) and ``pipeline.create_dataset`` accepts both. ``skipped`` lists
    ``(file, problem)`` for every file dropped by ``skip_bad``.
    """

    images: np.ndarray | LazyImages
    table: pd.DataFrame
    root: str
    layout: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def describe(self) -> str:
        """Counts per class, per split and the image shape: what a scan reports before training."""
        n, shape = len(self.table), tuple(self.images.shape[1:])
        parts = [f"{n} images of shape {shape} ({self.layout}, {'on disk' if self.streamed else 'in memory'})"]
        for column in ("split", "class"):
            if column in self.table:
                counts = self.table[column].astype(str).value_counts().sort_index()
                parts.append(f"{column}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if self.skipped:
            parts.append(f"skipped {len(self.skipped)} bad file(s)")
        return "; ".join(parts)

    @property
    def streamed(self) -> bool:
        return isinstance(self.images, LazyImages)



@dataclass
class Checked:
    """What survived the checks: positions into the item list, their images (or None) and labels."""

    keep: list[int]
    images: list[np.ndarray | None]
    labels: list[float | None]
    skipped: list[tuple[str, str]]
    shape: tuple[int, ...] | None


def check_items(root: Path | str, names: list[str], read: Callable[[int], tuple[np.ndarray, float | None]], *,
                workers: int | None = None, skip_bad: bool = False, duplicates: bool = True,
                keep_images: bool = True) -> Checked:
    """Run ``read(i)`` for every item in threads; collect every problem; raise one ``DataError`` or skip.

    ``read`` returns ``(float32 HWC image, label or None)`` or raises ``BadFile``. Images whose
    shape differs from the most common one, non-finite labels and (with ``duplicates``) images
    identical to an earlier one are bad too. ``keep_images=False`` checks every pixel but keeps
    none in memory (for sets that will be streamed).
    """
    def one(i):
        try:
            image, label = read(i)
        except BadFile as err:
            return err
        return image.shape, digest(image) if duplicates else None, label, image if keep_images else None

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(pool.map(one, range(len(names))))
    bad: dict[str, list[tuple[int, str]]] = defaultdict(list)
    shapes = Counter(r[0] for r in results if not isinstance(r, BadFile))
    expected = shapes.most_common(1)[0][0] if shapes else None
    seen: dict[bytes, int] = {}
    for i, result in enumerate(results):
        if isinstance(result, BadFile):
            bad[result.kind].append((i, result.detail))
        elif result[0] != expected:
            bad["wrong shape"].append((i, f"has shape {result[0]}, expected {expected}"))
        elif result[2] is not None and not np.isfinite(result[2]):
            bad[NON_FINITE_LABEL].append((i, f"label {result[2]}"))
        elif duplicates and result[1] in seen:
            bad[DUPLICATE].append((i, f"same pixels as {names[seen[result[1]]]}"))
        elif duplicates:
            seen[result[1]] = i
    skipped = raise_or_skip(root, names, bad, skip_bad, shapes)
    dropped = {i for items in bad.values() for i, _ in items}
    keep = [i for i in range(len(names)) if i not in dropped]
    return Checked(keep, [results[i][3] for i in keep], [results[i][2] for i in keep], skipped, expected)


def digest(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def raise_or_skip(root: Path | str, names: list[str], bad: dict[str, list[tuple[int, str]]], skip_bad: bool,
                  shapes: Counter | None = None) -> list[tuple[str, str]]:
    """One ``DataError`` naming the bad items, or (``skip_bad``) their list, each logged.

    Pickled files are never skipped silently: they need ``--allow-pickle``, not dropping.
    """
    if not any(bad.values()):
        return []
    if not skip_bad or bad.get(PICKLED):
        raise DataError(bad_files_message(root, names, bad, shapes))
    skipped = []
    for kind, items in bad.items():
        for i, detail in items:
            problem = f"{kind} ({detail})" if detail else kind
            log.warning("skipping %s: %s", names[i], problem)
            skipped.append((names[i], problem))
    return skipped


def bad_files_message(root: Path | str, names: list[str], bad: dict[str, list[tuple[int, str]]],
                      shapes: Counter | None = None) -> str:
    """Counts per problem and the first ``SHOW_PER_PROBLEM`` files of each, plus what to do."""
    count = len({i for items in bad.values() for i, _ in items})
    lines = [f"{count} of {len(names)} files in {root} cannot be used:"]
    for kind, items in sorted(bad.items(), key=lambda kv: kv[0] != PICKLED):
        advice = f"; {PICKLE_ADVICE}" if kind == PICKLED else ""
        shown = ", ".join(f"{names[i]} ({d})" if d else names[i] for i, d in items[:SHOW_PER_PROBLEM])
        more = f" ... and {len(items) - SHOW_PER_PROBLEM} more" if len(items) > SHOW_PER_PROBLEM else ""
        lines.append(f"  {kind} ({len(items)} file{'s' * (len(items) != 1)}{advice}): {shown}{more}")
    if shapes and len(shapes) > 1:
        lines.append("  shapes found: " + ", ".join(f"{s} x {n}" for s, n in shapes.most_common()))
    if PICKLED not in bad:
        lines.append("  fix or remove these files, or pass --skip-bad to train without them")
    return "\n".join(lines)


def label_table(table: pd.DataFrame, label_column: str | None, where: str) -> pd.DataFrame:
    """Check ``label_column`` and expose it as ``is_lens`` (0/1 values) or ``class`` (anything else)."""
    if label_column is None:
        return table
    if label_column not in table.columns:
        raise DataError(f"{where}: no label column '{label_column}'. Columns: {sorted(map(str, table.columns))}")
    values = table[label_column]
    numeric = pd.to_numeric(values, errors="coerce")
    if values.dtype.kind in "fiub" and not np.isfinite(numeric).all():
        bad = np.flatnonzero(~np.isfinite(numeric.to_numpy(np.float64)))
        raise DataError(f"{where}: '{label_column}' is not finite in {len(bad)} row(s), e.g. rows "
                        f"{bad[:SHOW_PER_PROBLEM].tolist()}")
    table = table.copy()
    if values.dtype.kind in "fiub" and set(np.unique(numeric)) <= {0, 1}:
        table["is_lens"] = numeric.astype(np.int32)
    else:
        table["class"] = values.astype(str)
    return table


def keep_resident(nbytes: int, stream: bool | None) -> bool:
    """In memory unless asked to stream, or (``stream=None``) larger than ``RESIDENT_SHARE`` of RAM."""
    if stream is not None:
        return not stream
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return nbytes <= RESIDENT_SHARE * total


def finite_rows(images: np.ndarray | LazyImages, chunk: int = 4096) -> np.ndarray:
    """Indices of images holding NaN/Inf, read chunk by chunk (works on memory maps larger than RAM)."""
    bad = []
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk])
        bad.extend((start + np.flatnonzero(~np.isfinite(block).all(axis=(1, 2, 3)))).tolist())
    return np.asarray(bad, np.int64)
