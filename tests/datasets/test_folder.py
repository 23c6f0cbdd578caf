"""``folder:PATH`` reader: class folders, optional split level, ids, labels, ignored files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_png_tree

from featlab.datasets import load_dataset, read_image_folder
from featlab.datasets.splits import stratified_split
from featlab.errors import DatasetError


def test_flat_folder(image_folder):
    t = read_image_folder(image_folder)
    assert t.name == "folder-imgs"
    assert t.classes == ("a", "b", "c")
    assert t.task == "multiclass"
    assert len(t) == 12
    expected_ids = [f"{c}/{i:03d}.png" for c in "abc" for i in range(4)]
    assert t.ids.tolist() == expected_ids
    np.testing.assert_array_equal(t.labels, np.repeat([0, 1, 2], 4))
    assert t.labels.dtype == np.int32
    assert t.sources.tolist() == [str((image_folder / i).resolve()) for i in expected_ids]
    # No split level: seeded stratified 60/20/20 per class; 4 per class -> round(2.4)=2 train,
    # round(3.2)-2=1 val, 1 test.
    np.testing.assert_array_equal(t.splits, stratified_split(t.labels, seed=0))
    for c in range(3):
        s = t.splits[t.labels == c].tolist()
        assert (s.count("train"), s.count("val"), s.count("test")) == (2, 1, 1)
    assert t.split_counts() == {"train": 6, "val": 3, "test": 3}
    assert t.attrs["source"] == "folder"
    assert t.attrs["split_seed"] == 0
    assert t.attrs["root"] == str(image_folder.resolve())


def test_flat_folder_split_depends_on_seed(tmp_path):
    root = write_png_tree(tmp_path / "imgs", classes=("x", "y"), per_class=10, size=4)
    a = read_image_folder(root, seed=0)
    b = read_image_folder(root, seed=0)
    c = read_image_folder(root, seed=1)
    np.testing.assert_array_equal(a.splits, b.splits)
    assert (a.splits != c.splits).any()
    assert c.attrs["split_seed"] == 1
    assert a.split_counts() == c.split_counts() == {"train": 12, "val": 4, "test": 4}


def test_images_load_as_rgb_in_row_order(image_folder):
    from PIL import Image

    t = read_image_folder(image_folder)
    imgs = t.images.load([5, 0])
    for img, i in zip(imgs, [5, 0], strict=True):
        ref = np.asarray(Image.open(image_folder / t.ids[i]).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(img), ref)


def test_split_folder(split_image_folder):
    t = read_image_folder(split_image_folder, name="mine")
    assert t.name == "mine"
    assert t.classes == ("a", "b", "c")
    assert len(t) == 36
    # Splits as on disk; ids keep the split folder, sorted test < train < val.
    assert t.ids[0] == "test/a/000.png"
    assert t.ids[-1] == "val/c/003.png"
    for i, split, label in zip(t.ids, t.splits, t.labels, strict=True):
        s, cls, _ = i.split("/")
        assert s == split
        assert t.classes[label] == cls
    assert t.split_counts() == {"train": 12, "val": 12, "test": 12}
    assert t.attrs["split_method"] == "folders"
    assert "split_seed" not in t.attrs


def test_split_folder_with_class_missing_in_one_split(tmp_path):
    root = tmp_path / "ds"
    write_png_tree(root / "train", classes=("cat", "dog"), per_class=2, size=4)
    write_png_tree(root / "test", classes=("dog",), per_class=1, size=4)
    t = read_image_folder(root)
    assert t.classes == ("cat", "dog")
    assert t.task == "binary"
    assert dict(zip(t.ids.tolist(), t.labels.tolist(), strict=True)) == {
        "test/dog/000.png": 1,
        "train/cat/000.png": 0,
        "train/cat/001.png": 0,
        "train/dog/000.png": 1,
        "train/dog/001.png": 1,
    }


def test_binary_vs_multiclass(tmp_path):
    two = write_png_tree(tmp_path / "two", classes=("neg", "pos"), per_class=2, size=4)
    assert read_image_folder(two).task == "binary"
    three = write_png_tree(tmp_path / "three", classes=("x", "y", "z"), per_class=1, size=4)
    assert read_image_folder(three).task == "multiclass"


def test_classes_sorted_not_creation_order(tmp_path):
    root = write_png_tree(
        tmp_path / "r", classes=("zeta", "Alpha", "mid", "10", "2"), size=4, per_class=1
    )
    t = read_image_folder(root)
    assert t.classes == ("10", "2", "Alpha", "mid", "zeta")  # plain string sort of folder names
    assert t.labels[t.ids.tolist().index("zeta/000.png")] == 4


def test_ignores_macos_hidden_and_non_images(image_folder):
    png = (image_folder / "a" / "000.png").read_bytes()
    (image_folder / "__MACOSX" / "a").mkdir(parents=True)
    (image_folder / "__MACOSX" / "a" / "._000.png").write_bytes(b"junk")
    (image_folder / ".hidden_class").mkdir()
    (image_folder / ".hidden_class" / "x.png").write_bytes(png)
    (image_folder / "a" / ".DS_Store").write_bytes(b"junk")
    (image_folder / "a" / "._001.png").write_bytes(b"junk")
    (image_folder / "a" / ".secret.png").write_bytes(png)
    (image_folder / "a" / "notes.txt").write_text("hello")
    (image_folder / "a" / ".AppleDouble").mkdir()
    (image_folder / "a" / ".AppleDouble" / "000.png").write_bytes(b"resource fork")
    (image_folder / "b" / "__MACOSX").mkdir()
    (image_folder / "b" / "__MACOSX" / "000.png").write_bytes(b"junk")
    (image_folder / "top_level.png").write_bytes(png)
    t = read_image_folder(image_folder)
    assert t.classes == ("a", "b", "c")
    assert t.ids.tolist() == [f"{c}/{i:03d}.png" for c in "abc" for i in range(4)]


def test_nested_images_and_upper_case_suffixes(image_folder):
    png = (image_folder / "a" / "000.png").read_bytes()
    (image_folder / "a" / "sub").mkdir()
    (image_folder / "a" / "sub" / "deep.PNG").write_bytes(png)
    t = read_image_folder(image_folder)
    assert "a/sub/deep.PNG" in t.ids.tolist()
    assert t.labels[t.ids.tolist().index("a/sub/deep.PNG")] == 0
    assert len(t) == 13


def test_macosx_next_to_split_folders_does_not_hide_the_split_level(split_image_folder):
    (split_image_folder / "__MACOSX").mkdir()
    (split_image_folder / ".git").mkdir()
    t = read_image_folder(split_image_folder)
    assert t.classes == ("a", "b", "c")
    assert set(t.splits.tolist()) == {"train", "val", "test"}


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist or is not a directory.*<class>"):
        read_image_folder(tmp_path / "nowhere")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a directory"):
        read_image_folder(f)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no class folders found \(saw nothing\)"):
        read_image_folder(tmp_path / "empty")


def test_class_folders_without_images(tmp_path):
    (tmp_path / "r" / "a").mkdir(parents=True)
    (tmp_path / "r" / "b").mkdir()
    (tmp_path / "r" / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(DatasetError, match=r"class folders \['a', 'b'\] hold no images"):
        read_image_folder(tmp_path / "r")


def test_split_folders_without_class_folders(tmp_path):
    (tmp_path / "r" / "train").mkdir(parents=True)
    (tmp_path / "r" / "test").mkdir()
    with pytest.raises(DatasetError, match=r"no class folders found \(saw \['test', 'train'\]\)"):
        read_image_folder(tmp_path / "r")


def test_load_dataset_folder_prefix(image_folder):
    t = load_dataset(f"folder:{image_folder}")
    assert t.ids.tolist() == read_image_folder(image_folder).ids.tolist()
    assert t.name == "folder-imgs"
