"""Datasets: readers that turn data on disk (or in memory) into a :class:`SampleTable`."""

from __future__ import annotations

import os
from typing import Any

from featlab.datasets.arrays import table_from_arrays, table_from_hdf5
from featlab.datasets.digits import load_digits_table
from featlab.datasets.folder import read_image_folder
from featlab.datasets.manifest import read_manifest
from featlab.datasets.registry import (
    DatasetInfo,
    DownloadFile,
    datasets_dir,
    get_dataset_info,
    list_datasets,
    load_registered,
    register_dataset,
)
from featlab.datasets.table import SampleTable
from featlab.errors import UnknownDatasetError

__all__ = [
    "DatasetInfo",
    "DownloadFile",
    "SampleTable",
    "datasets_dir",
    "get_dataset_info",
    "list_datasets",
    "load_dataset",
    "load_digits_table",
    "read_image_folder",
    "read_manifest",
    "register_dataset",
    "table_from_arrays",
    "table_from_hdf5",
]

DATASET_FORMS = ("<registered name>[@size]", "folder:PATH", "csv:PATH")


def load_dataset(
    spec: str, *, data_root: str | os.PathLike[str] | None = None, **options: Any
) -> SampleTable:
    """Resolve a dataset as a user types it.

    Args:
        spec: A registered name (``digits``, ``pcam``, ``pneumoniamnist@224``; see
            ``featlab datasets``), ``folder:PATH`` or ``csv:PATH``.
        data_root: The folder holding a registered dataset's files, instead of
            ``<datasets-dir>/<folder>``.
        **options: Reader options of the dataset (e.g. ``uncertain="ones"`` for CheXpert).

    Raises:
        UnknownDatasetError: For unknown names, sizes or options.
        DatasetError: When the data is missing or malformed.
    """
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("folder", "csv"):
        if data_root is not None or options:
            raise UnknownDatasetError(f"{kind}:PATH takes no --data-root or reader options")
        return read_image_folder(rest) if kind == "folder" else read_manifest(rest)
    if sep:
        raise UnknownDatasetError(
            f"unknown dataset form {spec!r}; use one of {', '.join(DATASET_FORMS)}"
        )
    return load_registered(spec, data_root=data_root, **options)
