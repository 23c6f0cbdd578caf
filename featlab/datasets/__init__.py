"""Datasets: readers that turn data on disk (or in memory) into a :class:`SampleTable`."""

from __future__ import annotations

from featlab.datasets.arrays import table_from_arrays, table_from_hdf5
from featlab.datasets.digits import load_digits_table
from featlab.datasets.folder import read_image_folder
from featlab.datasets.manifest import read_manifest
from featlab.datasets.table import SampleTable
from featlab.errors import UnknownDatasetError

__all__ = [
    "SampleTable",
    "load_dataset",
    "load_digits_table",
    "read_image_folder",
    "read_manifest",
    "table_from_arrays",
    "table_from_hdf5",
]

DATASET_FORMS = ("digits", "folder:PATH", "csv:PATH")


def load_dataset(spec: str) -> SampleTable:
    """Resolve a dataset as a user types it: ``digits``, ``folder:PATH`` or ``csv:PATH``.

    Raises:
        UnknownDatasetError: For any other name.
        DatasetError: When the data is missing or malformed.
    """
    if spec == "digits":
        return load_digits_table()
    kind, sep, rest = spec.partition(":")
    if sep and kind == "folder":
        return read_image_folder(rest)
    if sep and kind == "csv":
        return read_manifest(rest)
    raise UnknownDatasetError(f"unknown dataset {spec!r}; use one of {', '.join(DATASET_FORMS)}")
