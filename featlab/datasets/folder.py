"""``folder:PATH``: a class-per-folder image tree, with an optional ``train/val/test`` level.

Accepted layouts::

    PATH/<class>/<image>                   (split assigned: seeded, stratified 60/20/20)
    PATH/{train,val,test}/<class>/<image>  (splits as on disk)

Ids are the image paths relative to PATH (POSIX separators), so they are stable across machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featlab.datasets.images import FileImages
from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.datasets.table import SampleTable, task_for
from featlab.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})
SPLIT_DIRS = ("train", "val", "test")
IGNORED_DIRS = frozenset({"__MACOSX"})


def _is_image(path: Path) -> bool:
    return (
        path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    )


def _hidden(rel: Path) -> bool:
    """True if a path inside a class folder is hidden or OS metadata (``.AppleDouble/x.png``)."""
    return any(p.startswith(".") or p in IGNORED_DIRS for p in rel.parts)


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and p.name not in IGNORED_DIRS and not p.name.startswith(".")
    )


def read_image_folder(root: str | Path, *, name: str | None = None, seed: int = 0) -> SampleTable:
    """Read a class-per-folder image tree into a SampleTable.

    Args:
        root: The folder holding class folders, or ``train``/``val``/``test`` folders of them.
        name: Dataset name in the store; default ``folder-<folder name>``.
        seed: Seed of the stratified split used when the tree has no split level.

    Raises:
        DatasetError: If ``root`` is missing, holds no class folders, or no images.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(
            f"folder dataset {str(root)!r} does not exist or is not a directory; expected "
            "PATH/<class>/<image> or PATH/{train,val,test}/<class>/<image>"
        )
    top = _class_dirs(root)
    has_splits = bool(top) and all(p.name in SPLIT_DIRS for p in top)
    split_roots = [(p.name, p) for p in top] if has_splits else [("", root)]
    classes = sorted({c.name for _, sr in split_roots for c in _class_dirs(sr)})
    if not classes:
        raise DatasetError(
            f"{root}: no class folders found (saw {[p.name for p in top] or 'nothing'}); expected "
            "PATH/<class>/<image> or PATH/{train,val,test}/<class>/<image>"
        )
    paths, labels, splits = [], [], []
    for split, split_root in split_roots:
        for cls_dir in _class_dirs(split_root):
            for f in sorted(cls_dir.rglob("*")):
                if _is_image(f) and not _hidden(f.relative_to(cls_dir)):
                    paths.append(f)
                    labels.append(classes.index(cls_dir.name))
                    splits.append(split)
    if not paths:
        raise DatasetError(
            f"{root}: class folders {classes} hold no images with suffixes {sorted(IMAGE_SUFFIXES)}"
        )
    labels_arr = np.asarray(labels, dtype=np.int32)
    attrs: dict = {"source": "folder", "root": str(root.resolve())}
    if has_splits:
        split_arr = np.asarray(splits)
        attrs["split_method"] = "folders"
    else:
        split_arr = stratified_split(labels_arr, DEFAULT_FRACTIONS, seed=seed)
        attrs.update(split_method="stratified per class, 60/20/20 train/val/test", split_seed=seed)
    return SampleTable(
        name=name or f"folder-{root.resolve().name}",
        ids=[p.relative_to(root).as_posix() for p in paths],
        labels=labels_arr,
        splits=split_arr,
        sources=[str(p.resolve()) for p in paths],
        classes=tuple(classes),
        task=task_for(len(classes)),
        images=FileImages([str(p) for p in paths]),
        attrs=attrs,
    )
