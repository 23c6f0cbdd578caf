"""``chest-xray-pneumonia``: Kermany et al. paediatric chest X-rays, NORMAL vs PNEUMONIA.

Layout as distributed (datasets.md sections 4 and 10)::

    <root>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg

The Kaggle archive often extracts with a duplicated nested ``chest_xray/chest_xray/`` tree, plus
``__MACOSX`` folders and ``.DS_Store`` files (datasets.md section 4). Exactly one tree is read (the
outer one when it is complete), so no image is counted twice; hidden files and non-images are
skipped. Splits are the official folders (train 5,216 / val 16 / test 624).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featlab.datasets._files import images_in
from featlab.datasets.folder import IMAGE_SUFFIXES
from featlab.datasets.images import FileImages
from featlab.datasets.registry import DatasetInfo, missing_dataset_error, register_dataset
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

NAME = "chest-xray-pneumonia"
CLASSES = ("NORMAL", "PNEUMONIA")  # 0, 1: alphabetical folder order (datasets.md section 4)
SPLITS = ("train", "val", "test")
TREES = ("chest_xray", "chest_xray/chest_xray")  # outer first; the nested copy is a zip artefact
EXPECTED = ("chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg",)


def _missing_class_dirs(tree: Path) -> list[str]:
    return [f"{s}/{c}" for s in SPLITS for c in CLASSES if not (tree / s / c).is_dir()]


def _find_tree(root: Path) -> Path:
    """The first complete ``{train,val,test}/{NORMAL,PNEUMONIA}`` tree among :data:`TREES`."""
    for rel in TREES:
        if (root / rel).is_dir() and not _missing_class_dirs(root / rel):
            return root / rel
    missing = _missing_class_dirs(root / TREES[0])
    raise missing_dataset_error(
        INFO, root, f"no complete chest_xray tree; chest_xray/ lacks {missing}"
    )


def read_chest_xray(root: str | os.PathLike[str]) -> SampleTable:
    """Read the Kermany chest X-ray set from ``root/chest_xray`` (or its nested duplicate).

    Returns:
        Task ``binary`` (NORMAL = 0, PNEUMONIA = 1), official splits; ids are paths relative to
        the tree, e.g. ``train/NORMAL/IM-0115-0001.jpeg``.

    Raises:
        DatasetError: If no complete tree exists or it holds no images.
    """
    root = Path(root).expanduser()
    tree = _find_tree(root)
    ids, paths, labels, splits = [], [], [], []
    for split in SPLITS:
        for label, cls in enumerate(CLASSES):
            for path in images_in(tree / split / cls):
                ids.append(f"{split}/{cls}/{path.name}")
                paths.append(path)
                labels.append(label)
                splits.append(split)
    if not paths:
        raise DatasetError(
            f"{NAME}: the class folders under {tree} hold no images "
            f"({sorted(IMAGE_SUFFIXES)}); unzip the Kaggle archive there again"
        )
    return SampleTable(
        name=NAME,
        ids=ids,
        labels=np.asarray(labels, dtype=np.int32),
        splits=splits,
        sources=[str(p.resolve()) for p in paths],
        classes=CLASSES,
        task="binary",
        images=FileImages([str(p) for p in paths]),
        attrs={
            "source": "Kaggle paultimothymooney/chest-xray-pneumonia (Kermany et al., Mendeley "
            "doi:10.17632/rscbjbr9sj.2)",
            "root": str(root.resolve()),
            "tree": tree.relative_to(root).as_posix(),
            "split_method": "official folders train/val/test",
            "licence": "CC BY 4.0",
        },
    )


def _present(root: Path) -> bool:
    return (root / TREES[0]).is_dir()


INFO = register_dataset(
    DatasetInfo(
        name=NAME,
        task="binary",
        classes=CLASSES,
        folder=NAME,
        expected=EXPECTED,
        reader=read_chest_xray,
        present=_present,
        url="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
        access="CC BY 4.0; needs a Kaggle login: `kaggle datasets download -d "
        "paultimothymooney/chest-xray-pneumonia` and unzip it into the dataset folder (the nested "
        "chest_xray/chest_xray copy and __MACOSX may stay)",
        split_sizes={"train": 5216, "val": 16, "test": 624},
        metric="auc",
    )
)
