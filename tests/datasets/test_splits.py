"""stratified_split: seeded, per-class proportions checked against hand-computed counts."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.datasets.splits import DEFAULT_FRACTIONS, stratified_split
from featlab.errors import InvalidArgumentError

# class -> (size, (train, val, test)) by hand for 60/20/20 with cumulative rounding:
#   cuts = round(0.6 n), round(0.8 n), n; counts are the differences.
HAND = {
    0: (10, (6, 2, 2)),  # 6, 8, 10
    1: (7, (4, 2, 1)),  # 4.2 -> 4, 5.6 -> 6, 7
    2: (3, (2, 0, 1)),  # 1.8 -> 2, 2.4 -> 2, 3
    3: (1, (1, 0, 0)),  # 0.6 -> 1, 0.8 -> 1, 1
    4: (5, (3, 1, 1)),  # 3, 4, 5
    5: (12, (7, 3, 2)),  # 7.2 -> 7, 9.6 -> 10, 12
}


@pytest.fixture
def labels():
    lab = np.concatenate([np.full(n, c) for c, (n, _) in HAND.items()] + [np.full(4, -1)])
    return np.random.default_rng(42).permutation(lab)


def _counts(splits, labels, cls, names=("train", "val", "test")):
    s = splits[labels == cls].tolist()
    return tuple(s.count(n) for n in names)


def test_default_fractions():
    assert DEFAULT_FRACTIONS == {"train": 0.6, "val": 0.2, "test": 0.2}


def test_per_class_counts_match_hand_computation(labels):
    for seed in (0, 1, 123):
        splits = stratified_split(labels, seed=seed)
        assert splits.shape == labels.shape
        assert splits.dtype.kind == "U"
        for cls, (n, expected) in HAND.items():
            assert _counts(splits, labels, cls) == expected, (seed, cls, n)
        totals = tuple(sum(e[i] for _, e in HAND.values()) for i in range(3))
        assert totals == (23, 8, 7)
        assert _counts(splits, labels, -1) == (0, 0, 0)


def test_unknown_labels_get_empty_split(labels):
    splits = stratified_split(labels, seed=0)
    assert (splits[labels == -1] == "").all()
    assert (splits[labels >= 0] != "").all()
    assert set(splits.tolist()) == {"train", "val", "test", ""}


def test_deterministic_for_a_seed(labels):
    a = stratified_split(labels, seed=7)
    b = stratified_split(labels.copy(), DEFAULT_FRACTIONS, seed=7)
    np.testing.assert_array_equal(a, b)


def test_different_for_another_seed(labels):
    a = stratified_split(labels, seed=0)
    b = stratified_split(labels, seed=1)
    assert (a != b).any()
    # ... but with the same per-class counts.
    for cls in HAND:
        assert _counts(a, labels, cls) == _counts(b, labels, cls)


def test_seed_changes_membership_within_a_class():
    labels = np.zeros(50, dtype=int)
    members = {tuple(np.flatnonzero(stratified_split(labels, seed=s) == "test")) for s in range(5)}
    assert len(members) == 5  # five seeds, five different test sets of 10


def test_custom_fractions():
    labels = np.array([0] * 10 + [1] * 7)
    splits = stratified_split(labels, {"fit": 0.7, "holdout": 0.3}, seed=0)
    assert _counts(splits, labels, 0, ("fit", "holdout")) == (7, 3)
    assert _counts(splits, labels, 1, ("fit", "holdout")) == (5, 2)  # round(4.9) = 5


def test_zero_fraction_split_is_empty():
    labels = np.arange(30) % 3
    splits = stratified_split(labels, {"train": 0.8, "val": 0.0, "test": 0.2}, seed=0)
    assert "val" not in splits.tolist()
    assert _counts(splits, labels, 0) == (8, 0, 2)


def test_all_unknown_and_empty():
    assert stratified_split(np.full(3, -1), seed=0).tolist() == ["", "", ""]
    assert stratified_split(np.array([], dtype=int), seed=0).shape == (0,)


@pytest.mark.parametrize(
    "fractions",
    [{"train": 0.5, "test": 0.4}, {"train": 1.2, "test": -0.2}, {"train": 0.6, "test": 0.6}],
)
def test_bad_fractions(fractions):
    with pytest.raises(InvalidArgumentError, match="must be >= 0 and sum to 1"):
        stratified_split(np.zeros(4, dtype=int), fractions)


def test_bad_fractions_is_a_value_error():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_split(np.zeros(4, dtype=int), {"train": 2.0})
