"""Low-shot plans: class balance, stratified fractions, determinism, no leakage."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.errors import InvalidArgumentError
from featlab.eval.lowshot import ALL, TrainingSize, parse_sizes, plan_lowshot


def _dataset(n=600, classes=(0.6, 0.3, 0.1), seed=0, with_val=True):
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(classes), size=n, p=classes).astype(np.int32)
    splits = rng.choice(["train", "val", "test"] if with_val else ["train", "test"], size=n)
    return labels, splits.astype(object)


def test_parse_sizes():
    assert parse_sizes("50, 500,all") == (
        TrainingSize("shots", 50), TrainingSize("shots", 500), ALL
    )
    assert [s.label for s in parse_sizes(fractions="0.01,0.1,1")] == ["1%", "10%", "all"]
    assert parse_sizes() == (ALL,)
    for bad in ({"shots": "0"}, {"shots": "1.5"}, {"fractions": "1.5"}, {"fractions": "x"}):
        with pytest.raises(InvalidArgumentError):
            parse_sizes(**bad)
    with pytest.raises(InvalidArgumentError, match="not both"):
        parse_sizes("5", "0.1")


def test_shots_are_class_balanced_and_capped():
    labels, splits = _dataset()
    plan = plan_lowshot(labels, splits, parse_sizes("30,90"), folds=3, seed=1)
    pool_counts = np.bincount(labels[plan.pool], minlength=3)
    for fold in plan.folds:
        counts = np.bincount(labels[fold.train], minlength=3)
        if fold.size.value == 30:
            assert counts.tolist() == [10, 10, 10]
        else:  # 30 per class, but the rare class has fewer: capped at what it has
            assert counts[0] == counts[1] == 30
            assert counts[2] == min(30, pool_counts[2])
        assert np.isin(fold.train, plan.pool).all()


def test_remainder_keeps_the_total():
    labels, splits = _dataset()
    plan = plan_lowshot(labels, splits, parse_sizes("31"), folds=4, seed=0)
    for fold in plan.folds:
        counts = np.bincount(labels[fold.train], minlength=3)
        assert counts.sum() == 31
        assert counts.max() - counts.min() <= 1


def test_fractions_are_stratified():
    labels, splits = _dataset(n=2000)
    plan = plan_lowshot(labels, splits, parse_sizes(fractions="0.1"), folds=2, seed=0)
    pool = np.bincount(labels[plan.pool], minlength=3)
    for fold in plan.folds:
        counts = np.bincount(labels[fold.train], minlength=3)
        np.testing.assert_array_equal(counts, np.maximum(1, np.round(0.1 * pool)))


def test_deterministic_independent_of_other_sizes_and_seeded():
    labels, splits = _dataset()
    a = plan_lowshot(labels, splits, parse_sizes("30"), folds=3, seed=7)
    b = plan_lowshot(labels, splits, parse_sizes("90,30,all"), folds=3, seed=7)
    c = plan_lowshot(labels, splits, parse_sizes("30"), folds=3, seed=8)
    same = {f.key: f.train for f in b.folds}
    for f in a.folds:
        np.testing.assert_array_equal(f.train, same[f.key])
    assert a.fingerprint() == plan_lowshot(labels, splits, parse_sizes("30"), folds=3,
                                           seed=7).fingerprint()
    assert not np.array_equal(a.folds[0].train, c.folds[0].train)
    assert not np.array_equal(a.folds[0].train, a.folds[1].train)  # folds differ


def test_no_leakage_and_all_is_the_pool():
    labels, splits = _dataset()
    plan = plan_lowshot(labels, splits, parse_sizes("30,all"), folds=2, seed=0)
    held = np.concatenate([plan.val, plan.test])
    for f in plan.folds:
        assert not np.isin(f.train, held).any()
        if f.size == ALL:
            np.testing.assert_array_equal(f.train, plan.pool)
    assert set(splits[plan.val]) == {"val"}
    assert set(splits[plan.test]) == {"test"}


def test_val_held_out_of_train_when_missing():
    labels, splits = _dataset(with_val=False)
    plan = plan_lowshot(labels, splits, (ALL,), folds=1, seed=3, val_fraction=0.2)
    train_rows = np.flatnonzero(splits == "train")
    assert np.intersect1d(plan.val, plan.pool).size == 0
    np.testing.assert_array_equal(np.union1d(plan.val, plan.pool), train_rows)
    assert abs(len(plan.val) / len(train_rows) - 0.2) < 0.02
    assert "held out" in plan.val_source
    assert "seed 3" in plan.val_source


def test_unknown_labels_never_used():
    labels, splits = _dataset()
    labels[::5] = -1
    plan = plan_lowshot(labels, splits, parse_sizes("30,all"), folds=2, seed=0)
    for rows in (plan.val, plan.test, *(f.train for f in plan.folds)):
        assert (labels[rows] >= 0).all()


def test_multilabel_shots_cover_every_label():
    rng = np.random.default_rng(0)
    n, n_labels = 800, 4
    labels = (rng.random((n, n_labels)) < [0.4, 0.2, 0.05, 0.02]).astype(np.int8)
    labels[rng.random((n, n_labels)) < 0.1] = -1
    splits = rng.choice(["train", "val", "test"], size=n).astype(object)
    plan = plan_lowshot(labels, splits, parse_sizes("40"), folds=2, seed=0)
    for f in plan.folds:
        assert len(f.train) == 40
        positives = (labels[f.train] == 1).sum(axis=0)
        available = (labels[plan.pool] == 1).sum(axis=0)
        assert (positives >= np.minimum(10, available)).all()


def test_missing_test_split_is_an_error():
    labels, splits = _dataset()
    splits[splits == "test"] = "val"
    with pytest.raises(InvalidArgumentError, match="'test'"):
        plan_lowshot(labels, splits, (ALL,))
