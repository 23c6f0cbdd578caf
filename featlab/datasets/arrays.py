"""SampleTables from image arrays: in memory (numpy) or on disk (one HDF5 dataset)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featlab.datasets.images import ArrayImages, HDF5Images
from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.datasets.table import SampleTable, task_for
from featlab.errors import DatasetError


def _split_or_assign(
    labels: np.ndarray, splits: Sequence[str] | None, seed: int, attrs: dict
) -> np.ndarray:
    if splits is not None:
        attrs["split_method"] = "given"
        return np.asarray(splits, dtype=str)
    attrs.update(split_method="stratified per class, 60/20/20 train/val/test", split_seed=seed)
    return stratified_split(labels, DEFAULT_FRACTIONS, seed=seed)


def _classes(labels: np.ndarray, classes: Sequence[str] | None) -> tuple[str, ...]:
    if classes is not None:
        return tuple(str(c) for c in classes)
    return tuple(str(c) for c in range(int(labels.max(initial=-1)) + 1))


def table_from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    name: str,
    splits: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> SampleTable:
    """Wrap in-memory images and labels as a SampleTable.

    Args:
        images: ``(n, H, W)``, ``(n, H, W, 1|3|4)`` uint8 or ``(n, H, W)`` uint16.
        labels: ``(n,)`` int class indices (-1 = unknown).
        name: Dataset name in the store.
        splits: Per-sample split names; default a seeded stratified 60/20/20 split.
        classes: Class names; default ``"0" .. str(max label)``.
        seed: Seed of the default split.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int32)
    if len(images) != len(labels):
        raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
    attrs: dict = {"source": "arrays"}
    split_arr = _split_or_assign(labels, splits, seed, attrs)
    cls = _classes(labels, classes)
    return SampleTable(
        name=name,
        ids=[f"{i:06d}" for i in range(len(labels))],
        labels=labels,
        splits=split_arr,
        sources=[f"memory#{i}" for i in range(len(labels))],
        classes=cls,
        task=task_for(len(cls)),
        images=ArrayImages(images),
        attrs=attrs,
    )


def table_from_hdf5(
    path: str | Path,
    images_key: str,
    labels: np.ndarray,
    *,
    name: str,
    splits: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    seed: int = 0,
) -> SampleTable:
    """A SampleTable over images in one HDF5 dataset, read lazily in slices.

    Args:
        path: The HDF5 file.
        images_key: The dataset holding ``(n, H, W[, C])`` images.
        labels: ``(n,)`` int class indices.
        name, splits, classes, seed: As in :func:`table_from_arrays`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"HDF5 file {str(path)!r} does not exist")
    source = HDF5Images(str(path), images_key)
    labels = np.asarray(labels, dtype=np.int32)
    if len(source) != len(labels):
        raise DatasetError(f"{path}#{images_key}: {len(source)} images but {len(labels)} labels")
    attrs: dict = {"source": "hdf5", "root": str(path.resolve()), "key": images_key}
    split_arr = _split_or_assign(labels, splits, seed, attrs)
    cls = _classes(labels, classes)
    return SampleTable(
        name=name,
        ids=[f"{i:06d}" for i in range(len(labels))],
        labels=labels,
        splits=split_arr,
        sources=[f"{path.name}#{i}" for i in range(len(labels))],
        classes=cls,
        task=task_for(len(cls)),
        images=source,
        attrs=attrs,
    )
