"""Bootstrap CIs, the paired bootstrap and DeLong's test against plain reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from featlab.errors import InvalidArgumentError
from featlab.eval.stats import (
    BootstrapCI,
    PairedComparison,
    bootstrap_ci,
    delong_folds,
    delong_test,
    paired_bootstrap,
)


def binary_data(n: int, seed: int, signal: float = 1.0, n_folds: int = 2):
    """Labels and per-fold (n, 2) probabilities whose positive column tracks the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    folds = []
    for _ in range(n_folds):
        p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=n))))
        folds.append(np.c_[1 - p, p])
    return y, folds


def mix(folds, other, share: float) -> list[np.ndarray]:
    """Folds whose positive-class score is ``(1 - share) * folds + share * other``."""
    out = []
    for f, g in zip(folds, other, strict=True):
        p = (1 - share) * f[:, 1] + share * g[:, 1]
        out.append(np.c_[1 - p, p])
    return out


def pairwise_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC by definition: the share of (positive, negative) pairs ordered right, ties half."""
    x, z = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean((x > z) + 0.5 * (x == z)))


def brute_force_replicates(y, folds_a, folds_b=None, *, n_boot, seed):
    """Documented draws (rng.integers(0, n, n) per replicate), scored pair by pair."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        if len(np.unique(y[idx])) < 2:
            out.append(np.nan)
            continue
        a = np.mean([pairwise_auc(y[idx], f[idx, 1]) for f in folds_a])
        b = np.mean([pairwise_auc(y[idx], f[idx, 1]) for f in folds_b]) if folds_b else 0.0
        out.append(a - b)
    return np.array(out)


def test_bootstrap_ci_matches_brute_force_resampling():
    y, folds = binary_data(120, seed=0)
    ci = bootstrap_ci(y, folds, "auc", "binary", n_boot=60, seed=3, alpha=0.1)
    ref = brute_force_replicates(y, folds, n_boot=60, seed=3)
    assert ci.estimate == pytest.approx(np.mean([roc_auc_score(y, f[:, 1]) for f in folds]))
    assert (ci.low, ci.high) == pytest.approx(tuple(np.quantile(ref, [0.05, 0.95])), abs=1e-12)
    assert ci.n_used == ci.n_boot == 60
    assert ci.low < ci.estimate < ci.high
    assert ci.to_dict() == {
        "estimate": ci.estimate,
        "low": ci.low,
        "high": ci.high,
        "n_boot": 60,
        "seed": 3,
        "alpha": 0.1,
        "n_used": 60,
        "metric": "auc",
    }


def test_bootstrap_ci_shrinks_with_n_and_is_seeded():
    small = bootstrap_ci(*binary_data(150, seed=1), "accuracy", "binary", n_boot=200, seed=0)
    large = bootstrap_ci(*binary_data(2400, seed=1), "accuracy", "binary", n_boot=200, seed=0)
    # The width goes as 1/sqrt(n): 16x the samples, about a quarter of the width.
    assert (large.high - large.low) < 0.5 * (small.high - small.low)
    for ci in (small, large):
        assert ci.low <= ci.estimate <= ci.high
    again = bootstrap_ci(*binary_data(150, seed=1), "accuracy", "binary", n_boot=200, seed=0)
    assert again == small
    other = bootstrap_ci(*binary_data(150, seed=1), "accuracy", "binary", n_boot=200, seed=1)
    assert (other.low, other.high) != (small.low, small.high)


def test_bootstrap_ci_multiclass_and_multilabel_tasks():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    s = np.eye(3)[y] * 0.5 + rng.random((200, 3))
    s /= s.sum(1, keepdims=True)
    ci = bootstrap_ci(y, [s], "balanced_accuracy", "multiclass", n_boot=100, seed=0)
    assert ci.low <= ci.estimate <= ci.high
    y_ml = rng.integers(-1, 2, (200, 3)).astype(np.int8)
    s_ml = np.clip(0.5 + 0.3 * y_ml + 0.3 * rng.normal(size=(200, 3)), 0, 1)
    ci = bootstrap_ci(y_ml, np.stack([s_ml, s_ml]), "auc", "multilabel", n_boot=100, seed=0)
    assert ci.low <= ci.estimate <= ci.high
    assert ci.metric == "auc"


def test_undefined_replicates_are_dropped_and_counted():
    y, folds = binary_data(14, seed=4)
    y[:] = 0
    y[[2, 9]] = 1  # two positives in 14: some resamples draw neither
    ci = bootstrap_ci(y, folds, "auc", "binary", n_boot=300, seed=5)
    ref = brute_force_replicates(y, folds, n_boot=300, seed=5)
    assert ci.n_used == int((~np.isnan(ref)).sum())
    assert 150 <= ci.n_used < 300
    q = np.quantile(ref[~np.isnan(ref)], [0.025, 0.975])
    assert (ci.low, ci.high) == pytest.approx(tuple(q), abs=1e-12)


def test_too_few_defined_replicates_raise():
    # Label 0 has one known positive and one known negative among 40 samples: it is defined
    # only when a resample draws both (about 40% of replicates).
    y = np.full((40, 1), -1, dtype=np.int8)
    y[0, 0], y[1, 0] = 1, 0
    s = np.linspace(0, 1, 40)[:, None]
    with pytest.raises(InvalidArgumentError, match=r"defined in only \d+ of 200 bootstrap"):
        bootstrap_ci(y, [s], "mean_auc", "multilabel", n_boot=200, seed=0)


def test_paired_bootstrap_identical_models():
    y, folds = binary_data(200, seed=6)
    res = paired_bootstrap(y, folds, [f.copy() for f in folds], "auc", "binary", n_boot=100)
    assert res.difference == 0.0
    assert res.low == res.high == 0.0
    assert res.p_value == 1.0
    assert res.test == "paired_bootstrap"
    assert res.z is None


def test_paired_bootstrap_better_model_and_p_value_definition():
    y, good = binary_data(150, seed=7, signal=1.5)
    _, weak = binary_data(150, seed=8, signal=0.0)  # labels differ: pure noise for these y
    res = paired_bootstrap(y, good, weak, "auc", "binary", n_boot=120, seed=2)
    ref = brute_force_replicates(y, good, weak, n_boot=120, seed=2)
    assert res.difference > 0.2
    assert (res.low, res.high) == pytest.approx(tuple(np.quantile(ref, [0.025, 0.975])), abs=1e-12)
    # p = min(1, 2 min(1 + #{d <= 0}, 1 + #{d >= 0}) / (m + 1)); here no d <= 0.
    assert res.p_value == pytest.approx(2 / 121)
    assert res.low > 0
    swapped = paired_bootstrap(y, weak, good, "auc", "binary", n_boot=120, seed=2)
    assert swapped.difference == pytest.approx(-res.difference)
    assert (swapped.low, swapped.high) == pytest.approx((-res.high, -res.low))
    assert swapped.p_value == res.p_value


def test_paired_bootstrap_p_value_for_close_models():
    y, folds_a = binary_data(200, seed=9)
    _, noise = binary_data(200, seed=10)
    folds_b = mix(folds_a, noise, 0.2)  # slightly worse than A: both signs among the d_b
    res = paired_bootstrap(y, folds_a, folds_b, "auc", "binary", n_boot=150, seed=0)
    d = brute_force_replicates(y, folds_a, folds_b, n_boot=150, seed=0)
    assert (d < 0).any()
    assert (d > 0).any()
    assert 0.01 < res.p_value < 1
    tail = min(1 + (d <= 0).sum(), 1 + (d >= 0).sum())
    assert res.p_value == pytest.approx(min(1.0, 2 * tail / 151))
    assert res.std_error == pytest.approx(d.std(ddof=1))


def delong_reference(y, a, b):
    """DeLong et al. 1988 written plainly: O(n^2) placements V10 (positives), V01 (negatives)."""
    pos, neg = y == 1, y == 0

    def psi(x, z):  # 1 if the positive scores higher, 1/2 on a tie
        return (x > z) + 0.5 * (x == z)

    v10, v01, aucs = [], [], []
    for s in (a, b):
        x, z = s[pos], s[neg]
        kernel = psi(x[:, None], z[None, :])  # (m, k)
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
        aucs.append(kernel.mean())
    m, k = pos.sum(), neg.sum()
    s10 = np.cov(np.array(v10))
    s01 = np.cov(np.array(v01))
    cov = s10 / m + s01 / k
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return aucs, np.sqrt(var)


def test_delong_matches_plain_implementation_and_sklearn():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 300)
    a = np.round(y + rng.normal(size=300), 1)  # rounded: ties inside and across classes
    b = np.round(0.5 * y + rng.normal(size=300), 1)
    res = delong_test(y, a, b)
    (auc_a, auc_b), se = delong_reference(y, a, b)
    assert res.estimate_a == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res.estimate_b == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert (res.estimate_a, res.estimate_b) == pytest.approx((auc_a, auc_b), abs=1e-12)
    assert res.std_error == pytest.approx(se, rel=1e-9)
    z = (auc_a - auc_b) / se
    assert res.z == pytest.approx(z, rel=1e-9)
    assert res.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    half = norm.ppf(0.975) * se
    assert (res.low, res.high) == pytest.approx((res.difference - half, res.difference + half))
    assert res.metric == "auc"
    assert res.test == "delong"
    assert res.n_boot is None
    assert res.seed is None
    # (n, 2) probabilities use column 1; the AUCs are rank-based, so a monotone map agrees.
    prob = delong_test(y, np.c_[-a, a], np.c_[-b, b])
    assert prob.z == pytest.approx(res.z, rel=1e-12)


def test_delong_identical_inputs_give_z_zero():
    y, (f, _) = binary_data(100, seed=12)
    res = delong_test(y, f, f)
    assert (res.z, res.p_value, res.difference, res.std_error) == (0.0, 1.0, 0.0, 0.0)
    assert res.low == res.high == 0.0


def test_delong_and_paired_bootstrap_agree_on_the_standard_error():
    # Two estimates of the same quantity by different methods (seeded, so deterministic).
    y, folds_a = binary_data(400, seed=13, n_folds=1)
    _, noise = binary_data(400, seed=14, n_folds=1)
    folds_b = mix(folds_a, noise, 0.5)
    dl = delong_test(y, folds_a[0], folds_b[0])
    pb = paired_bootstrap(y, folds_a, folds_b, "auc", "binary", n_boot=400, seed=0)
    assert pb.difference == pytest.approx(dl.difference, abs=1e-12)
    assert 0.8 < pb.std_error / dl.std_error < 1.25


def test_delong_folds_and_errors():
    y, folds_a = binary_data(80, seed=15, n_folds=3)
    _, folds_b = binary_data(80, seed=16, n_folds=3)
    out = delong_folds(y, folds_a, folds_b)
    assert [r.z for r in out] == [
        delong_test(y, a, b).z for a, b in zip(folds_a, folds_b, strict=True)
    ]
    assert all(isinstance(r, PairedComparison) for r in out)
    with pytest.raises(InvalidArgumentError, match="same positive number of folds; got 3 and 2"):
        delong_folds(y, folds_a, folds_b[:2])
    y3 = np.arange(80) % 3
    with pytest.raises(InvalidArgumentError, match="use paired_bootstrap"):
        delong_test(y3, folds_a[0][:, 1], folds_b[0][:, 1])
    with pytest.raises(InvalidArgumentError, match=r"got shape \(80, 3\).*paired_bootstrap"):
        delong_test(y, np.ones((80, 3)), np.ones((80, 3)))
    with pytest.raises(InvalidArgumentError, match=r"both classes.*only \[1\]"):
        delong_test(np.ones(80, int), folds_a[0], folds_b[0])
    with pytest.raises(InvalidArgumentError, match="fold 1: y_true has 80 samples"):
        delong_folds(y, folds_a[:2], [folds_b[0], folds_b[1][:50]])


def test_bootstrap_argument_errors():
    y, folds = binary_data(30, seed=17)
    with pytest.raises(InvalidArgumentError, match=r"one array of shape \(30, 2\).*\[scores\]"):
        bootstrap_ci(y, folds[0], "auc", "binary")
    with pytest.raises(InvalidArgumentError, match="fold_scores is empty"):
        bootstrap_ci(y, [], "auc", "binary")
    with pytest.raises(InvalidArgumentError, match="n_boot must be a positive int"):
        bootstrap_ci(y, folds, "auc", "binary", n_boot=0)
    with pytest.raises(InvalidArgumentError, match=r"alpha must be in \(0, 1\)"):
        bootstrap_ci(y, folds, "auc", "binary", alpha=5)
    with pytest.raises(InvalidArgumentError, match="seed must be an int"):
        bootstrap_ci(y, folds, "auc", "binary", seed=None)
    with pytest.raises(InvalidArgumentError, match="does not apply to a binary task"):
        bootstrap_ci(y, folds, "quadratic_kappa", "binary")
    with pytest.raises(InvalidArgumentError, match=r"fold_scores_b\[1\]: y_true has 30 samples"):
        paired_bootstrap(y, folds, [folds[0], folds[1][:20]], "auc", "binary")
    with pytest.raises(InvalidArgumentError, match="undefined on the full test set"):
        bootstrap_ci(np.zeros(30, int), folds, "auc", "binary")


def test_results_are_frozen():
    ci = BootstrapCI(0.5, 0.4, 0.6, 10, 0, 0.05, 10, "auc")
    with pytest.raises(AttributeError):
        ci.low = 0.0  # type: ignore[misc]
