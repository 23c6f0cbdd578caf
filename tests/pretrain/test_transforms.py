"""Each method's training views: sizes, normalisation, seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from featlab.pretrain.transforms import (
    cass_transform,
    dino_transform,
    local_crop_size,
    plain_transform,
)
from featlab.train.data import seeded

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image(size: int = 24, mode: str = "L") -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).convert(mode)


def test_plain_transform_is_resize_and_normalise() -> None:
    img = _image(32, "RGB")
    x = plain_transform(32, MEAN, STD)(img)
    want = (
        torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255
        - torch.tensor(MEAN).view(3, 1, 1)
    ) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(x, want)


def test_cass_view_is_one_seeded_augmentation_at_the_size() -> None:
    t = cass_transform(40, MEAN, STD)
    with seeded(3):
        a = t(_image())
    with seeded(3):
        b = t(_image())
    assert a.shape == (3, 40, 40)  # grayscale input becomes RGB
    assert torch.equal(a, b)
    views = []
    for s in range(12):
        with seeded(s):
            views.append(t(_image()))
    assert len({v.numpy().tobytes() for v in views}) > 1  # augmentations do vary by seed


def test_dino_views_are_two_global_and_local_crops() -> None:
    with seeded(0):
        views = dino_transform(32, MEAN, STD, n_local=8, patch=16)(_image(48))
    assert len(views) == 10
    assert [tuple(v.shape) for v in views[:2]] == [(3, 32, 32)] * 2
    assert [tuple(v.shape) for v in views[2:]] == [(3, 16, 16)] * 8


@pytest.mark.parametrize(
    ("size", "patch", "want"), [(224, 16, 96), (224, 1, 96), (32, 16, 16), (384, 16, 160)]
)
def test_local_crop_scales_dinos_96_of_224(size: int, patch: int, want: int) -> None:
    assert local_crop_size(size, patch) == want
