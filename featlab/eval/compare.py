"""Paired comparison of two saved runs on the same test samples and the same folds.

Two runs pair on a training size when they scored the same test rows and trained on the same
rows in every fold of that size (same --folds and --seed): the models then differ in nothing but
their embeddings, and resampling the test set jointly for both (paired bootstrap) or DeLong's
test for correlated ROC curves (binary AUC) gives a p-value for the difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval.protocol import ProbeRun

TESTS = ("bootstrap", "delong")


@dataclass(frozen=True)
class Comparison:
    """A − B on one training size (and, for DeLong, one fold): estimates, CI and p-value."""

    size: str
    fold: str  # "mean" over folds (bootstrap) or the fold number (DeLong)
    metric: str
    test: str
    estimate_a: float
    estimate_b: float
    difference: float
    low: float
    high: float
    p_value: float
    n_test: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def variants_of(run: ProbeRun) -> list[str]:
    """The run's variants in the order run (``k=20``, ``k=200``, or the method)."""
    return list(dict.fromkeys(f.variant for f in run.folds))


def check_paired(a: ProbeRun, b: ProbeRun) -> None:
    """Raise unless ``a`` and ``b`` scored the same test rows (draws are checked per size).

    Raises:
        InvalidArgumentError: Different datasets or test rows.
    """
    if a.dataset != b.dataset:
        raise InvalidArgumentError(
            f"runs are on different datasets ({a.dataset!r} vs {b.dataset!r}); "
            "a paired test needs the same test samples"
        )
    if not np.array_equal(a.test_rows, b.test_rows):
        raise InvalidArgumentError(
            f"{a.run_id} and {b.run_id} scored different test rows ({len(a.test_rows)} vs "
            f"{len(b.test_rows)}; e.g. images skipped as bad by one model); not paired"
        )


def _check_same_draws(a: ProbeRun, b: ProbeRun, size: str, folds: list[int]) -> None:
    """Raise unless both runs trained on the same rows in every fold of ``size``."""
    for k in folds:
        key = f"{size}/{k}"
        if key not in b.train_rows or not np.array_equal(a.train_rows[key], b.train_rows[key]):
            raise InvalidArgumentError(
                f"{a.run_id} and {b.run_id} trained on different rows for size {size}, fold "
                f"{k}; rerun `featlab probe` for both with the same --shots/--fractions, "
                "--folds and --seed"
            )


def compare_runs(
    a: ProbeRun,
    b: ProbeRun,
    *,
    metric: str | None = None,
    variant_a: str | None = None,
    variant_b: str | None = None,
    test: str = "bootstrap",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[Comparison]:
    """Compare run ``a`` against ``b`` per training size they share.

    Args:
        a, b: Runs of two models (or methods) on the same plan (:func:`check_paired`).
        metric: Default: ``a``'s headline metric.
        variant_a, variant_b: Which variant of each run (default: its first, e.g. ``k=20``).
        test: ``"bootstrap"`` — paired bootstrap of the fold-mean metric over test samples;
            ``"delong"`` — DeLong's test per fold (binary AUC only).
        n_boot, seed, alpha: Bootstrap replicates, their seed, and 1 − CI level.

    Returns:
        One :class:`Comparison` per size (bootstrap) or per size and distinct fold (DeLong).

    Raises:
        InvalidArgumentError: Runs not paired, unknown variant, DeLong on a non-AUC metric.
    """
    from featlab.eval.stats import delong_folds, paired_bootstrap

    if test not in TESTS:
        raise InvalidArgumentError(f"test must be one of {TESTS}; got {test!r}")
    check_paired(a, b)
    metric = metric or a.metric
    if test == "delong" and (a.task != "binary" or metric not in ("auc", "mean_auc")):
        raise InvalidArgumentError(
            f"DeLong's test compares binary AUCs; this is {metric} on a {a.task} task — "
            "use --test bootstrap"
        )
    va, vb = _variant(a, variant_a), _variant(b, variant_b)
    sizes_b = {f.size for f in b.folds}
    out: list[Comparison] = []
    for size in dict.fromkeys(f.size for f in a.folds if f.size in sizes_b):
        folds = sorted({f.fold for f in a.folds if f.size == size})
        _check_same_draws(a, b, size, folds)
        sa = [a.test_scores[f"{va}|{size}/{k}"] for k in folds]
        sb = [b.test_scores[f"{vb}|{size}/{k}"] for k in folds]
        y = a.test_labels
        if test == "bootstrap":
            r = paired_bootstrap(y, sa, sb, metric, a.task, n_boot=n_boot, seed=seed, alpha=alpha)
            out.append(_row(size, "mean", metric, "paired bootstrap", r, len(y)))
            continue
        distinct = _distinct_folds(a, size, folds)
        results = delong_folds(y, [sa[i] for i in distinct], [sb[i] for i in distinct])
        for i, r in zip(distinct, results, strict=True):
            out.append(_row(size, str(folds[i]), metric, "DeLong", r, len(y)))
    if not out:
        raise InvalidArgumentError(
            f"the runs share no training size ({sorted({f.size for f in a.folds})} vs "
            f"{sorted(sizes_b)})"
        )
    return out


def _variant(run: ProbeRun, asked: str | None) -> str:
    variants = variants_of(run)
    if asked is None:
        return variants[0]
    if asked not in variants:
        raise InvalidArgumentError(
            f"run {run.run_id} has variants {variants}; got {asked!r}"
        )
    return asked


def _distinct_folds(run: ProbeRun, size: str, folds: list[int]) -> list[int]:
    """Positions of folds with distinct training rows (``all`` repeats one draw)."""
    seen: dict[bytes, int] = {}
    for i, k in enumerate(folds):
        seen.setdefault(run.train_rows[f"{size}/{k}"].tobytes(), i)
    return sorted(seen.values())


def _row(size: str, fold: str, metric: str, test: str, r: Any, n: int) -> Comparison:
    return Comparison(
        size=size, fold=fold, metric=metric, test=test,
        estimate_a=float(r.estimate_a), estimate_b=float(r.estimate_b),
        difference=float(r.difference), low=float(r.low), high=float(r.high),
        p_value=float(r.p_value), n_test=n,
    )
