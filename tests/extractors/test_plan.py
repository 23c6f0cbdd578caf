import numpy as np
import pytest

from featlab.errors import InvalidArgumentError
from featlab.extractors.engine import plan_batches, select_rows


def test_batches_never_straddle_chunks_and_ignore_written_state():
    selected = np.ones(10, dtype=bool)
    written = np.zeros(10, dtype=bool)
    batches = plan_batches(selected, written, chunk_rows=4, batch_size=3)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3], [4, 5, 6], [7], [8, 9]]
    written[[4, 5, 6]] = True  # one whole batch done: the others keep their composition
    again = plan_batches(selected, written, chunk_rows=4, batch_size=3)
    assert [b.tolist() for b in again] == [[0, 1, 2], [3], [7], [8, 9]]


def test_selection_regroups_within_chunks():
    selected = np.array([1, 0, 1, 1, 0, 1, 1, 1], dtype=bool)
    batches = plan_batches(selected, np.zeros(8, bool), chunk_rows=4, batch_size=2)
    assert [b.tolist() for b in batches] == [[0, 2], [3], [5, 6], [7]]


def test_select_rows_by_split_and_limit():
    splits = np.array(["train", "test", "train", "", "val", "train"])
    assert select_rows(splits, ("train",), None).tolist() == [1, 0, 1, 0, 0, 1]
    assert select_rows(splits, ("train", "unlabeled"), 2).tolist() == [1, 0, 1, 0, 0, 0]
    assert select_rows(splits, None, None).all()
    with pytest.raises(InvalidArgumentError, match="unknown split"):
        select_rows(splits, ("training",), None)
