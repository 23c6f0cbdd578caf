"""``chexpert-small``: CheXpert-v1.0-small chest radiographs, 14 observations (multi-label).

Layout as distributed (datasets.md sections 7 and 10)::

    <root>/CheXpert-v1.0-small/train.csv   223,414 rows
    <root>/CheXpert-v1.0-small/valid.csv   234 rows, labelled by radiologists
    <root>/CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg

``Path`` includes the ``CheXpert-v1.0-small/`` prefix, so it is resolved relative to ``<root>``,
the parent of that folder. Label cells are ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain
and blank for not mentioned (datasets.md section 7). Blank becomes 0; uncertain follows the
``uncertain`` option: ``ignore`` (U-Ignore: -1, that entry unknown), ``ones`` (U-Ones) or
``zeros`` (U-Zeros). ``findings`` picks the 5 competition observations (default) or all 14.

valid.csv becomes the ``test`` split (the real test set is hidden). ``val`` is carved from
train.csv by patient (no patient in both), seeded and stratified by whether the patient has any
positive competition finding; it does not depend on the options, so every variant shares it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featlab.datasets._files import read_csv_rows
from featlab.datasets.images import FileImages
from featlab.datasets.registry import DatasetInfo, missing_dataset_error, register_dataset
from featlab.datasets.splits import stratified_split
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError, UnknownDatasetError

NAME = "chexpert-small"
FOLDER = "CheXpert-v1.0-small"
# The 14 label columns in CSV order (columns 6..19 of train.csv; datasets.md section 7).
ALL_FINDINGS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
FINDINGS = {"competition": COMPETITION, "all": ALL_FINDINGS}
UNCERTAIN = {"ignore": -1, "ones": 1, "zeros": 0}  # value an uncertain (-1.0) cell becomes
CELLS = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}  # blank: not mentioned
CSV_SPLITS = {"train.csv": "train", "valid.csv": "test"}
VAL_FRACTIONS = {"train": 0.9, "val": 0.1}
SPLIT_SEED = 0
EXPECTED = (
    f"{FOLDER}/train.csv",
    f"{FOLDER}/valid.csv",
    f"{FOLDER}/{{train,valid}}/patientNNNNN/studyN/viewN_frontal.jpg (CSV Path is relative "
    "to this folder)",
)


def _cells(csv_name: str, line: int, row: dict[str, str]) -> list[int]:
    """The 14 raw label values of one row: 1, 0 or -1 (uncertain); blank is 0."""
    out = []
    for finding in ALL_FINDINGS:
        value = row[finding]
        if value not in CELLS:
            raise DatasetError(
                f"{NAME}: {row['Path']!r} ({csv_name} line {line}) has {finding}={value!r}; "
                "expected 1.0, 0.0, -1.0 or blank"
            )
        out.append(CELLS[value])
    return out


def _patient(csv_name: str, line: int, path: str) -> str:
    """``patientNNNNN`` from ``CheXpert-v1.0-small/train/patientNNNNN/studyN/...``."""
    patient = next((p for p in path.split("/") if p.startswith("patient")), None)
    if patient is None:
        raise DatasetError(
            f"{NAME}: Path {path!r} ({csv_name} line {line}) has no patientNNNNN folder; expected "
            f"{FOLDER}/<train|valid>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg"
        )
    return patient


def _check_images(root: Path, paths: list[str]) -> None:
    missing = [p for p in paths if not (root / p).is_file()]
    if missing:
        raise DatasetError(
            f"{NAME}: {len(missing)} image(s) named in the CSVs are missing under {root} (Path "
            f"is resolved relative to the folder holding {FOLDER}/): {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. Unzip {FOLDER}.zip there again."
        )


def _val_by_patient(
    positive: np.ndarray, patients: np.ndarray, splits: np.ndarray, seed: int
) -> np.ndarray:
    """Move a seeded 10 % of the train patients (stratified by any positive) to ``val``."""
    train = splits == "train"
    ids, row_patient = np.unique(patients[train], return_inverse=True)
    sick = np.zeros(len(ids), dtype=np.int32)
    np.maximum.at(sick, row_patient, positive[train].astype(np.int32))
    out = splits.copy()
    out[train] = stratified_split(sick, VAL_FRACTIONS, seed=seed)[row_patient]
    return out


def read_chexpert(
    root: str | os.PathLike[str],
    *,
    uncertain: str = "ignore",
    findings: str = "competition",
    seed: int = SPLIT_SEED,
) -> SampleTable:
    """Read CheXpert-v1.0-small from ``root`` (the folder holding ``CheXpert-v1.0-small/``).

    Args:
        root: Parent folder of ``CheXpert-v1.0-small/``.
        uncertain: Uncertain-label policy: ``ignore`` (-1 = unknown entry), ``ones`` or ``zeros``.
        findings: ``competition`` (5 observations) or ``all`` (14).
        seed: Seed of the per-patient train/val split (recorded in attrs).

    Returns:
        Task ``multilabel``; labels ``(n, L)`` uint8, or int8 with -1 entries under ``ignore``;
        ids are the CSV ``Path`` values.

    Raises:
        UnknownDatasetError: For an unknown option value.
        DatasetError: For missing files or columns, cells other than 1.0/0.0/-1.0/blank,
            repeated paths, or images missing on disk (the Path is named).
    """
    if uncertain not in UNCERTAIN or findings not in FINDINGS:
        raise UnknownDatasetError(
            f"{NAME}: uncertain={uncertain!r}, findings={findings!r}; expected uncertain in "
            f"{list(UNCERTAIN)} and findings in {list(FINDINGS)}"
        )
    root = Path(root).expanduser()
    paths, raw, patients, splits = [], [], [], []
    for csv_name, split in CSV_SPLITS.items():
        if not (root / FOLDER / csv_name).is_file():
            raise missing_dataset_error(INFO, root, f"{FOLDER}/{csv_name} not found")
        for line, row in read_csv_rows(INFO, root, f"{FOLDER}/{csv_name}", ("Path", *ALL_FINDINGS)):
            paths.append(row["Path"])
            raw.append(_cells(csv_name, line, row))
            patients.append(_patient(csv_name, line, row["Path"]))
            splits.append(split)
    if not paths:
        raise missing_dataset_error(INFO, root, "train.csv and valid.csv have no rows")
    _check_images(root, paths)
    cells = np.asarray(raw, dtype=np.int8).reshape(len(paths), len(ALL_FINDINGS))
    competition = [ALL_FINDINGS.index(f) for f in COMPETITION]
    positive = (cells[:, competition] == 1).any(axis=1)
    split_arr = _val_by_patient(positive, np.asarray(patients), np.asarray(splits, object), seed)
    labels = cells[:, [ALL_FINDINGS.index(f) for f in FINDINGS[findings]]]
    labels[labels == -1] = UNCERTAIN[uncertain]
    return SampleTable(
        name=NAME,
        ids=paths,  # SampleTable rejects repeated Paths, naming them
        labels=labels,
        splits=split_arr.astype(str),
        sources=[str((root / p).resolve()) for p in paths],
        classes=FINDINGS[findings],
        task="multilabel",
        images=FileImages([str(root / p) for p in paths]),
        attrs={
            "source": "CheXpert-v1.0-small (Stanford ML Group)",
            "root": str(root.resolve()),
            "uncertain": uncertain,
            "findings": findings,
            "label_values": "1 positive, 0 negative or not mentioned (blank), -1 uncertain "
            "(unknown; U-Ignore only)",
            "split_method": "valid.csv -> test; val = 10% of the train.csv patients (grouped by "
            "patient, stratified by any positive competition finding)",
            "split_seed": seed,
            "licence": "Stanford University School of Medicine CheXpert Dataset Research Use "
            "Agreement",
        },
    )


def _present(root: Path, **_: str) -> bool:
    return all((root / FOLDER / n).is_file() for n in CSV_SPLITS)


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="multilabel",
        classes=COMPETITION,
        folder=NAME,
        expected=EXPECTED,
        reader=read_chexpert,
        present=_present,
        url="https://stanfordmlgroup.github.io/competitions/chexpert/",
        access="Stanford Research Use Agreement: register on the CheXpert page, download "
        f"{FOLDER}.zip from the link you are sent and unzip it into the dataset folder (so it "
        f"holds {FOLDER}/)",
        split_sizes={"train+val (train.csv)": 223414, "test (valid.csv)": 234},
        metric="mean_auc",
        options={"uncertain": tuple(UNCERTAIN), "findings": tuple(FINDINGS)},
    )
)
