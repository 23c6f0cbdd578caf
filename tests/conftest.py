"""Shared fixtures: tiny images written at test time, tiny tables and stores. Nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featlab.datasets import SampleTable
from featlab.store import open_store


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


# -- synthetic embedding stores (evaluation tests) --------------------------------------------
SYNTHETIC_CHUNK = 64


def synthetic_embeddings(
    labels: np.ndarray, d: int, separation: float, seed: int
) -> np.ndarray:
    """Class centres ``separation`` apart plus unit noise (multi-label: sum of label centres)."""
    rng = np.random.default_rng(seed)
    n_classes = labels.shape[1] if labels.ndim == 2 else int(labels.max()) + 1
    centres = rng.standard_normal((n_classes, d)) * separation
    if labels.ndim == 2:
        signal = (labels == 1).astype(np.float64) @ centres
    else:
        signal = centres[np.maximum(labels, 0)]
    return (signal + rng.standard_normal((len(labels), d)) + 3.0).astype(np.float32)


def write_embeddings(ds, model: str, values: np.ndarray, *, bad=None, seed: int = 0) -> None:
    identity = {"spec": {"arch": model}, "weights": {"seed": seed}, "precision": "fp32"}
    with ds.open_writer(
        model, dim=values.shape[1], chunk_rows=SYNTHETIC_CHUNK, identity=identity, attrs={}
    ) as w:
        for lo in range(0, len(values), SYNTHETIC_CHUNK):
            rows = np.arange(lo, min(lo + SYNTHETIC_CHUNK, len(values)))
            w.write(rows, values[rows], None if bad is None else bad[rows])
        w.update_attrs(complete=True)


def make_store(
    path: Path,
    *,
    n: int = 600,
    d: int = 16,
    n_classes: int = 3,
    task: str | None = None,
    models: dict[str, float] | None = None,
    with_val: bool = True,
    seed: int = 0,
    name: str = "toy",
) -> Path:
    """A store with dataset ``name`` and one model per ``{name: class separation}``."""
    rng = np.random.default_rng(seed)
    if task == "multilabel":
        labels = (rng.random((n, n_classes)) < 0.3).astype(np.int8)
        labels[rng.random((n, n_classes)) < 0.05] = -1
    else:
        labels = rng.integers(0, n_classes, n).astype(np.int32)
    task = task or ("binary" if n_classes == 2 else "multiclass")
    names = ["train", "val", "test"] if with_val else ["train", "test"]
    splits = rng.choice(names, size=n, p=[0.6, 0.2, 0.2] if with_val else [0.75, 0.25])
    table = SampleTable(
        name=name,
        ids=[f"{name}/{i:04d}" for i in range(n)],
        labels=labels,
        splits=splits.astype(object),
        sources=[f"/data/{i}.png" for i in range(n)],
        classes=tuple(f"c{i}" for i in range(n_classes)),
        task=task,
        attrs={"source": "synthetic"},
    )
    store = open_store(path, mode="a")
    ds = store.add_dataset(table)
    for i, (model, separation) in enumerate((models or {"good": 3.0, "noise": 0.0}).items()):
        write_embeddings(ds, model, synthetic_embeddings(labels, d, separation, seed + i + 1))
    return path


@pytest.fixture
def synthetic_store(tmp_path: Path):
    """Factory: ``synthetic_store(**make_store kwargs) -> store path`` (a fresh one per call)."""
    counter = iter(range(100))

    def make(**kwargs) -> Path:
        return make_store(tmp_path / f"s{next(counter)}.zarr", **kwargs)

    return make


@pytest.fixture
def embedding_writer():
    """``(synthetic_embeddings, write_embeddings)`` for tests that add models themselves."""
    return synthetic_embeddings, write_embeddings


def colour_table(n_per_class: int = 20, size: int = 16, seed: int = 0, name: str = "colours"):
    """3 classes of noisy images whose dominant channel is the class: easy to learn."""
    from featlab.datasets import table_from_arrays

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    images = rng.integers(0, 60, (len(labels), size, size, 3), dtype=np.uint8)
    for c in range(3):
        images[labels == c, :, :, c] += 150
    return table_from_arrays(images, labels, name=name, seed=seed)


@pytest.fixture
def colours():
    """60 16x16 RGB images in 3 colour classes, split 60/20/20 (for training tests)."""
    return colour_table()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module, restored afterwards: tiny models run fastest so, and
    with the other core busy, two threads wait on each other at every op (~100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
