"""Persisted FAISS indexes: fingerprint, persist/reuse, stale and corrupt rebuilds, read-only.

Synthetic embeddings written with the store's own writer (no model runs here), checked against
zarr reads, faiss's own serialisation and ``index.add``, and numpy brute force.
"""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

import featlab
from featlab.datasets.table import SampleTable
from featlab.errors import IncompleteEmbeddingError, InvalidArgumentError
from featlab.store import _index as fi
from featlab.store import _layout as L
from featlab.store._writer import ModelLock

N, D, CHUNK, MODEL = 50, 8, 16, "timm:fake:cls4"
KEY = L.model_key(MODEL)


def _table(n: int = N) -> SampleTable:
    ids = np.asarray([f"s{i:03d}" for i in range(n)])
    return SampleTable(
        name="syn",
        ids=ids,
        labels=np.arange(n) % 3,
        splits=np.where(np.arange(n) % 5 < 3, "train", "test"),
        sources=ids,
        classes=("a", "b", "c"),
        task="multiclass",
    )


def _values(seed: int = 0, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def _write(store_path: Path, values: np.ndarray, upto: int | None = None, *, overwrite=False):
    """Write rows ``0..upto`` of ``values`` as MODEL, chunk-aligned, like the engine does."""
    st = featlab.open_store(store_path, mode="a")
    ds = st.add_dataset(_table(len(values)))
    upto = len(values) if upto is None else upto
    with ds.open_writer(
        MODEL,
        dim=D,
        chunk_rows=CHUNK,
        identity={"spec": {"name": "fake"}, "weights": {"source": "x"}, "precision": "fp32"},
        attrs={},
        overwrite=overwrite,
    ) as w:
        for lo in range(0, upto, CHUNK):
            hi = min(lo + CHUNK, upto)
            w.write(np.arange(lo, hi), values[lo:hi])
        w.update_attrs(complete=bool(w.written().all()))
    return featlab.open_store(store_path, mode="a")["syn"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    fi.clear_index_cache()
    yield
    fi.clear_index_cache()


@pytest.fixture
def ds(tmp_path: Path):
    return _write(tmp_path / "s.zarr", _values())


def _brute(values: np.ndarray, rows: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    x = values[rows] / np.linalg.norm(values[rows], axis=1, keepdims=True)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ x.T
    return rows[np.argsort(-s, axis=1, kind="stable")[:, :k]]


def _search_rows(stored: fi.StoredIndex, q: np.ndarray, k: int) -> np.ndarray:
    qn = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    _, pos = stored.index.search(qn, k)
    return stored.rows[pos]


# -- fingerprint -------------------------------------------------------------------------------
def test_row_bytes_by_byte_range_equal_zarr_reads(tmp_path: Path) -> None:
    ds = _write(tmp_path / "s.zarr", _values(), upto=32)  # chunks 2 and 3 never written
    values = ds._model_group(MODEL)["values"]
    assert fi._plain_layout(values)
    rows = np.array([0, 15, 16, 31, 40, 49])  # chunk edges, unwritten chunk, last partial chunk
    got = fi.read_row_bytes(values, rows)
    want = [np.asarray(values[r], dtype="<f4").tobytes() for r in rows]
    assert got == want
    assert got[4] == np.zeros(D, "<f4").tobytes()
    # A compressed array goes through zarr and gives the same bytes.
    import zarr

    z = zarr.open_group(str(tmp_path / "c.zarr"), mode="w").create_array(
        "v", shape=(N, D), dtype="float32", chunks=(CHUNK, D)
    )
    z[:] = _values()
    assert not fi._plain_layout(z)
    assert fi.read_row_bytes(z, rows) == [_values()[r].astype("<f4").tobytes() for r in rows]


def test_sample_rows_are_strided_and_bounded() -> None:
    assert fi.sample_rows(0).tolist() == []
    assert fi.sample_rows(5).tolist() == [0, 1, 2, 3, 4]
    r = fi.sample_rows(262_144)
    assert (len(r), r[0], r[-1]) == (64, 0, 262_143)
    assert (np.diff(r) > 0).all()


def test_fingerprint_is_stable_and_changes_with_the_embeddings(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    ds = _write(path, _values(), upto=32)
    fp_partial = fi.embeddings_fingerprint(ds, MODEL)
    assert fi.embeddings_fingerprint(featlab.open_store(path)["syn"], MODEL) == fp_partial
    assert fi.embeddings_fingerprint(ds, MODEL, "train") != fp_partial
    ds = _write(path, _values())  # resumed to completion: more rows written, complete=True
    fp_full = fi.embeddings_fingerprint(ds, MODEL)
    assert fp_full != fp_partial
    group = ds._model_group(MODEL)
    group["values"][0] = _values(seed=9)[0]  # a sampled row changes (row 0 always is)
    fp_edit = fi.embeddings_fingerprint(ds, MODEL)
    assert fp_edit != fp_full
    group["bad"][3] = True
    assert fi.embeddings_fingerprint(ds, MODEL) != fp_edit


def test_fingerprint_changes_on_overwrite_even_with_equal_values(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    ds = _write(path, _values())
    before = fi.embeddings_fingerprint(ds, MODEL)
    ds._model_group(MODEL).attrs.update(created="2000-01-01T00:00:00+00:00")  # as a re-creation
    assert fi.embeddings_fingerprint(ds, MODEL) != before


# -- build, persist, reuse -----------------------------------------------------------------------
def test_index_is_persisted_then_reused(ds) -> None:
    stored = fi.open_index(ds, MODEL)
    assert stored.status == "built"
    assert stored.rows.tolist() == list(range(N))
    arr = ds._g[L.INDEXES][KEY]
    attrs = dict(arr.attrs.asdict())
    assert attrs["fingerprint"] == stored.fingerprint == fi.embeddings_fingerprint(ds, MODEL)
    assert (attrs["n"], attrs["dim"], attrs["index"]["type"], attrs["complete"]) == (
        N,
        D,
        "flat",
        True,
    )
    # The array holds exactly faiss's own serialisation.
    np.testing.assert_array_equal(arr[:], faiss.serialize_index(stored.index))
    chunk_files = sorted((ds.store.path / "syn" / L.INDEXES / KEY).rglob("c/*"))
    mtimes = [f.stat().st_mtime_ns for f in chunk_files]
    assert fi.open_index(ds, MODEL).status == "cached"
    fi.clear_index_cache()
    fresh = featlab.open_store(ds.store.path, mode="a")["syn"]
    again = fi.open_index(fresh, MODEL)
    assert again.status == "loaded"
    assert fresh._g[L.INDEXES][KEY].attrs["created"] == attrs["created"]
    assert [f.stat().st_mtime_ns for f in chunk_files] == mtimes
    q = _values(seed=5)[:4]
    np.testing.assert_array_equal(_search_rows(again, q, 5), _brute(_values(), np.arange(N), q, 5))


def test_stale_index_is_rebuilt(ds) -> None:
    first = fi.open_index(ds, MODEL)
    new = _values(seed=3)
    ds = _write(ds.store.path, new, overwrite=True)
    fi.clear_index_cache()
    again = fi.open_index(ds, MODEL)
    assert again.status == "built"
    assert again.fingerprint != first.fingerprint
    assert ds._g[L.INDEXES][KEY].attrs["fingerprint"] == again.fingerprint
    q = new[:3]
    np.testing.assert_array_equal(_search_rows(again, q, 4), _brute(new, np.arange(N), q, 4))
    # The in-process cache is keyed by fingerprint too: it never serves the old index.
    ds = _write(ds.store.path, _values(), overwrite=True)
    assert fi.open_index(ds, MODEL).status == "built"


def _corrupt_bytes(ds, arr) -> None:
    data = np.asarray(arr[:]).copy()
    data[len(data) // 2 :] ^= 0x5A  # vectors garbled, header intact: only the CRC can tell
    arr[:] = data


def _garbage(ds, arr) -> None:
    arr[:] = np.random.default_rng(0).integers(0, 256, arr.shape[0], dtype=np.uint8)


def _wrong_ntotal(ds, arr) -> None:
    """A valid index of other rows under the right fingerprint and a matching CRC."""
    attrs = dict(arr.attrs.asdict())
    other = faiss.IndexFlatIP(D)
    other.add(np.ones((3, D), np.float32))
    fi._write_index_array(ds._g[L.INDEXES], KEY, other, {k: attrs[k] for k in ("fingerprint",)})
    ds._g[L.INDEXES][KEY].attrs.update(index=attrs["index"])


def _missing_chunk(ds, arr) -> None:
    for f in (ds.store.path / "syn" / L.INDEXES / KEY).rglob("c/*"):
        if f.is_file():
            f.unlink()


@pytest.mark.parametrize("damage", [_corrupt_bytes, _garbage, _wrong_ntotal, _missing_chunk])
def test_corrupt_persisted_index_is_rebuilt(ds, damage) -> None:
    fi.open_index(ds, MODEL)
    damage(ds, ds._g[L.INDEXES][KEY])
    fi.clear_index_cache()
    fresh = featlab.open_store(ds.store.path, mode="a")["syn"]
    stored = fi.open_index(fresh, MODEL)
    assert stored.status == "built; the persisted index was corrupt"
    assert stored.index.ntotal == N
    q = _values(seed=7)[:3]
    np.testing.assert_array_equal(_search_rows(stored, q, 5), _brute(_values(), np.arange(N), q, 5))
    fi.clear_index_cache()
    assert fi.open_index(fresh, MODEL).status == "loaded"  # the rebuilt one replaced it


def test_interrupted_write_is_never_used(ds) -> None:
    fi.open_index(ds, MODEL)
    ds._g[L.INDEXES][KEY].attrs.update(complete=False)  # as if killed before the final attrs
    fi.clear_index_cache()
    assert fi.open_index(ds, MODEL).status == "built"


def test_read_only_store_builds_in_memory(ds) -> None:
    ro = featlab.open_store(ds.store.path)["syn"]
    stored = fi.open_index(ro, MODEL)
    assert stored.status == "built, not persisted (store opened read-only)"
    assert not (ds.store.path / "syn" / L.INDEXES).exists()
    assert fi.open_index(ro, MODEL).status == "cached"
    q = _values(seed=2)[:2]
    np.testing.assert_array_equal(_search_rows(stored, q, 3), _brute(_values(), np.arange(N), q, 3))


def test_locked_indexes_build_in_memory(ds) -> None:
    ds._g.require_group(L.INDEXES)
    lock = ModelLock(ds.store.path / "syn" / L.INDEXES, "test").acquire()
    try:
        stored = fi.open_index(ds, MODEL)
    finally:
        lock.release()
    assert stored.status.startswith("built, not persisted (another process")
    assert KEY not in set(ds._g[L.INDEXES].array_keys())


def test_persist_false_writes_nothing(ds) -> None:
    assert fi.open_index(ds, MODEL, persist=False).status == "built, not persisted (persist=False)"
    assert L.INDEXES not in set(ds._g.group_keys())


def test_split_index_is_its_own_entry(ds) -> None:
    train = fi.open_index(ds, MODEL, split="train")
    full = fi.open_index(ds, MODEL)
    assert (train.key, full.key) == (f"{KEY}@train", KEY)
    assert train.rows.tolist() == [i for i in range(N) if i % 5 < 3]
    assert set(ds._g[L.INDEXES].array_keys()) == {KEY, f"{KEY}@train"}
    assert fi.index_key(MODEL, "") == f"{KEY}@unlabeled"
    q = _values(seed=4)[:3]
    np.testing.assert_array_equal(_search_rows(train, q, 4), _brute(_values(), train.rows, q, 4))


def test_bad_and_unwritten_rows_are_not_indexed(tmp_path: Path) -> None:
    ds = _write(tmp_path / "s.zarr", _values(), upto=40)
    with pytest.raises(IncompleteEmbeddingError, match="10 of 50 samples"):
        fi.open_index(ds, MODEL)
    ds._model_group(MODEL)["bad"][5] = True
    stored = fi.open_index(ds, MODEL, partial=True)
    assert stored.rows.tolist() == [i for i in range(40) if i != 5]
    assert stored.usable.tolist() == [i < 40 and i != 5 for i in range(N)]
    q = _values(seed=6)[:3]
    np.testing.assert_array_equal(_search_rows(stored, q, 6), _brute(_values(), stored.rows, q, 6))


# -- index types -------------------------------------------------------------------------------
def test_flat_build_streams_into_the_same_index_as_add(ds) -> None:
    values = ds._model_group(MODEL)["values"]
    rows = np.array([0, 3, 17, 18, 33, 49])
    built = fi.build_index(values, rows, fi.IndexParams().resolved(len(rows)))
    x = _values()[rows] / np.linalg.norm(_values()[rows], axis=1, keepdims=True)
    ref = faiss.IndexFlatIP(D)
    ref.add(x.astype(np.float32))
    np.testing.assert_array_equal(faiss.serialize_index(built), faiss.serialize_index(ref))


def test_ivf_build_equals_faiss_add_after_the_same_training(tmp_path: Path) -> None:
    values_np = _values(n=400)
    st = featlab.open_store(tmp_path / "s.zarr", mode="a")
    ds = st.add_dataset(_table(400))
    with ds.open_writer(MODEL, dim=D, chunk_rows=64, identity={}, attrs={}) as w:
        w.write(np.arange(400), values_np)
    rows = np.arange(0, 400, 2)
    params = fi.IndexParams(kind="ivf", nlist=4, seed=3).resolved(len(rows))
    assert params == {"type": "ivf", "metric": "inner_product", "nlist": 4, "seed": 3}
    built = fi.build_index(ds._model_group(MODEL)["values"], rows, params)
    x = values_np[rows] / np.linalg.norm(values_np[rows], axis=1, keepdims=True)
    ref = faiss.IndexIVFFlat(faiss.IndexFlatIP(D), D, 4, faiss.METRIC_INNER_PRODUCT)
    ref.cp.spherical, ref.cp.seed = True, 3
    train = np.sort(np.random.default_rng(3).choice(rows, size=len(rows), replace=False))
    ref.train(np.ascontiguousarray(x[np.searchsorted(rows, train)]))
    ref.add(np.ascontiguousarray(x))
    np.testing.assert_array_equal(faiss.serialize_index(built), faiss.serialize_index(ref))


def test_index_params_validation_and_default_nlist() -> None:
    assert fi.IndexParams(kind="ivf").resolved(262_144)["nlist"] == 2048
    assert fi.IndexParams(kind="ivf").resolved(100)["nlist"] == 2  # >= 39 points per list
    assert fi.IndexParams(kind="ivf").resolved(10)["nlist"] == 1
    with pytest.raises(InvalidArgumentError, match="index must be one of"):
        fi.IndexParams(kind="hnsw")
    with pytest.raises(InvalidArgumentError, match="nlist must be a positive int"):
        fi.IndexParams(kind="ivf", nlist=0)
    with pytest.raises(InvalidArgumentError, match="exceeds the 10 rows"):
        fi.IndexParams(kind="ivf", nlist=11).resolved(10)


def test_flat_and_ivf_indexes_live_side_by_side(ds) -> None:
    fi.open_index(ds, MODEL)
    fi.clear_index_cache()
    ivf = fi.open_index(ds, MODEL, params=fi.IndexParams(kind="ivf", nlist=1))
    assert (ivf.status, ivf.params["type"]) == ("built", "ivf")
    fi.clear_index_cache()
    assert fi.open_index(ds, MODEL).status == "loaded"  # switching back does not rebuild


def test_unwritable_directory_never_fails(ds, monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(fi, "_write_index_array", refuse)
    with pytest.warns(RuntimeWarning, match="could not be saved"):
        stored = fi.open_index(ds, MODEL)
    assert stored.status == "built, not persisted (write failed: PermissionError)"
    assert stored.index.ntotal == N
    assert os.path.isdir(ds.store.path / "syn")


def test_same_second_overwrite_changing_unsampled_rows_rebuilds(tmp_path: Path, monkeypatch):
    # `created` has one-second resolution and only 64 rows are sampled: the writer's
    # generation stamp is what tells the fingerprint the embeddings were rewritten.
    from featlab.store import _store

    monkeypatch.setattr(_store, "_now", lambda: "2026-11-22T00:00:00+00:00")  # one second
    values = _values(seed=1, n=600)
    ds = _write(tmp_path / "g.zarr", values)
    before = fi.embeddings_fingerprint(ds, MODEL)
    changed = values.copy()
    sampled = set(fi.sample_rows(600).tolist())
    rows = [r for r in range(600) if r not in sampled][:50]
    changed[rows] = _values(seed=2, n=600)[rows]
    ds = _write(tmp_path / "g.zarr", changed, overwrite=True)
    assert fi.embeddings_fingerprint(ds, MODEL) != before


def test_colliding_model_keys_are_not_confused(tmp_path: Path):
    from featlab.errors import UnknownModelError

    ds = _write(tmp_path / "c.zarr", _values())
    twin = MODEL.replace(":", "~")  # same store key as MODEL
    assert L.model_key(twin) == KEY
    with pytest.raises(UnknownModelError, match=f"holds {MODEL!r}"):
        ds.neighbors(twin, vectors=_values()[:1], k=3)
