"""``csv:PATH``: a CSV manifest with columns ``path,label[,split]``.

Relative paths are resolved against the CSV's folder. Labels are class names (any strings); an
empty label means unknown (-1). Without a ``split`` column a seeded, stratified 60/20/20 split is
assigned and recorded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from featlab.datasets.images import FileImages
from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.datasets.table import SPLITS, SampleTable, task_for
from featlab.errors import DatasetError

REQUIRED = ("path", "label")


def _class_order(names: set[str]) -> list[str]:
    # Integer-like labels sort numerically ("2" before "10"), so class index == value.
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def read_manifest(path: str | Path, *, name: str | None = None, seed: int = 0) -> SampleTable:
    """Read a ``path,label[,split]`` CSV manifest into a SampleTable.

    Raises:
        DatasetError: For a missing file, missing columns, unknown split names, or rows whose
            image does not exist (the row number and path are named).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(
            f"CSV manifest {str(path)!r} does not exist; expected columns path,label[,split]"
        )
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DatasetError(
                f"{path}: missing column(s) {missing}; found header {header}; "
                "expected path,label[,split]"
            )
        rows: list[dict[str, str]] = []
        lines: list[int] = []  # the file line of each row (blank lines are skipped)
        for r in reader:
            rows.append({k.strip(): (v or "").strip() for k, v in r.items() if k})
            lines.append(reader.line_num)
    if not rows:
        raise DatasetError(f"{path}: the manifest has a header but no rows")
    base = path.parent
    files = []
    for i, r in zip(lines, rows, strict=True):
        f = Path(r["path"]).expanduser()
        f = f if f.is_absolute() else base / f
        if not f.is_file():
            raise DatasetError(f"{path}:{i}: image {r['path']!r} not found (looked at {f})")
        files.append(f)
    classes = _class_order({r["label"] for r in rows if r["label"]})
    labels = np.array([classes.index(r["label"]) if r["label"] else -1 for r in rows], np.int32)
    attrs: dict = {"source": "csv", "root": str(path.resolve())}
    if "split" in header:
        splits = np.array([r["split"] for r in rows])
        bad = [str(s) for s in np.unique(splits) if s not in SPLITS]
        if bad:
            line = lines[int(np.flatnonzero(~np.isin(splits, SPLITS))[0])]
            raise DatasetError(
                f"{path}:{line}: unknown split value(s) {bad}; use train, val, test or ''"
            )
        attrs["split_method"] = "manifest"
    else:
        splits = stratified_split(labels, DEFAULT_FRACTIONS, seed=seed)
        attrs.update(split_method="stratified per class, 60/20/20 train/val/test", split_seed=seed)
    return SampleTable(
        name=name or f"csv-{path.stem}",
        ids=[r["path"] for r in rows],
        labels=labels,
        splits=splits,
        sources=[str(f.resolve()) for f in files],
        classes=tuple(classes),
        task=task_for(len(classes)),
        images=FileImages([str(f) for f in files]),
        attrs=attrs,
    )
