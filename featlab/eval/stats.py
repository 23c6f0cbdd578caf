"""Uncertainty of evaluation metrics: bootstrap CIs and paired model-vs-model tests.

DESIGN section 6: metrics are reported as mean over folds; on request with a bootstrap confidence
interval, and two models are compared with a paired test on the same test samples.

- :func:`bootstrap_ci` and :func:`paired_bootstrap` resample the *test samples* (with
  replacement, one index draw shared by every fold and by both models, which is what makes the
  comparison paired) and recompute the mean-over-folds metric. Any metric of
  :mod:`featlab.eval.metrics` works. A resample is scored as integer sample weights (draw
  counts), which gives exactly the metric of the resampled arrays at linear cost.
- :func:`delong_test` compares two correlated binary ROC AUCs analytically (DeLong, DeLong &
  Clarke-Pearson 1988, Biometrics 44:837), with the midrank algorithm of Sun & Xu 2014 (IEEE
  Signal Processing Letters 21:1389).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval.metrics import PreparedScores, resolve_metric

MIN_USABLE_FRACTION = 0.5  # fewer computable replicates than this share of n_boot is an error


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap confidence interval of a mean-over-folds metric.

    Attributes:
        estimate: The mean-over-folds metric on the full test set.
        low: ``alpha / 2`` quantile of the replicate statistics.
        high: ``1 - alpha / 2`` quantile.
        n_boot: Replicates drawn.
        seed: Seed of the index draws.
        alpha: ``1 - `` the interval's coverage.
        n_used: Replicates where the metric was defined (the others are dropped).
        metric: The metric's name as asked.
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    seed: int
    alpha: float
    n_used: int
    metric: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same test samples.

    Attributes:
        metric: The metric compared (``"auc"`` for DeLong).
        estimate_a: A's mean-over-folds metric on the full test set (DeLong: A's AUC).
        estimate_b: The same for B.
        difference: ``estimate_a - estimate_b``.
        low: Lower end of the ``1 - alpha`` interval of the difference.
        high: Upper end.
        p_value: Two-sided p-value of "no difference" (definitions in the test functions).
        n_boot: Replicates drawn (``None`` for DeLong).
        seed: Seed of the index draws (``None`` for DeLong).
        test: ``"paired_bootstrap"`` or ``"delong"``.
        alpha: ``1 - `` the interval's coverage.
        n_used: Replicates where both metrics were defined (``None`` for DeLong).
        std_error: Standard error of the difference (bootstrap: std of the replicate
            differences; DeLong: square root of its variance estimate).
        z: DeLong's statistic ``difference / std_error`` (``None`` for the bootstrap).
    """

    metric: str
    estimate_a: float
    estimate_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n_boot: int | None
    seed: int | None
    test: str = "paired_bootstrap"
    alpha: float = 0.05
    n_used: int | None = None
    std_error: float | None = None
    z: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_boot_args(n_boot: int, seed: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise InvalidArgumentError(f"n_boot must be a positive int; got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidArgumentError(f"seed must be an int; got {seed!r}")
    _check_alpha(alpha)


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidArgumentError(
            f"alpha must be in (0, 1) (0.05 gives a 95% interval); got {alpha!r}"
        )


def _prepare_folds(
    y_true: np.ndarray, fold_scores: Sequence[np.ndarray], task: str, which: str
) -> list[PreparedScores]:
    if isinstance(fold_scores, np.ndarray) and fold_scores.ndim != 3:
        # Iterating a (n, C) array would silently treat each sample as a fold.
        raise InvalidArgumentError(
            f"{which} must be a sequence of score arrays, one per fold (or an (F, n, C) array); "
            f"got one array of shape {fold_scores.shape}; for a single run pass [scores]"
        )
    if len(fold_scores) == 0:
        raise InvalidArgumentError(f"{which} is empty; pass one score array per fold")
    prepared = []
    for i, scores in enumerate(fold_scores):
        try:
            prepared.append(PreparedScores(y_true, scores, task))
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{which}[{i}]: {exc}") from exc
    return prepared


def _mean_over_folds(
    prepared: list[PreparedScores], metric: str, weights: np.ndarray | None = None
) -> float:
    # Any undefined fold makes the replicate undefined (NaN propagates through the mean).
    return float(np.mean([p.score(metric, weights) for p in prepared]))


def _full_estimate(prepared: list[PreparedScores], metric: str, which: str) -> float:
    value = _mean_over_folds(prepared, metric)
    if np.isnan(value):
        raise InvalidArgumentError(
            f"{metric} of {which} is undefined on the full test set (a class or label lacks "
            "positives or negatives, or all predictions and labels are one class)"
        )
    return value


def _replicate_weights(n: int, n_boot: int, seed: int):
    """Yield ``n_boot`` float64 ``(n,)`` draw counts of resamples of size n with replacement."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)


def _check_usable(n_used: int, n_boot: int, metric: str) -> None:
    if n_used < MIN_USABLE_FRACTION * n_boot:
        raise InvalidArgumentError(
            f"{metric} was defined in only {n_used} of {n_boot} bootstrap replicates (need at "
            f"least {MIN_USABLE_FRACTION:.0%}): the test set is too small or a class too rare; "
            "use a larger test set or a metric that does not need every class"
        )


def bootstrap_ci(
    y_true: np.ndarray,
    fold_scores: Sequence[np.ndarray],
    metric: str,
    task: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapCI:
    """Percentile bootstrap interval of the mean-over-folds ``metric`` on one test set.

    Each replicate draws ``n`` test samples with replacement (one draw applied to every fold)
    and recomputes the mean over folds; replicates where the metric is undefined (e.g. a
    resample with one class for AUC) are dropped and counted. As on any test set, a class
    missing from a resample drops out of that replicate's one-vs-rest macro AUC.

    Args:
        y_true: ``(n,)`` or ``(n, L)`` labels of the test samples (see
            :func:`featlab.eval.metrics.score_metric`).
        fold_scores: One ``(n, C)`` (or ``(n, L)``) score array per fold, all for the same
            ``n`` test samples in the same order.
        metric: A metric name that applies to ``task``.
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        n_boot: Replicates to draw.
        seed: Seed of the index draws; the same seed gives the same interval.
        alpha: The interval covers ``1 - alpha``; its ends are the ``alpha / 2`` and
            ``1 - alpha / 2`` quantiles (numpy's linear interpolation) of the replicates.

    Returns:
        :class:`BootstrapCI`.

    Raises:
        InvalidArgumentError: On invalid inputs or arguments, a metric undefined on the full
            test set, or fewer than half of the replicates defined.
    """
    resolve_metric(metric, task)
    _check_boot_args(n_boot, seed, alpha)
    prepared = _prepare_folds(y_true, fold_scores, task, "fold_scores")
    estimate = _full_estimate(prepared, metric, "fold_scores")
    draws = _replicate_weights(prepared[0].n, n_boot, seed)
    stats = np.array([_mean_over_folds(prepared, metric, w) for w in draws])
    stats = stats[~np.isnan(stats)]
    _check_usable(len(stats), n_boot, metric)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(
        estimate=estimate,
        low=float(low),
        high=float(high),
        n_boot=int(n_boot),
        seed=int(seed),
        alpha=float(alpha),
        n_used=len(stats),
        metric=metric,
    )


def paired_bootstrap(
    y_true: np.ndarray,
    fold_scores_a: Sequence[np.ndarray],
    fold_scores_b: Sequence[np.ndarray],
    metric: str,
    task: str,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedComparison:
    """Paired bootstrap comparison of two models' mean-over-folds ``metric`` on one test set.

    Each replicate draws ``n`` test samples with replacement and applies that one draw to every
    fold of A and of B, so the replicate difference ``d_b = mean_A - mean_B`` keeps the pairing
    of the two models on the same samples. Replicates where either metric is undefined are
    dropped. A and B may have different numbers of folds.

    The two-sided p-value inverts the percentile interval: with ``m`` usable replicates,

        ``p = min(1, 2 * min(1 + #{d_b <= 0}, 1 + #{d_b >= 0}) / (m + 1))``

    so ``p < alpha`` about when the ``1 - alpha`` interval excludes 0; the ``+ 1`` terms keep it
    at least ``2 / (m + 1)`` (a bootstrap cannot show a smaller p), and identical models
    (every ``d_b = 0``) give ``p = 1``.

    Args:
        y_true: Labels of the test samples, as in :func:`bootstrap_ci`.
        fold_scores_a: Model A's score arrays, one per fold, for the same samples.
        fold_scores_b: Model B's.
        metric: A metric name that applies to ``task``.
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.
        n_boot: Replicates to draw.
        seed: Seed of the index draws.
        alpha: The interval of the difference covers ``1 - alpha`` (percentile method).

    Returns:
        :class:`PairedComparison` with ``test="paired_bootstrap"``.

    Raises:
        InvalidArgumentError: As :func:`bootstrap_ci`.
    """
    resolve_metric(metric, task)
    _check_boot_args(n_boot, seed, alpha)
    prep_a = _prepare_folds(y_true, fold_scores_a, task, "fold_scores_a")
    prep_b = _prepare_folds(y_true, fold_scores_b, task, "fold_scores_b")
    est_a = _full_estimate(prep_a, metric, "fold_scores_a")
    est_b = _full_estimate(prep_b, metric, "fold_scores_b")
    diffs = np.array(
        [
            _mean_over_folds(prep_a, metric, w) - _mean_over_folds(prep_b, metric, w)
            for w in _replicate_weights(prep_a[0].n, n_boot, seed)
        ]
    )
    diffs = diffs[~np.isnan(diffs)]
    m = len(diffs)
    _check_usable(m, n_boot, metric)
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    tail = min(1 + int((diffs <= 0).sum()), 1 + int((diffs >= 0).sum()))
    return PairedComparison(
        metric=metric,
        estimate_a=est_a,
        estimate_b=est_b,
        difference=est_a - est_b,
        low=float(low),
        high=float(high),
        p_value=min(1.0, 2 * tail / (m + 1)),
        n_boot=int(n_boot),
        seed=int(seed),
        test="paired_bootstrap",
        alpha=float(alpha),
        n_used=m,
        std_error=float(diffs.std(ddof=1)) if m > 1 else float("nan"),
    )


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given the mean of their ranks (Sun & Xu's midranks)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]  # exclusive
    mid = (starts + 1 + ends) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mid, ends - starts)
    return ranks


def _positive_column(scores: np.ndarray, n: int, which: str) -> np.ndarray:
    s = np.asarray(scores)
    if s.dtype.kind not in "fiub":
        raise InvalidArgumentError(f"{which} must be numeric; got dtype {s.dtype}")
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    elif s.ndim != 1:
        raise InvalidArgumentError(
            f"DeLong's test compares binary AUCs: {which} must be (n,) positive-class scores or "
            f"(n, 2) class probabilities; got shape {s.shape}; for multiclass or multilabel "
            "scores use paired_bootstrap"
        )
    if len(s) != n:
        raise InvalidArgumentError(f"y_true has {n} samples but {which} has {len(s)}")
    if not np.isfinite(s).all():
        raise InvalidArgumentError(f"{which} contains NaN or infinite values")
    return s.astype(np.float64, copy=False)


def delong_test(
    y_true: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    alpha: float = 0.05,
) -> PairedComparison:
    """DeLong's test of two correlated binary ROC AUCs on the same samples.

    With ``m`` positives and ``k`` negatives, each positive's placement ``V10`` is the share of
    negatives it outscores (ties count half) and each negative's ``V01`` the share of positives
    that outscore it; the AUC is their mean, and the covariance of the two AUCs is
    ``S10 / m + S01 / k`` with ``S10``, ``S01`` the sample covariances of the placements
    (DeLong et al. 1988, section 2). The placements come from midranks in O(n log n)
    (Sun & Xu 2014, section III). ``z = (AUC_A - AUC_B) / sqrt(var)`` with
    ``var = S[0,0] + S[1,1] - 2 S[0,1]``, a two-sided normal p-value, and the interval
    ``difference ± z_{1-alpha/2} sqrt(var)``. When the variance is zero and the AUCs are equal
    (e.g. identical or rank-identical scores), ``z = 0`` and ``p = 1``.

    Args:
        y_true: ``(n,)`` labels in ``{0, 1}`` with both classes present.
        scores_a: ``(n,)`` positive-class scores of model A, or ``(n, 2)`` probabilities
            (column 1 is used).
        scores_b: The same for model B.
        alpha: The interval covers ``1 - alpha`` (default 95%).

    Returns:
        :class:`PairedComparison` with ``metric="auc"``, ``test="delong"``, ``z`` and
        ``std_error`` set and ``n_boot``/``seed`` ``None``.

    Raises:
        InvalidArgumentError: On non-binary labels or scores (use :func:`paired_bootstrap`),
            a missing class, mismatched lengths, non-finite scores, or a zero variance with
            unequal AUCs (where the normal approximation says nothing).
    """
    _check_alpha(alpha)
    y = np.asarray(y_true)
    if y.ndim != 1 or y.dtype.kind not in "iub":
        raise InvalidArgumentError(
            f"DeLong's test needs (n,) integer binary labels; got shape {y.shape}, dtype "
            f"{y.dtype}; for multiclass or multilabel tasks use paired_bootstrap"
        )
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise InvalidArgumentError(
            f"DeLong's test compares binary AUCs; y_true has labels {sorted(labels)[:6]}; "
            "for multiclass, ordinal or multilabel tasks use paired_bootstrap"
        )
    if labels != {0, 1}:
        raise InvalidArgumentError(
            f"AUC needs both classes in y_true; only {sorted(labels)} present"
        )
    s = np.stack(
        [
            _positive_column(scores_a, len(y), "scores_a"),
            _positive_column(scores_b, len(y), "scores_b"),
        ]
    )
    pos, neg = y == 1, y == 0
    m, k = int(pos.sum()), int(neg.sum())
    v10 = np.empty((2, m))
    v01 = np.empty((2, k))
    aucs = np.empty(2)
    for r in range(2):
        tz = _midranks(s[r])  # ranks among all samples
        tx = _midranks(s[r, pos])  # among positives only
        ty = _midranks(s[r, neg])  # among negatives only
        # A positive's overall rank minus its rank among positives counts the negatives below
        # it (ties half): its placement. Likewise for negatives (Sun & Xu 2014, eq. 7-8).
        v10[r] = (tz[pos] - tx) / k
        v01[r] = 1.0 - (tz[neg] - ty) / m
        aucs[r] = v10[r].mean()
    s10 = np.cov(v10) if m > 1 else np.zeros((2, 2))
    s01 = np.cov(v01) if k > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / k
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    # Rounding can leave a tiny (even negative) variance where it is exactly zero in theory.
    scale = float(cov[0, 0] + cov[1, 1])
    if var <= 1e-12 * max(scale, np.finfo(float).tiny):
        if abs(diff) > 1e-12:
            raise InvalidArgumentError(
                f"DeLong's variance of the AUC difference is zero while the AUCs differ "
                f"({aucs[0]:.6f} vs {aucs[1]:.6f}), so the normal approximation does not apply; "
                "use paired_bootstrap"
            )
        se, z, p = 0.0, 0.0, 1.0
    else:
        se = math.sqrt(var)
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2))  # two-sided normal tail
    half = NormalDist().inv_cdf(1 - alpha / 2) * se
    return PairedComparison(
        metric="auc",
        estimate_a=float(aucs[0]),
        estimate_b=float(aucs[1]),
        difference=diff,
        low=diff - half,
        high=diff + half,
        p_value=float(p),
        n_boot=None,
        seed=None,
        test="delong",
        alpha=float(alpha),
        std_error=se,
        z=float(z),
    )


def delong_folds(
    y_true: np.ndarray,
    fold_scores_a: Sequence[np.ndarray],
    fold_scores_b: Sequence[np.ndarray],
    *,
    alpha: float = 0.05,
) -> list[PairedComparison]:
    """:func:`delong_test` for each fold: fold ``i`` of A against fold ``i`` of B.

    Folds are not pooled: DeLong's variance assumes one score per sample and model. For one
    pooled comparison of fold means use :func:`paired_bootstrap`.

    Raises:
        InvalidArgumentError: If A and B have different numbers of folds (or none), or as
            :func:`delong_test` (the message names the fold).
    """
    if len(fold_scores_a) != len(fold_scores_b) or len(fold_scores_a) == 0:
        raise InvalidArgumentError(
            f"fold_scores_a and fold_scores_b need the same positive number of folds; got "
            f"{len(fold_scores_a)} and {len(fold_scores_b)}"
        )
    out = []
    for i, (a, b) in enumerate(zip(fold_scores_a, fold_scores_b, strict=True)):
        try:
            out.append(delong_test(y_true, a, b, alpha=alpha))
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"fold {i}: {exc}") from exc
    return out
