"""Image transforms for training: the model's eval transform, and the recipes' augmentations.

Evaluation (val, test) uses exactly the extraction transform (timm's resize/crop for the spec,
then the spec's mean/std), so a finetuned model is scored on the pixels it will embed.
Every training transform ends at the spec's input size ``S`` (``S = 224`` in the papers) and
normalises with the spec's mean/std. Per recipe augmentation:

- ``resize-crop-flip`` (Truong et al., DVME section 5): squash-resize to ``256/224 * S``
  square ("resized into 256x256"), random crop of ``S``, horizontal flip (p = 0.5).
- ``matsoukas`` (Matsoukas et al., section 3): squash-resize to ``256/224 * S`` square, then
  random resized crop to ``S``, horizontal and vertical flips and colour jitter of brightness,
  contrast, saturation and hue. The jitter strengths (0.2, 0.2, 0.2, 0.05) and the crop's
  scale range (0.25-1) are featlab's: the paper gives none.
- ``cass`` (CASS appendix C.6.1: the pretraining augmentations of C.5.2): squash-resize to
  ``S``; with p = 0.3 colour jitter (0.2) and a random perspective (distortion 0.2); with
  p = 0.3 a random affine rotation of up to 10 degrees; vertical and horizontal flips with
  p = 0.3 each.
- ``crop-flip``: random resized crop of ``S`` (scale 0.25-1) + horizontal flip; a generic
  supervised baseline no recipe uses by default.
- ``none``: the eval transform (BEiT recipe: the Hugging Face processor only resizes).

All random draws come from the global torch/python/numpy generators, which
:class:`featlab.train.data.TrainImages` seeds per (seed, epoch, sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from featlab.errors import InvalidArgumentError
from featlab.extractors.loader import geometric_transform
from featlab.extractors.spec import ModelSpec
from featlab.pretrain.transforms import cass_transform, interpolation_mode
from featlab.train.recipes import AUGMENTS

CROP_SCALE = (0.25, 1.0)
# The papers resize to 256 before cropping 224: the same ratio for other input sizes.
RESIZE_RATIO = 256 / 224


def _to_tensor(spec: ModelSpec) -> list[Any]:
    from torchvision import transforms as T

    return [T.ToTensor(), T.Normalize(spec.mean, spec.std)]


def eval_transform(spec: ModelSpec) -> Callable[[Any], Any]:
    """PIL RGB image -> ``(3, H, W)`` float32 tensor, as extraction preprocesses it."""
    from torchvision import transforms as T

    return T.Compose([geometric_transform(spec), *_to_tensor(spec)])


def resize_side(spec: ModelSpec) -> tuple[int, int]:
    """``(h, w)`` of the papers' resize before the random crop: ``round(256/224 * S)``."""
    _, h, w = spec.input_size
    return round(h * RESIZE_RATIO), round(w * RESIZE_RATIO)


def train_transform(spec: ModelSpec, augment: str) -> Callable[[Any], Any]:
    """PIL RGB image -> augmented ``(3, H, W)`` float32 tensor (``(H, W)`` the spec's input size).

    Args:
        spec: Input size, interpolation and mean/std of the model.
        augment: One of :data:`AUGMENTS` (see the module docstring).

    Raises:
        InvalidArgumentError: Unknown ``augment``.
    """
    from torchvision import transforms as T

    size = tuple(spec.input_size[1:])
    mode = interpolation_mode(spec.interpolation)
    if augment == "none":
        return eval_transform(spec)
    if augment == "crop-flip":
        return T.Compose([
            T.RandomResizedCrop(size, scale=CROP_SCALE, interpolation=mode),
            T.RandomHorizontalFlip(), *_to_tensor(spec),
        ])
    if augment == "resize-crop-flip":
        return T.Compose([
            T.Resize(resize_side(spec), interpolation=mode), T.RandomCrop(size),
            T.RandomHorizontalFlip(), *_to_tensor(spec),
        ])
    if augment == "matsoukas":
        return T.Compose([
            T.Resize(resize_side(spec), interpolation=mode),
            T.RandomResizedCrop(size, scale=CROP_SCALE, interpolation=mode),
            T.RandomHorizontalFlip(), T.RandomVerticalFlip(),
            T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            *_to_tensor(spec),
        ])
    if augment == "cass":  # C.6.1: finetuning reuses the pretraining augmentation
        return cass_transform(size, spec.mean, spec.std, spec.interpolation)
    raise InvalidArgumentError(f"augment must be one of {AUGMENTS}; got {augment!r}")
