"""``csv:PATH`` manifests: path,label[,split], relative paths, label order, errors naming lines."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset, read_manifest
from featlab.datasets.splits import stratified_split
from featlab.errors import DatasetError


@pytest.fixture
def pngs(image_folder):
    """The 12 PNGs of ``image_folder`` (``imgs/<a|b|c>/00i.png``); the CSV goes next to imgs/."""
    return image_folder


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_basic_manifest_with_splits(pngs, tmp_path):
    csv = _write(
        tmp_path / "m.csv",
        "path,label,split\n"
        "imgs/a/000.png,cat,train\n"
        "imgs/b/000.png,dog,val\n"
        "imgs/c/000.png,cat,test\n"
        "imgs/a/001.png,,\n",
    )
    t = read_manifest(csv)
    assert t.name == "csv-m"
    assert t.ids.tolist() == [
        "imgs/a/000.png",
        "imgs/b/000.png",
        "imgs/c/000.png",
        "imgs/a/001.png",
    ]
    assert t.classes == ("cat", "dog")
    assert t.task == "binary"
    np.testing.assert_array_equal(t.labels, [0, 1, 0, -1])  # empty label -> unknown
    assert t.splits.tolist() == ["train", "val", "test", ""]
    assert t.sources.tolist() == [str((tmp_path / i).resolve()) for i in t.ids]
    assert t.attrs["split_method"] == "manifest"
    assert t.split_counts() == {"train": 1, "val": 1, "test": 1, "unlabeled": 1}


def test_relative_paths_resolve_against_csv_folder_not_cwd(pngs, tmp_path, monkeypatch):
    sub = tmp_path / "meta"
    sub.mkdir()
    csv = _write(sub / "list.csv", "path,label\n../imgs/a/000.png,x\n../imgs/b/001.png,y\n")
    monkeypatch.chdir(pngs / "c")  # somewhere the relative paths would not resolve
    t = read_manifest(csv)
    assert t.sources.tolist() == [
        str((pngs / "a" / "000.png").resolve()),
        str((pngs / "b" / "001.png").resolve()),
    ]
    assert t.ids.tolist() == ["../imgs/a/000.png", "../imgs/b/001.png"]  # ids as written
    np.testing.assert_array_equal(
        np.asarray(t.images.load([1])[0]),
        np.asarray(Image.open(pngs / "b" / "001.png").convert("RGB")),
    )


def test_absolute_paths(pngs, tmp_path):
    a = (pngs / "a" / "002.png").resolve()
    csv = _write(tmp_path / "abs.csv", f"path,label\n{a},x\n")
    t = read_manifest(csv)
    assert t.sources.tolist() == [str(a)]


def test_numeric_labels_sort_numerically(pngs, tmp_path):
    rows = ["imgs/a/000.png,10", "imgs/a/001.png,2", "imgs/a/002.png,1", "imgs/a/003.png,2"]
    csv = _write(tmp_path / "n.csv", "path,label\n" + "\n".join(rows) + "\n")
    t = read_manifest(csv)
    assert t.classes == ("1", "2", "10")  # not ("1", "10", "2")
    np.testing.assert_array_equal(t.labels, [2, 1, 0, 1])
    assert t.task == "multiclass"


def test_string_labels_sort_lexically(pngs, tmp_path):
    csv = _write(
        tmp_path / "s.csv", "path,label\nimgs/a/000.png,b10\nimgs/a/001.png,b2\nimgs/a/002.png,a\n"
    )
    t = read_manifest(csv)
    assert t.classes == ("a", "b10", "b2")
    np.testing.assert_array_equal(t.labels, [1, 2, 0])


def test_without_split_column_assigns_seeded_stratified_split(pngs, tmp_path):
    rows = [f"imgs/{c}/{i:03d}.png,{c}" for c in "abc" for i in range(4)]
    csv = _write(tmp_path / "m.csv", "path,label\n" + "\n".join(rows) + "\n")
    t = read_manifest(csv, seed=3, name="given")
    assert t.name == "given"
    np.testing.assert_array_equal(t.splits, stratified_split(t.labels, seed=3))
    assert t.split_counts() == {"train": 6, "val": 3, "test": 3}
    assert t.attrs["split_seed"] == 3


def test_unknown_labels_get_empty_split_without_split_column(pngs, tmp_path):
    csv = _write(
        tmp_path / "u.csv",
        "path,label\nimgs/a/000.png,x\nimgs/a/001.png,\nimgs/a/002.png,x\nimgs/a/003.png,y\n",
    )
    t = read_manifest(csv)
    assert t.labels[1] == -1
    assert t.splits[1] == ""
    assert (t.splits[[0, 2, 3]] != "").all()


def test_bom_whitespace_and_extra_columns(pngs, tmp_path):
    csv = tmp_path / "bom.csv"
    csv.write_text(
        " path , label ,split,note\n imgs/a/000.png , x , train ,hello\n", encoding="utf-8-sig"
    )
    t = read_manifest(csv)
    assert t.ids.tolist() == ["imgs/a/000.png"]
    assert t.classes == ("x",)
    assert t.splits.tolist() == ["train"]


def test_duplicated_path_is_a_duplicated_id(pngs, tmp_path):
    csv = _write(tmp_path / "d.csv", "path,label\nimgs/a/000.png,x\nimgs/a/000.png,y\n")
    with pytest.raises(
        DatasetError, match=r"ids must be unique; duplicated: \['imgs/a/000\.png'\]"
    ):
        read_manifest(csv)


def test_missing_file(tmp_path):
    with pytest.raises(
        DatasetError, match=r"nope\.csv' does not exist; expected columns path,label"
    ):
        read_manifest(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("path,split", r"\['label'\]"),
        ("file,label", r"\['path'\]"),
        ("a,b", r"\['path', 'label'\]"),
    ],
)
def test_missing_columns(pngs, tmp_path, header, missing):
    csv = _write(tmp_path / "h.csv", f"{header}\nimgs/a/000.png,x\n")
    with pytest.raises(DatasetError, match=rf"missing column\(s\) {missing}; found header"):
        read_manifest(csv)


def test_header_only(tmp_path):
    csv = _write(tmp_path / "e.csv", "path,label\n")
    with pytest.raises(DatasetError, match="header but no rows"):
        read_manifest(csv)


def test_empty_file(tmp_path):
    csv = _write(tmp_path / "e.csv", "")
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['path', 'label'\]"):
        read_manifest(csv)


def test_missing_image_names_line_and_path(pngs, tmp_path):
    csv = _write(
        tmp_path / "m.csv",
        "path,label\nimgs/a/000.png,x\nimgs/a/999.png,y\nimgs/a/001.png,x\n",
    )
    with pytest.raises(DatasetError, match=r"m\.csv:3: image 'imgs/a/999\.png' not found"):
        read_manifest(csv)


def test_missing_image_line_counts_blank_lines(pngs, tmp_path):
    csv = _write(tmp_path / "m.csv", "path,label\nimgs/a/000.png,x\n\nimgs/zz.png,y\n")
    with pytest.raises(DatasetError, match=r"m\.csv:4: image 'imgs/zz\.png' not found"):
        read_manifest(csv)


def test_unknown_split_names_value_and_line(pngs, tmp_path):
    csv = _write(
        tmp_path / "m.csv",
        "path,label,split\nimgs/a/000.png,x,train\nimgs/a/001.png,x,validation\n"
        "imgs/a/002.png,x,Test\n",
    )
    with pytest.raises(
        DatasetError, match=r"m\.csv:3: unknown split value\(s\) \['Test', 'validation'\]"
    ):
        read_manifest(csv)


def test_load_dataset_csv_prefix(pngs, tmp_path):
    csv = _write(tmp_path / "m.csv", "path,label\nimgs/a/000.png,x\nimgs/b/000.png,y\n")
    t = load_dataset(f"csv:{csv}")
    assert t.name == "csv-m"
    assert t.ids.tolist() == ["imgs/a/000.png", "imgs/b/000.png"]
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")
