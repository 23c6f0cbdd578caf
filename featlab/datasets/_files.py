"""File helpers shared by the dataset readers: CSV tables and image listings."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

from featlab.datasets.folder import IMAGE_SUFFIXES
from featlab.datasets.registry import missing_dataset_error

if TYPE_CHECKING:
    from featlab.datasets.registry import DatasetInfo


def read_csv_rows(
    info: DatasetInfo, root: Path, name: str, columns: tuple[str, ...]
) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of each row of ``root/name``, cells stripped.

    Raises:
        DatasetError: A required column is missing (the message shows the header found).
    """
    with (root / name).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in columns if c not in header]
        if missing:
            raise missing_dataset_error(
                info, root, f"{name} has no column(s) {missing}; its header is {header}"
            )
        return [
            (reader.line_num, {k.strip(): (v or "").strip() for k, v in r.items() if k})
            for r in reader
        ]


def images_in(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden files (``.DS_Store``, ``._x``) skipped."""
    return sorted(
        folder / e.name
        for e in os.scandir(folder)
        if e.is_file()
        and not e.name.startswith(".")
        and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
    )
