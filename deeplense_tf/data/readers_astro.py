"""Readers for astronomy catalogues: HDF5 tables (h5py) and FITS cut-outs per band (astropy).

HDF5: either one compound (table) dataset with an image column and scalar columns, the way
astropy writes a ``Table`` (the CMU DeepLens ``catalogs.hdf5`` with ``image`` and ``is_lens``),
or an images dataset ``(N, H, W[, C])`` / ``(N, C, H, W)`` beside 1-D datasets of length N.

FITS, the Bologna lens-finding challenge layout::

    ROOT/Band1/imageEUC_VIS-200001.fits     one file per band per object, the ID after the last '-'
    ROOT/Band2/...                          (ground-based sets have 4 bands: R, I, G, U)
    ROOT/classifications.csv                ID, is_lens, ... (optional: unlabelled sets have none)

Bands are stacked as channels in ``Band<k>`` order. Masked pixels (value ``MASK_VALUE`` = 100,
as the challenge marks them) become 0 and are counted in the ``masked_pixels`` column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from deeplense_tf.data.npy import ALL_ZERO, NON_FINITE, ArrayImages, BadFile
from deeplense_tf.data.index import (
    IMAGE_KEYS, SHOW_PER_PROBLEM, DataIndex, check_items, finite_rows, keep_resident, label_table, raise_or_skip,
)
from deeplense_tf.errors import DataError

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
MASK_VALUE = 100.0
BAND_DIR = re.compile(r"^band[_-]?(\d+)$", re.IGNORECASE)
FITS_ID = re.compile(r"-([^-]+)\.fits?(\.gz)?$", re.IGNORECASE)
CATALOG_NAMES = ("classifications.csv", "image_catalog.csv", "catalog.csv", "labels.csv")


# ---------------------------------------------------------------------------------------------
# HDF5

def find_hdf5(folder: Path) -> Path | None:
    found = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in HDF5_SUFFIXES and p.is_file()]
    return found[0] if len(found) == 1 else None


def read_hdf5(path: Path, *, label_column: str | None = None, validate: str = "full", skip_bad: bool = False,
              stream: bool | None = None, **_) -> DataIndex:
    """Images and label columns of an HDF5 catalogue; ``label_column`` names the labels (e.g. ``is_lens``)."""
    import h5py

    path = Path(path)
    path = find_hdf5(path) if path.is_dir() else path
    try:
        handle = h5py.File(path, "r")
    except Exception as err:
        raise DataError(f"{path}: not a readable HDF5 file ({type(err).__name__}: {err})") from None
    raw, columns = _hdf5_contents(path, handle)
    try:
        lazy = ArrayImages(raw)
    except BadFile as err:
        raise DataError(f"{path}: images {err}") from None
    lazy.handle = handle  # keeps the file open while the images are read lazily
    n = len(lazy)
    table = pd.DataFrame({"file": [f"{path.name}[{i}]" for i in range(n)]})
    for name, values in columns.items():
        if len(values) != n:
            raise DataError(f"{path}: column '{name}' has {len(values)} entries but there are {n} images")
        table[name] = [v.decode() for v in values] if values.dtype.kind == "S" else values
    table = label_table(table, label_column, str(path))
    images = np.asarray(lazy) if keep_resident(lazy.nbytes, stream) else lazy
    skipped = []
    if validate == "full":
        bad = finite_rows(images)
        if len(bad):
            skipped = raise_or_skip(path, table["file"].tolist(), {NON_FINITE: [(int(i), "") for i in bad]}, skip_bad)
            keep = np.setdiff1d(np.arange(n), bad)
            images, table = images[keep], table.iloc[keep].reset_index(drop=True)
    return DataIndex(images, table, str(path), "hdf5", skipped)


def _hdf5_contents(path: Path, handle) -> tuple[object, dict[str, np.ndarray]]:
    """(images array-like, {column: 1-D values}) from a table dataset or from sibling datasets."""
    import h5py

    datasets: list = []
    handle.visititems(lambda name, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
    for dset in datasets:  # an astropy-style table: one compound dataset
        fields = dset.dtype.fields or {}
        image_field = next((f for f in IMAGE_KEYS if f in fields), None) or next(
            (f for f, (dt, *_) in fields.items() if len(dt.shape) >= 2), None)
        if image_field is not None and dset.ndim == 1:
            table = dset[()]
            columns = {f: table[f] for f in fields if f != image_field and table[f].ndim == 1}
            return table[image_field], columns
    arrays = [d for d in datasets if d.ndim >= 3]
    if not arrays:
        names = [d.name for d in datasets]
        raise DataError(f"{path}: no images found: expected a table with an image column, or a dataset of shape "
                        f"(N,H,W[,C]). Datasets: {names[:20]}")
    images = next((d for d in arrays if d.name.split("/")[-1] in IMAGE_KEYS), arrays[0])
    n = images.shape[0]
    columns = {}
    for d in datasets:
        if d is images or d.parent != images.parent or d.ndim not in (1, 2):
            continue
        if d.ndim == 2 and d.shape[1] != 1:
            continue
        values = d[()].reshape(-1)
        if len(values) == n or d.ndim == 1:
            columns[d.name.split("/")[-1]] = values
    return images, columns


# ---------------------------------------------------------------------------------------------
# FITS cut-outs, one file per band

def band_folders(root: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := BAND_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def is_fits_layout(root: Path) -> bool:
    return any(any(f.name.lower().endswith((".fits", ".fit", ".fits.gz")) for f in band.iterdir())
               for band in band_folders(root))


def read_fits_bands(root: Path, *, workers: int | None = None, skip_bad: bool = False,
                    label_column: str | None = None, **_) -> DataIndex:
    """``ROOT/Band<k>/*-<ID>.fits`` + ``classifications.csv``: one (H, W, bands) image per object ID."""
    root = Path(root)
    bands = band_folders(root)
    per_band = [_fits_by_id(band) for band in bands]
    ids = sorted(set().union(*per_band), key=_id_key)
    names = [str(per_band[0].get(i, next(b[i] for b in per_band if i in b)).relative_to(root)) for i in ids]
    incomplete = {k: [b.name for b, files in zip(bands, per_band) if i not in files] for k, i in enumerate(ids)}
    bad = {"missing band": [(k, f"object {ids[k]} has no file in {', '.join(m)}")
                            for k, m in incomplete.items() if m]}
    catalog = _catalog(root)
    if catalog is not None:
        no_files = sorted(set(catalog["ID"]) - set(ids), key=_id_key)
        if no_files and not skip_bad:
            shown = ", ".join(no_files[:SHOW_PER_PROBLEM])
            raise DataError(f"{root}: {len(no_files)} ID(s) in {catalog.attrs['path'].name} have no FITS files: "
                            f"{shown}{' ...' if len(no_files) > SHOW_PER_PROBLEM else ''}")
        unlabelled = set(ids) - set(catalog["ID"])
        bad["no catalogue row"] = [(k, f"object {i} is not in {catalog.attrs['path'].name}")
                                   for k, i in enumerate(ids) if i in unlabelled]
    skipped = raise_or_skip(root, names, bad, skip_bad)
    if catalog is not None and skip_bad:
        skipped += [(f"ID {i}", "in the catalogue but has no FITS files")
                    for i in sorted(set(catalog["ID"]) - set(ids), key=_id_key)]
    dropped = {k for items in bad.values() for k, _ in items}
    ids = [i for k, i in enumerate(ids) if k not in dropped]
    names = [n for k, n in enumerate(names) if k not in dropped]
    masked: dict[int, int] = {}

    def read(k):
        image, masked[k] = read_fits_stack([per_band[b][ids[k]] for b in range(len(bands))])
        return image, None

    checked = check_items(root, names, read, workers=workers, skip_bad=skip_bad)
    table = pd.DataFrame({"file": [names[k] for k in checked.keep], "ID": [ids[k] for k in checked.keep],
                          "masked_pixels": [masked[k] for k in checked.keep]})
    if catalog is not None:
        table = table.merge(catalog.drop(columns=[c for c in ("file",) if c in catalog]), on="ID", how="left")
    table = label_table(table, label_column, str(root))
    # FITS files are small and slow to parse: they are read once into memory (pack them to stream).
    return DataIndex(np.stack(checked.images), table, str(root), "fits", skipped + checked.skipped)


def read_fits_stack(paths: list[Path]) -> tuple[np.ndarray, int]:
    """Bands -> float32 (H, W, bands) with masked pixels set to 0, and how many pixels were masked."""
    from astropy.io import fits

    planes = []
    for path in paths:
        try:
            data = fits.getdata(path, memmap=False)
        except Exception as err:
            raise BadFile("unreadable or truncated", f"{Path(path).name}: {type(err).__name__}: {err}") from None
        data = np.asarray(data, np.float32)
        data = data.reshape(data.shape[-2:]) if data.ndim > 2 and data.shape[0] == 1 else data
        if data.ndim != 2:
            raise BadFile("unsupported shape", f"{Path(path).name} holds shape {data.shape}, expected (H, W)")
        planes.append(data)
    if len({p.shape for p in planes}) > 1:
        raise BadFile("wrong shape", f"bands differ in shape: {[p.shape for p in planes]}")
    image = np.stack(planes, axis=-1)
    if not np.isfinite(image).all():
        raise BadFile(NON_FINITE, f"{int(image.size - np.isfinite(image).sum())} non-finite pixels")
    mask = image == MASK_VALUE
    image[mask] = 0.0
    if not image.any():
        raise BadFile(ALL_ZERO)
    return image, int(mask.sum())


def _fits_by_id(band: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(band.iterdir()):
        match = FITS_ID.search(path.name)
        if match:
            found[match.group(1)] = path
    return found


def _id_key(value: str):
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _catalog(root: Path) -> pd.DataFrame | None:
    path = next((root / n for n in CATALOG_NAMES if (root / n).is_file()), None)
    if path is None:
        return None
    catalog = pd.read_csv(path, skipinitialspace=True)
    catalog.columns = [str(c).strip() for c in catalog.columns]
    id_column = next((c for c in catalog.columns if c.lower() == "id"), None)
    if id_column is None:
        raise DataError(f"{path} has no ID column; columns: {list(catalog.columns)}")
    catalog = catalog.rename(columns={id_column: "ID"})
    catalog["ID"] = catalog["ID"].astype(str).str.strip()
    repeated = catalog["ID"][catalog["ID"].duplicated()].tolist()
    if repeated:
        raise DataError(f"{path}: ID(s) listed more than once: {', '.join(repeated[:SHOW_PER_PROBLEM])}")
    catalog.attrs["path"] = path
    return catalog
