"""Draft-mode JPEG decoding: used only where safe; the pixels at the target barely move."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets.images import ArrayImages, FileImages, open_image_file
from featlab.extractors.loader import BatchDataset, geometric_transform, resize_side
from featlab.extractors.spec import ModelSpec

# resnet50-like eval transform: resize the short side to floor(224 / 0.875) = 256, crop 224.
SPEC = ModelSpec(name="t", architecture="resnet50", input_size=(3, 224, 224), crop_pct=0.875)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """A 2048x1536 photo-like JPEG: smooth colour gradients plus mild noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1536, 0:2048] / 2048.0
    img = np.stack(
        [
            127 + 90 * np.sin(2 * np.pi * f * (xx + p * yy))
            for f, p in ((1.5, 0.3), (2.5, 1.0), (4.0, -0.5))
        ],
        axis=-1,
    )
    img += rng.normal(0, 4, img.shape)
    path = tmp_path_factory.mktemp("draft") / "big.jpg"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def test_resize_side_is_input_over_crop_pct():
    assert resize_side(SPEC) == 256


def test_draft_decodes_smaller_and_keeps_quality_at_target(big_jpeg):
    full = open_image_file(str(big_jpeg))
    drafted = FileImages([big_jpeg]).with_draft(256).load([0])[0]
    assert full.size == (2048, 1536)
    # DCT scale 1/4 is the largest leaving both sides >= 256 (1/8 would give a 192 px side).
    assert drafted.size == (512, 384)
    assert drafted.mode == "RGB"
    transform = geometric_transform(SPEC)
    a = np.asarray(transform(full), dtype=np.float32)
    b = np.asarray(transform(drafted), dtype=np.float32)
    assert a.shape == b.shape == (224, 224, 3)
    assert np.abs(a - b).mean() < 3.0


def test_default_and_non_jpeg_are_decoded_in_full(tmp_path, big_jpeg):
    assert FileImages([big_jpeg]).load([0])[0].size == (2048, 1536)
    png = tmp_path / "big.png"
    Image.fromarray(np.zeros((600, 600), np.uint8)).save(png)
    assert FileImages([png]).with_draft(64).load([0])[0].size == (600, 600)


def test_jpeg_under_twice_the_target_is_not_drafted(tmp_path, monkeypatch):
    path = tmp_path / "small.jpg"
    Image.fromarray(np.zeros((100, 120, 3), np.uint8)).save(path)
    calls = []
    monkeypatch.setattr(Image.Image, "draft", lambda self, *a: calls.append(a))
    assert FileImages([path]).with_draft(64).load([0])[0].size == (120, 100)
    assert calls == []


def test_batch_dataset_drafts_file_images_only(big_jpeg):
    ds = BatchDataset(FileImages([big_jpeg]), [np.array([0])], SPEC)
    assert ds.images.draft_size == 256
    batch = ds[0]
    assert tuple(batch.images.shape) == (1, 3, 224, 224)
    assert batch.errors == {}
    arrays = ArrayImages(np.zeros((1, 8, 8), np.uint8))
    assert BatchDataset(arrays, [np.array([0])], SPEC).images is arrays


def test_draft_setting_survives_pickling(big_jpeg):
    src = pickle.loads(pickle.dumps(FileImages([big_jpeg]).with_draft(256)))
    assert src.draft_size == 256
    assert src.load([0])[0].size == (512, 384)
