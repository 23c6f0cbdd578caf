"""Store round trip: what add_dataset and a writer put in comes back out, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from featlab.datasets import SampleTable
from featlab.errors import (
    IncompleteEmbeddingError,
    InvalidArgumentError,
    UnknownDatasetError,
    UnknownModelError,
)
from featlab.store import FORMAT_VERSION, FeatureStore, model_key, open_store

N, D, CHUNK = 10, 5, 4
SPLITS = ["train"] * 5 + ["val"] * 2 + ["test"] * 2 + [""]
IDENTITY = {"spec": {"arch": "toy", "img": 32}, "weights": {"seed": 0}, "precision": "fp32"}


def make_table(name: str = "toy", n: int = N, *, labels=None, splits=None) -> SampleTable:
    labels = np.arange(n) % 3 if labels is None else labels
    return SampleTable(
        name=name,
        ids=[f"{name}/{i:03d}" for i in range(n)],
        labels=labels,
        splits=SPLITS[:n] if splits is None else splits,
        sources=[f"/data/{name}/{i}.png" for i in range(n)],
        classes=("a", "b", "c"),
        task="multiclass",
        attrs={"source": "test", "root": "/data"},
    )


def known_values(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def write_model(ds, model: str, values: np.ndarray, *, rows=None, complete=True, bad=None):
    """Write ``values[rows]`` chunk by chunk (contiguous blocks) and mark completeness."""
    rows = np.arange(len(values)) if rows is None else np.asarray(rows)
    with ds.open_writer(
        model, dim=values.shape[1], chunk_rows=CHUNK, identity=IDENTITY, attrs={"view": "cls"}
    ) as w:
        for lo in range(0, len(values), CHUNK):
            block = rows[(rows >= lo) & (rows < lo + CHUNK)]
            if len(block):
                b = None if bad is None else bad[block]
                w.write(block, values[block], b)
        w.update_attrs(complete=complete)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "s.zarr"


@pytest.fixture
def filled(store_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A store with dataset 'toy' and complete models 'timm:m1' and 'm2' of known values."""
    st = open_store(store_path, mode="a")
    ds = st.add_dataset(make_table())
    v1, v2 = known_values(seed=1), known_values(d=3, seed=2)
    write_model(ds, "timm:m1", v1)
    write_model(ds, "m2", v2)
    return store_path, v1, v2


def test_new_store_has_format_attrs(store_path: Path) -> None:
    st = open_store(store_path, mode="a")
    assert isinstance(st, FeatureStore)
    assert st.datasets == ()
    attrs = zarr.open_group(str(store_path), mode="r").attrs
    assert attrs["featlab_format"] == FORMAT_VERSION == 1
    assert isinstance(attrs["featlab_version"], str)
    assert open_store(store_path).datasets == ()


def test_samples_and_dataset_attrs_round_trip(store_path: Path) -> None:
    table = make_table()
    open_store(store_path, mode="a").add_dataset(table)
    st = open_store(store_path, mode="r")
    ds = st["toy"]
    assert ds.n == N
    assert ds.name == "toy"
    np.testing.assert_array_equal(ds.ids, [f"toy/{i:03d}" for i in range(N)])
    np.testing.assert_array_equal(ds.labels, np.arange(N) % 3)
    assert ds.labels.dtype == np.int32
    np.testing.assert_array_equal(ds.splits, SPLITS)
    np.testing.assert_array_equal(ds.sources, [f"/data/toy/{i}.png" for i in range(N)])
    assert ds.classes == ("a", "b", "c")
    assert ds.task == "multiclass"
    spec = ds.spec
    assert spec["name"] == "toy"
    assert spec["n_samples"] == N
    assert spec["split_counts"] == {"train": 5, "val": 2, "test": 2, "unlabeled": 1}
    assert spec["source"] == "test"
    assert spec["root"] == "/data"
    assert ds.models == ()
    assert ds.all_models() == ()


def test_sample_arrays_have_dimension_names(store_path: Path) -> None:
    open_store(store_path, mode="a").add_dataset(make_table())
    g = zarr.open_group(str(store_path), mode="r")
    for key in ("id", "label", "split", "source"):
        assert g[f"toy/samples/{key}"].metadata.dimension_names == ("sample",)
    x = xr.open_dataset(
        str(store_path), group="toy/samples", engine="zarr", zarr_format=3, consolidated=False
    )
    assert set(x.data_vars) == {"id", "label", "split", "source"}
    assert x["label"].dims == ("sample",)
    np.testing.assert_array_equal(x["id"].values.tolist(), make_table().ids)


def test_datasets_sorted_contains_iter_and_unknown(store_path: Path) -> None:
    st = open_store(store_path, mode="a")
    st.add_dataset(make_table("zeta", 4))
    st.add_dataset(make_table("alpha", 3))
    st = open_store(store_path)
    assert st.datasets == ("alpha", "zeta")
    assert list(st) == ["alpha", "zeta"]
    assert "alpha" in st
    assert "beta" not in st
    assert st["zeta"].n == 4
    assert st["alpha"].n == 3
    with pytest.raises(UnknownDatasetError, match=r"'zetta'.*Did you mean \['zeta'\]"):
        st["zetta"]
    assert "alpha" in repr(st)


def test_embeddings_round_trip(filled) -> None:
    path, v1, v2 = filled
    ds = open_store(path, mode="r")["toy"]
    assert ds.models == ("m2", "timm:m1")  # sorted by key; the real name comes back
    assert ds.all_models() == ("m2", "timm:m1")
    assert ds.dim("timm:m1") == D
    assert ds.dim("m2") == 3
    assert ds.n_written("timm:m1") == N
    out = ds.embeddings("timm:m1")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, v1)
    np.testing.assert_array_equal(ds.embeddings("m2"), v2)
    splits = np.asarray(SPLITS)
    for split in ("train", "val", "test", ""):
        np.testing.assert_array_equal(ds.embeddings("timm:m1", split), v1[splits == split])
        x, y = ds.xy("timm:m1", split)
        np.testing.assert_array_equal(x, v1[splits == split])
        np.testing.assert_array_equal(y, (np.arange(N) % 3)[splits == split])
    x, y = ds.xy("m2")
    np.testing.assert_array_equal(x, v2)
    np.testing.assert_array_equal(y, np.arange(N) % 3)


def test_model_attrs_and_key(filled) -> None:
    path, _, _ = filled
    ds = open_store(path)["toy"]
    a = ds.model_attrs("timm:m1")
    assert a["name"] == "timm:m1"
    assert a["spec"] == IDENTITY["spec"]
    assert a["weights"] == IDENTITY["weights"]
    assert a["precision"] == "fp32"
    assert a["view"] == "cls"
    assert a["complete"] is True
    assert model_key("timm:m1") == "timm~m1"
    assert (path / "toy" / "embeddings" / "timm~m1" / "zarr.json").is_file()
    values = zarr.open_group(str(path), mode="r")["toy/embeddings/timm~m1/values"]
    assert values.chunks == (CHUNK, D)
    assert values.metadata.dimension_names == ("sample", "feature")


def test_info_lists_every_dataset_model(filled) -> None:
    path, _, _ = filled
    rows = open_store(path).info()
    by_model = {r["model"]: r for r in rows}
    assert set(by_model) == {"m2", "timm:m1"}
    r = by_model["timm:m1"]
    assert (r["dataset"], r["n"], r["dim"], r["written"], r["complete"]) == ("toy", N, D, N, True)
    assert r["precision"] == "fp32"
    assert r["bytes"] >= N * D * 4  # uncompressed float32 values


def test_non_contiguous_writes(store_path: Path) -> None:
    ds = open_store(store_path, mode="a").add_dataset(make_table())
    v = known_values(seed=3)
    with ds.open_writer("m", dim=D, chunk_rows=CHUNK, identity=IDENTITY, attrs={}) as w:
        w.write(np.array([0, 2, 3]), v[[0, 2, 3]])
        w.write(np.array([5, 7]), v[[5, 7]])
        np.testing.assert_array_equal(np.flatnonzero(w.written()), [0, 2, 3, 5, 7])
    ds = open_store(store_path)["toy"]
    rows = ds.rows("m", partial=True)
    np.testing.assert_array_equal(rows, [0, 2, 3, 5, 7])
    np.testing.assert_array_equal(ds.embeddings("m", partial=True), v[rows])
    # unwritten rows hold the fill value, not stale data
    raw = zarr.open_group(str(store_path), mode="r")["toy/embeddings/m/values"][:]
    np.testing.assert_array_equal(raw[[1, 4, 6, 8, 9]], 0.0)


def test_bad_rows_are_excluded(store_path: Path) -> None:
    ds = open_store(store_path, mode="a").add_dataset(make_table())
    v = known_values(seed=4)
    bad = np.zeros(N, dtype=bool)
    bad[[1, 6]] = True
    write_model(ds, "m", v, bad=bad)
    ds = open_store(store_path)["toy"]
    np.testing.assert_array_equal(ds.bad_mask("m"), bad)
    np.testing.assert_array_equal(ds.rows("m"), np.flatnonzero(~bad))
    x, y = ds.xy("m")
    np.testing.assert_array_equal(x, v[~bad])
    np.testing.assert_array_equal(y, (np.arange(N) % 3)[~bad])
    x, y = ds.xy("m", "train")  # train = rows 0..4, row 1 bad
    np.testing.assert_array_equal(x, v[[0, 2, 3, 4]])
    np.testing.assert_array_equal(y, [0, 2, 0, 1])


def test_unknown_model_and_split(filled) -> None:
    path, _, _ = filled
    ds = open_store(path)["toy"]
    with pytest.raises(UnknownModelError, match=r"'timm:m11'.*Did you mean \['timm:m1'\]"):
        ds.embeddings("timm:m11")
    with pytest.raises(InvalidArgumentError, match=r"no split 'valid'.*'train'"):
        ds.xy("timm:m1", "valid")


def test_to_xarray(filled) -> None:
    path, v1, _ = filled
    ds = open_store(path)["toy"]
    da = ds.to_xarray("timm:m1")
    assert isinstance(da, xr.DataArray)
    assert da.dims == ("sample", "feature")
    assert da.shape == (N, D)
    assert da.name == "timm:m1"
    assert not da.variable._in_memory  # lazy: nothing read yet
    np.testing.assert_array_equal(da["id"].values.tolist(), ds.ids)
    np.testing.assert_array_equal(da["label"].values, np.arange(N) % 3)
    np.testing.assert_array_equal(da["split"].values.tolist(), SPLITS)
    np.testing.assert_array_equal(da["source"].values.tolist(), ds.sources)
    assert da.attrs["dataset"] == "toy"
    assert da.attrs["model"] == "timm:m1"
    assert json.loads(da.attrs["provenance"])["spec"] == IDENTITY["spec"]
    train = da.where(da["split"] == "train", drop=True)
    np.testing.assert_array_equal(train.values, v1[:5])
    np.testing.assert_array_equal(da.values, v1)
    assert da.values.dtype == np.float32


def test_to_xarray_reads_lazily_from_disk(filled) -> None:
    """Values come from disk on access: a chunk removed after to_xarray() reads as fill value."""
    path, v1, _ = filled
    da = open_store(path)["toy"].to_xarray("timm:m1")
    (path / "toy" / "embeddings" / "timm~m1" / "values" / "c" / "0" / "0").unlink()
    expected = v1.copy()
    expected[:CHUNK] = 0.0
    np.testing.assert_array_equal(da.values, expected)


def test_plain_xarray_sees_dimension_names(filled) -> None:
    path, v1, _ = filled
    x = xr.open_zarr(str(path), group="toy/embeddings/timm~m1", zarr_format=3, consolidated=False)
    assert x["values"].dims == ("sample", "feature")
    assert x["written"].dims == ("sample",)
    np.testing.assert_array_equal(x["values"].values, v1)
    assert bool(x["written"].values.all())
    y = xr.open_dataset(
        str(path),
        engine="zarr",
        group="toy/embeddings/timm~m1",
        zarr_format=3,
        consolidated=False,
    )
    assert y["values"].dims == ("sample", "feature")
    assert y.attrs["name"] == "timm:m1"


def test_incomplete_model_reading(store_path: Path) -> None:
    ds = open_store(store_path, mode="a").add_dataset(make_table())
    v = known_values(seed=5)
    write_model(ds, "half", v, rows=np.arange(6), complete=False)  # train + first val row
    ds = open_store(store_path)["toy"]
    assert ds.models == ()
    assert ds.all_models() == ("half",)
    assert ds.n_written("half") == 6
    # the train split is fully written, so it reads even though the model is incomplete
    np.testing.assert_array_equal(ds.xy("half", "train")[0], v[:5])
    with pytest.raises(IncompleteEmbeddingError, match=r"1 of 2 samples of split 'val'.*toy/006"):
        ds.xy("half", "val")
    with pytest.raises(IncompleteEmbeddingError, match="4 of 10 samples of the dataset"):
        ds.embeddings("half")
    x, y = ds.xy("half", "val", partial=True)
    np.testing.assert_array_equal(x, v[[5]])
    np.testing.assert_array_equal(y, [2])
    np.testing.assert_array_equal(ds.embeddings("half", partial=True), v[:6])
    with pytest.raises(IncompleteEmbeddingError, match=r"incomplete.*6/10 rows"):
        ds.to_xarray("half")
    da = ds.to_xarray("half", partial=True)
    np.testing.assert_array_equal(da.values[:6], v[:6])
    assert [r["complete"] for r in open_store(store_path).info()] == [False]


def test_multilabel_round_trip(store_path: Path) -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, (N, 4)).astype(np.uint8)
    table = SampleTable(
        name="ml",
        ids=[f"img{i}" for i in range(N)],
        labels=labels,
        splits=SPLITS,
        sources=[f"{i}.png" for i in range(N)],
        classes=("w", "x", "y", "z"),
        task="multilabel",
    )
    st = open_store(store_path, mode="a")
    ds = st.add_dataset(table)
    v = known_values(seed=6)
    write_model(ds, "m", v)
    ds = open_store(store_path)["ml"]
    assert ds.task == "multilabel"
    assert ds.labels.dtype == np.uint8
    assert ds.labels.shape == (N, 4)
    np.testing.assert_array_equal(ds.labels, labels)
    arr = zarr.open_group(str(store_path), mode="r")["ml/samples/label"]
    assert arr.metadata.dimension_names == ("sample", "class")
    x, y = ds.xy("m", "train")
    np.testing.assert_array_equal(x, v[:5])
    np.testing.assert_array_equal(y, labels[:5])
    assert y.shape == (5, 4)
    da = ds.to_xarray("m")
    assert "label" not in da.coords  # documented: multi-label has no label coord
    np.testing.assert_array_equal(da["id"].values.tolist(), table.ids)
    # adding the same multi-label table again reuses it
    again = open_store(store_path, mode="a").add_dataset(table)
    np.testing.assert_array_equal(again.labels, labels)


def test_unknown_labels_round_trip(store_path: Path) -> None:
    labels = np.array([0, -1, 2, 1, -1, 0, 1, 2, -1, 0])
    open_store(store_path, mode="a").add_dataset(make_table(labels=labels))
    np.testing.assert_array_equal(open_store(store_path)["toy"].labels, labels)


def test_empty_dataset(store_path: Path) -> None:
    table = SampleTable(
        name="empty",
        ids=[],
        labels=np.zeros(0, int),
        splits=[],
        sources=[],
        classes=("a",),
        task="multiclass",
    )
    open_store(store_path, mode="a").add_dataset(table)
    ds = open_store(store_path)["empty"]
    assert ds.n == 0
    assert ds.ids.shape == (0,)


def test_values_at_reads_rows_in_the_order_given(filled) -> None:
    path, v1, _ = filled
    ds = open_store(path)["toy"]
    rows = np.array([7, 0, 3, 3])
    np.testing.assert_array_equal(ds.values_at("timm:m1", rows), v1[rows])
    np.testing.assert_array_equal(ds.values_at("timm:m1", np.arange(N)[::-1]), v1[::-1])
    np.testing.assert_array_equal(ds.values_at("timm:m1", np.arange(N)), v1)
    np.testing.assert_array_equal(ds.values_at("timm:m1", np.arange(2, 6)), v1[2:6])  # a run
    np.testing.assert_array_equal(ds.values_at("timm:m1", np.array([2, 4, 3])), v1[[2, 4, 3]])
    assert ds.values_at("timm:m1", np.array([], dtype=int)).shape == (0, v1.shape[1])
