"""Training views of each method, built from the spec's size, interpolation and mean/std.

- CASS: one augmentation per image (papers/cass-cross-architecture-ssl.txt, appendix C.5.2):
  plain resize to ``size x size``; with probability 0.3 colour jitter (0.2) and a random
  perspective (distortion 0.2); with probability 0.3 a random affine rotation of up to 10
  degrees; vertical and horizontal flips with probability 0.3 each; normalisation.
- BOLT: the views are token perturbations (bolt.py), so the image is only resized and
  normalised (the paper perturbs tokens "instead of image-based perturbation", section 2).
- DINO: lightly's ``DINOTransform`` (2 global crops of ``size``, scale 0.4-1, and ``n_local``
  local crops, scale 0.05-0.4, of ``size * 96 / 224`` rounded to the patch size).

The same mean/std are written into the saved arm's spec, so extraction normalises as training
did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from featlab.errors import InvalidArgumentError

Transform = Callable[[Any], Any]

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


def interpolation_mode(interpolation: str) -> Any:
    """torchvision's ``InterpolationMode`` of a spec's interpolation name.

    Raises:
        InvalidArgumentError: A name torchvision does not have (no silent fallback).
    """
    from torchvision.transforms import InterpolationMode

    if interpolation not in _INTERPOLATIONS:
        raise InvalidArgumentError(
            f"interpolation must be one of {_INTERPOLATIONS}; got {interpolation!r}"
        )
    return InterpolationMode(interpolation)


def _rgb(img: Any) -> Any:
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


def cass_transform(
    size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
) -> Transform:
    """CASS's single augmentation (appendix C.5.2): PIL image -> ``(3, h, w)`` float32.

    ``size`` is ``h = w`` or ``(h, w)``. The CASS finetuning recipe uses it too (C.6.1 trains
    with the pretraining augmentations).
    """
    from torchvision import transforms as T

    mode = interpolation_mode(interpolation)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    return T.Compose(
        [
            T.Lambda(_rgb),
            T.Resize(hw, interpolation=mode),
            T.RandomApply(
                [T.ColorJitter(0.2, 0.2, 0.2), T.RandomPerspective(distortion_scale=0.2)],
                p=0.3,
            ),
            T.RandomApply([T.RandomAffine(degrees=10)], p=0.3),
            T.RandomVerticalFlip(p=0.3),
            T.RandomHorizontalFlip(p=0.3),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def plain_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> Transform:
    """Resize to ``size x size`` and normalise (BOLT's image input; CASS without augmentation)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Lambda(_rgb),
            T.Resize((size, size), interpolation=interpolation_mode(interpolation)),
            T.ToTensor(),
            T.Normalize(list(mean), list(std)),
        ]
    )


def local_crop_size(size: int, patch: int = 1) -> int:
    """DINO's local crop (96 for 224) scaled to ``size``, a multiple of ``patch``, at least one."""
    return max(patch, round(size * 96 / 224 / patch) * patch)


def dino_transform(
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    n_local: int = 8,
    patch: int = 1,
) -> Transform:
    """DINO multi-crop: PIL image -> list of 2 global ``(3, size, size)`` + ``n_local`` local crops.

    Raises:
        InvalidArgumentError: ``n_local`` is negative.
    """
    if n_local < 0:
        raise InvalidArgumentError(f"n_local is a number of local crops; got {n_local}")
    from lightly.transforms import DINOTransform

    multi = DINOTransform(
        global_crop_size=size,
        local_crop_size=local_crop_size(size, patch),
        n_local_views=n_local,
        normalize={"mean": list(mean), "std": list(std)},
    )
    return _RGBFirst(multi)


class _RGBFirst:
    """Convert to RGB, then apply ``transform`` (a class, so loader workers can pickle it)."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, img: Any) -> Any:
        return self.transform(_rgb(img))
