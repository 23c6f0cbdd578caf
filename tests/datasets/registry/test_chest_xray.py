"""``chest-xray-pneumonia`` against the Kaggle layout and its zip quirks (datasets.md 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError

# (split, class) -> file names, as the Kaggle archive names them.
FILES = {
    ("train", "NORMAL"): ["IM-0115-0001.jpeg", "NORMAL2-IM-0410-0001.jpeg"],
    ("train", "PNEUMONIA"): [
        "person1_bacteria_1.jpeg",
        "person1_virus_6.jpeg",
        "person3_virus_15.jpeg",
    ],
    ("val", "NORMAL"): ["NORMAL2-IM-1427-0001.jpeg"],
    ("val", "PNEUMONIA"): ["person1946_bacteria_4874.jpeg"],
    ("test", "NORMAL"): ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg"],
    ("test", "PNEUMONIA"): ["person100_bacteria_475.jpeg"],
}
N = sum(len(v) for v in FILES.values())  # 10


def _write_tree(tree: Path) -> None:
    for (split, cls), names in FILES.items():
        d = tree / split / cls
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(np.full((16, 16), 90, np.uint8)).save(d / name, format="JPEG")
        (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (d / f"._{names[0]}").write_bytes(b"\0\5\x16\7")  # AppleDouble resource fork


def write_kaggle(root: Path, *, outer: bool = True) -> Path:
    """The archive as extracted: chest_xray/, its nested duplicate, __MACOSX, .DS_Store."""
    if outer:
        _write_tree(root / "chest_xray")
    _write_tree(root / "chest_xray" / "chest_xray")
    mac = root / "chest_xray" / "__MACOSX" / "chest_xray" / "train" / "NORMAL"
    mac.mkdir(parents=True)
    (mac / "._IM-0115-0001.jpeg").write_bytes(b"\0\5\x16\7")
    (root / "chest_xray" / ".DS_Store").write_bytes(b"\0")
    return root


def test_reads_one_tree_with_official_splits(tmp_path):
    t = load_dataset("chest-xray-pneumonia", data_root=write_kaggle(tmp_path / "cx"))
    assert len(t) == N  # the nested duplicate is not counted twice
    assert t.task == "binary"
    assert t.classes == ("NORMAL", "PNEUMONIA")
    assert t.split_counts() == {"train": 5, "val": 2, "test": 3}
    assert t.attrs["tree"] == "chest_xray"
    expected = {f"{s}/{c}/{n}": int(c == "PNEUMONIA") for (s, c), ns in FILES.items() for n in ns}
    assert dict(zip(t.ids, t.labels.tolist(), strict=True)) == expected
    assert all(s.split("/")[0] == str(sp) for s, sp in zip(t.ids, t.splits, strict=True))
    assert "/chest_xray/chest_xray/" not in t.sources[0]
    assert t.images.load([0])[0].size == (16, 16)


def test_nested_tree_alone_is_read(tmp_path):
    t = load_dataset("chest-xray-pneumonia", data_root=write_kaggle(tmp_path / "cx", outer=False))
    assert len(t) == N
    assert t.attrs["tree"] == "chest_xray/chest_xray"
    assert "train/NORMAL/IM-0115-0001.jpeg" in set(t.ids)


def test_missing_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*chest_xray/\{train,val,test\}"):
        load_dataset("chest-xray-pneumonia", data_root=tmp_path)


def test_incomplete_tree_names_missing_folders(tmp_path):
    _write_tree(tmp_path / "chest_xray")
    shutil.rmtree(tmp_path / "chest_xray" / "val" / "PNEUMONIA")
    with pytest.raises(DatasetError, match=r"lacks \['val/PNEUMONIA'\]"):
        load_dataset("chest-xray-pneumonia", data_root=tmp_path)


def test_empty_tree_is_an_error(tmp_path):
    for s in ("train", "val", "test"):
        for c in ("NORMAL", "PNEUMONIA"):
            (tmp_path / "chest_xray" / s / c).mkdir(parents=True)
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset("chest-xray-pneumonia", data_root=tmp_path)


def test_extracts_into_a_store(tmp_path):
    from featlab.extractors import extract
    from featlab.store import open_store

    table = load_dataset("chest-xray-pneumonia", data_root=write_kaggle(tmp_path / "cx"))
    store = tmp_path / "s.zarr"
    extract("timm:test_vit", table, store, random_init=True, img_size=32, workers=0, progress=False)
    ds = open_store(store)["chest-xray-pneumonia"]
    X, y = ds.xy("timm:test_vit", split="test")
    assert X.shape[0] == 3
    assert np.isfinite(X).all()
    assert sorted(y.tolist()) == [0, 0, 1]
