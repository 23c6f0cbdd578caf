"""``pcam-kaggle``: a synthetic histopathologic-cancer-detection folder, as unzipped from Kaggle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import get_dataset_info, load_dataset
from featlab.datasets.pcam_kaggle import read_pcam_kaggle
from featlab.datasets.splits import stratified_split
from featlab.errors import DatasetError


def hex_id(i: int) -> str:
    """A 40-hex-character id like Kaggle's (a sha1 of the index)."""
    return hashlib.sha1(str(i).encode()).hexdigest()


def write_kaggle(root: Path, *, n_train: int = 20, n_test: int = 3, rows=None) -> dict[str, int]:
    """train_labels.csv + train/<id>.tif (label = i % 2) + test/<id>.tif; returns id -> label."""
    labels = {hex_id(i): i % 2 for i in range(n_train)}
    for folder, ids in (
        ("train", list(labels)),
        ("test", [hex_id(1000 + i) for i in range(n_test)]),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for k, sid in enumerate(ids):
            img = np.full((8, 8, 3), (k * 10) % 256, np.uint8)
            Image.fromarray(img).save(root / folder / f"{sid}.tif")
    lines = rows if rows is not None else [f"{k},{v}" for k, v in labels.items()]
    (root / "train_labels.csv").write_text("id,label\n" + "\n".join(lines) + "\n")
    (root / "sample_submission.csv").write_text("id,label\n")
    return labels


def test_reads_labeled_and_unlabeled(tmp_path: Path):
    labels = write_kaggle(tmp_path)
    t = load_dataset("pcam-kaggle", data_root=tmp_path)
    assert t.name == "pcam-kaggle"
    assert len(t) == 23
    assert t.task == "binary"
    assert t.classes == ("no_tumor", "tumor")
    # 10 per class, 80/10/10 -> 8/1/1 per class; the 3 test/ images are unlabeled.
    assert t.split_counts() == {"train": 16, "val": 2, "test": 2, "unlabeled": 3}
    train_ids = sorted(labels)
    assert t.ids[:20].tolist() == [f"train/{i}" for i in train_ids]
    assert t.ids[20].startswith("test/")
    np.testing.assert_array_equal(t.labels[:20], [labels[i] for i in train_ids])
    np.testing.assert_array_equal(t.labels[20:], [-1, -1, -1])
    assert t.splits[20:].tolist() == ["", "", ""]
    np.testing.assert_array_equal(
        t.splits[:20], stratified_split(t.labels[:20], {"train": 0.8, "val": 0.1, "test": 0.1})
    )
    assert t.attrs["split_seed"] == 0
    assert "80/10/10" in t.attrs["split_method"]
    assert t.sources[0] == str(tmp_path / "train" / f"{train_ids[0]}.tif")
    assert t.images.load([21])[0].size == (8, 8)


def test_split_ignores_csv_row_order(tmp_path: Path):
    labels = write_kaggle(tmp_path / "a")
    shuffled = [f"{k},{labels[k]}" for k in reversed(list(labels))]
    write_kaggle(tmp_path / "b", rows=shuffled)
    a = load_dataset("pcam-kaggle", data_root=tmp_path / "a")
    b = load_dataset("pcam-kaggle", data_root=tmp_path / "b")
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.splits, b.splits)


def test_registry_entry():
    info = get_dataset_info("pcam-kaggle")
    assert info.folder == "pcam-kaggle"
    assert info.default_metric == "auc"
    assert "kaggle competitions download -c histopathologic-cancer-detection" in info.access
    assert "accept" in info.access
    assert info.downloads == {}


def test_featlab_data_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_kaggle(tmp_path / "pcam-kaggle", n_train=4, n_test=0)
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path))
    assert len(load_dataset("pcam-kaggle")) == 4


def test_missing_layout(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"'pcam-kaggle': files not found[\s\S]*train_labels"):
        load_dataset("pcam-kaggle", data_root=tmp_path)
    with pytest.raises(DatasetError, match=r"train_labels\.csv or train/ not found"):
        read_pcam_kaggle(tmp_path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda rows: [*rows, f"{hex_id(99)},1"],
            rf"1 labeled id\(s\) have no image.*{hex_id(99)}",
        ),
        (lambda rows: [*rows, rows[3]], rf"line 22: id '{hex_id(3)}' appears more than once"),
        (lambda rows: [f"{hex_id(0)},2", *rows[1:]], rf"line 2: id '{hex_id(0)}' has label '2'"),
        (lambda rows: [f"{hex_id(0)},", *rows[1:]], rf"id '{hex_id(0)}' has label ''"),
        (lambda rows: [f"{hex_id(0)},1,x", *rows[1:]], r"line 2: expected 'id,label'"),
    ],
)
def test_malformed_csv(tmp_path: Path, edit, match):
    labels = write_kaggle(tmp_path)
    write_kaggle(tmp_path, rows=edit([f"{k},{v}" for k, v in labels.items()]))
    with pytest.raises(DatasetError, match=match):
        load_dataset("pcam-kaggle", data_root=tmp_path)


def test_wrong_header(tmp_path: Path):
    write_kaggle(tmp_path)
    path = tmp_path / "train_labels.csv"
    path.write_text(path.read_text().replace("id,label", "image,target", 1))
    with pytest.raises(DatasetError, match=r"header must be id,label; got \['image', 'target'\]"):
        load_dataset("pcam-kaggle", data_root=tmp_path)
