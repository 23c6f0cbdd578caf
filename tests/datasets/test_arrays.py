"""SampleTables over numpy arrays and HDF5 datasets; HDF5Images slicing and pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from featlab.datasets import table_from_arrays, table_from_hdf5
from featlab.datasets.images import HDF5Images
from featlab.datasets.splits import stratified_split
from featlab.errors import BadImageError, DatasetError

h5py = pytest.importorskip("h5py")


def _rgb(img) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


# -- table_from_arrays ----------------------------------------------------------------------------


def test_tiny_table_fixture(tiny_table):
    t = tiny_table
    assert t.name == "tiny"
    assert len(t) == 40
    assert t.classes == ("0", "1")
    assert t.task == "binary"
    assert t.ids[:3].tolist() == ["000000", "000001", "000002"]
    assert t.sources[7] == "memory#7"
    # 20 per class, 60/20/20 -> 12/4/4 per class.
    assert t.split_counts() == {"train": 24, "val": 8, "test": 8}
    np.testing.assert_array_equal(t.splits, stratified_split(t.labels, seed=0))


def test_arrays_round_trip_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)
    t = table_from_arrays(images, [0, 1, 2, 0, 1, 2], name="rt")
    assert t.classes == ("0", "1", "2")
    assert t.task == "multiclass"
    out = t.images.load([4, 1])
    np.testing.assert_array_equal(_rgb(out[0]), images[4])
    np.testing.assert_array_equal(_rgb(out[1]), images[1])


def test_arrays_grayscale_uint16():
    images = np.array([[[0, 257], [32896, 65535]]] * 2, dtype=np.uint16)  # (2, 2, 2)
    t = table_from_arrays(images, [0, 1], name="g16", splits=["train", "test"])
    expected = np.array([[0, 1], [128, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(_rgb(t.images.load([1])[0]), np.stack([expected] * 3, -1))


def test_arrays_given_splits_and_classes():
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    t = table_from_arrays(
        images, [1, 0, -1], name="n", splits=["train", "val", ""], classes=["neg", "pos"], seed=5
    )
    assert t.classes == ("neg", "pos")
    assert t.splits.tolist() == ["train", "val", ""]
    assert t.attrs == {"source": "arrays", "split_method": "given"}


def test_arrays_default_split_uses_seed():
    images = np.zeros((30, 2, 2), dtype=np.uint8)
    labels = np.arange(30) % 3
    a = table_from_arrays(images, labels, name="s", seed=1)
    b = table_from_arrays(images, labels, name="s", seed=2)
    np.testing.assert_array_equal(a.splits, stratified_split(labels, seed=1))
    assert (a.splits != b.splits).any()
    assert a.attrs["split_seed"] == 1


def test_arrays_length_mismatch():
    with pytest.raises(DatasetError, match="m: 3 images but 2 labels"):
        table_from_arrays(np.zeros((3, 2, 2), np.uint8), [0, 1], name="m")


def test_arrays_label_outside_given_classes_names_sample():
    with pytest.raises(DatasetError, match=r"sample '000001' has label 2, outside 0\.\.1"):
        table_from_arrays(np.zeros((2, 2, 2), np.uint8), [0, 2], name="m", classes=["a", "b"])


def test_arrays_bad_rank():
    with pytest.raises(DatasetError, match=r"\(n, H, W\[, C\]\)"):
        table_from_arrays(np.zeros((2, 4), np.uint8), [0, 1], name="m")


def test_arrays_bad_dtype_is_an_error_per_row_not_a_crash():
    t = table_from_arrays(np.zeros((2, 2, 2), np.float32), [0, 1], name="f")
    out = t.images.load([0, 1])
    assert all(isinstance(e, BadImageError) for e in out)
    assert "uint8 or uint16" in str(out[0])


# -- HDF5 -----------------------------------------------------------------------------------------


@pytest.fixture
def h5_file(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
    gray16 = (np.arange(10 * 4, dtype=np.uint16) * 1000).reshape(10, 2, 2)
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=images, chunks=(2, 6, 5, 3))
        f.create_dataset("g16", data=gray16)
        f.create_dataset("y", data=np.arange(10) % 2)
    return path, images, gray16


class _SpyDataset:
    """Records the keys an h5py dataset is indexed with."""

    def __init__(self, ds, calls):
        self.ds, self.calls = ds, calls

    def __getitem__(self, key):
        self.calls.append(key)
        return self.ds[key]


def test_hdf5_images_read_one_contiguous_slice(h5_file, monkeypatch):
    path, images, _ = h5_file
    src = HDF5Images(str(path), "x")
    assert len(src) == 10
    real = src._dataset
    calls = []
    monkeypatch.setattr(src, "_dataset", lambda: _SpyDataset(real(), calls))
    rows = [5, 3, 4, 3]
    out = src.load(rows)
    assert calls == [slice(3, 6)]  # one read for the whole batch, not one per row
    for img, r in zip(out, rows, strict=True):
        np.testing.assert_array_equal(_rgb(img), images[r])
    calls.clear()
    out = src.load([1, 8])  # sparse rows still one slice, picked from the block
    assert calls == [slice(1, 9)]
    np.testing.assert_array_equal(_rgb(out[1]), images[8])
    calls.clear()
    assert src.load([]) == []
    assert calls == []


def test_hdf5_images_work_after_pickling(h5_file):
    path, images, _ = h5_file
    src = HDF5Images(str(path), "x")
    src.load([0])  # parent has an open handle; it must not travel to the worker
    blob = pickle.dumps(src)
    worker_copy = pickle.loads(blob)
    assert worker_copy._file is None
    out = worker_copy.load([2, 3])
    np.testing.assert_array_equal(_rgb(out[0]), images[2])
    np.testing.assert_array_equal(_rgb(out[1]), images[3])
    assert len(worker_copy) == 10


def test_hdf5_images_reopen_in_a_new_process(h5_file, monkeypatch):
    import os

    path, images, _ = h5_file
    src = HDF5Images(str(path), "x")
    first = src._file
    monkeypatch.setattr(os, "getpid", lambda: -12345)  # as if forked into a worker
    np.testing.assert_array_equal(_rgb(src.load([9])[0]), images[9])
    assert src._file is not first


def test_hdf5_images_16bit(h5_file):
    path, _, gray16 = h5_file
    src = HDF5Images(str(path), "g16")
    out = _rgb(src.load([1])[0])
    # Row 1 holds 4000, 5000, 6000, 7000 -> round(v / 257) = 16, 19, 23, 27.
    np.testing.assert_array_equal(gray16[1].ravel(), [4000, 5000, 6000, 7000])
    np.testing.assert_array_equal(out[..., 0].ravel(), [16, 19, 23, 27])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_hdf5_images_unknown_key(h5_file):
    path, _, _ = h5_file
    with pytest.raises(DatasetError, match=r"no dataset 'images'; found \['g16', 'x', 'y'\]"):
        HDF5Images(str(path), "images")


def test_hdf5_images_not_an_hdf5_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"definitely not hdf5")
    with pytest.raises(DatasetError, match=r"bad\.h5: cannot open HDF5 file"):
        HDF5Images(str(bad), "x")


def test_table_from_hdf5(h5_file):
    path, images, _ = h5_file
    with h5py.File(path) as f:
        labels = f["y"][:]
    t = table_from_hdf5(path, "x", labels, name="h5set")
    assert t.name == "h5set"
    assert len(t) == 10
    assert t.task == "binary"
    assert t.sources[3] == "data.h5#3"
    assert t.attrs["source"] == "hdf5"
    assert t.attrs["key"] == "x"
    assert t.attrs["root"] == str(path.resolve())
    np.testing.assert_array_equal(t.splits, stratified_split(labels, seed=0))
    np.testing.assert_array_equal(_rgb(t.images.load([7])[0]), images[7])
    copy = pickle.loads(pickle.dumps(t.images))
    np.testing.assert_array_equal(_rgb(copy.load([6])[0]), images[6])


def test_table_from_hdf5_given_splits(h5_file):
    path, _, _ = h5_file
    splits = ["train"] * 6 + ["test"] * 4
    t = table_from_hdf5(path, "x", np.zeros(10), name="h", splits=splits, classes=["only"])
    assert t.splits.tolist() == splits
    assert t.classes == ("only",)
    assert t.attrs["split_method"] == "given"


def test_table_from_hdf5_missing_file(tmp_path):
    with pytest.raises(DatasetError, match=r"HDF5 file '.*nope\.h5' does not exist"):
        table_from_hdf5(tmp_path / "nope.h5", "x", [0], name="h")


def test_table_from_hdf5_length_mismatch(h5_file):
    path, _, _ = h5_file
    with pytest.raises(DatasetError, match=r"data\.h5#x: 10 images but 9 labels"):
        table_from_hdf5(path, "x", np.zeros(9), name="h")
