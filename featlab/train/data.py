"""Training images: augmentations seeded per (seed, epoch, sample), order seeded per epoch.

Every random draw of a sample's augmentation comes from a generator seeded with
``(seed, epoch, row)``, and every epoch's order from ``(seed, epoch)``. So a run resumed after a
kill sees exactly the batches an uninterrupted run sees, whatever the number of loader workers.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featlab.datasets.images import ImageSource
from featlab.errors import BadImageError


def item_seed(seed: int, epoch: int, row: int) -> int:
    """A 32-bit seed for one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(1)[0])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, python and numpy global generators for a block, restoring them afterwards.

    torchvision transforms draw from torch's generator; some (lightly's, timm's) from ``random``
    or numpy's, so all three are seeded.
    """
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class TrainImages(Dataset):
    """Images of ``rows`` through a random ``transform``, optionally with their targets.

    Args:
        images: The dataset's image source (``SampleTable.images``).
        rows: ``(n,)`` int sample rows to train on.
        transform: PIL image -> tensor (or a tuple/list of views, for multi-view SSL).
        seed: Seed of the augmentations.
        targets: ``(n,)`` or ``(n, L)`` targets aligned with ``rows``; None for unlabelled data.
    """

    def __init__(
        self,
        images: ImageSource,
        rows: np.ndarray,
        transform: Callable[[Any], Any],
        *,
        seed: int,
        targets: np.ndarray | None = None,
    ) -> None:
        self.images, self.rows = images, np.asarray(rows, dtype=np.int64)
        self.transform, self.seed, self.epoch = transform, int(seed), 0
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets))
        if self.targets is not None and len(self.targets) != len(self.rows):
            raise ValueError(f"{len(self.targets)} targets for {len(self.rows)} rows")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        row = int(self.rows[i])
        img = self.images.load([row])[0]
        if isinstance(img, BadImageError):
            raise BadImageError(f"sample row {row} cannot be read for training: {img}")
        with seeded(item_seed(self.seed, self.epoch, row)):
            x = self.transform(img)
        return x if self.targets is None else (x, self.targets[i])


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding and augmenting are single-threaded PIL work


def epoch_loader(
    dataset: TrainImages,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
    drop_last: bool = False,
    workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The batches of one epoch, in an order fixed by ``(seed, epoch)``."""
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(item_seed(seed, epoch, -1 & 0xFFFFFFFF))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=generator,
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        persistent_workers=False,
    )
