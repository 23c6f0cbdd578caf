"""Batches of uint8 images decoded in DataLoader workers.

Workers read a whole batch of rows at once (one slice for array-backed data), apply the geometric
part of the model's eval transform (resize, crop) and return uint8; normalisation happens on the
device. An unreadable image does not kill the worker: it comes back as an error for that row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featlab.datasets.images import ImageSource
from featlab.errors import BadImageError
from featlab.extractors.spec import ModelSpec


def geometric_transform(spec: ModelSpec):
    """timm's eval transform for ``spec`` without ``ToTensor``/``Normalize``.

    Using timm's own Resize/CenterCrop keeps the pixels identical to timm's reference pipeline.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    full = create_transform(
        input_size=spec.input_size,
        interpolation=spec.interpolation,
        crop_pct=spec.crop_pct,
        crop_mode=spec.crop_mode,
        mean=spec.mean,
        std=spec.std,
        is_training=False,
    )
    steps = list(full.transforms)
    tail = [type(t).__name__ for t in steps[-2:]]
    if tail[-1] != "Normalize" or "ToTensor" not in tail[0]:
        raise RuntimeError(f"unexpected timm eval transform ending in {tail}; update featlab")
    return T.Compose(steps[:-2])


def resize_side(spec: ModelSpec) -> int:
    """The side timm's eval transform resizes to before cropping: ``floor(size / crop_pct)``."""
    return math.floor(max(spec.input_size[1:]) / spec.crop_pct)


def with_draft_decoding(images: ImageSource, spec: ModelSpec) -> ImageSource:
    """``images`` set to decode large JPEGs in draft mode for ``spec``'s resize, if it can.

    Sources without ``with_draft`` (arrays, HDF5) are returned unchanged.
    """
    with_draft = getattr(images, "with_draft", None)
    return with_draft(resize_side(spec)) if with_draft is not None else images


@dataclass
class Batch:
    """One decoded batch: ``rows (b,)``, ``images (b, 3, H, W) uint8``, per-row errors."""

    rows: np.ndarray
    images: torch.Tensor
    errors: dict[int, str]

    def pin_memory(self) -> Batch:
        self.images = self.images.pin_memory()
        return self


class BatchDataset(Dataset):
    """Item ``i`` is the whole batch ``batches[i]`` (lists of sample rows)."""

    def __init__(self, images: ImageSource, batches: list[np.ndarray], spec: ModelSpec) -> None:
        self.images, self.batches = with_draft_decoding(images, spec), batches
        self.transform = geometric_transform(spec)
        self.shape = (spec.input_size[1], spec.input_size[2], 3)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        rows = self.batches[i]
        out = np.zeros((len(rows), *self.shape), dtype=np.uint8)
        errors: dict[int, str] = {}
        for j, (row, img) in enumerate(zip(rows, self.images.load(rows), strict=True)):
            if isinstance(img, BadImageError):
                errors[int(row)] = str(img)
                continue
            arr = np.asarray(self.transform(img))
            if arr.shape != self.shape:
                errors[int(row)] = f"transform gave shape {arr.shape}, expected {self.shape}"
                continue
            out[j] = arr
        return Batch(rows, torch.from_numpy(out).permute(0, 3, 1, 2), errors)


def _identity(batch: Batch) -> Batch:
    return batch


def _worker_init(_: int) -> None:
    # Decoding is single-threaded PIL work; extra intra-op threads would only fight the model.
    torch.set_num_threads(1)


def batch_loader(dataset: BatchDataset, *, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader yielding :class:`Batch` in order (order matters only for progress)."""
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_identity,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
