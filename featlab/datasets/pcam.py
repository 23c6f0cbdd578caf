"""``pcam``: PatchCamelyon as distributed on Zenodo (record 2546921), in HDF5.

Layout (datasets.md sections 1.1 and 10)::

    <root>/camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5[.gz]

``x`` holds ``(N, 96, 96, 3)`` uint8 RGB patches, ``y`` ``(N, 1, 1, 1)`` labels (1 = tumour in the
centre 32x32 px). The files are downloaded gzipped; a ``.h5.gz`` without its ``.h5`` is
decompressed once, next to it. Images are always read from the ``.h5``, only the rows asked for.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

from featlab.datasets.array_sources import ConcatImages, HDF5RowImages
from featlab.datasets.registry import (
    DatasetInfo,
    DownloadFile,
    missing_dataset_error,
    register_dataset,
)
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

NAME = "pcam"
CLASSES = ("no_tumor", "tumor")  # eva's names for 0/1; none are official (datasets.md 1.1)
# Split names on disk -> featlab's; "valid" on disk is featlab's "val" (datasets.md 1.2).
SPLITS = {"train": "train", "valid": "val", "test": "test"}
IMAGE_SHAPE = (96, 96, 3)
LABEL_SHAPE = (1, 1, 1)  # y is (N, 1, 1, 1): datasets.md section 1.1
ZENODO = "https://zenodo.org/records/2546921"
COPY_CHUNK = 16 << 20


def h5_name(split: str, part: str) -> str:
    """``camelyonpatch_level_2_split_<split>_<part>.h5`` for an on-disk split and ``x``/``y``."""
    return f"camelyonpatch_level_2_split_{split}_{part}.h5"


FILES = tuple(h5_name(s, p) for s in SPLITS for p in ("x", "y"))

# (md5, sha256, bytes) of each .h5.gz. The README's md5s of valid and test are swapped; these
# are the corrected ones (torchvision PR #6644), with TFDS's sizes and sha256 (datasets.md 1.1).
CHECKSUMS = {
    h5_name("train", "x"): (
        "1571f514728f59376b705fc836ff4b63",
        "d619e741468a7ab35c7e4a75e6821b7e7e6c9411705d45708f2a0efc8960656c",
        6_421_353_462,
    ),
    h5_name("train", "y"): (
        "35c2d7259d906cfc8143347bb8e05be7",
        "b74126d2c01b20d3661f9b46765d29cf4e4fba6faba29c8e0d09d406331ab75a",
        21_378,
    ),
    h5_name("valid", "x"): (
        "d5b63470df7cfa627aeec8b9dc0c066e",
        "f82ee1670d027b4ec388048d9eabc2186b77c009655dae76d624c0ecb053ccb2",
        805_965_320,
    ),
    h5_name("valid", "y"): (
        "2b85f58b927af9964a4c15b8f7e8f179",
        "ce1ae30f08feb468447971cfd0472e7becd0ad96d877c64120c72571439ae48c",
        3_038,
    ),
    h5_name("test", "x"): (
        "d8c2d60d490dbd479f8199bdfa0cf6ec",
        "79174c2201ad521602a5888be8f36ee10875f37403dd3f2086caf2182ef87245",
        800_875_929,
    ),
    h5_name("test", "y"): (
        "60a7035772fbdb7f34eb86d4420cf66a",
        "0a522005fccc8bbd04c5a117bfaf81d8da2676f03a29d7499f71d0a0bd6068ef",
        3_040,
    ),
}

DOWNLOADS = tuple(
    DownloadFile(
        url=f"{ZENODO}/files/{name}.gz?download=1",
        filename=f"{name}.gz",
        md5=md5,
        sha256=sha256,
        size=size,
    )
    for name, (md5, sha256, size) in CHECKSUMS.items()
)


def find_file(root: Path, name: str) -> Path | None:
    """``root/name`` if it exists, else ``root/name.gz`` if that exists, else ``None``."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(root: Path) -> list[str]:
    """The PCam files found neither as ``.h5`` nor as ``.h5.gz`` under ``root``."""
    return [name for name in FILES if find_file(root, name) is None]


def pcam_present(root: Path) -> bool:
    """True if all six files are under ``root``, each as ``.h5`` or ``.h5.gz``."""
    return not missing_files(root)


def gunzip_once(gz: Path) -> Path:
    """Decompress ``x.h5.gz`` to ``x.h5`` next to it, streaming, then rename atomically.

    The temporary file lives in the same folder, so the rename is atomic: a ``.h5`` is always
    complete. An error removes the temporary file; a killed process leaves a hidden
    ``.<name>.h5.*.part`` file, which is safe to delete.

    Raises:
        DatasetError: The ``.gz`` is corrupt or truncated, or the folder is not writable.
    """
    target = gz.with_suffix("")
    print(
        f"featlab: decompressing {gz.name} ({gz.stat().st_size / 1e9:.2f} GB) to {target.name} "
        "once; later runs read the .h5 directly",
        file=sys.stderr,
    )
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=gz.parent)
    except OSError as err:
        raise DatasetError(
            f"{gz}: cannot write the decompressed {target.name} next to it ({err}); run "
            f"`gunzip -k {gz}` where you can write, or point --data-root at a writable copy"
        ) from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, gzip.open(gz, "rb") as src:
            shutil.copyfileobj(src, out, COPY_CHUNK)
        os.replace(tmp, target)
    except (OSError, EOFError, zlib.error) as err:
        tmp.unlink(missing_ok=True)
        raise DatasetError(
            f"{gz}: cannot decompress ({type(err).__name__}: {err}); a corrupt or truncated "
            "download: delete it and run `featlab download pcam` again"
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def ensure_h5(root: Path, name: str) -> Path:
    """The ``.h5`` file ``name`` under ``root``, decompressing its ``.gz`` first if needed."""
    found = find_file(root, name)
    if found is None:
        raise DatasetError(f"{root / name}: not found (nor {name}.gz)")
    return found if found.suffix == ".h5" else gunzip_once(found)


def read_labels(path: Path) -> np.ndarray:
    """Labels ``(N,)`` int32 from a ``*_y.h5`` file whose ``y`` is ``(N, 1, 1, 1)`` of 0/1.

    Raises:
        DatasetError: Naming the file: unreadable, no ``y``, wrong shape or dtype, or a value
            outside {0, 1} (naming the row).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "y" not in f:
                raise DatasetError(f"{path}: no dataset 'y'; found {sorted(f.keys())}")
            ds = f["y"]
            if ds.ndim != 4 or ds.shape[1:] != LABEL_SHAPE:
                raise DatasetError(
                    f"{path}: 'y' must have shape (N, 1, 1, 1) (PCam's layout); got {ds.shape}"
                )
            if ds.dtype.kind not in "biuf":
                raise DatasetError(f"{path}: 'y' must hold numbers 0/1; got dtype {ds.dtype}")
            y = ds[()].reshape(-1)
    except OSError as err:
        raise DatasetError(
            f"{path}: cannot read as HDF5 ({err}); the file may be truncated or corrupt: delete "
            "it and download it again"
        ) from err
    bad = ~np.isin(y, (0, 1))  # the real files' dtype is unconfirmed, so check values
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DatasetError(
            f"{path}: label {y[row].item()!r} at row {row} is not 0 or 1 "
            f"({int(bad.sum())} such rows)"
        )
    return y.astype(np.int32)


def open_images(path: Path) -> HDF5RowImages:
    """The ``x`` images of one split, checked to be ``(N, 96, 96, 3)`` uint8.

    Raises:
        DatasetError: Naming the file, for unreadable files or other shapes and dtypes.
    """
    images = HDF5RowImages(path, "x")
    if images.shape[1:] != IMAGE_SHAPE:
        raise DatasetError(f"{path}: 'x' must have shape (N, 96, 96, 3); got {images.shape}")
    if images.dtype != np.uint8:
        raise DatasetError(f"{path}: 'x' must be uint8 RGB; got dtype {images.dtype}")
    return images


def read_pcam(root: str | os.PathLike[str]) -> SampleTable:
    """Read PCam's three splits from ``root`` into one SampleTable.

    Ids are ``train/000123``, ``val/000123``, ``test/000123``; sources name the ``.h5`` file and
    row (``camelyonpatch_level_2_split_valid_x.h5#123``).

    Raises:
        DatasetError: Files missing (listing exactly which), unreadable, or malformed.
    """
    root = Path(root).expanduser()
    missing = missing_files(root)
    if missing:
        raise missing_dataset_error(
            INFO,
            root,
            f"{len(missing)} of {len(FILES)} files missing: {', '.join(missing)}",
            expected=tuple(f"{m} (or {m}.gz)" for m in missing),
        )
    ids, labels, splits, sources, parts = [], [], [], [], []
    for disk_split, split in SPLITS.items():
        x_path = ensure_h5(root, h5_name(disk_split, "x"))
        y_path = ensure_h5(root, h5_name(disk_split, "y"))
        images = open_images(x_path)
        y = read_labels(y_path)
        if len(images) != len(y):
            raise DatasetError(
                f"{x_path.name} has {len(images)} images but {y_path.name} has {len(y)} labels; "
                "they must match row for row"
            )
        ids += [f"{split}/{i:06d}" for i in range(len(y))]
        sources += [f"{x_path.name}#{i}" for i in range(len(y))]
        splits += [split] * len(y)
        labels.append(y)
        parts.append(images)
    return SampleTable(
        name=NAME,
        ids=ids,
        labels=np.concatenate(labels),
        splits=splits,
        sources=sources,
        classes=CLASSES,
        task="binary",
        images=ConcatImages(parts),
        attrs={
            "source": f"PatchCamelyon HDF5, Zenodo record 2546921 ({ZENODO})",
            "root": str(root.resolve()),
            "split_method": "official (train/valid/test files; valid is featlab's val)",
            "label_rule": "1 = at least one tumour pixel in the centre 32x32 px",
            "licence": "CC0",
        },
    )


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="binary",
        classes=CLASSES,
        folder="pcam",
        expected=tuple(f"{name} (or {name}.gz)" for name in FILES),
        reader=read_pcam,
        present=pcam_present,
        missing=missing_files,
        url=ZENODO,
        access="open (CC0); featlab download pcam",
        split_sizes={"train": 262_144, "val": 32_768, "test": 32_768},
        metric="auc",
        downloads={0: DOWNLOADS},
    )
)
