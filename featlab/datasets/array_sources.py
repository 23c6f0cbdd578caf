"""Image sources over image arrays on disk: HDF5 datasets, ``.npz`` members, and concatenations.

They read only the rows asked for, one read per run of consecutive rows (an extraction batch is
one run), so a 7 GB PCam file or a 13 GB MedMNIST+ member never has to fit in memory. Like the
sources in :mod:`featlab.datasets.images` they are picklable and open their files lazily, once per
process, so every DataLoader worker holds its own handle.

A row that cannot be read (a corrupt HDF5 chunk, a damaged deflate stream) comes back as a
:class:`BadImageError` naming the file, the array and the row, so ``--skip-bad`` can record it; a
file that cannot be opened at all is a :class:`DatasetError`.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featlab.datasets.images import ImageOrError, ImageSource, array_to_image
from featlab.errors import BadImageError, DatasetError

# Errors a low-level read can raise on damaged data (h5py raises OSError; zipfile raises
# BadZipFile on a CRC mismatch; zlib.error on a broken deflate stream).
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zlib.error, zipfile.BadZipFile)

# ZIP local file header: signature, versions, flags, method, time, date, crc, sizes, name and
# extra-field lengths (PKWARE APPNOTE 4.3.7); the member's data follows the name and extra field.
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"


def contiguous_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Half-open ``(lo, hi)`` runs of consecutive values in sorted, unique ``rows``.

    ``[3, 4, 5, 9, 10]`` -> ``[(3, 6), (9, 11)]``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, len(rows)]
    return [(int(rows[s]), int(rows[e - 1]) + 1) for s, e in zip(starts, ends, strict=True)]


class RowArrayImages:
    """Base of sources backed by one on-disk array ``(n, H, W[, C])``.

    Subclasses implement ``_read(lo, hi) -> ndarray`` (rows ``lo..hi-1``) and set ``self.n`` and
    ``self.label`` (how errors name the array, e.g. ``"file.h5#x"``).
    """

    n: int
    label: str

    def __len__(self) -> int:
        return self.n

    def _read(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        """One RGB image (or the error reading it) per row, in the order asked."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"{self.label}: rows must be in 0..{self.n - 1}")
        images: dict[int, ImageOrError] = {}
        for lo, hi in contiguous_runs(np.unique(rows)):
            try:
                block = self._read(lo, hi)
            except DatasetError:  # the file itself cannot be opened: not one bad row
                raise
            except READ_ERRORS as err:
                for r in range(lo, hi):
                    images[r] = BadImageError(
                        f"{self.label}[{r}]: cannot read ({type(err).__name__}: {err}); the file "
                        "may be truncated or corrupt: delete it and download it again"
                    )
                continue
            for r in range(lo, hi):
                images[r] = _to_image(block[r - lo], f"{self.label}[{r}]")
        return [images[int(r)] for r in rows]


def _to_image(a: np.ndarray, where: str) -> ImageOrError:
    try:
        return array_to_image(np.asarray(a))
    except BadImageError as err:
        return BadImageError(f"{where}: {err}")


class HDF5RowImages(RowArrayImages):
    """Images in one HDF5 dataset ``(n, H, W[, C])``; only the requested rows are read.

    Memory: one block per run of consecutive requested rows (an extraction batch), never the file.

    Raises:
        DatasetError: If the file cannot be opened or has no dataset ``key``.
    """

    def __init__(self, path: str | os.PathLike[str], key: str) -> None:
        self.path, self.key = str(path), key
        self.label = f"{os.path.basename(self.path)}#{key}"
        self._file = None
        self._pid = -1
        ds = self.dataset()
        self.shape, self.dtype = tuple(int(s) for s in ds.shape), np.dtype(ds.dtype)
        self.n = self.shape[0]
        self.close()  # forked DataLoader workers must not inherit an open HDF5 handle

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._pid = None, -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": -1}

    def dataset(self):
        """The h5py dataset, opened once per process."""
        import h5py

        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as err:
                raise DatasetError(
                    f"{self.path}: cannot open as HDF5 ({err}); the file may be truncated or "
                    "corrupt: delete it and download it again"
                ) from err
            self._pid = os.getpid()
        if self.key not in self._file:
            raise DatasetError(
                f"{self.path}: no dataset {self.key!r}; found {sorted(self._file.keys())}"
            )
        return self._file[self.key]

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return self.dataset()[lo:hi]


@dataclass(frozen=True)
class NpyLayout:
    """Where and how one ``.npy`` member of an ``.npz`` is stored.

    Attributes:
        shape, dtype: Of the array.
        header_bytes: Length of the ``.npy`` header inside the member (data starts after it).
        file_offset: Byte offset of the array data in the ``.npz`` file when the member is stored
            uncompressed (so it can be memory-mapped); ``None`` when it is deflated.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int
    file_offset: int | None

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def npz_member_name(key: str) -> str:
    return f"{key}.npy"


def npz_keys(path: str | os.PathLike[str]) -> list[str]:
    """The array names in an ``.npz`` file.

    Raises:
        DatasetError: If the file is not a readable zip (truncated or corrupt).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return sorted(n.removesuffix(".npy") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise _bad_npz(path, err) from err


def _bad_npz(path: str | os.PathLike[str], err: Exception, key: str | None = None) -> DatasetError:
    where = f"{path}" + (f" (array {key!r})" if key else "")
    return DatasetError(
        f"{where}: not a readable .npz ({type(err).__name__}: {err}); the file may be truncated "
        "or corrupt: delete it and download it again"
    )


def npz_member_layout(path: str | os.PathLike[str], key: str) -> NpyLayout:
    """Read the ``.npy`` header of array ``key`` without decompressing its data.

    Raises:
        DatasetError: The file is not a readable ``.npz``, has no array ``key`` (the message lists
            the arrays found), or the member is not a C-ordered, plain-dtype ``.npy`` array.
    """
    path = str(path)
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(npz_member_name(key))
            except KeyError:
                found = sorted(n.removesuffix(".npy") for n in zf.namelist())
                raise DatasetError(f"{path}: no array {key!r}; found {found}") from None
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = _read_npy_header(f, version)
                header_bytes = f.tell()
    except DatasetError:
        raise
    except (*READ_ERRORS, struct.error) as err:
        raise _bad_npz(path, err, key) from err
    if fortran or dtype.hasobject or len(shape) == 0:
        raise DatasetError(
            f"{path} (array {key!r}): featlab reads C-ordered numeric arrays; found shape {shape}, "
            f"dtype {dtype}, fortran_order={fortran}. Re-save it with np.savez."
        )
    offset = None
    if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
        offset = _stored_data_offset(path, info) + header_bytes
        _check_stored_size(path, key, offset, shape, dtype)
    return NpyLayout(tuple(int(s) for s in shape), np.dtype(dtype), header_bytes, offset)


def _read_npy_header(f, version: tuple[int, int]) -> tuple[tuple[int, ...], bool, np.dtype]:
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)
    raise ValueError(f".npy format version {version} is not supported (1.0 and 2.0 are)")


def _stored_data_offset(path: str, info: zipfile.ZipInfo) -> int:
    """Offset of an uncompressed member's bytes: after its local header, name and extra field."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        raw = f.read(_LOCAL_HEADER.size)
    if len(raw) != _LOCAL_HEADER.size or raw[:4] != _LOCAL_SIGNATURE:
        raise DatasetError(f"{path}: bad zip local header for {info.filename}; the file is corrupt")
    fields = _LOCAL_HEADER.unpack(raw)
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def _check_stored_size(path: str, key: str, offset: int, shape, dtype) -> None:
    need = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    have = os.path.getsize(path)
    if have < need:
        raise DatasetError(
            f"{path} (array {key!r}): the file is truncated ({have} bytes, the array needs "
            f"{need}); delete it and download it again"
        )


class NPZImages(RowArrayImages):
    """Images in one array ``key`` of an ``.npz`` file, read lazily by rows.

    ``np.load`` decompresses a whole member at once, which for ``pathmnist_224.npz`` is 13.5 GB
    per process. Instead:

    - a member stored uncompressed (``np.savez``) is memory-mapped at its byte offset in the
      file: reading a row touches only that row's pages, and the OS page cache is shared by
      every worker (memory cost: nothing beyond the rows read);
    - a deflated member (``np.savez_compressed``) is streamed: each process keeps one
      decompressor open on the member and reads forward to the requested rows. Extraction reads
      rows in increasing order, so each process decompresses the member about once in total;
      asking for an earlier row restarts the stream from the member's start (memory cost: the
      rows read plus zipfile's 16 MB seek buffer; CPU cost: one inflate pass per process).

    Raises:
        DatasetError: As :func:`npz_member_layout`.
    """

    def __init__(self, path: str | os.PathLike[str], key: str) -> None:
        self.path, self.key = str(path), key
        self.label = f"{os.path.basename(self.path)}#{key}"
        self.layout = npz_member_layout(self.path, key)
        self.n = self.layout.shape[0]
        self._reset()

    def _reset(self) -> None:
        self._pid = -1
        self._mmap: np.ndarray | None = None
        self._zip: zipfile.ZipFile | None = None
        self._stream = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_pid=-1, _mmap=None, _zip=None, _stream=None)
        return state

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape

    @property
    def dtype(self) -> np.dtype:
        return self.layout.dtype

    @property
    def memory_mapped(self) -> bool:
        return self.layout.file_offset is not None

    def _open(self) -> None:
        if self._pid == os.getpid():
            return
        self._reset()
        if self.memory_mapped:
            self._mmap = np.memmap(
                self.path, self.dtype, "r", offset=self.layout.file_offset, shape=self.shape
            )
        else:
            try:
                self._zip = zipfile.ZipFile(self.path)
                self._stream = self._zip.open(npz_member_name(self.key))
            except (zipfile.BadZipFile, OSError, KeyError) as err:
                raise _bad_npz(self.path, err, self.key) from err
        self._pid = os.getpid()

    def _read(self, lo: int, hi: int) -> np.ndarray:
        self._open()
        if self._mmap is not None:
            return np.array(self._mmap[lo:hi])
        try:
            return self._read_stream(lo, hi)
        except READ_ERRORS:
            self._pid = -1  # a failed inflate leaves the stream unusable: reopen next time
            raise

    def _read_stream(self, lo: int, hi: int) -> np.ndarray:
        want = (hi - lo) * self.layout.row_bytes
        self._stream.seek(self.layout.header_bytes + lo * self.layout.row_bytes)
        buf = self._stream.read(want)
        if len(buf) != want:
            raise EOFError(f"member ends after {len(buf)} of {want} bytes")
        return np.frombuffer(buf, self.dtype).reshape(hi - lo, *self.shape[1:])


class ConcatImages:
    """Several sources end to end, e.g. one per split file, read as one table's rows.

    Row ``r`` belongs to the part whose row range holds it; a batch spanning two parts becomes
    one ``load`` per part.
    """

    def __init__(self, parts: Sequence[ImageSource]) -> None:
        self.parts = list(parts)
        self.offsets = np.cumsum([0, *(len(p) for p in self.parts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def load(self, rows: Sequence[int]) -> list[ImageOrError]:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must be in 0..{len(self) - 1}")
        part_of = np.searchsorted(self.offsets, rows, side="right") - 1
        out: list[ImageOrError | None] = [None] * len(rows)
        for k in np.unique(part_of):
            where = np.flatnonzero(part_of == k)
            images = self.parts[k].load(rows[where] - self.offsets[k])
            for i, img in zip(where, images, strict=True):
                out[i] = img
        return out  # type: ignore[return-value]
