"""Readers for the on-disk layouts: ``load_data(spec)`` detects the layout and returns a validated ``DataIndex``.

| layout | detected by | reader |
|---|---|---|
| ``sim:<preset>[:noise=N][:geometry=G]`` | the prefix | built-in simulator (``noise=published``: the released data's recipe), generated once and cached, then class folders |
| ``sim-stream:<preset>`` | the prefix | not read here: ``prepare.prepare_stream`` and ``stream.py`` |
| project shards | ``pack.json`` (written by ``python -m deeplense_tf.data.pack``) | ``shards.read_shards`` |
| shard parts | sub-folders that each hold a ``pack.json`` (``simulate --format shards --shard K/N``) | joined |
| packed arrays | ``images.npy`` (+ ``labels.npy``), or one ``.npz`` / ``.npy`` file | ``readers_npy.read_packed`` |
| HDF5 catalogue | an ``.h5`` / ``.hdf5`` file, or a folder holding exactly one | ``readers_astro.read_hdf5`` |
| FITS cut-outs | ``Band<k>/`` folders (+ ``classifications.csv``) | ``readers_astro.read_fits_bands`` |
| train/test folders | ``train/`` and ``test/`` (or ``val/``) sub-folders | class folders per split, ``split`` column |
| class folders | ``ROOT/<class>/*.npy`` (+ optional ``metadata.csv``) | ``readers_npy.read_class_folders`` |

Several paths (a list, or one comma-separated string) are read one by one and joined.
Every file is checked before training starts (``validate="full"``: header, shape, finite and
non-zero pixels, duplicates, in parallel threads; ``"quick"``: headers and sizes only, pixels are
then checked in the pipeline) and all problems are reported at once, grouped by kind and naming
the files, so a broken set fails in seconds instead of mid-epoch. ``skip_bad=True`` drops the
bad files instead and lists them in ``DataIndex.skipped``. The checks live in ``index.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from deeplense_tf.data import readers_astro, readers_npy
from deeplense_tf.data.index import DUPLICATE, DataIndex, digest, raise_or_skip
from deeplense_tf.data.npy import LazyImages
from deeplense_tf.data.shards import MANIFEST, ConcatImages, pack_parts, read_shards
from deeplense_tf.errors import DataError
from deeplense_tf.sim.generate import cached_simulation, parse_recipe

VALIDATE = ("full", "quick")
SPLIT_NAMES = {"train": "train", "test": "test", "val": "val", "valid": "val", "validation": "val"}


def load_data(spec: str | Sequence[str], *, samples: int = 600, seed: int = 42, allow_pickle: bool = False,
              workers: int | None = None, validate: str = "full", skip_bad: bool = False,
              label_column: str | None = None, classes: Sequence[str] | None = None,
              stream: bool | None = None) -> DataIndex:
    """Read, check and index ``spec``: a path, ``sim:<preset>``, or several of them (a list or "a,b").

    ``validate``: "full" reads every pixel, "quick" only headers (pixels are checked in the pipeline).
    ``skip_bad``: drop bad files (listed in ``DataIndex.skipped``) instead of stopping.
    ``label_column``: for catalogues (HDF5, FITS CSV, packed arrays), the column holding the labels;
    0/1 values become ``is_lens``, other values ``class``.
    ``classes``: the class folder names expected; any other folder is an error.
    ``stream``: keep images on disk (True), in memory (False) or decide by size (None).
    """
    if validate not in VALIDATE:
        raise DataError(f"validate={validate!r}; expected one of {VALIDATE}")
    options = dict(samples=samples, seed=seed, allow_pickle=allow_pickle, workers=workers, validate=validate,
                   skip_bad=skip_bad, label_column=label_column, classes=classes, stream=stream)
    specs = split_spec(spec)
    if len(specs) == 1:
        return _load_one(specs[0], **options)
    return join_indexes([_load_one(s, **options) for s in specs], skip_bad=skip_bad)


def split_spec(spec: str | Sequence[str]) -> list[str]:
    """A list, or a comma-separated string (unless that string is itself an existing path)."""
    if isinstance(spec, (str, os.PathLike)):
        spec = str(spec)
        specs = [spec] if "," not in spec or Path(spec).expanduser().exists() else spec.split(",")
    else:
        specs = [str(s) for s in spec]
    specs = [s.strip() for s in specs if s.strip()]
    if not specs:
        raise DataError("--data is empty: give a path or sim:<preset>")
    return specs


def _load_one(spec: str, **options) -> DataIndex:
    if spec.startswith("sim-stream:"):  # prepare_data turns it into a stream before it gets here
        raise DataError(f"--data {spec} is an endless training stream (python -m deeplense_tf.train), not a data "
                        f"set to read: a stream run is evaluated on its own test split, or use sim:{spec[11:]}")
    if spec.startswith("sim:"):
        recipe = parse_recipe(spec[4:])  # sim:<preset>[:noise=...][:geometry=...]
        root = cached_simulation(recipe["preset"], options["samples"], options["seed"], workers=options["workers"],
                                 noise=recipe["noise"], geometry=recipe["geometry"])
        return readers_npy.read_class_folders(Path(root), **{**options, "allow_pickle": False})
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--data {spec}: no such file or folder (or use sim:<preset> for simulated data)")
    if path.is_dir() and (path / MANIFEST).is_file():
        return read_shards(path, **options)
    parts = pack_parts(path) if path.is_dir() and not split_folders(path) else []
    if parts:  # simulator --format shards --shard K/N: one packed folder per job
        return join_indexes([read_shards(part, **options) for part in parts], root=path,
                            skip_bad=options["skip_bad"])
    if path.suffix.lower() in readers_astro.HDF5_SUFFIXES or (path.is_dir() and readers_astro.find_hdf5(path)):
        return readers_astro.read_hdf5(path, **options)
    if path.is_file() or (path / "images.npy").is_file():
        return readers_npy.read_packed(path, **options)
    if readers_astro.is_fits_layout(path):
        return readers_astro.read_fits_bands(path, **options)
    splits = split_folders(path)
    if splits:
        return join_indexes([_load_one(str(folder), **options) for folder in splits.values()],
                            root=path, splits=list(splits), skip_bad=options["skip_bad"])
    return readers_npy.read_class_folders(path, **options)


def split_folders(root: Path) -> dict[str, Path]:
    """``train/`` + ``test/`` (or ``val/``) folders, each any readable layout; {} otherwise."""
    found = {SPLIT_NAMES[p.name.lower()]: p for p in sorted(root.iterdir())
             if p.is_dir() and p.name.lower() in SPLIT_NAMES}
    if "train" not in found or len(found) < 2:
        return {}
    return {name: found[name] for name in ("train", "val", "test") if name in found}


def join_indexes(indexes: list[DataIndex], root: Path | None = None, splits: list[str] | None = None,
                 skip_bad: bool = False) -> DataIndex:
    """Concatenate indexes; ``file`` becomes relative to the common parent so rows stay unique.

    With ``splits`` (one name per index) a ``split`` column records where each row came from.
    Images in memory are compared across the parts: the same image in train and test (or in
    two joined folders) is an error, or with ``skip_bad`` its later copies are dropped.
    """
    shapes = Counter(tuple(ix.images.shape[1:]) for ix in indexes)
    if len(shapes) > 1:
        where = "; ".join(f"{ix.root}: {tuple(ix.images.shape[1:])}" for ix in indexes)
        raise DataError(f"the data sets to join have different image shapes ({where}); resize or keep them apart")
    folders = [_folder_of(ix.root) for ix in indexes]
    known = [f for f in folders if f is not None]
    base = Path(root).resolve() if root else Path(os.path.commonpath(known)) if known else None
    tables, skipped = [], []
    for i, ix in enumerate(indexes):
        table = ix.table.copy()
        skipped += ix.skipped
        if folders[i] is not None and base is not None:
            prefix = folders[i].relative_to(base) if folders[i].is_relative_to(base) else folders[i]
            if str(prefix) != ".":
                table["file"] = [str(prefix / f) for f in table["file"]]
                skipped[len(skipped) - len(ix.skipped):] = [(str(prefix / f), why) for f, why in ix.skipped]
        if splits and splits[i] is not None:
            table["split"] = splits[i]
        elif splits and "split" not in table:
            table["split"] = "train"
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    repeated = table["file"][table["file"].duplicated()].tolist()
    if repeated:
        raise DataError(f"the same file is listed more than once ({len(repeated)} file(s), e.g. "
                        f"{', '.join(repeated[:5])}): a folder is given twice in --data?")
    name = str(root) if root else ",".join(ix.root for ix in indexes)
    if any(isinstance(ix.images, LazyImages) for ix in indexes):
        images = ConcatImages([ix.images for ix in indexes])
    else:
        images = np.concatenate([ix.images for ix in indexes])
        names = table["file"].tolist()
        part = np.repeat(np.arange(len(indexes)), [len(ix.table) for ix in indexes])
        seen: dict[bytes, int] = {}
        repeats = []
        for i, image in enumerate(images):  # each part was checked on its own; compare across parts
            first = seen.setdefault(digest(image), i)
            if first != i and part[first] != part[i]:
                repeats.append((i, f"same pixels as {names[first]}"))
        skipped += raise_or_skip(name, names, {DUPLICATE: repeats}, skip_bad)
        if repeats:
            keep = np.setdiff1d(np.arange(len(table)), [i for i, _ in repeats])
            images, table = images[keep], table.iloc[keep].reset_index(drop=True)
    layout = "+".join(sorted({ix.layout for ix in indexes}))
    return DataIndex(images, table, name, layout, skipped)


def _folder_of(root: str) -> Path | None:
    """The folder a part's ``file`` names are relative to (absolute); None for an already joined part."""
    path = Path(root)
    if not path.exists():
        return None
    return (path if path.is_dir() else path.parent).resolve()


def load_splits(train: str | Sequence[str], val: str | Sequence[str] | None = None,
                test: str | Sequence[str] | None = None, **options) -> DataIndex:
    """``--data`` plus explicit ``--val-data`` / ``--test-data``, joined with a ``split`` column.

    Rows of ``train`` keep a split of their own (``train/`` + ``test/`` folders); a split given
    both ways is an error. The same image in two sets is refused (or dropped with ``skip_bad``).
    """
    explicit = {name: spec for name, spec in (("val", val), ("test", test)) if spec is not None}
    parts = [load_data(train, **options)]
    own = set(parts[0].table["split"].astype(str)) if "split" in parts[0].table else set()
    twice = sorted(own & set(explicit))
    if twice:
        raise DataError(f"--data {parts[0].root} already has its own {' and '.join(twice)} folder(s); "
                        f"drop --{twice[0]}-data or give only the training folder as --data")
    parts += [load_data(spec, **options) for spec in explicit.values()]
    return join_indexes(parts, splits=[None, *explicit], skip_bad=options.get("skip_bad", False))
