"""Metrics parity with scikit-learn for every task, ties, absent classes, masking and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from featlab.datasets.registry import DEFAULT_METRICS
from featlab.errors import InvalidArgumentError
from featlab.eval.metrics import (
    METRIC_NAMES,
    TASKS,
    PreparedScores,
    compute_metrics,
    default_metric,
    higher_is_better,
    metrics_for_task,
    per_label_auc,
    score_metric,
)


def softmax_scores(y: np.ndarray, n_classes: int, seed: int, signal: float = 1.0) -> np.ndarray:
    """Class probabilities that lean towards the true class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), n_classes)) + signal * np.eye(n_classes)[y]
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def sklearn_reference(y: np.ndarray, s: np.ndarray, task: str) -> dict[str, float]:
    """The single-label metrics computed by scikit-learn (AUC per class on present classes)."""
    pred = s.argmax(axis=1)
    present = [k for k in range(s.shape[1]) if 0 < (y == k).sum() < len(y)]
    if task == "binary":
        auc = skm.roc_auc_score(y, s[:, 1])
    else:
        auc = np.mean([skm.roc_auc_score(y == k, s[:, k]) for k in present])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        return {
            "auc": auc,
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "macro_f1": skm.f1_score(y, pred, average="macro"),
            "quadratic_kappa": skm.cohen_kappa_score(
                y, pred, weights="quadratic", labels=np.arange(s.shape[1])
            ),
        }


def test_names_defaults_and_registry_agree():
    assert set(DEFAULT_METRICS.values()) | {"macro_f1"} <= set(METRIC_NAMES)
    for task in TASKS:
        assert default_metric(task) == DEFAULT_METRICS[task] == metrics_for_task(task)[0]
        assert set(metrics_for_task(task)) <= set(METRIC_NAMES)
    assert metrics_for_task("multilabel") == ("mean_auc", "macro_f1")
    assert all(higher_is_better(name) for name in METRIC_NAMES)
    with pytest.raises(InvalidArgumentError, match="unknown metric 'auroc'"):
        higher_is_better("auroc")
    with pytest.raises(InvalidArgumentError, match="binary, multiclass, ordinal, multilabel"):
        metrics_for_task("regression")


@pytest.mark.parametrize(("task", "n_classes"), [("binary", 2), ("multiclass", 5), ("ordinal", 5)])
def test_single_label_metrics_match_sklearn(task, n_classes):
    rng = np.random.default_rng(1)
    y = rng.integers(0, n_classes, 400)
    s = softmax_scores(y, n_classes, seed=2)
    got = compute_metrics(y, s, task)
    assert list(got) == list(metrics_for_task(task))
    ref = sklearn_reference(y, s, task)
    for name, value in got.items():
        assert value == pytest.approx(ref[name], abs=1e-12), name
    if task != "binary":  # every class present: sklearn's own one-vs-rest macro AUC agrees
        ovr = skm.roc_auc_score(y, s, multi_class="ovr", average="macro")
        assert got["auc"] == pytest.approx(ovr, abs=1e-12)
        # All grades occur, so sklearn's default labels give the same kappa.
        kappa = skm.cohen_kappa_score(y, s.argmax(1), weights="quadratic")
        assert score_metric("quadratic_kappa", y, s, "ordinal") == pytest.approx(kappa, abs=1e-12)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_auc_with_heavy_ties_matches_sklearn(task):
    rng = np.random.default_rng(3)
    c = 2 if task == "binary" else 4
    y = rng.integers(0, c, 300)
    s = np.round(softmax_scores(y, c, seed=4), 1)  # few distinct values: many ties
    assert len(np.unique(s[:, 1])) < 12
    got = score_metric("auc", y, s, task)
    assert got == pytest.approx(sklearn_reference(y, s, task)["auc"], abs=1e-12)


def test_auc_hand_computed_tie():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.5, 0.5, 0.9])
    # Positive 0.5 beats 0.1 and ties 0.5 (1.5 wins); positive 0.9 beats both (2): 3.5 / 4.
    assert score_metric("auc", y, np.c_[1 - p, p], "binary") == 0.875
    assert score_metric("mean_auc", y, np.c_[1 - p, p], "binary") == 0.875  # alias


def test_class_absent_from_y_true():
    rng = np.random.default_rng(5)
    y = rng.choice([0, 1, 3], 300)  # class 2 of 4 never occurs, but is sometimes predicted
    s = softmax_scores(y, 4, seed=6, signal=0.5)
    assert (s.argmax(1) == 2).any()
    got = compute_metrics(y, s, "multiclass")
    ref = sklearn_reference(y, s, "multiclass")
    for name, value in got.items():
        assert value == pytest.approx(ref[name], abs=1e-12), name
    # One-vs-rest macro over the three present classes, not four.
    per_class = [skm.roc_auc_score(y == k, s[:, k]) for k in (0, 1, 3)]
    assert got["auc"] == pytest.approx(np.mean(per_class), abs=1e-12)


def test_quadratic_kappa_weights_by_grade_value():
    # Grade 2 of 0..4 occurs in neither y nor the predictions. Kappa keeps grade distances
    # (1 -> 3 costs 4), unlike sklearn's default labels, which would make 1 and 3 adjacent.
    y = np.array([0, 1, 1, 3, 3, 4, 4, 0, 1, 3])
    pred = np.array([0, 1, 3, 3, 1, 4, 3, 1, 1, 4])
    s = np.eye(5)[pred] * 0.6 + 0.1
    got = score_metric("quadratic_kappa", y, s, "ordinal")
    ref = skm.cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(5))
    assert got == pytest.approx(ref, abs=1e-12)
    assert got != pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"), abs=1e-3)


def multilabel_data(seed: int = 7):
    rng = np.random.default_rng(seed)
    n, n_labels = 300, 5
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int8)
    s = np.clip(0.25 + 0.4 * y + 0.25 * rng.normal(size=(n, n_labels)), 0, 1)
    y[rng.random((n, n_labels)) < 0.25] = -1  # unknown entries, masked per label
    y[:, 3] = np.where(y[:, 3] == 1, -1, y[:, 3])  # label 3: no known positive
    s[:, 3] = np.minimum(s[:, 3], 0.4)  # ... and never predicted: its F1 is undefined
    return y, s


def test_multilabel_metrics_match_sklearn_on_known_entries():
    y, s = multilabel_data()
    per_label = per_label_auc(y, s)
    assert per_label.shape == (5,)
    for j in range(5):
        known = y[:, j] >= 0
        if j == 3:
            assert np.isnan(per_label[j])  # only negatives among the known entries
        else:
            ref = skm.roc_auc_score(y[known, j], s[known, j])
            assert per_label[j] == pytest.approx(ref, abs=1e-12)
    f1 = []
    for j in range(5):
        known = y[:, j] >= 0
        f1.append(
            skm.f1_score(y[known, j], s[known, j] >= 0.5, zero_division=np.nan)  # 3 -> nan
        )
    got = compute_metrics(y, s, "multilabel")
    assert got["mean_auc"] == pytest.approx(np.nanmean(per_label), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(np.nanmean(f1), abs=1e-12)
    assert np.isnan(f1[3])
    assert score_metric("auc", y, s, "multilabel") == got["mean_auc"]  # alias


@pytest.mark.parametrize(
    ("task", "n_classes"), [("binary", 2), ("multiclass", 4), ("ordinal", 5), ("multilabel", 5)]
)
def test_weights_equal_the_resampled_arrays(task, n_classes):
    # The bootstrap scores a resample as draw counts; that must equal scoring the resample.
    rng = np.random.default_rng(8)
    if task == "multilabel":
        y, s = multilabel_data(9)
    else:
        y = rng.integers(0, n_classes, 200)
        s = np.round(softmax_scores(y, n_classes, seed=9), 2)
    prepared = PreparedScores(y, s, task)
    for _ in range(3):
        idx = rng.integers(0, len(y), len(y))
        counts = np.bincount(idx, minlength=len(y)).astype(np.float64)
        for name in metrics_for_task(task):
            direct = score_metric(name, y[idx], s[idx], task)
            assert prepared.score(name, counts) == pytest.approx(direct, abs=1e-12), name


def test_undefined_metrics_raise():
    y = np.zeros(6, dtype=int)
    s = softmax_scores(y, 2, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"auc is undefined.*both positive and negative"):
        score_metric("auc", y, s, "binary")
    grades = np.full(4, 2)
    with pytest.raises(InvalidArgumentError, match="quadratic_kappa is undefined"):
        score_metric("quadratic_kappa", grades, np.eye(3)[grades], "ordinal")
    y_ml = np.array([[1, -1], [1, 0], [-1, 0]], dtype=np.int8)  # no label has both classes
    assert np.isnan(per_label_auc(y_ml, np.full((3, 2), 0.5))).all()
    with pytest.raises(InvalidArgumentError, match="mean_auc is undefined"):
        score_metric("mean_auc", y_ml, np.full((3, 2), 0.5), "multilabel")


def test_invalid_arguments():
    y = np.array([0, 1, 1, 0])
    s = softmax_scores(y, 2, seed=0)
    with pytest.raises(InvalidArgumentError, match=r"unknown metric 'f1'.*macro_f1"):
        score_metric("f1", y, s, "binary")
    with pytest.raises(InvalidArgumentError, match=r"'quadratic_kappa' does not apply.*mean_auc"):
        compute_metrics(
            np.ones((4, 2), np.int8),
            np.ones((4, 2)) / 2,
            "multilabel",
            ["mean_auc", "quadratic_kappa"],
        )
    with pytest.raises(InvalidArgumentError, match="does not apply to a binary task"):
        score_metric("quadratic_kappa", y, s, "binary")
    with pytest.raises(InvalidArgumentError, match="unknown task 'binry'"):
        score_metric("auc", y, s, "binry")
    with pytest.raises(InvalidArgumentError, match="4 samples but scores has 3 rows"):
        score_metric("auc", y, s[:3], "binary")
    with pytest.raises(InvalidArgumentError, match="binary scores must have 2 columns"):
        score_metric("auc", y, np.ones((4, 3)) / 3, "binary")
    with pytest.raises(InvalidArgumentError, match=r"must be \(n, C\).*np.c_"):
        score_metric("auc", y, s[:, 1], "binary")
    with pytest.raises(InvalidArgumentError, match=r"labels must be in 0\.\.2.*found \[-1, 5\]"):
        score_metric("accuracy", np.array([0, -1, 5, 1]), np.ones((4, 3)) / 3, "multiclass")
    with pytest.raises(InvalidArgumentError, match="integer labels; got dtype float64"):
        score_metric("accuracy", y.astype(float), s, "binary")
    with pytest.raises(InvalidArgumentError, match="1 NaN or infinite"):
        score_metric("auc", y, np.where(np.arange(8).reshape(4, 2) == 3, np.nan, s), "binary")
    with pytest.raises(InvalidArgumentError, match="empty"):
        score_metric("auc", y[:0], s[:0], "binary")
    with pytest.raises(InvalidArgumentError, match=r"shape \(4, 2\).*got \(4, 3\)"):
        score_metric("mean_auc", np.ones((4, 2), np.int8), np.ones((4, 3)), "multilabel")
    with pytest.raises(InvalidArgumentError, match=r"1 \(positive\), 0 .* found \[2\]"):
        score_metric("mean_auc", np.full((4, 2), 2), np.ones((4, 2)), "multilabel")


def test_compute_metrics_accepts_one_name():
    y = np.array([0, 1, 1, 0, 1])
    s = softmax_scores(y, 2, seed=1)
    assert compute_metrics(y, s, "binary", "accuracy") == {
        "accuracy": skm.accuracy_score(y, s.argmax(1))
    }
