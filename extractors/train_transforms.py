"""Image transforms for training: the model's eval transform, and the recipes' augmentations.

Evaluation (val, test) uses exactly the extraction transform (timm's resize/crop for the spec,
then the spec's mean/std), so a finetuned model is scored on the pixels it will embed.
Augmentations per recipe:

- ``crop-flip``: random resized crop (scale 0.25-1) + horizontal flip; the usual supervised
  baseline, used by the recipes whose papers do not list theirs (Truong, CASS).
- ``matsoukas``: random resized crop + horizontal and vertical flips + colour jitter of
  brightness, contrast, saturation and hue (Matsoukas et al., section 3); the jitter strengths
  (0.2, 0.2, 0.2, 0.05) and crop scale are featlab's (the paper gives none).
- ``none``: the eval transform (BEiT recipe: the Hugging Face processor only resizes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from featlab.errors import InvalidArgumentError
from featlab.extractors.loader import geometric_transform
from featlab.extractors.spec import ModelSpec

CROP_SCALE = (0.25, 1.0)


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
            "nearest": InterpolationMode.NEAREST}.get(name, InterpolationMode.BICUBIC)


def _to_tensor(spec: ModelSpec) -> list[Any]:
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(spec.mean, spec.std)]


def eval_transform(spec: ModelSpec) -> Callable[[Any], Any]:
    """PIL image -> ``(3, H, W)`` float tensor, as extraction preprocesses it."""
    from torchvision import transforms as T

    return T.Compose([geometric_transform(spec), *_to_tensor(spec)])


def train_transform(spec: ModelSpec, augment: str) -> Callable[[Any], Any]:
    """PIL image -> augmented ``(3, H, W)`` float tensor for recipe augmentation ``augment``.

    Raises:
        InvalidArgumentError: Unknown ``augment``.
    """
    from torchvision import transforms as T

    size = tuple(spec.input_size[1:])
    crop = T.RandomResizedCrop(size, scale=CROP_SCALE, interpolation=_interpolation(
        spec.interpolation))
    if augment == "none":
        return eval_transform(spec)
    if augment == "crop-flip":
        return T.Compose([crop, T.RandomHorizontalFlip(), *_to_tensor(spec)])
    if augment == "matsoukas":
        return T.Compose([
            crop, T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            *_to_tensor(spec),
        ])
    raise InvalidArgumentError(f"augment must be none, crop-flip or matsoukas; got {augment!r}")
