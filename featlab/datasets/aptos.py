"""``aptos2019``: APTOS 2019 Blindness Detection (Kaggle), diabetic retinopathy grades 0-4.

Layout as distributed (datasets.md sections 3 and 10)::

    <root>/train.csv                     id_code,diagnosis   (3,662 rows, grade 0..4)
    <root>/train_images/<id_code>.png
    <root>/test.csv                      id_code             (1,928 rows, labels not public)
    <root>/test_images/<id_code>.png

There is no official validation split and the public test set has no labels (datasets.md
section 3), so the labeled train.csv is split 60/20/20 train/val/test, stratified by grade with a
recorded seed; test.csv images are kept as unlabeled samples (split ``""``, label -1).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featlab.datasets._files import read_csv_rows
from featlab.datasets.images import FileImages
from featlab.datasets.registry import DatasetInfo, missing_dataset_error, register_dataset
from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

NAME = "aptos2019"
CLASSES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")  # datasets.md section 3
SPLIT_SEED = 0
EXPECTED = (
    "train.csv (id_code,diagnosis)",
    "train_images/<id_code>.png",
    "test.csv (id_code; optional)",
    "test_images/<id_code>.png (with test.csv)",
)


def _ids(rows: list[tuple[int, dict[str, str]]], csv_name: str) -> list[str]:
    """The id_code of each row; raises on a blank or repeated id."""
    seen: dict[str, int] = {}
    for line, r in rows:
        code = r["id_code"]
        if not code:
            raise DatasetError(f"{NAME}: {csv_name} line {line} has an empty id_code")
        if code in seen:
            raise DatasetError(
                f"{NAME}: id_code {code!r} appears twice in {csv_name} (lines {seen[code]} and "
                f"{line}); ids must be unique. Re-download {csv_name} from the competition page."
            )
        seen[code] = line
    return list(seen)


def _grade(line: int, row: dict[str, str]) -> int:
    value = row["diagnosis"]
    if not value.isdigit() or int(value) >= len(CLASSES):
        raise DatasetError(
            f"{NAME}: image {row['id_code']!r} (train.csv line {line}) has diagnosis {value!r}; "
            f"expected an integer grade 0..{len(CLASSES) - 1} ({', '.join(CLASSES)})"
        )
    return int(value)


def _image_paths(root: Path, folder: str, ids: list[str]) -> list[Path]:
    """``root/folder/<id>.png`` for each id; raises naming the ids whose image is missing."""
    on_disk = set(os.listdir(root / folder)) if (root / folder).is_dir() else set()
    missing = [i for i in ids if f"{i}.png" not in on_disk]
    if missing:
        raise DatasetError(
            f"{NAME}: {len(missing)} image(s) listed in the CSV are missing from "
            f"{root / folder}: {', '.join(f'{i}.png' for i in missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. Unzip the competition's {folder} archive "
            "there again (or remove the CSV rows of images you deleted on purpose)."
        )
    return [root / folder / f"{i}.png" for i in ids]


def read_aptos(root: str | os.PathLike[str], *, seed: int = SPLIT_SEED) -> SampleTable:
    """Read APTOS 2019 from its Kaggle files under ``root``.

    Args:
        root: Folder holding ``train.csv`` and ``train_images/`` (and optionally the test files).
        seed: Seed of the stratified 60/20/20 split of the labeled images (recorded in attrs).

    Returns:
        Task ``ordinal``, 5 classes; labels ``(n,)`` int32, -1 for the unlabeled test images.

    Raises:
        DatasetError: For missing files or columns, repeated ids, grades outside 0..4, or CSV rows
            whose image is missing (the id is named).
    """
    root = Path(root).expanduser()
    if not (root / "train.csv").is_file():
        raise missing_dataset_error(INFO, root, "train.csv not found")
    train_rows = read_csv_rows(INFO, root, "train.csv", ("id_code", "diagnosis"))
    ids = _ids(train_rows, "train.csv")
    labels = [_grade(line, r) for line, r in train_rows]
    paths = _image_paths(root, "train_images", ids)
    if (root / "test.csv").is_file():  # the public test set: images without labels
        test_ids = _ids(read_csv_rows(INFO, root, "test.csv", ("id_code",)), "test.csv")
        ids += test_ids
        labels += [-1] * len(test_ids)
        paths += _image_paths(root, "test_images", test_ids)
    label_arr = np.asarray(labels, dtype=np.int32)
    return SampleTable(
        name=NAME,
        ids=ids,
        labels=label_arr,
        splits=stratified_split(label_arr, DEFAULT_FRACTIONS, seed=seed),  # -1 rows get ""
        sources=[str(p.resolve()) for p in paths],
        classes=CLASSES,
        task="ordinal",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": "Kaggle competition aptos2019-blindness-detection",
            "root": str(root.resolve()),
            "split_method": "train.csv stratified by grade, 60/20/20 train/val/test; "
            "test.csv images unlabeled (split '')",
            "split_seed": seed,
            "licence": "Kaggle competition rules",
        },
    )


def _present(root: Path) -> bool:
    return (root / "train.csv").is_file() and (root / "train_images").is_dir()


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="ordinal",
        classes=CLASSES,
        folder=NAME,
        expected=EXPECTED,
        reader=read_aptos,
        present=_present,
        url="https://www.kaggle.com/competitions/aptos2019-blindness-detection",
        access="Kaggle competition: log in and accept the rules on the competition page (the API "
        "answers 403 until you do), then `kaggle competitions download -c "
        "aptos2019-blindness-detection` and unzip it, and train.zip/test.zip inside it, into "
        "the dataset folder",
        metric="quadratic_kappa",
    )
)
