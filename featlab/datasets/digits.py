"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default dataset.

It ships inside scikit-learn, so the quick start runs with no download. The 8x8 images (values
0..16) are scaled to 0..255 and upsampled 4x by pixel replication to 32x32, so every original pixel
value is kept exactly; the model's own preprocessing then resizes them to its input size.
"""

from __future__ import annotations

import numpy as np

from featlab.datasets.images import ArrayImages
from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.datasets.table import SampleTable

UPSAMPLE = 4
SPLIT_SEED = 0


def load_digits_table(*, seed: int = SPLIT_SEED) -> SampleTable:
    """The 1,797 digits as a SampleTable with a seeded, stratified 60/20/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = images.repeat(UPSAMPLE, axis=1).repeat(UPSAMPLE, axis=2)  # (n, 32, 32), exact values
    labels = bunch.target.astype(np.int32)
    n = len(labels)
    return SampleTable(
        name="digits",
        ids=[f"{i:04d}" for i in range(n)],
        labels=labels,
        splits=stratified_split(labels, DEFAULT_FRACTIONS, seed=seed),
        sources=[f"sklearn.datasets.load_digits#{i}" for i in range(n)],
        classes=tuple(str(c) for c in range(10)),
        task="multiclass",
        images=ArrayImages(images),
        attrs={
            "source": "sklearn.datasets.load_digits",
            "preprocessing": f"0..16 scaled to 0..255, {UPSAMPLE}x pixel replication to 32x32",
            "split_method": "stratified per class, 60/20/20 train/val/test",
            "split_seed": seed,
        },
    )
