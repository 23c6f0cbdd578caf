"""SampleTable: the one description of a dataset that every reader produces and the store keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from featlab.datasets.images import ImageSource
from featlab.errors import DatasetError

Task = Literal["binary", "multiclass", "ordinal", "multilabel"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "ordinal", "multilabel")
SPLITS: tuple[str, ...] = ("train", "val", "test", "")


@dataclass(frozen=True, eq=False)
class SampleTable:
    """Samples of one dataset, aligned row by row.

    Attributes:
        name: Dataset name as stored (``"digits"``, ``"pcam"``, ``"folder-xyz"``).
        ids: ``(n,)`` str, unique, stable join key (e.g. ``"train/000123"``).
        labels: ``(n,)`` int32 class index (-1 = unknown), or ``(n, L)`` 0/1 for multi-label:
            uint8, or int8 when some entries are -1 (that label unknown for that sample).
        splits: ``(n,)`` str, each one of ``train``, ``val``, ``test`` or ``""`` (unlabeled).
        sources: ``(n,)`` str, the file path or ``"file.h5#row"`` each sample was read from.
        classes: Class names; ``len(classes)`` is the number of classes (or labels).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        images: Reads the pixels of a row; picklable, so DataLoader workers can use it.
        attrs: Provenance stored with the dataset (source, root, split seed and method, ...).

    Raises:
        DatasetError: On mismatched lengths, duplicated ids, unknown splits or labels outside the
            class range; the message names the offending sample.
    """

    name: str
    ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    sources: np.ndarray
    classes: tuple[str, ...]
    task: str
    images: ImageSource | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", np.asarray(self.ids, dtype=str))
        object.__setattr__(self, "splits", np.asarray(self.splits, dtype=str))
        object.__setattr__(self, "sources", np.asarray(self.sources, dtype=str))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "labels", self._label_array(np.asarray(self.labels)))
        self._validate()

    def _label_array(self, labels: np.ndarray) -> np.ndarray:
        """``(n,)`` labels as int32; ``(n, L)`` as uint8, or int8 when an entry is -1 (unknown).

        Multi-label entries must be 0, 1 or -1 (that label unknown for that sample, e.g. CheXpert's
        uncertain labels under U-Ignore); checked before the cast so nothing wraps around.
        """
        if labels.ndim != 2:
            return labels.astype(np.int32, copy=False)
        bad = ~np.isin(labels, (-1, 0, 1))
        if bad.any():
            i, j = (int(k) for k in np.argwhere(bad)[0])
            who = repr(str(self.ids[i])) if i < len(self.ids) else f"row {i}"
            raise DatasetError(
                f"{self.name}: sample {who} has multi-label entry {labels[i, j]} in column {j}; "
                "entries must be 1 (present), 0 (absent) or -1 (unknown)"
            )
        return labels.astype(np.int8 if (labels < 0).any() else np.uint8, copy=False)

    def __len__(self) -> int:
        return len(self.ids)

    def _validate(self) -> None:
        n = len(self.ids)
        for what, arr in (
            ("labels", self.labels),
            ("splits", self.splits),
            ("sources", self.sources),
        ):
            if len(arr) != n:
                raise DatasetError(f"{self.name}: {len(arr)} {what} for {n} ids; they must align")
        if self.images is not None and len(self.images) != n:
            raise DatasetError(f"{self.name}: {len(self.images)} images for {n} ids")
        if self.task not in TASKS:
            raise DatasetError(f"{self.name}: task {self.task!r} is not one of {TASKS}")
        uniq, counts = np.unique(self.ids, return_counts=True)
        if len(uniq) != n:
            dup = uniq[counts > 1][:5].tolist()
            raise DatasetError(f"{self.name}: sample ids must be unique; duplicated: {dup}")
        bad_split = ~np.isin(self.splits, SPLITS)
        if bad_split.any():
            i = int(np.flatnonzero(bad_split)[0])
            raise DatasetError(
                f"{self.name}: sample {str(self.ids[i])!r} has split {str(self.splits[i])!r}; "
                f"expected one of {SPLITS[:-1]} or '' (unlabeled)"
            )
        self._validate_labels()

    def _validate_labels(self) -> None:
        k = len(self.classes)
        if self.task == "multilabel":
            if self.labels.ndim != 2 or self.labels.shape[1] != k:
                raise DatasetError(
                    f"{self.name}: multilabel labels must be (n, {k}); got {self.labels.shape}"
                )
            return
        if self.labels.ndim != 1:
            raise DatasetError(f"{self.name}: labels must be (n,); got {self.labels.shape}")
        out = (self.labels < -1) | (self.labels >= k)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DatasetError(
                f"{self.name}: sample {str(self.ids[i])!r} has label {int(self.labels[i])}, "
                f"outside 0..{k - 1} for classes {list(self.classes)} (-1 means unknown)"
            )

    def split_counts(self) -> dict[str, int]:
        """Number of samples per split, e.g. ``{"train": 1078, "val": 360, "test": 359}``."""
        names, counts = np.unique(self.splits, return_counts=True)
        return {str(s) or "unlabeled": int(c) for s, c in zip(names, counts, strict=True)}

    def describe(self) -> dict[str, Any]:
        """The dataset spec stored in the store's attrs (JSON-serialisable)."""
        return {
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "n_samples": len(self),
            "split_counts": self.split_counts(),
            **self.attrs,
        }


def task_for(n_classes: int) -> str:
    """Task type of a single-label dataset with ``n_classes`` classes."""
    return "binary" if n_classes == 2 else "multiclass"
