"""``aptos2019`` against a synthetic miniature in the Kaggle layout (datasets.md section 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError

# 13 labeled images: grade 0 x5, 2 x5, and one each of 1, 3, 4; 3 unlabeled test images.
TRAIN = {f"{i:012x}": g for i, g in enumerate([0] * 5 + [2] * 5 + [1, 3, 4])}
TEST = ["aaaaaaaaaaa1", "aaaaaaaaaaa2", "aaaaaaaaaaa3"]


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(path)


def write_aptos(root: Path, train: dict[str, object] = TRAIN, test=TEST) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["id_code,diagnosis", *(f"{k},{v}" for k, v in train.items())]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "test.csv").write_text("\n".join(["id_code", *test]) + "\n")
    for k in train:
        _png(root / "train_images" / f"{k}.png", 10)
    for k in test:
        _png(root / "test_images" / f"{k}.png", 20)
    return root


def test_reads_labels_and_unlabeled_test(tmp_path):
    t = load_dataset("aptos2019", data_root=write_aptos(tmp_path / "aptos"))
    assert t.task == "ordinal"
    assert t.classes == ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
    assert list(t.ids) == [*TRAIN, *TEST]
    np.testing.assert_array_equal(t.labels, [*TRAIN.values(), -1, -1, -1])
    # Per grade, 60/20/20 rounded: 5 -> 3/1/1, 1 -> 1/0/0 (three such grades); test rows -> "".
    assert t.split_counts() == {"train": 9, "val": 2, "test": 2, "unlabeled": 3}
    assert list(t.splits[-3:]) == ["", "", ""]
    assert t.attrs["split_seed"] == 0
    assert t.sources[0].endswith(f"train_images/{next(iter(TRAIN))}.png")
    img = t.images.load([0])[0]
    assert img.mode == "RGB"
    assert img.size == (16, 16)


def test_split_is_deterministic(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    a = load_dataset("aptos2019", data_root=root)
    b = load_dataset("aptos2019", data_root=root)
    np.testing.assert_array_equal(a.splits, b.splits)


def test_test_csv_is_optional(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    (root / "test.csv").unlink()
    assert len(load_dataset("aptos2019", data_root=root)) == len(TRAIN)


def test_missing_dataset_names_files_and_kaggle(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*train\.csv.*kaggle competitions"):
        load_dataset("aptos2019", data_root=tmp_path / "nothing")


def test_missing_image_is_named(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    (root / "train_images" / "000000000003.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*000000000003\.png"):
        load_dataset("aptos2019", data_root=root)


def test_missing_test_image_is_named(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    (root / "test_images" / "aaaaaaaaaaa2.png").unlink()
    with pytest.raises(DatasetError, match=r"aaaaaaaaaaa2\.png"):
        load_dataset("aptos2019", data_root=root)


def test_duplicate_id_is_named(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    with (root / "train.csv").open("a") as fh:
        fh.write("000000000001,2\n")
    with pytest.raises(DatasetError, match=r"'000000000001' appears twice .*lines 3 and 15"):
        load_dataset("aptos2019", data_root=root)


@pytest.mark.parametrize("grade", ["5", "-1", "two", ""])
def test_grade_out_of_range_is_named(tmp_path, grade):
    root = write_aptos(tmp_path / "aptos", train={**TRAIN, "bbbbbbbbbbbb": grade})
    with pytest.raises(DatasetError, match=r"'bbbbbbbbbbbb' \(train\.csv line 15\).*grade 0\.\.4"):
        load_dataset("aptos2019", data_root=root)


def test_wrong_header_is_a_missing_dataset_error(tmp_path):
    root = write_aptos(tmp_path / "aptos")
    (root / "train.csv").write_text("image,level\nx,1\n")
    with pytest.raises(
        DatasetError, match=r"(?s)no column\(s\) \['id_code', 'diagnosis'\].*get it"
    ):
        load_dataset("aptos2019", data_root=root)
