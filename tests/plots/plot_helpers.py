"""Helpers of the plot tests: saved probe runs on tiny synthetic stores, and image checks.

A plain module, not a conftest.py: a second ``conftest`` module would shadow tests/conftest.py
for the ``from conftest import ...`` of other test folders.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.eval.lowshot import parse_sizes
from featlab.eval.protocol import ProbeConfig, run_probe
from featlab.eval.results import save_run
from featlab.store import open_store

DPI = 150


def make_runs(path: Path, shots: str, folds: int, **store_kwargs):
    """``(store, runs)``: a synthetic store of 240 samples, one saved kNN run (k=5, 20) per
    model over the ``shots`` sizes x ``folds`` folds."""
    from conftest import make_store  # tests/conftest.py

    make_store(path, n=240, **store_kwargs)
    store = open_store(path, mode="a")
    ds = store["toy"]
    config = ProbeConfig(sizes=parse_sizes(shots), folds=folds, ks=(5, 20), seed=0)
    runs = []
    for model in ds.models:
        run = run_probe(ds, model, config)
        save_run(ds, run)
        runs.append(run)
    return store, runs


def multiclass_runs(tmp_path_factory):
    """Runs of models ``good`` and ``weak`` on 3 classes, sizes 9, 30, all x 3 folds."""
    return make_runs(
        tmp_path_factory.mktemp("mc") / "s.zarr", "9,30,all", 3,
        n_classes=3, models={"good": 1.5, "weak": 0.3},
    )  # fmt: skip


def binary_runs(tmp_path_factory):
    """Runs of models ``good`` and ``weak`` on 2 classes, sizes 10, all x 2 folds."""
    return make_runs(
        tmp_path_factory.mktemp("bin") / "s.zarr", "10,all", 2,
        n_classes=2, models={"good": 1.0, "weak": 0.2},
    )  # fmt: skip


def multilabel_runs(tmp_path_factory):
    """A run of model ``good`` on 4 labels with unknown (-1) entries, size all x 1 fold."""
    return make_runs(
        tmp_path_factory.mktemp("ml") / "s.zarr", "all", 1,
        n_classes=4, task="multilabel", models={"good": 1.0},
    )  # fmt: skip


def check_png(path: Path, size_in: tuple[float, float]) -> np.ndarray:
    """Assert ``path`` is a PNG of ``size_in`` inches at 150 DPI that is not blank; its RGB."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (round(size_in[0] * DPI), round(size_in[1] * DPI))
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.std() > 10, "image is (nearly) uniform"
    packed = rgb.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours = np.unique(packed)  # 1-D: far faster than np.unique(..., axis=0)
    assert len(colours) > 20, f"only {len(colours)} distinct colours"
    return rgb


def check_svg(path: Path, size_in: tuple[float, float]) -> None:
    """Assert ``path`` is an SVG of ``size_in`` inches that draws a figure."""
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    width, height = (float(root.get(a).removesuffix("pt")) for a in ("width", "height"))
    assert (width, height) == pytest.approx((size_in[0] * 72, size_in[1] * 72))
    assert path.read_text().count("<path") > 10
