"""``digits`` against scikit-learn's own copy, and the ``load_dataset`` name resolver."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.datasets import load_dataset, load_digits_table
from featlab.errors import DatasetError, UnknownDatasetError

# Per-class sizes of scikit-learn's digits, and 60/20/20 by hand: train = round(0.6 n),
# val = round(0.8 n) - train, test = the rest.
CLASS_SIZES = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="module")
def digits():
    return load_digits_table()


def test_shape_classes_labels(digits, sk_digits):
    assert digits.name == "digits"
    assert len(digits) == 1797
    assert digits.classes == tuple("0123456789")
    assert digits.task == "multiclass"
    np.testing.assert_array_equal(digits.labels, sk_digits.target)
    np.testing.assert_array_equal(np.bincount(digits.labels), CLASS_SIZES)
    assert digits.ids[0] == "0000"
    assert digits.ids[-1] == "1796"
    assert len(set(digits.ids.tolist())) == 1797
    assert digits.sources[5] == "sklearn.datasets.load_digits#5"


def test_pixels_are_exact_4x_replication_of_sklearn_scaled_to_255(digits, sk_digits):
    src = sk_digits.images  # (1797, 8, 8), values 0..16
    assert src.min() == 0
    assert src.max() == 16
    # Independent reference: round-half-up of v * 255 / 16, with exact integer arithmetic.
    ref8 = (src.astype(np.int64) * 255 * 2 + 16) // 32
    assert ref8[src == 16].min() == 255
    assert ref8[src == 8].min() == 128  # 127.5 rounds up
    assert ref8[src == 1].min() == 16  # 15.94 -> 16
    arr = digits.images.images
    assert arr.shape == (1797, 32, 32)
    assert arr.dtype == np.uint8
    for dy in range(4):
        for dx in range(4):
            np.testing.assert_array_equal(arr[:, dy::4, dx::4], ref8)
    # And what a decoding worker gets is the same gray image in all three channels.
    rows = [0, 1000, 1796]
    for img, r in zip(digits.images.load(rows), rows, strict=True):
        assert img.size == (32, 32)
        px = np.asarray(img)
        assert px.shape == (32, 32, 3)
        for c in range(3):
            np.testing.assert_array_equal(px[..., c], np.kron(ref8[r], np.ones((4, 4), int)))


def test_split_counts_match_hand_computation(digits):
    expected = {"train": 0, "val": 0, "test": 0}
    for cls, n in enumerate(CLASS_SIZES):
        train = (6 * n + 5) // 10  # round(0.6 n); never a .5 tie for integer n
        val = (8 * n + 5) // 10 - train
        test = n - train - val
        s = digits.splits[digits.labels == cls].tolist()
        assert (s.count("train"), s.count("val"), s.count("test")) == (train, val, test)
        expected["train"] += train
        expected["val"] += val
        expected["test"] += test
    assert digits.split_counts() == expected
    assert expected == {"train": 1078, "val": 360, "test": 359}
    assert "" not in digits.splits.tolist()
    assert digits.attrs["split_seed"] == 0


def test_split_is_seeded(digits):
    again = load_digits_table()
    np.testing.assert_array_equal(digits.splits, again.splits)
    other = load_digits_table(seed=1)
    assert (other.splits != digits.splits).any()
    assert other.split_counts() == digits.split_counts()
    assert other.attrs["split_seed"] == 1


def test_load_dataset_digits(digits):
    t = load_dataset("digits")
    assert t.name == "digits"
    np.testing.assert_array_equal(t.splits, digits.splits)


@pytest.mark.parametrize("spec", ["pcam-unknown", "Digits", "folders:/x", "csv", "", "hdf5:/x.h5"])
def test_load_dataset_unknown(spec):
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset.*folder:PATH.*csv:PATH"):
        load_dataset(spec)


def test_unknown_dataset_error_is_a_key_error_with_a_plain_message():
    with pytest.raises(KeyError) as info:
        load_dataset("nope")
    msg = str(info.value)
    assert msg.startswith("unknown dataset 'nope'.")  # plain: KeyError would quote it
    assert "folder:PATH" in msg
    assert "featlab datasets" in msg


def test_load_dataset_folder_and_csv_errors_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist or is not a directory"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    with pytest.raises(DatasetError, match="CSV manifest"):
        load_dataset(f"csv:{tmp_path / 'none.csv'}")
