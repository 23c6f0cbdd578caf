"""``pcam-kaggle``: the Kaggle competition ``histopathologic-cancer-detection`` (PCam without
duplicates), as unzipped from Kaggle.

Layout (datasets.md sections 1.3 and 10)::

    <root>/train_labels.csv        header ``id,label``; id = file stem, label 0/1
    <root>/train/<id>.tif          96x96 RGB
    <root>/test/<id>.tif           unlabeled (optional here)

Only the training images are labeled and there is no official validation or test split among
them, so they get a seeded, stratified 80/10/10 train/val/test split, recorded in the table's
attrs. Rows are sorted by id first, so the split does not depend on the CSV's row order. The
unlabeled ``test/`` images are kept with split ``""`` and label -1.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from featlab.datasets.images import FileImages
from featlab.datasets.registry import DatasetInfo, missing_dataset_error, register_dataset
from featlab.datasets.splits import stratified_split
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

NAME = "pcam-kaggle"
COMPETITION = "histopathologic-cancer-detection"
URL = f"https://www.kaggle.com/competitions/{COMPETITION}/data"
CLASSES = ("no_tumor", "tumor")  # same 0/1 centre-32x32 rule as PCam (datasets.md 1.3)
LABELS_CSV = "train_labels.csv"
HEADER = ["id", "label"]
SUFFIX = ".tif"
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
SPLIT_SEED = 0


def pcam_kaggle_present(root: Path) -> bool:
    """True if ``train_labels.csv`` and the ``train/`` folder are under ``root``."""
    return (root / LABELS_CSV).is_file() and (root / "train").is_dir()


def tif_stems(folder: Path) -> set[str]:
    """Stems of the visible ``.tif`` files directly in ``folder`` (empty if it is absent)."""
    if not folder.is_dir():
        return set()
    with os.scandir(folder) as entries:
        return {
            e.name[: -len(SUFFIX)]
            for e in entries
            if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file()
        }


def read_labels_csv(path: Path) -> dict[str, int]:
    """``id -> label`` from ``train_labels.csv``.

    Raises:
        DatasetError: A header other than ``id,label``, a duplicated id, or a label other than
            0 or 1; the message names the id and line.
    """
    labels: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:  # tolerate a BOM
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header != HEADER:
            raise DatasetError(f"{path}: header must be {','.join(HEADER)}; got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise DatasetError(f"{path}, line {line}: expected 'id,label'; got {row}")
            sid, value = row[0].strip(), row[1].strip()
            if sid in labels:
                raise DatasetError(f"{path}, line {line}: id {sid!r} appears more than once")
            if value not in ("0", "1"):
                raise DatasetError(
                    f"{path}, line {line}: id {sid!r} has label {value!r}; labels are 0 or 1"
                )
            labels[sid] = int(value)
    return labels


def read_pcam_kaggle(root: str | os.PathLike[str]) -> SampleTable:
    """Read the Kaggle PCam variant from ``root`` into a SampleTable.

    Ids are ``train/<id>`` (labeled; split train/val/test by the seeded 80/10/10 split) and
    ``test/<id>`` (unlabeled: split ``""``, label -1).

    Raises:
        DatasetError: Missing files, or a CSV row that is malformed or names a missing image.
    """
    root = Path(root).expanduser()
    if not pcam_kaggle_present(root):
        raise missing_dataset_error(INFO, root, f"{LABELS_CSV} or train/ not found")
    labels = read_labels_csv(root / LABELS_CSV)
    on_disk = tif_stems(root / "train")
    absent = sorted(set(labels) - on_disk)
    if absent:
        raise DatasetError(
            f"{root / LABELS_CSV}: {len(absent)} labeled id(s) have no image, e.g. "
            f"{root / 'train' / (absent[0] + SUFFIX)}; first missing: {absent[:5]}"
        )
    train_ids = sorted(labels)
    test_ids = sorted(tif_stems(root / "test"))
    y = np.array([labels[i] for i in train_ids], dtype=np.int32)
    splits = stratified_split(y, SPLIT_FRACTIONS, seed=SPLIT_SEED)
    paths = [root / "train" / f"{i}{SUFFIX}" for i in train_ids]
    paths += [root / "test" / f"{i}{SUFFIX}" for i in test_ids]
    return SampleTable(
        name=NAME,
        ids=[f"train/{i}" for i in train_ids] + [f"test/{i}" for i in test_ids],
        labels=np.r_[y, np.full(len(test_ids), -1, np.int32)],
        splits=np.r_[splits, np.full(len(test_ids), "")],
        sources=[str(p) for p in paths],
        classes=CLASSES,
        task="binary",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": f"Kaggle competition {COMPETITION} ({URL})",
            "root": str(root.resolve()),
            "split_method": "stratified per class over train_labels.csv sorted by id, "
            "80/10/10 train/val/test; test/ images unlabeled",
            "split_seed": SPLIT_SEED,
            "unlisted_train_images": len(on_disk) - len(labels),
            "licence": "CC0",
        },
    )


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="binary",
        classes=CLASSES,
        folder="pcam-kaggle",
        expected=(LABELS_CSV, "train/<id>.tif", "test/<id>.tif (unlabeled, optional)"),
        reader=read_pcam_kaggle,
        present=pcam_kaggle_present,
        url=URL,
        access=(
            "needs a Kaggle login and accepting the competition rules at "
            f"https://www.kaggle.com/competitions/{COMPETITION}/rules (else 403); then "
            f"`kaggle competitions download -c {COMPETITION}` and unzip it into the dataset "
            "folder; CC0"
        ),
        metric="auc",
    )
)
