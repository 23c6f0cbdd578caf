"""``isic2019``: ISIC 2019 skin lesion classification training set, 8 diagnostic classes.

Layout as distributed (datasets.md sections 6 and 10)::

    <root>/ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <root>/ISIC_2019_Training_Input/<image>.jpg
    <root>/ISIC_2019_Training_Metadata.csv      optional: image,age_approx,...,lesion_id,sex

Paths are built from the ``image`` column + ``.jpg`` (some names carry a ``_downsampled`` suffix).
``UNK`` is empty in the training set (test only), so it is not a class here; a row with UNK = 1, or
not exactly one-hot, is an error. There is no official split: a seeded 60/20/20 train/val/test
split stratified by class, grouping the images of one ``lesion_id`` (several images per lesion)
when the metadata CSV is present (datasets.md section 6); method and seed are recorded.
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

NAME = "isic2019"
CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")  # ground-truth column order
UNKNOWN = "UNK"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
IMAGE_DIR = "ISIC_2019_Training_Input"
METADATA = "ISIC_2019_Training_Metadata.csv"
S3 = "https://isic-challenge-data.s3.amazonaws.com/2019"  # datasets.md section 6
SPLIT_SEED = 0
EXPECTED = (
    f"{GROUND_TRUTH} (image,{','.join(CLASSES)},{UNKNOWN})",
    f"{IMAGE_DIR}/<image>.jpg",
    f"{METADATA} (optional, for lesion_id)",
)


def _label(line: int, row: dict[str, str]) -> int:
    """The class index of one one-hot ground-truth row."""
    image = row["image"]
    try:
        values = [float(row[c]) for c in (*CLASSES, UNKNOWN)]
    except ValueError as err:
        raise DatasetError(
            f"{NAME}: image {image!r} ({GROUND_TRUTH} line {line}) has a non-numeric label: {err}"
        ) from err
    if values[-1] != 0:
        raise DatasetError(
            f"{NAME}: image {image!r} ({GROUND_TRUTH} line {line}) has {UNKNOWN}={values[-1]}; "
            f"{UNKNOWN} is a test-only class and is empty in the training ground truth"
        )
    if sorted(values) != [0.0] * len(CLASSES) + [1.0]:
        raise DatasetError(
            f"{NAME}: image {image!r} ({GROUND_TRUTH} line {line}) is not exactly one-hot over "
            f"{list(CLASSES)}: {values[:-1]}"
        )
    return values.index(1.0)


def _image_names(rows: list[tuple[int, dict[str, str]]]) -> list[str]:
    seen: dict[str, int] = {}
    for line, r in rows:
        if r["image"] in seen:
            raise DatasetError(
                f"{NAME}: image {r['image']!r} appears twice in {GROUND_TRUTH} (lines "
                f"{seen[r['image']]} and {line}); re-download it"
            )
        seen[r["image"]] = line
    return list(seen)


def _image_paths(root: Path, images: list[str]) -> list[Path]:
    """``<image>.jpg`` in the input folder for each name; raises naming the missing ones."""
    folder = root / IMAGE_DIR
    on_disk = set(os.listdir(folder)) if folder.is_dir() else set()
    missing = [i for i in images if f"{i}.jpg" not in on_disk]
    if missing:
        raise DatasetError(
            f"{NAME}: {len(missing)} image(s) of {GROUND_TRUTH} are missing from {folder}: "
            f"{', '.join(f'{i}.jpg' for i in missing[:5])}{' ...' if len(missing) > 5 else ''}. "
            f"Unzip {IMAGE_DIR}.zip there again."
        )
    return [folder / f"{i}.jpg" for i in images]


def _lesion_groups(root: Path, images: list[str]) -> tuple[list[str], str]:
    """A group key per image (its lesion_id, else the image itself) and how it was chosen."""
    if not (root / METADATA).is_file():
        return images, "no metadata CSV: each image its own group"
    rows = read_csv_rows(INFO, root, METADATA, ("image", "lesion_id"))
    lesion = {r["image"]: r["lesion_id"] for _, r in rows}
    # Images without a lesion_id (some rows leave it blank) form groups of their own.
    groups = [f"lesion:{lesion[i]}" if lesion.get(i) else f"image:{i}" for i in images]
    return groups, f"grouped by lesion_id from {METADATA} (blank lesion_id: own group)"


def read_isic2019(root: str | os.PathLike[str], *, seed: int = SPLIT_SEED) -> SampleTable:
    """Read the ISIC 2019 training set under ``root``.

    Args:
        root: Folder holding the ground-truth CSV and ``ISIC_2019_Training_Input/``.
        seed: Seed of the stratified, lesion-grouped 60/20/20 split (recorded in attrs).

    Returns:
        Task ``multiclass`` over the 8 training classes; ids are the ``image`` names.

    Raises:
        DatasetError: For missing files or columns, rows that are not exactly one-hot (or have
            UNK = 1), repeated images, or images missing on disk (the image is named).
    """
    root = Path(root).expanduser()
    if not (root / GROUND_TRUTH).is_file():
        raise missing_dataset_error(INFO, root, f"{GROUND_TRUTH} not found")
    rows = read_csv_rows(INFO, root, GROUND_TRUTH, ("image", *CLASSES, UNKNOWN))
    images = _image_names(rows)
    labels = np.asarray([_label(line, r) for line, r in rows], dtype=np.int32)
    paths = _image_paths(root, images)
    groups, grouping = _lesion_groups(root, images)
    # Stratify groups by the class of their first image, then give every image its group's split.
    _, first, group_of = np.unique(groups, return_index=True, return_inverse=True)
    splits = stratified_split(labels[first], DEFAULT_FRACTIONS, seed=seed)[group_of]
    return SampleTable(
        name=NAME,
        ids=images,
        labels=labels,
        splits=splits,
        sources=[str(p.resolve()) for p in paths],
        classes=CLASSES,
        task="multiclass",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": "ISIC 2019 Challenge training data",
            "root": str(root.resolve()),
            "split_method": f"stratified by class, 60/20/20 train/val/test, {grouping}",
            "split_seed": seed,
            "licence": "CC BY-NC 4.0 (attribution as on the ISIC 2019 data page)",
        },
    )


def _present(root: Path) -> bool:
    return (root / GROUND_TRUTH).is_file() and (root / IMAGE_DIR).is_dir()


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="multiclass",
        classes=CLASSES,
        folder=NAME,
        expected=EXPECTED,
        reader=read_isic2019,
        present=_present,
        url=f"{S3}/{IMAGE_DIR}.zip",
        access=f"CC BY-NC 4.0, no login: download {S3}/{IMAGE_DIR}.zip and unzip it into the "
        f"dataset folder, plus {S3}/{GROUND_TRUTH} and (for lesion-grouped splits) {S3}/{METADATA}",
        metric="balanced_accuracy",
    )
)
