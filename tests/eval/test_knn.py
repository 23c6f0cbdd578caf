"""k-NN parity: FAISS search vs brute force, the weighted vote vs a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.errors import InvalidArgumentError
from featlab.eval.knn import knn_classify, knn_search, l2_normalize


def test_search_matches_brute_force_cosine():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    sims, idx = knn_search(queries, base, k=10)
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = q @ b.T
    ref_idx = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_allclose(sims, np.take_along_axis(full, ref_idx, 1), atol=1e-5)
    # Indices may differ only where similarities tie (none expected with continuous data).
    assert (idx == ref_idx).mean() > 0.99


def test_weighted_vote_matches_hand_computation():
    # Train points on the unit circle at angles 0, 10, 20 deg (class 0) and 90, 100 deg (class 1).
    ang = np.deg2rad([0, 10, 20, 90, 100])
    train = np.c_[np.cos(ang), np.sin(ang)].astype(np.float32)
    y = np.array([0, 0, 0, 1, 1])
    q = np.array([[np.cos(np.deg2rad(60)), np.sin(np.deg2rad(60))]], np.float32)
    pred = knn_classify(train, y, q, k=3, temperature=0.1)
    # Nearest 3 of 60 deg: 90 (cos 30), 100 (cos 40), 20 (cos 40) -> ties broken either way at 40.
    c30, c40 = np.cos(np.deg2rad(30)), np.cos(np.deg2rad(40))
    w1 = np.exp(c30 / 0.1) + np.exp(c40 / 0.1)
    w0 = np.exp(c40 / 0.1)
    np.testing.assert_allclose(pred.scores[0], [w0 / (w0 + w1), w1 / (w0 + w1)], rtol=1e-5)
    assert pred.labels.tolist() == [1]


def test_temperature_changes_majority_into_weighted_vote():
    train = np.array([[1, 0], [1, 0.02], [0, 1], [0.05, 1]], np.float32)  # 2 and 2
    y = np.array([0, 0, 1, 1])
    # cos(q, .) = 0.743, 0.757 (class 0) and 0.669, 0.705 (class 1): class 0 is nearer.
    q = np.array([[1, 0.9]], np.float32)
    hot = knn_classify(train, y, q, k=4, temperature=100.0).scores[0]
    np.testing.assert_allclose(hot, [0.5, 0.5], atol=1e-3)  # T large: plain majority (2 vs 2)
    cold = knn_classify(train, y, q, k=4, temperature=0.01)
    assert cold.labels[0] == 0  # T small: the closest neighbour (class 0) dominates


def test_bad_arguments():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(InvalidArgumentError, match=r"k must be in 1\.\.3"):
        knn_search(x, x, k=4)
    with pytest.raises(InvalidArgumentError, match="features"):
        knn_search(np.ones((2, 5), np.float32), x, k=1)
    with pytest.raises(InvalidArgumentError, match="temperature"):
        knn_classify(x, np.zeros(3), x, k=1, temperature=0)


def test_l2_normalize_keeps_zero_rows_finite():
    out = l2_normalize(np.array([[3, 4], [0, 0]], np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])


def test_majority_limit_matches_sklearn_cosine_knn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 2
    y = rng.integers(0, 4, 400)
    x = (centers[y] + rng.normal(size=(400, 8))).astype(np.float32)
    ref = KNeighborsClassifier(n_neighbors=15, metric="cosine").fit(x[:300], y[:300])
    # With a huge temperature every neighbour weighs the same: a plain majority vote.
    ours = knn_classify(x[:300], y[:300], x[300:], k=15, temperature=1e6)
    np.testing.assert_allclose(ours.scores, ref.predict_proba(x[300:]), atol=1e-4)
