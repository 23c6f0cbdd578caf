"""MedMNIST readers: synthetic ``<flag>[_<size>].npz`` files in the official layout."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from featlab.datasets import get_dataset_info, load_dataset
from featlab.datasets.array_sources import NPZImages
from featlab.datasets.medmnist import FLAGS, Flag, read_medmnist
from featlab.errors import BadImageError, DatasetError, UnknownDatasetError

COUNTS = {"train": 4, "val": 2, "test": 3}
FLAG_NAMES = [
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
]


def make_arrays(size: int, *, rgb: bool, n_labels: int = 1, n_classes: int = 2, seed: int = 0):
    """The six official arrays: uint8 images and (N, L) uint8 labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        high = 2 if n_labels > 1 else n_classes
        arrays[f"{split}_labels"] = rng.integers(0, high, (n, n_labels), dtype=np.uint8)
    return arrays


def write_npz(path: Path, arrays: dict, *, compressed: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def flag(name: str) -> Flag:
    return next(f for f in FLAGS if f.name == name)


def rgb(img) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


# -- registry ------------------------------------------------------------------------------------


def test_every_2d_flag_is_registered_at_every_size():
    assert sorted(f.name for f in FLAGS) == sorted(FLAG_NAMES)
    for name in FLAG_NAMES:
        info = get_dataset_info(name)
        assert info.folder == "medmnist"
        assert info.sizes == (28, 64, 128, 224)
        assert sorted(info.downloads) == [28, 64, 128, 224]
    tasks = {n: get_dataset_info(n).task for n in FLAG_NAMES}
    assert tasks["chestmnist"] == "multilabel"
    assert tasks["retinamnist"] == "ordinal"
    assert tasks["pneumoniamnist"] == tasks["breastmnist"] == "binary"
    assert tasks["pathmnist"] == tasks["organsmnist"] == "multiclass"
    chest = get_dataset_info("chestmnist")
    assert len(chest.classes) == 14
    assert chest.classes[-1] == "hernia"
    assert chest.default_metric == "mean_auc"
    assert get_dataset_info("pneumoniamnist").default_metric == "auc"
    assert get_dataset_info("breastmnist").classes == ("malignant", "normal, benign")
    assert get_dataset_info("organcmnist").classes == get_dataset_info("organamnist").classes
    assert get_dataset_info("pathmnist").split_sizes == {"train": 89996, "val": 10004, "test": 7180}
    assert "CC BY-NC 4.0" in get_dataset_info("dermamnist").access


def test_downloads_use_zenodo_10519652_with_md5s():
    (f28,) = get_dataset_info("pathmnist").downloads[28]
    (f224,) = get_dataset_info("pathmnist").downloads[224]
    assert f28.filename == "pathmnist.npz"
    assert f28.url == "https://zenodo.org/records/10519652/files/pathmnist.npz?download=1"
    assert f28.md5 == "a8b06965200029087d5bd730944a56c1"
    assert f224.filename == "pathmnist_224.npz"
    assert f224.md5 == "2c51a510bcdc9cf8ddb2af93af1eadec"
    (o64,) = get_dataset_info("organsmnist").downloads[64]
    assert o64.md5 == "53a6d115339d874c25e309a994ff46d3"


# -- reading -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "compressed"), [(28, True), (64, False)])
def test_grey_flag(tmp_path: Path, size: int, compressed: bool):
    arrays = make_arrays(size, rgb=False)
    fname = "pneumoniamnist.npz" if size == 28 else f"pneumoniamnist_{size}.npz"
    write_npz(tmp_path / fname, arrays, compressed=compressed)
    spec = "pneumoniamnist" if size == 28 else f"pneumoniamnist@{size}"
    t = load_dataset(spec, data_root=tmp_path)
    assert t.name == spec
    assert len(t) == 9
    assert t.split_counts() == {"train": 4, "val": 2, "test": 3}
    assert t.task == "binary"
    assert t.classes == ("normal", "pneumonia")
    assert t.ids[[0, 4, 6]].tolist() == ["train/000000", "val/000000", "test/000000"]
    assert t.sources[5] == f"{fname}#val_images[1]"
    expected = np.concatenate([arrays[f"{s}_labels"][:, 0] for s in COUNTS])
    np.testing.assert_array_equal(t.labels, expected)
    assert t.labels.dtype == np.int32
    assert t.attrs["size"] == size
    assert t.images.parts[0].memory_mapped is (not compressed)
    # Rows across all three splits, out of order: grey is replicated into RGB.
    img_test2, img_train1, img_val0 = t.images.load([8, 1, 4])
    np.testing.assert_array_equal(rgb(img_test2), np.stack([arrays["test_images"][2]] * 3, -1))
    np.testing.assert_array_equal(rgb(img_train1)[..., 1], arrays["train_images"][1])
    np.testing.assert_array_equal(rgb(img_val0)[..., 2], arrays["val_images"][0])


@pytest.mark.parametrize(("size", "compressed"), [(28, False), (128, True)])
def test_rgb_flag(tmp_path: Path, size: int, compressed: bool):
    arrays = make_arrays(size, rgb=True, n_classes=9, seed=1)
    fname = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
    write_npz(tmp_path / fname, arrays, compressed=compressed)
    t = read_medmnist(flag("pathmnist"), tmp_path, size=size)
    assert t.name == ("pathmnist" if size == 28 else f"pathmnist@{size}")
    assert t.task == "multiclass"
    assert t.classes[0] == "adipose"
    assert len(t.classes) == 9
    np.testing.assert_array_equal(rgb(t.images.load([5])[0]), arrays["val_images"][1])


@pytest.mark.parametrize("size", [28, 64])
def test_chestmnist_multilabel(tmp_path: Path, size: int):
    arrays = make_arrays(size, rgb=False, n_labels=14, seed=2)
    fname = "chestmnist.npz" if size == 28 else f"chestmnist_{size}.npz"
    write_npz(tmp_path / fname, arrays, compressed=True)
    t = load_dataset(f"chestmnist@{size}", data_root=tmp_path)
    assert t.name == ("chestmnist" if size == 28 else f"chestmnist@{size}")
    assert t.task == "multilabel"
    assert t.labels.shape == (9, 14)
    assert t.labels.dtype == np.uint8
    np.testing.assert_array_equal(t.labels[6:], arrays["test_labels"])
    assert len(t.classes) == 14


def test_featlab_data_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_npz(
        tmp_path / "medmnist" / "breastmnist.npz", make_arrays(28, rgb=False), compressed=True
    )
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path))
    t = load_dataset("breastmnist")
    assert t.name == "breastmnist"
    assert t.attrs["root"] == str((tmp_path / "medmnist").resolve())


def test_unknown_size_is_refused(tmp_path: Path):
    with pytest.raises(UnknownDatasetError, match=r"sizes \[28, 64, 128, 224\]; got @32"):
        load_dataset("pneumoniamnist@32", data_root=tmp_path)


def test_missing_file_names_it(tmp_path: Path):
    write_npz(tmp_path / "pneumoniamnist.npz", make_arrays(28, rgb=False), compressed=True)
    with pytest.raises(DatasetError, match=r"pneumoniamnist_64\.npz"):
        load_dataset("pneumoniamnist@64", data_root=tmp_path)
    with pytest.raises(DatasetError, match=r"pneumoniamnist_64\.npz not found"):
        read_medmnist(flag("pneumoniamnist"), tmp_path, size=64)


# -- malformed files -----------------------------------------------------------------------------


def _broken(kind: str) -> dict:
    arrays = make_arrays(28, rgb=False)
    if kind == "missing key":
        del arrays["val_labels"]
    elif kind == "other size":
        arrays["train_images"] = np.zeros((4, 64, 64), np.uint8)
    elif kind == "rgb in a grey flag":
        arrays["test_images"] = np.zeros((3, 28, 28, 3), np.uint8)
    elif kind == "float images":
        arrays["train_images"] = arrays["train_images"].astype(np.float32)
    elif kind == "float labels":
        arrays["train_labels"] = arrays["train_labels"].astype(np.float32)
    elif kind == "label out of range":
        arrays["val_labels"][1, 0] = 2
    elif kind == "label count":
        arrays["test_labels"] = arrays["test_labels"][:2]
    return arrays


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing key", r"no array 'val_labels'; found \['test_images'"),
        ("other size", r"'train_images'.*shape \(N, 28, 28\); found shape \(4, 64, 64\)"),
        ("rgb in a grey flag", r"'test_images'.*grey uint8.*found shape \(3, 28, 28, 3\)"),
        ("float images", r"'train_images'.*dtype float32"),
        ("float labels", r"'train_labels'.*must be integers; found float32"),
        ("label out of range", r"'val_labels'.*row 1 has value 2.*labels are 0\.\.1"),
        ("label count", r"'test_labels'.*expected shape \(3, 1\).*found \(2, 1\)"),
    ],
)
def test_malformed_arrays(tmp_path: Path, kind: str, match: str):
    write_npz(tmp_path / "pneumoniamnist.npz", _broken(kind), compressed=True)
    with pytest.raises(DatasetError, match=r"pneumoniamnist\.npz.*" + match):
        load_dataset("pneumoniamnist", data_root=tmp_path)


def test_chestmnist_label_not_binary(tmp_path: Path):
    arrays = make_arrays(28, rgb=False, n_labels=14)
    arrays["train_labels"][3, 5] = 2
    write_npz(tmp_path / "chestmnist.npz", arrays, compressed=False)
    with pytest.raises(DatasetError, match=r"'train_labels'.*row 3 has value 2 \(column 5\)"):
        load_dataset("chestmnist", data_root=tmp_path)


def test_truncated_npz(tmp_path: Path):
    path = write_npz(tmp_path / "bloodmnist.npz", make_arrays(28, rgb=True), compressed=False)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"bloodmnist\.npz.*truncated or corrupt"):
        load_dataset("bloodmnist", data_root=tmp_path)


def test_corrupt_labels_member(tmp_path: Path):
    arrays = make_arrays(28, rgb=False)
    del arrays["test_labels"]
    path = write_npz(tmp_path / "octmnist.npz", arrays, compressed=True)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("test_labels.npy", b"not an npy array")
    with pytest.raises(DatasetError, match=r"octmnist\.npz \(array 'test_labels'\): unreadable"):
        load_dataset("octmnist", data_root=tmp_path)


# -- NPZImages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_images_read_rows_lazily_and_pickle(tmp_path: Path, compressed: bool):
    images = np.arange(6 * 5 * 5, dtype=np.uint8).reshape(6, 5, 5)
    path = write_npz(tmp_path / "a.npz", {"x": images}, compressed=compressed)
    src = NPZImages(path, "x")
    assert src.memory_mapped is (not compressed)
    assert src._pid == -1  # nothing opened until the first read
    assert len(src) == 6
    clone = pickle.loads(pickle.dumps(src))
    assert clone._mmap is None
    assert clone._stream is None
    # Forward, then backward (restarts the stream), then a sparse pick.
    for rows in ([4, 5], [0, 1], [5, 2, 0]):
        got = [rgb(img)[..., 0] for img in clone.load(rows)]
        np.testing.assert_array_equal(np.stack(got), images[rows])


def test_npz_images_corrupt_data_is_a_bad_image(tmp_path: Path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 64, 64), dtype=np.uint8)  # larger than one read buffer
    path = write_npz(tmp_path / "a.npz", {"x": images}, compressed=True)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("x.npy")
    data = bytearray(path.read_bytes())
    end = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size
    data[end - 40 : end - 20] = bytes(20)  # damage the last rows' bytes, keep the npy header
    path.write_bytes(bytes(data))
    src = NPZImages(path, "x")  # the header is intact, so the table can be built
    out = src.load([62, 63])
    assert all(isinstance(e, BadImageError) for e in out)
    assert "a.npz#x[63]: cannot read" in str(out[1])
