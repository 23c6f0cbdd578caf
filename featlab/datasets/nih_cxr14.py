"""``nih-cxr14``: NIH ChestX-ray14, 112,120 frontal chest X-rays with 14 findings (multi-label).

Layout as distributed (datasets.md sections 5 and 10)::

    <root>/Data_Entry_2017.csv  (or Data_Entry_2017_v2020.csv)
    <root>/train_val_list.txt   86,524 image names, one per line
    <root>/test_list.txt        25,596 image names
    <root>/images/<name>.png                 (NIH Box: images_0NN.tar.gz extract to images/)
    <root>/images_001/images/<name>.png ...  (Kaggle mirror)

The CSV header is malformed: unquoted commas inside ``OriginalImage[Width,Height]`` and
``OriginalImagePixelSpacing[x,y]`` plus a trailing comma (datasets.md section 5). Only the columns
before them are used, found by name, so the split header does not matter; the sex column is
``Patient Gender`` in some copies and ``Patient Sex`` in others and is not needed.

The official split is patient-level and has no validation part, so ``val`` is carved from
train_val by patient (no patient in both), seeded and stratified by whether the patient has any
finding; the method and seed are recorded in attrs.
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

NAME = "nih-cxr14"
# NIH order, with the underscore in Pleural_Thickening (datasets.md section 5).
FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
CSV_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")  # newer file preferred
COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
LISTS = {"train_val_list.txt": "train", "test_list.txt": "test"}
VAL_FRACTIONS = {"train": 0.9, "val": 0.1}
SPLIT_SEED = 0
EXPECTED = (
    "Data_Entry_2017.csv or Data_Entry_2017_v2020.csv",
    "train_val_list.txt",
    "test_list.txt",
    "images/<name>.png (Box) or images_0NN/images/<name>.png (Kaggle)",
)


def _csv_path(root: Path) -> Path | None:
    return next((root / n for n in CSV_NAMES if (root / n).is_file()), None)


def _read_entries(root: Path, path: Path) -> list[tuple[int, list[str]]]:
    """``(line, [image, finding labels, patient id])`` per data row of the Data_Entry CSV."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise missing_dataset_error(
                INFO, root, f"{path.name} has no column(s) {missing}; its header is {header}"
            )
        cols = [header.index(c) for c in COLUMNS]
        rows = []
        for row in reader:
            if not any(v.strip() for v in row):
                continue
            if len(row) <= max(cols):
                raise DatasetError(
                    f"{NAME}: {path.name} line {reader.line_num} has {len(row)} fields, fewer "
                    f"than the {max(cols) + 1} its header needs: {row}"
                )
            rows.append((reader.line_num, [row[c].strip() for c in cols]))
    return rows


def _multi_hot(image: str, findings: str) -> np.ndarray:
    """``|``-separated findings -> ``(14,)`` uint8; ``No Finding`` is all zeros."""
    vec = np.zeros(len(FINDINGS), dtype=np.uint8)
    names = [n.strip() for n in findings.split("|")]
    if names == [NO_FINDING]:
        return vec
    unknown = [n for n in names if n not in FINDINGS]
    if unknown:
        raise DatasetError(
            f"{NAME}: image {image!r} has finding(s) {unknown}; expected {NO_FINDING!r} alone or "
            f"'|'-separated names from {list(FINDINGS)}"
        )
    vec[[FINDINGS.index(n) for n in names]] = 1
    return vec


def _parse_rows(rows: list[tuple[int, list[str]]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image names, ``(n, 14)`` labels and ``(n,)`` patient ids; raises on repeats and bad ids."""
    first_line: dict[str, int] = {}
    patients = []
    for line, (image, _, patient) in rows:
        if image in first_line:
            raise DatasetError(
                f"{NAME}: image {image!r} appears twice in the Data_Entry CSV (lines "
                f"{first_line[image]} and {line}); re-download the CSV"
            )
        first_line[image] = line
        if not patient.isdigit():
            raise DatasetError(
                f"{NAME}: image {image!r} (line {line}) has Patient ID {patient!r}; expected "
                "an integer"
            )
        patients.append(int(patient))
    labels = np.stack([_multi_hot(image, f) for _, (image, f, _) in rows])
    return list(first_line), labels, np.asarray(patients, dtype=np.int64)


def _official_splits(root: Path, images: list[str]) -> np.ndarray:
    """``train``/``test`` per image from the two official lists; every image in exactly one."""
    split_of: dict[str, str] = {}
    list_of: dict[str, str] = {}
    for list_name, split in LISTS.items():
        if not (root / list_name).is_file():
            raise missing_dataset_error(INFO, root, f"{list_name} not found")
        for name in (root / list_name).read_text().split():
            if name in split_of:
                raise DatasetError(
                    f"{NAME}: image {name!r} is listed twice (in {list_of[name]} and "
                    f"{list_name}); the official lists name each image once"
                )
            split_of[name], list_of[name] = split, list_name
    unlisted = [i for i in images if i not in split_of]
    extra = sorted(set(split_of) - set(images))
    if unlisted or extra:
        raise DatasetError(
            f"{NAME}: the split lists and the Data_Entry CSV disagree: {len(unlisted)} CSV "
            f"image(s) in neither list (e.g. {unlisted[:3]}), {len(extra)} listed image(s) not "
            f"in the CSV (e.g. {extra[:3]}); use the lists and CSV of the same release"
        )
    return np.asarray([split_of[i] for i in images], dtype=object)


def _image_dirs(root: Path) -> list[Path]:
    """``images*/`` folders, each replaced by its inner ``images/`` where present (Kaggle)."""
    dirs = sorted(d for d in root.glob("images*") if d.is_dir())
    return [d / "images" if (d / "images").is_dir() else d for d in dirs]


def _locate_images(root: Path, images: list[str]) -> list[Path]:
    """The file of each image name, searched in every ``images*`` folder."""
    wanted = set(images)
    where: dict[str, Path] = {}
    for folder in _image_dirs(root):
        for entry in os.scandir(folder):
            if entry.name not in wanted:
                continue
            if entry.name in where:
                raise DatasetError(
                    f"{NAME}: image {entry.name!r} is in both {where[entry.name]} and {folder}; "
                    "keep one copy so no image is counted twice"
                )
            where[entry.name] = folder
    missing = [i for i in images if i not in where]
    if missing:
        raise DatasetError(
            f"{NAME}: {len(missing)} image(s) of the Data_Entry CSV were not found in "
            f"{[str(d) for d in _image_dirs(root)] or 'any images*/ folder'}: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. Extract all 12 images_0NN.tar.gz archives "
            f"into {root / 'images'} (or keep the Kaggle images_0NN/images/ folders)."
        )
    return [where[i] / i for i in images]


def _val_by_patient(
    labels: np.ndarray, patients: np.ndarray, splits: np.ndarray, seed: int
) -> np.ndarray:
    """Move a seeded 10 % of the train patients (stratified by any finding) to ``val``."""
    train = splits == "train"
    ids, row_patient = np.unique(patients[train], return_inverse=True)
    sick = np.zeros(len(ids), dtype=np.int32)
    np.maximum.at(sick, row_patient, labels[train].any(axis=1).astype(np.int32))
    out = splits.copy()
    out[train] = stratified_split(sick, VAL_FRACTIONS, seed=seed)[row_patient]
    return out


def read_nih_cxr14(root: str | os.PathLike[str], *, seed: int = SPLIT_SEED) -> SampleTable:
    """Read NIH ChestX-ray14 from its Box or Kaggle files under ``root``.

    Args:
        root: Folder holding the Data_Entry CSV, the two split lists and the ``images*`` folders.
        seed: Seed of the per-patient train/val split of train_val (recorded in attrs).

    Returns:
        Task ``multilabel``: labels ``(n, 14)`` uint8 in NIH order; ids are image names
        (``00000001_000.png``).

    Raises:
        DatasetError: For missing files or columns, unknown findings, repeated images, images in
            neither or both lists, or CSV images not found on disk (the image is named).
    """
    root = Path(root).expanduser()
    csv_path = _csv_path(root)
    if csv_path is None:
        raise missing_dataset_error(INFO, root, f"none of {list(CSV_NAMES)} found")
    rows = _read_entries(root, csv_path)
    if not rows:
        raise missing_dataset_error(INFO, root, f"{csv_path.name} has a header but no rows")
    images, labels, patients = _parse_rows(rows)
    splits = _val_by_patient(labels, patients, _official_splits(root, images), seed)
    paths = _locate_images(root, images)
    return SampleTable(
        name=NAME,
        ids=images,
        labels=labels,
        splits=splits.astype(str),
        sources=[str(p.resolve()) for p in paths],
        classes=FINDINGS,
        task="multilabel",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": "NIH Clinical Center ChestX-ray14",
            "root": str(root.resolve()),
            "labels_file": csv_path.name,
            "split_method": "official train_val_list.txt / test_list.txt; val = 10% of the "
            "train_val patients (grouped by Patient ID, stratified by any finding)",
            "split_seed": seed,
            "licence": "unrestricted use; link the NIH download site, acknowledge the NIH "
            "Clinical Center and cite Wang et al., CVPR 2017",
        },
    )


def _present(root: Path) -> bool:
    return _csv_path(root) is not None


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="multilabel",
        classes=FINDINGS,
        folder=NAME,
        expected=EXPECTED,
        reader=read_nih_cxr14,
        present=_present,
        url="https://nihcc.app.box.com/v/ChestXray-NIHCC",
        access="free, no login: download images_001.tar.gz ... images_012.tar.gz (extract into "
        "images/), Data_Entry_2017.csv, train_val_list.txt and test_list.txt from the Box folder; "
        "or `kaggle datasets download -d nih-chest-xrays/data` and unzip it into the dataset "
        "folder. Cite the CVPR 2017 paper and acknowledge the NIH Clinical Center",
        split_sizes={"train+val": 86524, "test": 25596},
        metric="mean_auc",
    )
)
