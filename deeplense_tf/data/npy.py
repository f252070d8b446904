"""One tolerant reader for a DeepLense ``.npy`` file, whatever variant the community saved.

Accepted: ``(H,W)``, ``(1,H,W)``/``(C,H,W)``, ``(H,W,C)``, a flat square ``(H*W,)``, a flat
square with the label appended ``(H*W+1,)``, and the pickled ``[image, axion_mass]`` object
arrays of the released axion sets (only when the caller allows unpickling: it runs code
from the file). Images come back as float32 ``(H, W, C)``; integer data is converted
without loss (never through int16, which destroys Model II/III values).
"""

from __future__ import annotations

import math
import os
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
        with open(path, "rb") as fh:
            data = fh.read()
        header = header_from_bytes(data, len(data))
    except (BadFile, OSError):  # pickled, Fortran order, odd sizes: numpy's own reader decides and explains
        header = None
    if header is not None:  # plain array: one read, header parsed once per set (the common case, and fast)
        return _checked(decode_raw_image(data, header),
                        float(np.frombuffer(data, header.dtype, offset=header.nbytes - np.dtype(header.dtype).itemsize)[0])
                        if header.has_label else None)
    try:
        raw = np.load(path, allow_pickle=allow_pickle)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise BadFile(PICKLED) from None
        raise BadFile(UNREADABLE, str(err)) from None
    except Exception as err:  # EOFError, UnpicklingError, OSError: all mean the file is broken
        raise BadFile(UNREADABLE, f"{type(err).__name__}: {err}") from None
    image, label = _split_label(raw)
    return _checked(to_hwc(image), label)


def _checked(image: np.ndarray, label: float | None) -> NpyImage:
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
    if array_layout(image.shape) == "chw":
        image = np.moveaxis(image, 0, -1)
    elif image.ndim == 2:
        image = image[..., None]
    if image.dtype.kind not in "fiub":
        raise BadFile(BAD_SHAPE, f"dtype {image.dtype} is not numeric")
    return np.ascontiguousarray(image, dtype=np.float32)


def array_layout(shape: tuple[int, ...]) -> str:
    """How an image array of ``shape`` is laid out: ``hw``, ``chw`` or ``hwc`` (else ``BadFile``)."""
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3 and shape[0] in CHANNEL_COUNTS and shape[-1] not in CHANNEL_COUNTS:
        return "chw"
    if len(shape) == 3 and shape[-1] in CHANNEL_COUNTS:
        return "hwc"
    raise BadFile(BAD_SHAPE, f"shape {shape}; expected (H,W), (C,H,W) or (H,W,C) with C in {CHANNEL_COUNTS}")


# ---------------------------------------------------------------------------------------------
# Headers only: what ``--validate quick`` checks, and what the tf.data reader needs to decode a
# file with ``read_file`` + ``decode_raw`` (every file of a set must share one header).

@dataclass(frozen=True)
class NpyHeader:
    """The parts of a ``.npy`` header that decide how its bytes become an image."""

    shape: tuple[int, ...]  # as stored
    dtype: str  # numpy ``descr``, e.g. ``<f4``
    offset: int  # bytes before the data
    layout: str  # hw | chw | hwc | flat | flat+label

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.layout in ("flat", "flat+label"):
            side = math.isqrt(self.shape[0] - (self.layout == "flat+label"))
            return side, side, 1
        if self.layout == "hw":
            return (*self.shape, 1)
        if self.layout == "chw":
            return self.shape[1], self.shape[2], self.shape[0]
        return self.shape

    @property
    def has_label(self) -> bool:
        return self.layout == "flat+label"

    @property
    def nbytes(self) -> int:
        return self.offset + math.prod(self.shape) * np.dtype(self.dtype).itemsize


def read_npy_header(path: str | Path) -> NpyHeader:
    """Magic, header and file size of one ``.npy``; ``BadFile`` for anything a fast reader cannot decode.

    A truncated file is caught here without reading its pixels: its size differs from what the
    header promises. Object (pickled) arrays raise ``BadFile(PICKLED)`` (they need a full read).
    Headers are parsed once per distinct header text: a set's files nearly always share one.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
            size = os.fstat(fh.fileno()).st_size
            needed = _header_length(head)
            if needed > len(head):
                head += fh.read(needed - len(head))
    except BadFile:
        raise
    except Exception as err:
        raise BadFile(UNREADABLE, f"{type(err).__name__}: {err}") from None
    return header_from_bytes(head, size)


def header_from_bytes(head: bytes, size: int) -> NpyHeader:
    """The header at the start of ``head`` (a file's first bytes), checked against the file ``size``."""
    try:
        key = head[: _header_length(head)]
        parsed = _HEADERS.get(key)
        if parsed is None:
            parsed = _parse_header(key)
            if len(_HEADERS) < 4096:
                _HEADERS[key] = parsed
    except BadFile:
        raise
    except Exception as err:
        raise BadFile(UNREADABLE, f"{type(err).__name__}: {err}") from None
    if size < parsed.nbytes:
        raise BadFile(UNREADABLE, f"{size} bytes, the header promises {parsed.nbytes}")
    if size > parsed.nbytes:
        raise BadFile(UNREADABLE, f"{size - parsed.nbytes} bytes after the array (not one np.save)")
    return parsed


def _header_length(head: bytes) -> int:
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise BadFile(UNREADABLE, "not a .npy file (bad magic bytes)" if len(head) >= 10 else "file too short")
    prefix = 12 if head[6] in (2, 3) else 10
    return prefix + int.from_bytes(head[8:prefix], "little")


_HEAD_BYTES = 256
_HEADERS: dict[bytes, NpyHeader] = {}


def _parse_header(raw: bytes) -> NpyHeader:
    import io

    fh = io.BytesIO(raw)
    version = np.lib.format.read_magic(fh)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in reader:
        raise ValueError(f"npy format version {version} is not supported")
    shape, fortran, dtype = reader[version](fh)
    if dtype.hasobject:
        raise BadFile(PICKLED)
    if dtype.kind not in "fiub":
        raise BadFile(BAD_SHAPE, f"dtype {dtype} is not numeric")
    return NpyHeader(tuple(int(d) for d in shape), dtype.str, fh.tell(), _header_layout(shape, fortran))


def _header_layout(shape: tuple[int, ...], fortran: bool) -> str:
    if fortran and len(shape) > 1:
        raise BadFile(BAD_SHAPE, "Fortran-ordered array: re-save it with np.save(path, np.ascontiguousarray(a))")
    if len(shape) == 1:
        size = shape[0]
        if math.isqrt(size) ** 2 == size:
            return "flat"
        if size > 0 and math.isqrt(size - 1) ** 2 == size - 1:
            return "flat+label"
        raise BadFile(BAD_SHAPE, f"flat array of {size} values is neither H*W nor H*W+1 for a square image")
    return array_layout(tuple(shape))


def decode_raw_image(raw: np.ndarray, header: NpyHeader) -> np.ndarray:
    """The pixels of a file's data bytes (as stored) -> float32 ``(H, W, C)``; numpy twin of the tf reader."""
    values = np.frombuffer(raw, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    if header.layout in ("flat", "flat+label"):
        values = values[: math.prod(header.image_shape)]
    return to_hwc(values.reshape(header.shape if header.layout not in ("flat", "flat+label")
                                 else header.image_shape[:2]))


# ---------------------------------------------------------------------------------------------
# Images that stay on disk until read: the index of a set too large for memory.

class LazyImages:
    """A read-only ``(N, H, W, C)`` float32 array-like whose rows are read from disk on demand.

    Indexing with a slice, an index array or a boolean mask returns another view without
    reading anything (so ``images[keep]`` and split subsets stay on disk); an integer returns
    one image; ``np.asarray(view)`` reads the rows. ``pipeline.create_dataset`` streams it.
    """

    def __init__(self, count: int, image_shape: tuple[int, int, int], rows: np.ndarray | None = None):
        self._count = int(count)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.rows = np.arange(self._count, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)

    dtype = np.dtype(np.float32)
    ndim = 4

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), *self.image_shape)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * math.prod(self.image_shape) * 4

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.read(np.array([key]))[0]
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.rows = self.rows[key]
        return view

    def __array__(self, dtype=None, copy=None):
        images = self.read(np.arange(len(self.rows)))
        return images if dtype is None else images.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype, copy=False)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Images at ``positions`` of this view (in that order) as float32 ``(n, H, W, C)``."""
        return self.read_rows(self.rows[np.asarray(positions, np.int64)])

    def read_rows(self, rows: np.ndarray) -> np.ndarray:  # rows of the underlying storage
        raise NotImplementedError


class NpyFileImages(LazyImages):
    """One ``.npy`` per image, all sharing ``header``: what ``--validate quick`` indexes.

    ``pixels_checked`` is False when only headers were read, so the pipeline checks for NaN/Inf
    pixels itself and names the file.
    """

    def __init__(self, paths: list[str], header: NpyHeader, pixels_checked: bool = False,
                 rows: np.ndarray | None = None):
        super().__init__(len(paths), header.image_shape, rows)
        self.paths = np.asarray([str(p) for p in paths])
        self.header = header
        self.pixels_checked = pixels_checked
        self._path_list = self.paths.tolist()  # str objects once, not per read

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The pixels of each file, read straight past the shared header into one buffer.

        Three system calls per file (open, pread, close; each releases the GIL, so parallel
        pipeline calls overlap), no header parsing, one vectorised conversion per block.
        """
        h = self.header
        dtype = np.dtype(h.dtype)
        count = math.prod(h.shape)
        raw = np.empty((len(rows), count), dtype)
        paths, offset, size = self._path_list, h.offset, count * dtype.itemsize
        for j, row in enumerate(np.asarray(rows).tolist()):
            fd = os.open(paths[row], os.O_RDONLY)
            try:
                got = os.preadv(fd, [raw[j]], offset) if _HAS_PREADV else _pread_into(fd, raw[j], offset)
            finally:
                os.close(fd)
            if got != size:
                raise BadFile(UNREADABLE, f"{paths[row]}: {got} of {size} bytes (the file changed after the scan)")
        flat = h.layout in ("flat", "flat+label")
        if flat:
            raw = raw[:, : math.prod(self.image_shape)]
        images = raw.reshape(len(rows), *(self.image_shape if flat else h.shape))
        if h.layout == "chw":
            images = np.moveaxis(images, 1, -1)
        elif h.layout == "hw":
            images = images[..., None]
        return np.ascontiguousarray(images, dtype=np.float32)

    @property
    def view_paths(self) -> np.ndarray:
        return self.paths[self.rows]


_HAS_PREADV = hasattr(os, "preadv")


def _pread_into(fd: int, buffer: np.ndarray, offset: int) -> int:
    data = os.pread(fd, buffer.nbytes, offset)
    buffer.view(np.uint8)[: len(data)] = np.frombuffer(data, np.uint8)
    return len(data)


class ArrayImages(LazyImages):
    """A (memory-mapped) ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` array read in row blocks.

    Reads sort the rows first, so a memory map is walked forwards (page cache, read-ahead).
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray | None = None):
        layout = array_layout(tuple(array.shape[1:]))
        shape = to_hwc(np.zeros(array.shape[1:], np.float32)).shape
        super().__init__(len(array), shape, rows)
        self.array, self.layout = array, layout

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        order = np.argsort(rows, kind="stable")
        block = np.asarray(self.array[rows[order]])
        if self.layout == "chw":
            block = np.moveaxis(block, 1, -1)
        elif self.layout == "hw":
            block = block[..., None]
        out = np.empty((len(rows), *self.image_shape), np.float32)
        out[order] = block
        return out
