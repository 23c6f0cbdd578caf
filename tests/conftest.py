"""Shared fixtures: tiny images written at test time, tiny tables and stores. Nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_png_tree(
    root: Path, *, classes=("a", "b", "c"), per_class=4, size=32, splits=None, seed=0
) -> Path:
    """Write ``root[/split]/<class>/<i>.png`` RGB images whose colour depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in splits or [None]:
        for ci, cls in enumerate(classes):
            d = root / split / cls if split else root / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                base = np.zeros((size, size, 3), np.uint8)
                base[..., ci % 3] = 200
                noise = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 PNGs (32x32) in 3 class folders, no split level."""
    return write_png_tree(tmp_path / "imgs")


@pytest.fixture
def split_image_folder(tmp_path: Path) -> Path:
    """train/val/test folders, each with 3 classes x 4 PNGs."""
    return write_png_tree(tmp_path / "imgs", splits=("train", "val", "test"))


@pytest.fixture
def tiny_table():
    """An in-memory table of 40 random 16x16 RGB images in 2 classes."""
    from featlab.datasets import table_from_arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    return table_from_arrays(images, labels, name="tiny")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        has_cuda = torch.cuda.is_available()
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def png_tree_writer():
    """``write_png_tree`` itself, for module- or session-scoped fixtures that write images."""
    return write_png_tree


@pytest.fixture
def registry():
    """The dataset registry with the built-ins loaded; restored to exactly that after the test,
    so datasets a test registers never leak into another."""
    from featlab.datasets import registry as reg

    reg._load_builtin()
    saved = dict(reg._REGISTRY)
    yield reg._REGISTRY
    reg._REGISTRY.clear()
    reg._REGISTRY.update(saved)
