"""``brain-tumor-mri``: the Kaggle Brain Tumor MRI Dataset (masoudnickparvar), 4 classes.

Layout as distributed (datasets.md sections 8.3 and 10)::

    <root>/{Training,Testing}/{glioma,meningioma,notumor,pituitary}/*.jpg

The folder name is the label; file names vary between dataset versions, so they are never parsed
(datasets.md section 8.3). ``Testing`` is the test split; ``Training`` has no official validation
part, so a seeded, class-stratified 10 % of it becomes ``val`` (seed recorded in attrs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featlab.datasets._files import images_in
from featlab.datasets.folder import IMAGE_SUFFIXES
from featlab.datasets.images import FileImages
from featlab.datasets.registry import DatasetInfo, missing_dataset_error, register_dataset
from featlab.datasets.splits import stratified_split
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

NAME = "brain-tumor-mri"
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")  # lower case, "notumor" one word
SPLIT_DIRS = {"Training": "train", "Testing": "test"}
VAL_FRACTIONS = {"train": 0.9, "val": 0.1}
SPLIT_SEED = 0
EXPECTED = tuple(f"{d}/{{{','.join(CLASSES)}}}/*.jpg" for d in SPLIT_DIRS)


def _check_layout(root: Path) -> None:
    missing = [f"{d}/{c}" for d in SPLIT_DIRS for c in CLASSES if not (root / d / c).is_dir()]
    if missing:
        raise missing_dataset_error(INFO, root, f"class folder(s) missing: {missing}")


def read_brain_mri(root: str | os.PathLike[str], *, seed: int = SPLIT_SEED) -> SampleTable:
    """Read the Brain Tumor MRI set from ``root/Training`` and ``root/Testing``.

    Args:
        root: Folder holding ``Training/`` and ``Testing/``.
        seed: Seed of the stratified train/val split of ``Training`` (recorded in attrs).

    Returns:
        Task ``multiclass`` with 4 classes; ids are paths relative to ``root``, e.g.
        ``Training/glioma/Tr-gl_0010.jpg``.

    Raises:
        DatasetError: If a class folder is missing or the folders hold no images.
    """
    root = Path(root).expanduser()
    _check_layout(root)
    paths, labels, on_disk_split = [], [], []
    for folder, split in SPLIT_DIRS.items():
        for label, cls in enumerate(CLASSES):
            found = images_in(root / folder / cls)
            paths += found
            labels += [label] * len(found)
            on_disk_split += [split] * len(found)
    if not paths:
        raise DatasetError(
            f"{NAME}: the class folders under {root} hold no images ({sorted(IMAGE_SUFFIXES)}); "
            "unzip the Kaggle archive there again"
        )
    label_arr = np.asarray(labels, dtype=np.int32)
    splits = np.asarray(on_disk_split, dtype=object)
    train = splits == "train"
    splits[train] = stratified_split(label_arr[train], VAL_FRACTIONS, seed=seed)
    return SampleTable(
        name=NAME,
        ids=[p.relative_to(root).as_posix() for p in paths],
        labels=label_arr,
        splits=splits.astype(str),
        sources=[str(p.resolve()) for p in paths],
        classes=CLASSES,
        task="multiclass",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": "Kaggle masoudnickparvar/brain-tumor-mri-dataset",
            "root": str(root.resolve()),
            "split_method": "Testing -> test; Training stratified by class into 90/10 train/val",
            "split_seed": seed,
            "licence": "see the Kaggle dataset page",
        },
    )


def _present(root: Path) -> bool:
    return all((root / d).is_dir() for d in SPLIT_DIRS)


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="multiclass",
        classes=CLASSES,
        folder=NAME,
        expected=EXPECTED,
        reader=read_brain_mri,
        present=_present,
        url="https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset",
        access="needs a Kaggle login: `kaggle datasets download -d "
        "masoudnickparvar/brain-tumor-mri-dataset` and unzip it into the dataset folder",
        split_sizes={"train+val (Training)": 5712, "test (Testing)": 1311},
    )
)
