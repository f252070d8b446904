"""The project's shard format: fixed-size ``.npy`` shards plus the table beside them.

    shard-00000.npy ...   float32 (shard_size, H, W, C), C-contiguous, rows in a seeded random order
    metadata.csv          one row per image, in shard order (file, class, labels, split, ...)
    pack.json             written last: count, shard size, image shape, shard names

Why ``.npy`` shards and not TFRecord: a shard is one memory map, so any row is a slice away
(no parsing, random access for shuffling, sets larger than memory stream from the page cache),
and the pipeline reads a whole block of rows with one numpy call. On the 2-core machine the
measured rates are in BENCHMARKS.md ("Input pipeline"). Rows are shuffled once when packing,
so every shard is a random sample of the set (balanced classes when streaming shard by shard).
Written by ``python -m deeplense_tf.data.pack`` and ``simulate --format shards``.
"""


from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.data.npy import ArrayImages, LazyImages
from deeplense_tf.data.index import DataIndex, finite_rows, keep_resident, label_table, raise_or_skip
from deeplense_tf.errors import DataError

MANIFEST = "pack.json"
FORMAT = "deeplense_tf.shards"
TARGET_SHARD_BYTES = 64 << 20  # 64 MiB: few files, yet a shard-local shuffle window still mixes well


class ShardedImages(LazyImages):
    """The rows of a packed set, read from memory-mapped shards (never all loaded at once)."""

    def __init__(self, root: Path, manifest: dict, rows: np.ndarray | None = None):
        super().__init__(manifest["count"], tuple(manifest["image_shape"]), rows)
        self.root = Path(root)
        self.shard_size = int(manifest["shard_size"])
        self.shard_paths = [str(self.root / name) for name in manifest["shards"]]
        self._maps: dict[int, np.ndarray] = {}

    def shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            self._maps[k] = np.load(self.shard_paths[k], mmap_mode="r")
        return self._maps[k]

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows, np.int64) // self.shard_size

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows in the asked order; a block inside one shard (the pipeline's case) is one numpy copy."""
        shards = rows // self.shard_size
        if len(rows) and shards[0] == shards.min() == shards.max():
            k = int(shards[0])
            return np.asarray(self.shard(k)[rows - k * self.shard_size], np.float32)
        out = np.empty((len(rows), *self.image_shape), np.float32)
        for k in np.unique(shards):
            mask = shards == k
            out[mask] = self.shard(int(k))[rows[mask] - k * self.shard_size]
        return out


class ConcatImages(LazyImages):
    """Several arrays / lazy image sets joined end to end (``--data a,b``)."""

    def __init__(self, parts: list, rows: np.ndarray | None = None):
        parts = [p if isinstance(p, LazyImages) else ArrayImages(p) for p in parts]
        super().__init__(sum(len(p) for p in parts), parts[0].image_shape, rows)
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.image_shape), np.float32)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(part):
            mask = part == k
            out[mask] = self.parts[k].read(rows[mask] - self.starts[k])
        return out


PART_NAME = re.compile(r"^part-(\d+)-of-(\d+)$")


def part_name(k: int, n: int) -> str:
    """The folder of part ``k`` of ``n`` (``simulate --format shards --shard K/N`` writes one per job)."""
    return f"part-{k:04d}-of-{n:04d}"


def pack_parts(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that each hold packed shards, to be read as one set; [] if ``root`` is not that.

    Folders named ``part-K-of-N`` must all be there and complete: a missing or unfinished part
    is an error naming it, not a silently smaller set.
    """
    folders = [p for p in sorted(Path(root).iterdir()) if p.is_dir() and not p.name.startswith(".")]
    packed = [p for p in folders if (p / MANIFEST).is_file()]
    if not packed:
        return []
    numbered = [(m, p) for p in folders if (m := PART_NAME.match(p.name))]
    totals = {int(m.group(2)) for m, _ in numbered}
    if numbered and len(totals) == 1:
        total = totals.pop()
        done = {int(m.group(1)) for m, p in numbered if (p / MANIFEST).is_file()}
        missing = [k for k in range(total) if k not in done]
        if missing:
            shown = ", ".join(f"{k}/{total}" for k in missing[:20])
            raise DataError(f"{root}: {len(missing)} of {total} parts are missing or unfinished (--shard {shown}"
                            f"{' ...' if len(missing) > 20 else ''}); run those simulator jobs again")
    unpacked = [p.name for p in folders if p not in packed]
    if unpacked:
        raise DataError(f"{root} mixes packed folders with others ({', '.join(unpacked[:20])}); "
                        "give the packed folders as --data one by one")
    return packed


def default_shard_size(image_shape: tuple[int, ...]) -> int:
    return max(256, TARGET_SHARD_BYTES // (4 * math.prod(image_shape)))


def write_shards(index: DataIndex, dst: Path, *, shard_size: int | None = None, seed: int | None = 0,
                 overwrite: bool = False, extra: dict | None = None) -> dict:
    """Write ``index`` as shards under ``dst``; ``seed=None`` keeps the row order. Returns the manifest.

    ``extra``: more manifest keys (the simulator records its recipe there).
    """
    dst = Path(dst)
    if (dst / MANIFEST).exists() and not overwrite:
        raise DataError(f"{dst} already holds packed shards; choose another folder or pass --overwrite")
    dst.mkdir(parents=True, exist_ok=True)
    for old in [dst / MANIFEST, *dst.glob("shard-*.npy")]:
        old.unlink(missing_ok=True)
    images, n = index.images, len(index.table)
    image_shape = tuple(int(d) for d in images.shape[1:])
    shard_size = shard_size or default_shard_size(image_shape)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    names = []
    for k, start in enumerate(range(0, n, shard_size)):
        rows = order[start:start + shard_size]
        block = images.read(rows) if isinstance(images, LazyImages) else images[rows]
        name = f"shard-{k:05d}.npy"
        with open(dst / f"{name}.tmp", "wb") as fh:
            np.save(fh, np.ascontiguousarray(block, dtype=np.float32))
        os.replace(dst / f"{name}.tmp", dst / name)
        names.append(name)
    index.table.iloc[order].to_csv(dst / "metadata.csv", index=False)
    manifest = {"format": FORMAT, "version": 1, "count": int(n), "shard_size": int(shard_size),
                "image_shape": list(image_shape), "dtype": "float32", "shards": names,
                "source": index.root, "layout": index.layout, "shuffle_seed": seed, **(extra or {})}
    tmp = dst / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, dst / MANIFEST)  # last: a folder with pack.json is complete
    return manifest


def read_shards(root: Path, *, validate: str = "full", skip_bad: bool = False, label_column: str | None = None,
                stream: bool | None = None, **_) -> DataIndex:
    """A folder written by ``write_shards``: memory-mapped, in memory only when it fits (``stream``)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{root / MANIFEST}: unreadable ({err}); pack the data again") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{root / MANIFEST} is not a {FORMAT} manifest")
    _check_shard_files(root, manifest)
    table = pd.read_csv(root / "metadata.csv", dtype={"file": str, "class": str, "split": str})
    if len(table) != manifest["count"]:
        raise DataError(f"{root}/metadata.csv has {len(table)} rows but the shards hold {manifest['count']} images")
    table = label_table(table, label_column, str(root))
    images: np.ndarray | LazyImages = ShardedImages(root, manifest)
    if keep_resident(images.nbytes, stream):
        images = np.asarray(images)
    skipped = []
    if validate == "full":
        bad = finite_rows(images)
        if len(bad):
            names = table["file"].astype(str).tolist()
            skipped = raise_or_skip(root, names, {"NaN/Inf pixels": [(int(i), "") for i in bad]}, skip_bad)
            keep = np.setdiff1d(np.arange(len(table)), bad)
            images, table = images[keep], table.iloc[keep].reset_index(drop=True)
    return DataIndex(images, table, str(root), "shards", skipped)


def _check_shard_files(root: Path, manifest: dict) -> None:
    """Every shard present with the size its rows need (a truncated copy fails here, not mid-epoch)."""
    count, size, shape = manifest["count"], manifest["shard_size"], manifest["image_shape"]
    problems = []
    for k, name in enumerate(manifest["shards"]):
        rows = min(size, count - k * size)
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        try:
            stored = np.load(path, mmap_mode="r")
        except Exception as err:
            problems.append(f"{name} is unreadable ({type(err).__name__})")
            continue
        if stored.shape != (rows, *shape) or stored.dtype != np.float32:
            problems.append(f"{name} holds {stored.dtype} {stored.shape}, expected float32 {(rows, *shape)}")
    if problems:
        raise DataError(f"{root}: {len(problems)} shard(s) cannot be used: {'; '.join(problems[:20])}; "
                        "pack the data again")
