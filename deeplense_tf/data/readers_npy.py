"""Readers for ``.npy`` data: DeepLense class folders (one file per image) and packed arrays.

Class folders are validated in full (every pixel, in parallel threads) or, with
``validate="quick"``, from the ``.npy`` headers and file sizes only; a set whose files all
share one header can then stay on disk (``NpyFileImages``) and be streamed by the pipeline
with ``read_file`` + ``decode_raw``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.data.npy import (
    NON_FINITE, PICKLED, ArrayImages, BadFile, NpyFileImages, NpyHeader, read_npy, read_npy_header, to_hwc,
)
from deeplense_tf.data.index import (
    IMAGE_KEYS, LABEL_KEYS, NON_FINITE_LABEL, PICKLE_ADVICE, SHOW_PER_PROBLEM, DataIndex, check_items,
    finite_rows, keep_resident, label_table, raise_or_skip,
)
from deeplense_tf.errors import DataError


def read_class_folders(root: Path, *, allow_pickle: bool = False, workers: int | None = None,
                       validate: str = "full", skip_bad: bool = False, classes=None, stream: bool | None = None,
                       label_column: str | None = None, **_) -> DataIndex:
    """``root/<class>/*.npy``; class = folder name; per-file labels become ``axion_mass_ev`` / ``label``.

    ``label_column``: a ``metadata.csv`` column that replaces the folder as the label (e.g. ``is_lens``).
    """
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {f: sorted(f.glob("*.npy")) for f in folders}
    if not any(files.values()):
        raise DataError(f"{root} holds no images: expected class folders of .npy files (ROOT/<class>/*.npy), "
                        "images.npy (+ labels.npy), an .npz, an HDF5 catalogue, Band<k>/ FITS folders, "
                        "or shards written by python -m deeplense_tf.data.pack")
    empty = [f.name for f, found in files.items() if not found]
    if empty:
        raise DataError(f"{root}: class folder(s) without .npy files: {', '.join(empty)}")
    if classes is not None:
        unknown = sorted(set(f.name for f in folders) - set(classes))
        if unknown:
            raise DataError(f"{root}: unknown class folder(s) {', '.join(unknown)}; expected only "
                            f"{', '.join(sorted(classes))}")
    paths = [p for found in files.values() for p in found]
    names = [str(p.relative_to(root)) for p in paths]
    if validate == "quick":
        index = _quick_class_folders(root, paths, names, allow_pickle, workers, skip_bad, stream)
        if index is not None:
            index.table = label_table(index.table, label_column, str(root))
            return index
    resident = keep_resident(len(paths) * _float32_bytes(paths[0]), stream)
    checked = check_items(root, names, lambda i: _read(paths[i], allow_pickle), workers=workers,
                          skip_bad=skip_bad, keep_images=resident)
    if not checked.keep:
        raise DataError(f"{root}: no usable image left after skipping {len(checked.skipped)} bad file(s)")
    table = _folder_table(root, [paths[i] for i in checked.keep], checked.labels)
    if resident:
        images = np.stack(checked.images)
    else:
        images = _file_images([paths[i] for i in checked.keep], workers, pixels_checked=True)
        if images is None:
            raise DataError(f"{root}: the files do not share one .npy header (dtype or layout differ), so they "
                            "cannot be streamed; pack them first: python -m deeplense_tf.data.pack")
    return DataIndex(images, label_table(table, label_column, str(root)), str(root), "class_folders",
                     checked.skipped)


def _float32_bytes(path: Path) -> int:
    """Bytes one image takes in memory as float32 (estimated from the first file)."""
    try:
        return 4 * math.prod(read_npy_header(path).image_shape)
    except BadFile:
        return 2 * path.stat().st_size  # pickled or odd: a generous guess


def _read(path: Path, allow_pickle: bool):
    result = read_npy(path, allow_pickle)
    return result.image, result.label


def _folder_table(root: Path, paths: list[Path], labels: list[float | None]) -> pd.DataFrame:
    table = pd.DataFrame({"file": [str(p.relative_to(root)) for p in paths], "class": [p.parent.name for p in paths]})
    if any(label is not None for label in labels):
        column = "axion_mass_ev" if all(l is None or 0 < l < 1e-10 for l in labels) else "label"
        table[column] = [np.nan if l is None else l for l in labels]
    return _join_metadata(root, table)


def _quick_class_folders(root, paths, names, allow_pickle, workers, skip_bad, stream) -> DataIndex | None:
    """Headers and sizes only; None when a full read is needed (pickled files, differing headers)."""
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
        headers = list(pool.map(_try_header, paths))
    if allow_pickle and any(isinstance(h, BadFile) and h.kind == PICKLED for h in headers):
        return None
    good = [h for h in headers if not isinstance(h, BadFile)]
    if len({(h.dtype, h.layout, h.offset) for h in good}) > 1:
        return None
    bad: dict[str, list[tuple[int, str]]] = {}
    shapes = pd.Series([h.image_shape for h in good]).value_counts() if good else None
    expected = shapes.index[0] if shapes is not None else None
    labels: list[float | None] = [None] * len(paths)
    for i, h in enumerate(headers):
        if isinstance(h, BadFile):
            bad.setdefault(h.kind, []).append((i, h.detail))
        elif h.image_shape != expected:
            bad.setdefault("wrong shape", []).append((i, f"has shape {h.image_shape}, expected {expected}"))
        elif h.has_label:
            labels[i] = _trailing_label(paths[i], h)
            if not np.isfinite(labels[i]):
                bad.setdefault(NON_FINITE_LABEL, []).append((i, f"label {labels[i]}"))
    skipped = raise_or_skip(root, names, bad, skip_bad)
    dropped = {i for items in bad.values() for i, _ in items}
    keep = [i for i in range(len(paths)) if i not in dropped]
    if not keep:
        raise DataError(f"{root}: no usable image left after skipping {len(skipped)} bad file(s)")
    table = _folder_table(root, [paths[i] for i in keep], [labels[i] for i in keep])
    images = NpyFileImages([paths[i] for i in keep], headers[keep[0]], pixels_checked=False)
    if keep_resident(images.nbytes, stream) and stream is not None:
        images = _resident(images, root)
    return DataIndex(images, table, str(root), "class_folders", skipped)


def _try_header(path: Path) -> NpyHeader | BadFile:
    try:
        return read_npy_header(path)
    except BadFile as err:
        return err


def _trailing_label(path: Path, header: NpyHeader) -> float:
    size = np.dtype(header.dtype).itemsize
    with open(path, "rb") as fh:
        fh.seek(header.nbytes - size)
        return float(np.frombuffer(fh.read(size), header.dtype)[0])


def _resident(images: NpyFileImages, root: Path) -> np.ndarray:
    """Read a quickly-validated set into memory, checking its pixels on the way."""
    array = np.asarray(images)
    bad = np.flatnonzero(~np.isfinite(array).all(axis=(1, 2, 3)))
    if len(bad):
        shown = ", ".join(str(Path(p).relative_to(root)) for p in images.view_paths[bad[:SHOW_PER_PROBLEM]])
        raise DataError(f"{root}: {NON_FINITE} in {len(bad)} file(s): {shown}")
    return array


def _file_images(paths: list[Path], workers, pixels_checked: bool) -> NpyFileImages | None:
    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
        headers = list(pool.map(_try_header, paths))
    if any(isinstance(h, BadFile) for h in headers) or len(set(headers)) != 1:
        return None
    return NpyFileImages(paths, headers[0], pixels_checked=pixels_checked)


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
        raise DataError(f"{meta_path} has no row for {len(missing)} image(s): {_first(missing)}")
    _check_metadata_rows(root, meta_path, meta, table)
    meta = meta.drop(columns=[c for c in meta.columns if c in table.columns and c != "file"])
    return table.merge(meta, on="file", how="left")


def _first(names: list[str]) -> str:
    """The first ``SHOW_PER_PROBLEM`` names and the total, for error messages."""
    more = f" ... ({len(names)} in all)" if len(names) > SHOW_PER_PROBLEM else ""
    return ", ".join(map(str, names[:SHOW_PER_PROBLEM])) + more


def _check_metadata_rows(root: Path, meta_path: Path, meta: pd.DataFrame, table: pd.DataFrame) -> None:
    """As many label rows as images: no file listed twice, none missing from disk, no infinite value.

    Rows of files that exist but were skipped (``skip_bad``) are fine; NaN means "no label" (e.g. the
    axion mass of a cdm image), but +-Inf is a broken label.
    """
    repeated = sorted(set(meta.loc[meta["file"].duplicated(), "file"].astype(str)))
    if repeated:
        raise DataError(f"{meta_path} lists {len(repeated)} file(s) more than once: {_first(repeated)}")
    extra = [f for f in meta.loc[~meta["file"].isin(table["file"]), "file"].astype(str) if not (root / f).is_file()]
    if extra:
        raise DataError(f"{meta_path} has {len(meta)} rows but {len(table)} images: {len(extra)} row(s) name "
                        f"files that do not exist: {_first(extra)}. Restore the files or remove their rows")
    rows = meta[meta["file"].isin(table["file"])]
    for column in rows.columns:
        if pd.api.types.is_numeric_dtype(rows[column]):
            infinite = rows.loc[np.isinf(rows[column].to_numpy(np.float64)), "file"].astype(str).tolist()
            if infinite:
                raise DataError(f"{meta_path}: column '{column}' is infinite for {len(infinite)} image(s): "
                                f"{_first(infinite)}; labels must be finite (leave a cell empty for no label)")


# ---------------------------------------------------------------------------------------------
# Packed arrays

def read_packed(path: Path, *, validate: str = "full", skip_bad: bool = False, label_column: str | None = None,
                stream: bool | None = None, **_) -> DataIndex:
    """``images.npy`` (+ ``labels.npy``) in a folder, or one ``.npz`` with images and label columns.

    ``images.npy`` is memory-mapped: a set larger than memory stays on disk (``ArrayImages``).
    """
    path = Path(path)
    arrays = _packed_arrays(path)
    image_key = next((k for k in IMAGE_KEYS if k in arrays), None)
    if image_key is None:
        raise DataError(f"{path}: no images array; expected one of {IMAGE_KEYS}. Found: {sorted(arrays)}")
    raw = arrays.pop(image_key)
    if raw.ndim == 3:
        raw = raw[..., None]
    if raw.ndim != 4:
        raise DataError(f"{path}: images of shape {raw.shape}; expected (N,H,W), (N,C,H,W) or (N,H,W,C)")
    try:
        lazy = ArrayImages(raw)
    except BadFile as err:
        raise DataError(f"{path}: {err}") from None
    table = pd.DataFrame({"file": [f"{path.name}[{i}]" for i in range(len(lazy))]})
    for key, values in arrays.items():
        values = np.asarray(values)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            continue
        if len(values) != len(lazy):
            raise DataError(f"{path}: '{key}' has {len(values)} entries but there are {len(lazy)} images")
        column = "class" if key in LABEL_KEYS and values.dtype.kind in "iuUSOb" else key
        table[column] = values.astype(str) if column == "class" else values
        if values.dtype.kind == "f" and np.isinf(values).any():  # NaN = no value (e.g. the mass of a no_sub image)
            bad = np.flatnonzero(np.isinf(values))
            raise DataError(f"{path}: '{key}' is infinite for {len(bad)} image(s), indices "
                            f"{bad[:SHOW_PER_PROBLEM].tolist()}")
    table = label_table(table, label_column, str(path))
    images = np.asarray(lazy) if keep_resident(lazy.nbytes, stream) else lazy
    skipped = []
    if validate == "full":
        bad = finite_rows(images)
        if len(bad) and not skip_bad:
            raise DataError(f"{path}: {NON_FINITE} in {len(bad)} image(s), indices {bad[:SHOW_PER_PROBLEM].tolist()}"
                            " (or pass --skip-bad to train without them)")
        if len(bad):
            skipped = raise_or_skip(path, table["file"].tolist(), {NON_FINITE: [(int(i), "") for i in bad]}, True)
            keep = np.setdiff1d(np.arange(len(table)), bad)
            images, table = images[keep], table.iloc[keep].reset_index(drop=True)
    return DataIndex(images, table, str(path), "packed", skipped)


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
