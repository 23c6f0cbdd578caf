"""LogisticProbe: scikit-learn's estimator contract and solution, C selection on validation data,
masked multi-label fits, standardisation from the training data only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.utils.estimator_checks import parametrize_with_checks

from featlab.errors import InvalidArgumentError
from featlab.eval._probe_common import encode_targets, holdout_split
from featlab.eval.logreg import DEFAULT_CS, LogisticProbe

# Checks whose premise contradicts featlab's label conventions (shared with test_linear_probe).
EXPECTED_FAILED_CHECKS = {
    "check_classifiers_classes": "uses -1 as a class label; featlab reserves -1 for 'unknown' "
    "and refuses negative single-label labels",
    "check_supervised_y_2d": "expects a (n, 1) y to be raveled with a warning; for featlab any "
    "2-D y is multi-label in {1, 0, -1}",
}


@parametrize_with_checks(
    [LogisticProbe()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _sklearn(x, y, C):
    """The reference: scikit-learn's lbfgs in float64, converged far below our tolerance.

    One BLAS thread: scipy's and numpy's OpenBLAS pools otherwise fight over the 2 cores.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(x.astype(np.float64), y)


def _data(n=300, d=10, k=2, seed=0, noise=1.0):
    """Correlated Gaussian features and labels from a noisy linear (softmax-like) rule."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.logspace(0, -1, d)[:, None]
    x = (rng.normal(size=(n, d)) @ mix + 0.5).astype(np.float32)
    y = (x @ rng.normal(size=(d, k)) + noise * rng.normal(size=(n, k))).argmax(axis=1)
    return x, y


def test_contract_basics():
    x, y = _data()
    est = LogisticProbe(Cs=(0.1, 1.0), seed=3)
    assert est.get_params()["Cs"] == (0.1, 1.0)
    assert clone(est).get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.predict(x)
    assert est.fit(x, y) is est
    for name in ("classes_", "coef_", "intercept_", "C_", "val_scores_", "n_iter_", "mean_"):
        assert hasattr(est, name), name
    assert est.n_features_in_ == 10
    assert est.coef_.shape == (1, 10)  # binary: one row, as scikit-learn's
    assert est.classes_.tolist() == [0, 1]
    proba = est.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.array_equal(est.predict(x), est.classes_[proba.argmax(axis=1)])
    assert not hasattr(clone(est), "coef_")


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("C", [1e-3, 1.0, 100.0])
def test_matches_sklearn_for_a_fixed_c(k, C):
    x, y = _data(k=k, seed=k)
    probe = LogisticProbe(Cs=[C], standardize=False, tol=1e-5).fit(x, y, eval_set=(x, y))
    ref = _sklearn(x, y, C)
    assert probe.C_ == C
    assert probe.coef_.shape == ref.coef_.shape
    np.testing.assert_allclose(probe.predict_proba(x), ref.predict_proba(x), atol=1e-3)
    assert (probe.predict(x) == ref.predict(x)).mean() > 0.99


def test_standardized_matches_sklearn_pipeline():
    from sklearn.preprocessing import StandardScaler

    x, y = _data(k=3, seed=5)
    x = x * np.logspace(-2, 2, x.shape[1]).astype(np.float32) + 100  # very unequal scales
    probe = LogisticProbe(Cs=[0.3], tol=1e-5).fit(x, y, eval_set=(x, y))
    scaler = StandardScaler().fit(x.astype(np.float64))
    ref = _sklearn(scaler.transform(x), y, 0.3)
    np.testing.assert_allclose(
        probe.predict_proba(x), ref.predict_proba(scaler.transform(x)), atol=1e-3
    )
    np.testing.assert_allclose(probe.mean_, scaler.mean_, rtol=1e-5)
    np.testing.assert_allclose(probe.scale_, scaler.scale_, rtol=1e-4)


def test_string_labels_and_classes_order():
    x, y = _data(k=3, seed=2)
    names = np.array(["zeta", "alpha", "mid"])[y]
    probe = LogisticProbe(Cs=[1.0]).fit(x, names)
    assert probe.classes_.tolist() == ["alpha", "mid", "zeta"]
    ref = LogisticProbe(Cs=[1.0]).fit(x, np.array([2, 0, 1])[y])  # same classes, coded in order
    np.testing.assert_allclose(probe.predict_proba(x), ref.predict_proba(x), atol=1e-5)


def test_multilabel_unknown_entries_are_left_out_per_label():
    rng = np.random.default_rng(1)
    x, _ = _data(n=400, d=8, seed=1)
    y = (x @ rng.normal(size=(8, 3)) + rng.normal(size=(400, 3)) > 0).astype(np.int8)
    y[rng.random(y.shape) < 0.3] = -1
    probe = LogisticProbe(Cs=[0.5], standardize=False, tol=1e-5).fit(x, y, eval_set=(x, y))
    assert probe.coef_.shape == (3, 8)
    proba = probe.predict_proba(x)
    assert proba.shape == (400, 3)
    for j in range(3):
        # The same fit as scikit-learn on only the rows whose label j is known.
        known = y[:, j] >= 0
        ref = _sklearn(x[known], y[known, j], 0.5)
        np.testing.assert_allclose(proba[:, j], ref.predict_proba(x)[:, 1], atol=1e-3)
    # Rows whose labels are all unknown can hold anything: the fit does not see them.
    x2 = x.copy()
    all_unknown = (y == -1).all(axis=1)
    assert all_unknown.any()
    x2[all_unknown] = 1e3
    other = LogisticProbe(Cs=[0.5], standardize=False, tol=1e-5).fit(x2, y, eval_set=(x, y))
    np.testing.assert_allclose(other.coef_, probe.coef_, atol=1e-4)
    pred = probe.predict(x)
    assert pred.dtype == np.int8
    assert pred.shape == (400, 3)
    assert np.array_equal(pred, (proba >= 0.5).astype(np.int8))


def test_c_selection_uses_the_validation_score():
    x, y = _data(n=400, seed=7)
    xv, yv = _data(n=200, seed=8)
    Cs = (1e-3, 1e-2, 1e-1, 1.0)
    seen = []

    def confidence(y_true, proba):  # grows with C: the least regularised model is most confident
        seen.append(len(y_true))
        return float(np.abs(proba[:, 1] - 0.5).mean())

    most = LogisticProbe(Cs=Cs, scoring=confidence).fit(x, y, eval_set=(xv, yv))
    assert seen == [200] * 4  # scored on the eval set, once per C
    assert most.C_ == 1.0
    assert max(most.val_scores_, key=most.val_scores_.get) == most.C_
    least = LogisticProbe(Cs=Cs, scoring=lambda t, p: -confidence(t, p)).fit(
        x, y, eval_set=(xv, yv)
    )
    assert least.C_ == 1e-3
    flat = LogisticProbe(Cs=Cs, scoring=lambda t, p: 0.5).fit(x, y, eval_set=(xv, yv))
    assert flat.C_ == 1e-3  # ties go to the strongest regularisation
    # Default score: minus the validation log-loss of the model fitted with that C.
    auto = LogisticProbe(Cs=Cs, standardize=False, tol=1e-5).fit(x, y, eval_set=(xv, yv))
    for C in Cs:
        ref = _sklearn(x, y, C)
        expected = -log_loss(yv, ref.predict_proba(xv))
        assert auto.val_scores_[C] == pytest.approx(expected, abs=1e-3)
    assert max(auto.val_scores_, key=auto.val_scores_.get) == auto.C_


def test_holdout_when_no_eval_set_and_standardisation_from_training_rows():
    x, y = _data(n=300, seed=4)
    probe = LogisticProbe(Cs=[1.0], validation_fraction=0.2, seed=9).fit(x, y)
    train, val = holdout_split(encode_targets(y, len(y)), 0.2, 9)
    np.testing.assert_allclose(probe.mean_, x[train].mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(probe.scale_, x[train].std(axis=0), rtol=1e-4)
    # The model is the one fitted on the training rows alone.
    ref = LogisticProbe(Cs=[1.0]).fit(x[train], y[train], eval_set=(x[val], y[val]))
    np.testing.assert_allclose(probe.coef_, ref.coef_, atol=1e-5)
    # A wildly shifted eval set changes neither the statistics nor the model.
    shifted = LogisticProbe(Cs=[1.0]).fit(x[train], y[train], eval_set=(x[val] + 1e4, y[val]))
    np.testing.assert_array_equal(shifted.mean_, ref.mean_)
    np.testing.assert_array_equal(shifted.coef_, ref.coef_)


def test_holdout_split_is_stratified_seeded_and_disjoint():
    y = np.repeat([0, 1, 2], [50, 30, 20])
    targets = encode_targets(y, len(y))
    train, val = holdout_split(targets, 0.1, 0)
    assert len(val) == 10
    assert np.bincount(y[val]).tolist() == [5, 3, 2]
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(100))
    again = holdout_split(targets, 0.1, 0)[1]
    other = holdout_split(targets, 0.1, 1)[1]
    assert np.array_equal(val, again)
    assert not np.array_equal(val, other)
    # Tiny sets still split, and every class keeps a training sample.
    tiny = encode_targets(np.array([0, 0, 1, 1, 2]), 5)
    train, val = holdout_split(tiny, 0.5, 0)
    assert len(val) == 2
    assert set(tiny.codes[train]) == {0, 1, 2}


def test_separable_data_is_learned_and_shuffled_labels_are_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 20)).astype(np.float32)
    y = (x @ rng.normal(size=20) > 0).astype(int)
    probe = LogisticProbe().fit(x[:800], y[:800])
    assert (probe.predict(x[800:]) == y[800:]).mean() > 0.95
    shuffled = rng.permutation(y[:800])
    chance = LogisticProbe().fit(x[:800], shuffled)
    assert abs((chance.predict(x[800:]) == y[800:]).mean() - 0.5) < 0.1


def test_default_grid_and_float32_parameters():
    assert tuple(np.logspace(-4, 2, 7)) == DEFAULT_CS
    x, y = _data(seed=11)
    probe = LogisticProbe().fit(x, y)
    assert set(probe.val_scores_) == set(DEFAULT_CS)
    assert probe.coef_.dtype == np.float32
    assert probe.n_iter_ >= 1


def test_bad_inputs_are_clear_errors():
    x, y = _data(n=60)
    with pytest.raises(InvalidArgumentError, match="negative labels"):
        LogisticProbe().fit(x, np.where(y == 0, -1, 1))
    with pytest.raises(InvalidArgumentError, match="only one class"):
        LogisticProbe().fit(x, np.zeros(60, int), eval_set=(x, np.zeros(60, int)))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        LogisticProbe().fit(np.full_like(x, np.nan), y)
    with pytest.raises(InvalidArgumentError, match="features"):
        LogisticProbe().fit(x, y, eval_set=(x[:, :3], y))
    with pytest.raises(InvalidArgumentError, match="absent from the training y"):
        LogisticProbe().fit(x, y, eval_set=(x, y + 5))
    with pytest.raises(InvalidArgumentError, match=r"1 \(positive\), 0 \(negative\) or -1"):
        LogisticProbe().fit(x, np.stack([y, y * 2], axis=1))
    y2 = np.stack([y, np.zeros_like(y)], axis=1)
    with pytest.raises(InvalidArgumentError, match="no known positive"):
        LogisticProbe().fit(x, y2, eval_set=(x, y2))
    with pytest.raises(InvalidArgumentError, match="Cs must be"):
        LogisticProbe(Cs=[1.0, -1.0]).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="validation_fraction"):
        LogisticProbe(validation_fraction=1.5).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="finite number"):
        LogisticProbe(Cs=[1.0], scoring=lambda t, p: float("nan")).fit(x, y)
