"""``brain-tumor-mri`` against the Kaggle Training/Testing layout (datasets.md section 8.3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError

CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
PREFIX = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}


def write_brain(root: Path, n_train: int = 5, n_test: int = 2) -> Path:
    for folder, tag, n in (("Training", "Tr", n_train), ("Testing", "Te", n_test)):
        for cls in CLASSES:
            d = root / folder / cls
            d.mkdir(parents=True)
            for i in range(n):
                img = np.full((16, 16), 30 * CLASSES.index(cls), np.uint8)
                Image.fromarray(img).save(d / f"{tag}-{PREFIX[cls]}_{i:04d}.jpg")
            (d / ".DS_Store").write_bytes(b"\0")
    # A file name from another dataset version; names are never parsed.
    shutil.copy(
        root / "Testing/meningioma/Te-me_0000.jpg", root / "Testing/meningioma/Te-meTr_0001.jpg"
    )
    return root


def test_reads_classes_and_splits(tmp_path):
    t = load_dataset("brain-tumor-mri", data_root=write_brain(tmp_path / "mri"))
    assert t.task == "multiclass"
    assert t.classes == CLASSES
    assert len(t) == 4 * 5 + 4 * 2 + 1
    # Training: per class round(0.9 * 5) = 4 train and 1 val; Testing -> test.
    assert t.split_counts() == {"train": 16, "val": 4, "test": 9}
    label = dict(zip(t.ids, t.labels.tolist(), strict=True))
    assert label["Training/glioma/Tr-gl_0000.jpg"] == 0
    assert label["Testing/meningioma/Te-meTr_0001.jpg"] == 1
    assert label["Testing/pituitary/Te-pi_0001.jpg"] == 3
    testing = np.char.startswith(t.ids.astype(str), "Testing/")
    assert (t.splits[testing] == "test").all()
    assert set(t.splits[~testing]) == {"train", "val"}
    assert t.attrs["split_seed"] == 0
    assert t.images.load([0])[0].mode == "RGB"


def test_split_is_deterministic(tmp_path):
    root = write_brain(tmp_path / "mri")
    a = load_dataset("brain-tumor-mri", data_root=root)
    np.testing.assert_array_equal(a.splits, load_dataset("brain-tumor-mri", data_root=root).splits)


def test_missing_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*Training/.*kaggle datasets"):
        load_dataset("brain-tumor-mri", data_root=tmp_path)


def test_missing_class_folder_is_named(tmp_path):
    root = write_brain(tmp_path / "mri")
    shutil.rmtree(root / "Testing" / "notumor")
    with pytest.raises(DatasetError, match=r"class folder\(s\) missing: \['Testing/notumor'\]"):
        load_dataset("brain-tumor-mri", data_root=root)


def test_no_images_is_an_error(tmp_path):
    for folder in ("Training", "Testing"):
        for cls in CLASSES:
            (tmp_path / folder / cls).mkdir(parents=True)
            (tmp_path / folder / cls / ".DS_Store").write_bytes(b"\0")
    with pytest.raises(DatasetError, match="hold no images"):
        load_dataset("brain-tumor-mri", data_root=tmp_path)
