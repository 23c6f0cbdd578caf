"""The store as the extraction engine uses it: reuse, identity, overwrite, partial runs, lock.

Uses timm's tiny ``test_vit`` at 32 px with random weights over 36 PNGs (fp32, batches of 8).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from featlab.errors import IncompleteEmbeddingError, ModelMismatchError, StoreLockedError
from featlab.store import open_store

pytest.importorskip("timm")

MODEL = "timm:test_vit"
DATASET = "folder-imgs"
FAST = {"random_init": True, "img_size": 32, "workers": 0, "precision": "fp32", "batch_size": 8}


def run(table, store, **kwargs):
    from featlab.extractors import extract

    return extract(MODEL, table, store, **{**FAST, "device": "cpu", **kwargs})


@pytest.fixture(scope="module")
def table(tmp_path_factory, png_tree_writer):
    from featlab.datasets import load_dataset

    root = png_tree_writer(
        tmp_path_factory.mktemp("data") / "imgs", splits=("train", "val", "test")
    )
    return load_dataset(f"folder:{root}")


@pytest.fixture(scope="module")
def extracted(table, tmp_path_factory):
    """(store path, result) of one uninterrupted extraction; never modified by tests."""
    path = tmp_path_factory.mktemp("store") / "s.zarr"
    return path, run(table, path)


@pytest.fixture
def store(extracted, tmp_path: Path) -> Path:
    """A private copy of the extracted store, free to modify."""
    dst = tmp_path / "copy.zarr"
    shutil.copytree(extracted[0], dst)
    return dst


def _model_files(store: Path, key: str = "timm~test_vit") -> dict[str, tuple[int, bytes]]:
    root = store / DATASET / "embeddings" / key
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def test_extraction_fills_the_store(extracted, table) -> None:
    path, r = extracted
    assert (r.status, r.complete, r.n_computed, r.dim) == ("extracted", True, 36, 64)
    assert (r.dataset, r.model, r.precision) == (DATASET, MODEL, "fp32")
    st = open_store(path)
    assert st.datasets == (DATASET,)
    ds = st[DATASET]
    np.testing.assert_array_equal(ds.ids, table.ids)
    np.testing.assert_array_equal(ds.labels, table.labels)
    np.testing.assert_array_equal(ds.splits, table.splits)
    np.testing.assert_array_equal(ds.sources, table.sources)
    assert ds.classes == ("a", "b", "c")
    assert ds.spec["split_counts"] == {"test": 12, "train": 12, "val": 12}
    assert ds.models == (MODEL,)
    x = ds.embeddings(MODEL)
    assert x.shape == (36, 64)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert len(np.unique(x.round(5), axis=0)) == 36  # every image got its own row
    a = ds.model_attrs(MODEL)
    assert a["complete"] is True
    assert a["precision"] == "fp32"
    assert a["spec"]["architecture"] == "test_vit"
    assert a["spec"]["input_size"] == [3, 32, 32]
    assert a["weights"]["source"] == "random-init"
    assert a["weights"]["seed"] == 0
    assert a["batch_size"] == 8
    xtr, ytr = ds.xy(MODEL, "train")
    np.testing.assert_array_equal(xtr, x[table.splits == "train"])
    np.testing.assert_array_equal(ytr, table.labels[table.splits == "train"])


def test_same_model_again_is_reused(store: Path, table, extracted) -> None:
    before = _model_files(store)
    r = run(table, store)
    assert (r.status, r.n_computed, r.complete) == ("reused", 0, True)
    assert _model_files(store) == before  # not one chunk rewritten
    np.testing.assert_array_equal(
        open_store(store)[DATASET].embeddings(MODEL),
        open_store(extracted[0])[DATASET].embeddings(MODEL),
    )


@pytest.mark.parametrize(
    ("change", "key", "stored", "new"),
    [
        ({"img_size": 48}, "spec", "[3, 32, 32]", "[3, 48, 48]"),
        ({"seed": 1}, "weights", '"seed": 0', '"seed": 1'),
        ({"precision": "bf16"}, "precision", '"fp32"', '"bf16"'),
    ],
)
def test_same_name_other_model_is_refused(store: Path, table, change, key, stored, new) -> None:
    before = _model_files(store)
    with pytest.raises(
        ModelMismatchError, match="already has embeddings named 'timm:test_vit'"
    ) as e:
        run(table, store, **change)
    line = next(s for s in str(e.value).splitlines() if s.strip().startswith(f"{key}:"))
    old_part, new_part = line.split(" | new ")
    assert stored in old_part
    assert new in new_part
    assert _model_files(store) == before
    assert open_store(store)[DATASET].model_attrs(MODEL)["weights"]["seed"] == 0


def test_overwrite_replaces_the_model(store: Path, table, extracted) -> None:
    r = run(table, store, seed=1, overwrite=True)
    assert (r.status, r.n_computed, r.complete) == ("extracted", 36, True)
    ds = open_store(store)[DATASET]
    assert ds.models == (MODEL,)
    assert ds.model_attrs(MODEL)["weights"]["seed"] == 1
    old = open_store(extracted[0])[DATASET].embeddings(MODEL)
    new = ds.embeddings(MODEL)
    assert new.shape == old.shape
    assert not np.allclose(new, old)  # other random weights, other embeddings
    assert run(table, store, seed=1).status == "reused"


def test_partial_run_then_resume(store: Path, table, extracted) -> None:
    r = run(table, store, name="part", limit=8)
    assert (r.status, r.complete, r.n_selected, r.n_computed) == ("extracted", False, 8, 8)
    ds = open_store(store)[DATASET]
    assert ds.models == (MODEL,)
    assert set(ds.all_models()) == {MODEL, "part"}
    assert ds.n_written("part") == 8
    first = str(table.splits[0])  # folder ids sort by split first: 12 rows of one split
    assert (table.splits[:12] == first).all()
    with pytest.raises(IncompleteEmbeddingError, match=f"4 of 12 samples of split '{first}'"):
        ds.xy("part", first)
    full = open_store(extracted[0])[DATASET].embeddings(MODEL)
    x, y = ds.xy("part", first, partial=True)
    np.testing.assert_array_equal(x, full[:8])
    np.testing.assert_array_equal(y, table.labels[:8])
    info = {r["model"]: r for r in open_store(store).info()}
    assert (info["part"]["written"], info["part"]["complete"]) == (8, False)

    r = run(table, store, name="part")
    assert (r.status, r.complete, r.n_computed) == ("resumed", True, 28)
    ds = open_store(store)[DATASET]
    assert set(ds.models) == {MODEL, "part"}
    # identical to the uninterrupted run, bit for bit
    np.testing.assert_array_equal(ds.embeddings("part"), full)


def test_second_writer_is_refused(store: Path, table) -> None:
    ds = open_store(store, mode="a")[DATASET]
    a = ds.model_attrs(MODEL)
    identity = {k: a[k] for k in ("spec", "weights", "precision")}
    holder = ds.open_writer(MODEL, dim=64, chunk_rows=8, identity=identity, attrs={})
    try:
        with pytest.raises(StoreLockedError, match="'timm:test_vit' of dataset 'folder-imgs'"):
            run(table, store, overwrite=True)
    finally:
        holder.close()
    assert open_store(store)[DATASET].model_attrs(MODEL)["weights"]["seed"] == 0
    assert run(table, store).status == "reused"
