"""Readers for the on-disk layouts: each turns a path into a validated ``DataIndex``.

``load_data(spec)`` detects the layout:

- ``sim:<preset>``: the built-in lenstronomy simulator, generated once and cached;
- DeepLense class folders ``ROOT/<class>/*.npy`` (+ optional ``metadata.csv`` with a ``file`` column);
- packed arrays: ``ROOT/images.npy`` (+ ``labels.npy``), or one ``.npz`` / ``.npy`` file.

Every file is read and checked (in parallel threads) before training starts, and all
problems are reported at once, grouped by kind and naming the files, so a broken set fails
in seconds instead of mid-epoch.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.data.npy import NON_FINITE, PICKLED, BadFile, read_npy, to_hwc
from deeplense_tf.errors import DataError

SHOW_PER_PROBLEM = 20
PICKLE_ADVICE = ("unpickling runs code from the file, so it is off by default: pass --allow-pickle if you trust "
                 "this data, or convert it once to plain arrays (np.save(path, np.asarray(obj[0], 'float32')) "
                 "and keep the label in metadata.csv)")
LABEL_KEYS = ("labels", "label", "y")
IMAGE_KEYS = ("images", "x", "X", "image")


@dataclass
class DataIndex:
    """Images in memory plus one table row per image (``file``, ``class``, numeric label columns)."""

    images: np.ndarray  # float32 (N, H, W, C)
    table: pd.DataFrame
    root: str
    layout: str


def load_data(spec: str, *, samples: int = 600, seed: int = 42, allow_pickle: bool = False,
              workers: int | None = None) -> DataIndex:
    if spec.startswith("sim:"):
        from deeplense_tf.data.simulate import cached_simulation

        root = cached_simulation(spec[4:], samples, seed, workers=workers)
        return read_class_folders(Path(root), allow_pickle=False, workers=workers)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--data {spec}: no such file or folder (or use sim:<preset> for simulated data)")
    if path.is_file() or (path / "images.npy").is_file():
        return read_packed(path)
    return read_class_folders(path, allow_pickle=allow_pickle, workers=workers)


def read_class_folders(root: Path, allow_pickle: bool = False, workers: int | None = None) -> DataIndex:
    """``root/<class>/*.npy``; class = folder name; per-file labels become ``axion_mass_ev`` / ``label``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {f: sorted(f.glob("*.npy")) for f in folders}
    if not any(files.values()):
        raise DataError(f"{root} holds no images: expected class folders of .npy files (ROOT/<class>/*.npy), "
                        "images.npy (+ labels.npy) or an .npz file")
    empty = [f.name for f, found in files.items() if not found]
    if empty:
        raise DataError(f"{root}: class folder(s) without .npy files: {', '.join(empty)}")
    paths = [p for found in files.values() for p in found]
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        results = list(pool.map(lambda p: _try_read(p, allow_pickle), paths))
    good, bad = _check_shapes(root, paths, results)
    if bad:
        raise DataError(_bad_files_message(root, bad, len(paths)))
    table = pd.DataFrame({
        "file": [str(paths[i].relative_to(root)) for i in good],
        "class": [paths[i].parent.name for i in good],
    })
    labels = [results[i].label for i in good]
    if any(label is not None for label in labels):
        column = "axion_mass_ev" if all(l is None or 0 < l < 1e-10 for l in labels) else "label"
        table[column] = [np.nan if l is None else l for l in labels]
    table = _join_metadata(root, table)
    images = np.stack([results[i].image for i in good])
    return DataIndex(images, table, str(root), "class_folders")


def _try_read(path: Path, allow_pickle: bool):
    try:
        return read_npy(path, allow_pickle)
    except BadFile as err:
        return err


def _check_shapes(root: Path, paths: list[Path], results: list) -> tuple[list[int], dict[str, list[str]]]:
    """Files with a shape other than the most common one are bad too."""
    bad: dict[str, list[str]] = defaultdict(list)
    shapes = Counter(r.image.shape for r in results if not isinstance(r, BadFile))
    expected = shapes.most_common(1)[0][0] if shapes else None
    good = []
    for i, (path, result) in enumerate(zip(paths, results)):
        name = str(path.relative_to(root))
        if isinstance(result, BadFile):
            bad[result.kind].append(f"{name} ({result.detail})" if result.detail else name)
        elif result.image.shape != expected:
            bad["wrong shape"].append(f"{name} has shape {result.image.shape[:2]}, expected {expected[:2]}")
        else:
            good.append(i)
    return good, bad


def _bad_files_message(root: Path, bad: dict[str, list[str]], total: int) -> str:
    count = sum(len(v) for v in bad.values())
    lines = [f"{count} of {total} files in {root} cannot be used:"]
    for kind, names in sorted(bad.items(), key=lambda kv: kv[0] != PICKLED):
        advice = f"; {PICKLE_ADVICE}" if kind == PICKLED else ""
        shown = ", ".join(names[:SHOW_PER_PROBLEM])
        more = f" ... and {len(names) - SHOW_PER_PROBLEM} more" if len(names) > SHOW_PER_PROBLEM else ""
        lines.append(f"  {kind} ({len(names)} file{'s' * (len(names) != 1)}{advice}): {shown}{more}")
    return "\n".join(lines)


def _join_metadata(root: Path, table: pd.DataFrame) -> pd.DataFrame:
    """Add the columns of ``root/metadata.csv`` (the simulator writes one) by file name."""
    meta_path = root / "metadata.csv"
    if not meta_path.is_file():
        return table
    meta = pd.read_csv(meta_path)
    if "file" not in meta.columns:
        raise DataError(f"{meta_path} has no 'file' column to match rows to images")
    missing = table.loc[~table["file"].isin(meta["file"]), "file"].tolist()
    if missing:
        raise DataError(f"{meta_path} has no row for {len(missing)} image(s), e.g. {', '.join(missing[:5])}")
    meta = meta.drop(columns=[c for c in meta.columns if c in table.columns and c != "file"])
    return table.merge(meta, on="file", how="left")


def read_packed(path: Path) -> DataIndex:
    """``images.npy`` (+ ``labels.npy``) in a folder, or one ``.npz`` with images and label columns."""
    arrays = _packed_arrays(path)
    image_key = next((k for k in IMAGE_KEYS if k in arrays), None)
    if image_key is None:
        raise DataError(f"{path}: no images array; expected one of {IMAGE_KEYS}. Found: {sorted(arrays)}")
    images = _packed_images(path, arrays.pop(image_key))
    table = pd.DataFrame({"file": [f"{path.name}[{i}]" for i in range(len(images))]})
    for key, values in arrays.items():
        values = np.asarray(values)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            continue
        if len(values) != len(images):
            raise DataError(f"{path}: '{key}' has {len(values)} entries but there are {len(images)} images")
        column = "class" if key in LABEL_KEYS and values.dtype.kind in "iuUSOb" else key
        table[column] = values.astype(str) if column == "class" else values
    return DataIndex(images, table, str(path), "packed")


def _packed_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        if path.is_dir():
            arrays = {"images": np.load(path / "images.npy", mmap_mode="r")}
            if (path / "labels.npy").is_file():
                arrays["labels"] = np.load(path / "labels.npy")
            return arrays
        if path.suffix == ".npz":
            with np.load(path) as npz:
                return {k: npz[k] for k in npz.files}
        if path.suffix == ".npy":
            arrays = {"images": np.load(path, mmap_mode="r")}
            labels = path.with_name("labels.npy")
            if labels.is_file() and labels != path:
                arrays["labels"] = np.load(labels)
            return arrays
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise DataError(f"{path}: {PICKLED}; {PICKLE_ADVICE}") from None
        raise DataError(f"{path}: {err}") from None
    except Exception as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    raise DataError(f"{path}: not a data file; expected a folder, an .npz or an .npy file")


def _packed_images(path: Path, raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3:
        raw = raw[..., None]
    if raw.ndim != 4:
        raise DataError(f"{path}: images of shape {raw.shape}; expected (N,H,W), (N,C,H,W) or (N,H,W,C)")
    try:
        images = np.stack([to_hwc(img) for img in raw]) if raw.shape[-1] not in (1, 3, 4) else np.asarray(raw, np.float32)
    except BadFile as err:
        raise DataError(f"{path}: {err}") from None
    finite = np.isfinite(images).all(axis=(1, 2, 3))
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DataError(f"{path}: {NON_FINITE} in {len(bad)} image(s), indices {bad[:SHOW_PER_PROBLEM].tolist()}")
    return images

