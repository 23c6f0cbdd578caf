"""Deterministic, stratified split assignment for datasets that ship without official splits."""

from __future__ import annotations

import numpy as np

from featlab.errors import InvalidArgumentError

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float] | None = None, *, seed: int = 0
) -> np.ndarray:
    """Assign each sample to a split, keeping class proportions in every split.

    Within each class the samples are shuffled with ``seed`` and cut by ``fractions`` (rounded so
    the counts add up); the same labels and seed always give the same assignment.

    Args:
        labels: ``(n,)`` int class indices; ``-1`` (unknown) samples get split ``""``.
        fractions: Split name to fraction; must sum to 1. Default 60/20/20 train/val/test.
        seed: Seed of the per-class shuffle; record it with the dataset.

    Returns:
        ``(n,)`` str array of split names.

    Raises:
        ValueError: If the fractions do not sum to 1 or a fraction is negative.
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    values = np.array(list(fractions.values()), dtype=float)
    if (values < 0).any() or not np.isclose(values.sum(), 1.0):
        raise InvalidArgumentError(f"split fractions must be >= 0 and sum to 1; got {fractions}")
    labels = np.asarray(labels)
    out = np.full(len(labels), "", dtype=object)
    rng = np.random.default_rng(seed)
    for cls in np.unique(labels[labels >= 0]):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        cuts = np.round(np.cumsum(values) * len(rows)).astype(int)
        for name, lo, hi in zip(fractions, np.r_[0, cuts[:-1]], cuts, strict=True):
            out[rows[lo:hi]] = name
    return out.astype(str)
