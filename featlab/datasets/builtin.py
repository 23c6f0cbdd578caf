"""Registers the built-in datasets: importing this module fills the registry."""

from __future__ import annotations

from featlab.datasets import (  # noqa: F401 - imported for their register_dataset calls
    aptos,
    brain_mri,
    chest_xray,
    chexpert,
    isic,
    medmnist,
    nih_cxr14,
    pcam,
    pcam_kaggle,
)
from featlab.datasets.digits import load_digits_table
from featlab.datasets.registry import DatasetInfo, register_dataset

register_dataset(
    DatasetInfo(
        name="digits",
        task="multiclass",
        classes=tuple(str(d) for d in range(10)),
        folder="digits",
        expected=("nothing: ships inside scikit-learn",),
        reader=lambda root: load_digits_table(),
        present=lambda root: True,
        url="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        access="bundled with scikit-learn; no download",
        split_sizes={"train": 1078, "val": 360, "test": 359},
    )
)
