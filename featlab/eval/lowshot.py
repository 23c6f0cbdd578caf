"""Low-shot training subsets: class-balanced shots or stratified fractions, in seeded folds.

The subsets depend only on the dataset's labels and splits, the requested sizes, the fold and the
seed — never on the model or the method — so every model and method of a sweep sees identical
training indices and their results compare pairwise.

Research choices:
- ``--shots N`` draws N training samples with the same number per class, capped by what a class
  has (DVME paper, section 5.3 and Appendix A: "each training fold contains the same number of
  samples per each class"; Table 1 sizes such as 500 / 5000 for PatchCam are totals).
- ``--fractions f`` draws a fraction of every class (stratified), as the CASS paper's 1 % / 10 %
  / 100 % label fractions (section 4).
- Folds are independent seeded draws (the DVME paper repeats the draw five times).
- Val and test samples never enter training. A dataset without a ``val`` split gets one held out
  (stratified, seeded) from ``train`` once, before any subset is drawn, so the held-out samples
  are the same for every size and fold.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featlab.errors import InvalidArgumentError

DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class TrainingSize:
    """One training-set size of a sweep: ``N`` balanced shots, a fraction, or everything."""

    kind: str  # "shots" | "fraction" | "all"
    value: float  # shots as a whole number, a fraction in (0, 1], or 1 for "all"

    @property
    def label(self) -> str:
        """What tables print: ``"500"``, ``"10%"``, ``"all"``."""
        if self.kind == "all":
            return "all"
        if self.kind == "shots":
            return str(int(self.value))
        return f"{self.value * 100:g}%"

    def __str__(self) -> str:
        return self.label


ALL = TrainingSize("all", 1.0)


def parse_sizes(
    shots: str | None = None,
    fractions: str | None = None,
    *,
    options: tuple[str, str] = ("--shots", "--fractions"),
) -> tuple[TrainingSize, ...]:
    """Parse ``--shots 50,500,all`` or ``--fractions 0.01,0.1,1`` into training sizes.

    With neither given the sweep trains on everything (one size, ``all``). A fraction of ``1``
    and the word ``all`` both mean the whole training pool. ``options`` are the option names
    the errors cite (``featlab finetune`` takes one ``--fraction``).

    Raises:
        InvalidArgumentError: Both given, or an entry is not a positive whole number / a
            fraction in (0, 1] / ``all``.
    """
    if shots and fractions:
        raise InvalidArgumentError(f"give {options[0]} or {options[1]}, not both")
    if not shots and not fractions:
        return (ALL,)
    sizes: list[TrainingSize] = []
    for item in re.split(r"[,\s]+", (shots or fractions or "").strip()):
        if not item:
            continue
        if item.lower() == "all":
            sizes.append(ALL)
        elif shots:
            if not item.isdigit() or int(item) < 1:
                raise InvalidArgumentError(
                    f"{options[0]} takes positive whole numbers or 'all' (e.g. 50,500,all); "
                    f"got {item!r}"
                )
            sizes.append(TrainingSize("shots", int(item)))
        else:
            try:
                f = float(item)
            except ValueError:
                f = -1.0
            if not 0 < f <= 1:
                raise InvalidArgumentError(
                    f"{options[1]} takes fractions in (0, 1] (e.g. 0.01,0.1,1); got {item!r}"
                )
            sizes.append(ALL if f == 1 else TrainingSize("fraction", f))
    return tuple(dict.fromkeys(sizes))  # unique, in the order given


@dataclass(frozen=True)
class Fold:
    """One draw: the training rows of one size and fold (dataset row indices, ascending)."""

    size: TrainingSize
    fold: int
    train: np.ndarray  # (n_train,) int64

    @property
    def key(self) -> str:
        return f"{self.size.label}/{self.fold}"


@dataclass(frozen=True)
class LowShotPlan:
    """Train pool, val and test rows of a dataset and the training draws of every size x fold.

    All indices are dataset row indices (int64, ascending). ``val_source`` says where val came
    from (the dataset's split, or held out of train with which fraction and seed).
    """

    pool: np.ndarray
    val: np.ndarray
    test: np.ndarray
    folds: tuple[Fold, ...]
    seed: int
    val_source: str
    sizes: tuple[TrainingSize, ...] = field(default=())

    def fingerprint(self) -> str:
        """A short hash of every index in the plan: equal fingerprints, identical subsets."""
        h = hashlib.sha256()
        for a in (self.val, self.test, *(f.train for f in self.folds)):
            h.update(np.ascontiguousarray(a, dtype=np.int64).tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "val_source": self.val_source,
            "n_pool": len(self.pool),
            "n_val": len(self.val),
            "n_test": len(self.test),
            "sizes": [s.label for s in self.sizes],
            "n_folds": len({f.fold for f in self.folds}),
            "fingerprint": self.fingerprint(),
        }


def _known(labels: np.ndarray) -> np.ndarray:
    """Rows with a usable label: single-label ``>= 0``; multi-label at least one known entry."""
    if labels.ndim == 1:
        return labels >= 0
    return (labels >= 0).any(axis=1)


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *parts]))


def _size_code(size: TrainingSize) -> list[int]:
    kind = {"all": 0, "shots": 1, "fraction": 2}[size.kind]
    return [kind, round(size.value * 1_000_000)]


def _stratified_holdout(
    rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """About ``fraction`` of each class of ``rows`` (at least one per class with two or more)."""
    if labels.ndim != 1:  # multi-label: no single class to stratify on
        n = max(1, round(fraction * len(rows)))
        return np.sort(rng.choice(rows, size=n, replace=False))
    picked = []
    for c in np.unique(labels[rows]):
        members = rows[labels[rows] == c]
        n = round(fraction * len(members))
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        picked.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def balanced_shots(
    rows: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` rows with the same count per class (capped by what each class has).

    ``n // C`` per class; the remainder goes one each to randomly chosen classes that still have
    samples. Multi-label: the rarest label first, ``n // L`` rows positive for each label that
    were not taken yet, then random rows up to ``n`` (as balanced as co-occurrence allows).
    """
    if n >= len(rows):
        return np.sort(rows)
    if labels.ndim == 2:
        return _balanced_multilabel(rows, labels, n, rng)
    y = labels[rows]
    classes = np.unique(y)
    members = {c: rng.permutation(rows[y == c]) for c in classes}
    quota = {c: min(n // len(classes), len(members[c])) for c in classes}
    spare = [c for c in rng.permutation(classes) if len(members[c]) > quota[c]]
    for c in spare[: n % len(classes)]:  # the remainder only; a capped class is not refilled
        quota[c] += 1
    return np.sort(np.concatenate([members[c][: quota[c]] for c in classes]))


def _balanced_multilabel(
    rows: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    y = labels[rows]
    positives = (y == 1).sum(axis=0)
    chosen = np.zeros(len(rows), dtype=bool)
    per_label = n // y.shape[1]
    for label in np.argsort(positives, kind="stable"):
        candidates = np.flatnonzero((y[:, label] == 1) & ~chosen)
        take = rng.permutation(candidates)[:per_label]
        chosen[take] = True
    rest = rng.permutation(np.flatnonzero(~chosen))[: max(0, n - int(chosen.sum()))]
    chosen[rest] = True
    return np.sort(rows[chosen])


def stratified_fraction(
    rows: np.ndarray, labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """``fraction`` of every class (rounded, at least one per present class)."""
    if labels.ndim == 2:
        n = max(1, round(fraction * len(rows)))
        return np.sort(rng.choice(rows, size=n, replace=False))
    picked = []
    for c in np.unique(labels[rows]):
        members = rows[labels[rows] == c]
        n = max(1, round(fraction * len(members)))
        picked.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def plan_lowshot(
    labels: np.ndarray,
    splits: np.ndarray,
    sizes: tuple[TrainingSize, ...] = (ALL,),
    *,
    folds: int = 5,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    train_split: str = "train",
    val_split: str = "val",
    test_split: str = "test",
) -> LowShotPlan:
    """Draw the training rows of every size x fold from ``train_split``.

    Args:
        labels: ``(n,)`` int labels (``-1`` unknown) or ``(n, L)`` multi-label (``-1`` unknown).
        splits: ``(n,)`` split names.
        sizes: Training sizes (:func:`parse_sizes`).
        folds: Seeded draws per size. ``all`` is the whole pool in every fold.
        seed: Seed of every draw; recorded in the plan.
        val_fraction: Share of ``train`` held out as val when the dataset has no val split.

    Raises:
        InvalidArgumentError: No labelled train or test rows, or ``folds < 1``.
    """
    if folds < 1:
        raise InvalidArgumentError(f"folds must be >= 1; got {folds}")
    labels = np.asarray(labels)
    splits = np.asarray(splits)
    known = _known(labels)
    pool = np.flatnonzero(known & (splits == train_split))
    test = np.flatnonzero(known & (splits == test_split))
    val = np.flatnonzero(known & (splits == val_split))
    for name, rows in ((train_split, pool), (test_split, test)):
        if len(rows) == 0:
            present = sorted(set(splits.tolist()))
            raise InvalidArgumentError(
                f"no labelled samples in split {name!r} (splits present: {present}); "
                "evaluations train on 'train' and score on 'test'"
            )
    val_source = f"split {val_split!r}"
    if len(val) == 0:
        val = _stratified_holdout(pool, labels, val_fraction, _rng(seed, 0xA1))
        pool = np.setdiff1d(pool, val, assume_unique=True)
        val_source = f"held out of {train_split!r}: {val_fraction:g} stratified, seed {seed}"
    draws = []
    for size in sizes:
        for k in range(folds):
            rng = _rng(seed, *_size_code(size), k)
            if size.kind == "all":
                train = pool
            elif size.kind == "shots":
                train = balanced_shots(pool, labels, int(size.value), rng)
            else:
                train = stratified_fraction(pool, labels, size.value, rng)
            draws.append(Fold(size, k, np.asarray(train, dtype=np.int64)))
    return LowShotPlan(pool, val, test, tuple(draws), seed, val_source, tuple(sizes))
