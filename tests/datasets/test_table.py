"""SampleTable validation: every inconsistency is a DatasetError naming the sample."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.datasets import SampleTable
from featlab.datasets.images import ArrayImages
from featlab.datasets.table import task_for
from featlab.errors import DatasetError


def _table(**over):
    kw = {
        "name": "t",
        "ids": ["s0", "s1", "s2", "s3"],
        "labels": [0, 1, -1, 2],
        "splits": ["train", "val", "", "test"],
        "sources": ["f0", "f1", "f2", "f3"],
        "classes": ("a", "b", "c"),
        "task": "multiclass",
    }
    kw.update(over)
    return SampleTable(**kw)


def test_valid_table_normalises_types():
    t = _table(classes=(0, 1, 2), labels=np.array([0, 1, -1, 2], dtype=np.int64))
    assert len(t) == 4
    assert t.labels.dtype == np.int32
    assert t.ids.dtype.kind == "U"
    assert t.splits.dtype.kind == "U"
    assert t.sources.dtype.kind == "U"
    assert t.classes == ("0", "1", "2")
    assert t.split_counts() == {"unlabeled": 1, "test": 1, "train": 1, "val": 1}


def test_describe_is_json_ready():
    import json

    t = _table(attrs={"source": "unit", "split_seed": 0})
    d = t.describe()
    assert d == {
        "name": "t",
        "task": "multiclass",
        "classes": ["a", "b", "c"],
        "n_samples": 4,
        "split_counts": {"unlabeled": 1, "test": 1, "train": 1, "val": 1},
        "source": "unit",
        "split_seed": 0,
    }
    json.dumps(d)


def test_duplicated_ids():
    with pytest.raises(DatasetError, match=r"t: sample ids must be unique; duplicated: \['s1'\]"):
        _table(ids=["s0", "s1", "s1", "s3"])


def test_many_duplicates_listed_sorted():
    ids = ["x", "y", "x", "y"]
    with pytest.raises(DatasetError, match=r"duplicated: \['x', 'y'\]"):
        _table(ids=ids)


@pytest.mark.parametrize(("label", "shown"), [(3, "3"), (7, "7"), (-2, "-2")])
def test_label_out_of_range_names_sample(label, shown):
    with pytest.raises(
        DatasetError,
        match=rf"t: sample 's2' has label {shown}, outside 0\.\.2 for classes \['a', 'b', 'c'\]",
    ):
        _table(labels=[0, 1, label, 2])


@pytest.mark.parametrize("field", ["labels", "splits", "sources"])
def test_length_mismatch(field):
    short = {"labels": [0, 1, 2], "splits": ["train"] * 3, "sources": ["f"] * 3}[field]
    with pytest.raises(DatasetError, match=rf"t: 3 {field} for 4 ids; they must align"):
        _table(**{field: short})


def test_image_source_length_mismatch():
    images = ArrayImages(np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(DatasetError, match="t: 3 images for 4 ids"):
        _table(images=images)


@pytest.mark.parametrize("bad", ["Train", "validation", "unlabeled", " test"])
def test_bad_split_names_sample(bad):
    with pytest.raises(DatasetError, match=rf"t: sample 's1' has split '{bad}'; expected one of"):
        _table(splits=["train", bad, "", "test"])


def test_bad_task():
    with pytest.raises(DatasetError, match=r"task 'regression' is not one of"):
        _table(task="regression")


def test_labels_must_be_1d_for_single_label_tasks():
    with pytest.raises(DatasetError, match=r"labels must be \(n,\); got \(4, 3\)"):
        _table(labels=np.zeros((4, 3), dtype=int))


def test_multilabel_shape():
    ok = _table(task="multilabel", labels=np.eye(4, 3, dtype=np.int64))
    assert ok.labels.dtype == np.uint8
    assert ok.labels.shape == (4, 3)
    with pytest.raises(DatasetError, match=r"multilabel labels must be \(n, 3\); got \(4, 2\)"):
        _table(task="multilabel", labels=np.zeros((4, 2), dtype=np.uint8))


def test_table_is_frozen():
    t = _table()
    with pytest.raises(AttributeError):
        t.name = "other"


def test_task_for():
    assert task_for(2) == "binary"
    assert task_for(3) == "multiclass"
    assert task_for(10) == "multiclass"
