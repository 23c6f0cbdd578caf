"""Shared plumbing of the two linear probes (`linear_probe` and `logreg` in `featlab.eval`).

Both probes learn one linear map ``logits = standardize(X) @ coef_.T + intercept_`` and differ only
in how they fit it, so validation, target encoding, the validation holdout, standardisation,
scoring and prediction live here, once.

Targets (DESIGN section 6):

- single-label ``y (n,)``: any class labels (binary, multiclass, ordinal); integer labels must be
  ``>= 0``, since featlab's stores mark unknown labels with ``-1`` and a probe must not learn
  "unknown" as a class;
- multi-label ``y (n, L)`` (any 2-D ``y``): entries ``1``/``0`` and ``-1`` = unknown (CheXpert's
  "ignore" policy); unknown entries are masked out of the loss and the score, per label.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from featlab.errors import InvalidArgumentError

Scoring = Callable[[np.ndarray, np.ndarray], float]

PREDICT_BLOCK = 65536  # rows per standardise + GEMM block: bounded memory at predict time
_STATS_BLOCK = 8192  # rows per block of the float64 mean/std accumulation
_EPS = 1e-15  # probability clip of the log-loss (scikit-learn's log_loss clips the same way)


# --------------------------------------------------------------------------- parameters


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int ``>= minimum``; raises :class:`InvalidArgumentError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def check_float(name: str, value: Any, low: float, high: float | None = None) -> float:
    """``value`` as a finite float in ``[low, high)``; raises :class:`InvalidArgumentError`."""
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if ok and (value < low or (high is not None and value >= high) or not np.isfinite(value)):
        ok = False
    if not ok:
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise InvalidArgumentError(f"{name} must be a number {bound}; got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Targets:
    """Encoded training targets.

    Attributes:
        multilabel: Whether ``y`` was 2-D.
        classes: ``(C,)`` sorted class labels (single-label) or ``arange(L)`` (multi-label).
        codes: ``(n,)`` int64 indices into ``classes`` or ``(n, L)`` int8 in ``{-1, 0, 1}``.
        dtype: dtype of the ``y`` given (multi-label ``predict`` returns it).
    """

    multilabel: bool
    classes: np.ndarray
    codes: np.ndarray
    dtype: np.dtype


def _check_y_array(y: Any, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise InvalidArgumentError(
            f"{what} must be (n,) single-label or (n, L) multi-label; got shape {y.shape}"
        )
    if len(y) != n:
        raise InvalidArgumentError(
            f"{what} has {len(y)} rows but X has {n}; pass one label (row) per sample"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = "NaN" if np.isnan(y).any() else "infinity"
        # Wording kept close to scikit-learn's ("Input y contains NaN.") so the two read alike.
        raise InvalidArgumentError(
            f"Input {what} contains {bad}. Drop those samples or give them a label."
        )
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise InvalidArgumentError(
            f"Unknown label type: {what} holds non-integer floats (continuous values); "
            "a probe needs class labels: pass integer or string labels"
        )
    if y.dtype.kind not in "biuf" + ("OUS" if y.ndim == 1 else ""):
        raise InvalidArgumentError(
            f"Unknown label type: {what} has dtype {y.dtype}; expected integer labels"
            + (" (or strings)" if y.ndim == 1 else " in {-1, 0, 1}")
        )
    return y


def encode_targets(y: Any, n: int) -> Targets:
    """Validate and encode the training ``y`` (see the module docstring for the two layouts).

    Raises:
        InvalidArgumentError: If ``y`` has the wrong length or shape, holds NaN or non-integer
            floats, negative integer labels (single-label), or values outside ``{-1, 0, 1}``
            (multi-label).
    """
    y = _check_y_array(y, n, "y")
    if y.ndim == 2:
        values = np.unique(y)
        if not np.isin(values, (-1, 0, 1)).all():
            raise InvalidArgumentError(
                "multi-label y (2-D) must hold 1 (positive), 0 (negative) or -1 (unknown); "
                f"found values {values[~np.isin(values, (-1, 0, 1))][:10].tolist()}"
            )
        return Targets(True, np.arange(y.shape[1]), y.astype(np.int8), y.dtype)
    if y.dtype.kind in "iuf" and (y < 0).any():
        raise InvalidArgumentError(
            f"y holds negative labels ({np.unique(y[y < 0])[:5].tolist()}); featlab marks "
            "unknown labels with -1, which a single-label probe cannot learn from: keep only "
            "the samples with y >= 0 (or re-encode the classes)"
        )
    if y.dtype.kind == "O":
        y = y.astype(str)
    classes, codes = np.unique(y, return_inverse=True)
    return Targets(False, classes, codes.astype(np.int64), y.dtype)


def encode_eval_targets(y: Any, n: int, targets: Targets) -> np.ndarray:
    """Encode the eval_set's ``y`` against the training classes (same layout as ``codes``).

    Raises:
        InvalidArgumentError: If its layout differs from the training ``y`` or it holds labels
            the training ``y`` does not.
    """
    y = _check_y_array(y, n, "eval_set y")
    if targets.multilabel:
        if y.ndim != 2 or y.shape[1] != len(targets.classes):
            raise InvalidArgumentError(
                f"eval_set y must be (n, {len(targets.classes)}) like the training y; "
                f"got shape {y.shape}"
            )
        values = np.unique(y)
        if not np.isin(values, (-1, 0, 1)).all():
            raise InvalidArgumentError(
                f"eval_set y must hold 1, 0 or -1; found {values[~np.isin(values, (-1, 0, 1))]}"
            )
        return y.astype(np.int8)
    if y.ndim != 1:
        raise InvalidArgumentError(f"eval_set y must be (n,) like the training y; got {y.shape}")
    if y.dtype.kind in "iuf" and (y < 0).any():
        raise InvalidArgumentError(
            "eval_set y holds negative labels (featlab's -1 = unknown); keep only the "
            "validation samples with y >= 0"
        )
    if y.dtype.kind == "O":
        y = y.astype(str)
    codes = np.searchsorted(targets.classes, y)
    codes = np.minimum(codes, len(targets.classes) - 1)
    unseen = targets.classes[codes] != y
    if unseen.any():
        raise InvalidArgumentError(
            f"eval_set y holds labels absent from the training y: "
            f"{np.unique(y[unseen])[:10].tolist()}; the probe cannot predict them. Training "
            f"classes: {targets.classes[:20].tolist()}"
        )
    return codes.astype(np.int64)


def check_training_targets(codes: np.ndarray, targets: Targets) -> None:
    """Refuse training targets a probe cannot learn from.

    Raises:
        InvalidArgumentError: If a single-label training subset has only one class, or a
            multi-label column has no known positive or no known negative (its intercept would
            run off to infinity; drop the label or use more samples).
    """
    if not targets.multilabel:
        present = np.unique(codes)
        if len(present) < 2:
            raise InvalidArgumentError(
                f"the training data has only one class ({targets.classes[present].tolist()}); "
                "a classifier needs at least 2 classes: add samples of another class"
            )
        return
    pos = (codes == 1).sum(axis=0)
    neg = (codes == 0).sum(axis=0)
    bad = np.flatnonzero((pos == 0) | (neg == 0))
    if len(bad):
        raise InvalidArgumentError(
            f"multi-label columns {bad[:20].tolist()} have no known positive or no known "
            f"negative in the training data (positives {pos[bad][:20].tolist()}, negatives "
            f"{neg[bad][:20].tolist()}), so only one class of them can be learned: drop those "
            "labels or use more training samples"
        )


def holdout_split(targets: Targets, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded ``(train_idx, val_idx)`` holdout of ``round(fraction * n)`` (at least 1) samples.

    Single-label targets are split stratified: each class gives its share of the validation
    samples (largest-remainder rounding, ties broken by the seed), and every class keeps at least
    one training sample, so tiny and low-shot sets split too. Multi-label targets have no single
    class to stratify on, so they are split by a plain seeded shuffle.

    Returns:
        Sorted int64 index arrays: training rows keep the caller's order.

    Raises:
        InvalidArgumentError: If no such split exists (fewer than 2 samples, or every class has
            a single sample); pass an explicit ``eval_set`` then.
    """
    rng = np.random.default_rng(seed)
    n = len(targets.codes)
    n_val = max(1, round(fraction * n))
    if targets.multilabel:
        if n < 2:
            raise InvalidArgumentError(
                f"cannot hold out validation samples from {n} sample; pass eval_set=(X_val, y_val)"
            )
        val = rng.permutation(n)[: min(n_val, n - 1)]
    else:
        counts = np.bincount(targets.codes, minlength=len(targets.classes))
        room = np.maximum(counts - 1, 0)  # each class keeps a training sample
        if room.sum() == 0:
            raise InvalidArgumentError(
                f"cannot hold out validation samples from {n} samples when every class has a "
                "single sample (each must stay in training); pass eval_set=(X_val, y_val)"
            )
        n_val = min(n_val, int(room.sum()))
        share = n_val * counts / n
        take = np.minimum(np.floor(share).astype(np.int64), room)
        # Largest remainders first; a random key breaks ties, so no class is always favoured.
        order = np.lexsort((rng.random(len(counts)), -(share - take)))
        while take.sum() < n_val:
            for c in order:
                if take.sum() < n_val and take[c] < room[c]:
                    take[c] += 1
        val = np.concatenate(
            [rng.permutation(np.flatnonzero(targets.codes == c))[:t] for c, t in enumerate(take)]
        )
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --------------------------------------------------------------------------- features


def check_features(est: BaseEstimator, X: Any, *, reset: bool, what: str = "X") -> np.ndarray:
    """``X`` as a 2-D finite float32 array (no copy when it already is one).

    ``reset=True`` records ``n_features_in_`` (fit); ``reset=False`` checks against it.

    Raises:
        InvalidArgumentError: For NaN/inf, a wrong number of features, non-numeric or empty
            input (scikit-learn's message, re-raised as featlab's error type).
    """
    try:
        return validate_data(est, X, reset=reset, dtype=np.float32, order="C")
    except InvalidArgumentError:
        raise
    except ValueError as exc:
        raise InvalidArgumentError(f"{what}: {exc}") from exc


def feature_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, scale)`` of ``x``, float32, accumulated in float64 block by block.

    ``scale`` is the population standard deviation; constant features get ``scale = 1`` (as
    scikit-learn's StandardScaler does), so they become 0 instead of NaN.
    """
    n = len(x)
    # Blocks: a float64 copy of a PCam-sized x would take 0.8 GB.
    total = np.zeros(x.shape[1])
    for lo in range(0, n, _STATS_BLOCK):
        total += x[lo : lo + _STATS_BLOCK].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(x.shape[1])
    for lo in range(0, n, _STATS_BLOCK):
        dev = x[lo : lo + _STATS_BLOCK] - mean
        sq += np.einsum("ij,ij->j", dev, dev)
    std = np.sqrt(sq / n)
    scale = np.where(std > 10 * np.finfo(np.float32).eps * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def standardize(
    x: np.ndarray, mean: np.ndarray | None, scale: np.ndarray | None, *, inplace: bool
) -> np.ndarray:
    """``(x - mean) / scale`` as float32 (``x`` itself when ``mean`` is None)."""
    if mean is None or scale is None:
        return x
    if inplace:
        for lo in range(0, len(x), PREDICT_BLOCK):  # in blocks: no full-size temporaries
            block = x[lo : lo + PREDICT_BLOCK]
            block -= mean
            block /= scale
        return x
    out = np.subtract(x, mean, dtype=np.float32)
    out /= scale
    return out


# --------------------------------------------------------------------------- scores


def proba_from_logits(logits: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """Probabilities (float64) from ``(n, k)`` logits.

    Multi-label: independent sigmoids ``(n, L)``. One column: binary sigmoid, returned as
    ``(n, 2)`` ``[1 - p, p]``. Otherwise a softmax over the columns.
    """
    z = logits.astype(np.float64)
    if multilabel or z.shape[1] == 1:
        p = np.empty_like(z)
        # Two branches keep exp() from overflowing for large |z|.
        pos = z >= 0
        p[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        p[~pos] = e / (1.0 + e)
        return p if multilabel else np.hstack([1.0 - p, p])
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def neg_log_loss(codes: np.ndarray, proba: np.ndarray, *, multilabel: bool) -> float:
    """Default selection score: minus the mean log-loss (higher is better).

    Single-label: mean cross-entropy of the true class. Multi-label: binary cross-entropy
    averaged over the known (``!= -1``) entries only.
    """
    p = np.clip(proba, _EPS, 1 - _EPS)
    if not multilabel:
        return float(np.log(p[np.arange(len(codes)), codes]).mean())
    known = codes >= 0
    if not known.any():
        raise InvalidArgumentError(
            "the validation y has no known (!= -1) entry, so nothing can be scored: pass an "
            "eval_set with labels"
        )
    ll = np.where(codes == 1, np.log(p), np.log1p(-p))
    return float(ll[known].mean())


def make_scorer(
    scoring: Scoring | None, y_val: np.ndarray, codes_val: np.ndarray, *, multilabel: bool
) -> Callable[[np.ndarray], float]:
    """``proba -> score`` on the validation set, with ``scoring`` or the default log-loss.

    ``scoring(y_val, proba)`` gets the validation labels as given (single-label: the original
    labels; multi-label: the ``(n, L)`` matrix with -1 for unknown) and ``proba`` as
    ``predict_proba`` returns it, and must return a float, higher is better.

    Raises:
        InvalidArgumentError: (when the returned scorer is called) if the score is not a finite
            number.
    """
    if scoring is not None and not callable(scoring):
        raise InvalidArgumentError(
            f"scoring must be a callable (y_true, proba) -> float or None; got {scoring!r}"
        )

    def score(proba: np.ndarray) -> float:
        if scoring is None:
            return neg_log_loss(codes_val, proba, multilabel=multilabel)
        value = scoring(y_val, proba)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            raise InvalidArgumentError(
                f"scoring returned {value!r} on the validation set; model selection needs a "
                "finite number (higher is better). Check that the validation labels suit the "
                "metric (e.g. AUC needs both classes)"
            )
        return value

    return score


# --------------------------------------------------------------------------- fit data


def check_fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InvalidArgumentError(f"validation_fraction must be in (0, 1); got {value!r}")
    return float(value)


def check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidArgumentError(f"seed must be an int >= 0; got {value!r}")
    return int(value)


@dataclass
class FitData:
    """Everything a probe's fit needs, validated, encoded, split and standardised.

    Attributes:
        x_train: ``(n, d)`` float32 training features (standardised when asked).
        codes_train: Encoded training targets (see :class:`Targets`).
        x_val: ``(m, d)`` float32 validation features (standardised with the training stats).
        codes_val: Encoded validation targets.
        y_val: Validation targets as given, for ``scoring``.
        targets: The training targets' encoding.
        mean: ``(d,)`` float32 or None (no standardisation).
        scale: ``(d,)`` float32 or None.
        score: ``proba -> float`` on the validation set.
    """

    x_train: np.ndarray
    codes_train: np.ndarray
    x_val: np.ndarray
    codes_val: np.ndarray
    y_val: np.ndarray
    targets: Targets
    mean: np.ndarray | None
    scale: np.ndarray | None
    score: Callable[[np.ndarray], float]


def prepare_fit(
    est: BaseEstimator,
    X: Any,
    y: Any,
    eval_set: tuple[Any, Any] | None,
    *,
    standardize_features: bool,
    validation_fraction: float,
    seed: int,
    scoring: Scoring | None,
) -> FitData:
    """Validate ``X, y, eval_set``, hold out validation data if needed, standardise.

    Validation data are ``eval_set`` when given; otherwise a seeded holdout of
    ``validation_fraction`` of ``X`` (stratified for single-label ``y``), which is then not
    trained on. Standardisation statistics come from the training rows only.

    Raises:
        InvalidArgumentError: For any malformed input (see the helpers above).
    """
    if y is None:
        # Wording scikit-learn's estimator checks expect of a graceful failure.
        raise InvalidArgumentError(
            f"{type(est).__name__} requires y to be passed, but the target y is None"
        )
    X = check_features(est, X, reset=True)
    targets = encode_targets(y, len(X))
    if eval_set is None:
        tr, va = holdout_split(targets, validation_fraction, seed)
        x_train, x_val = X[tr], X[va]  # copies: ours to standardise in place
        codes_train, codes_val = targets.codes[tr], targets.codes[va]
        y_given = np.asarray(y)
        y_val = y_given[va] if targets.multilabel else targets.classes[codes_val]
        owned = True
    else:
        if not isinstance(eval_set, tuple | list) or len(eval_set) != 2:
            raise InvalidArgumentError(
                f"eval_set must be a pair (X_val, y_val) or None; got {type(eval_set).__name__}"
            )
        x_val = check_features(est, eval_set[0], reset=False, what="eval_set X")
        codes_val = encode_eval_targets(eval_set[1], len(x_val), targets)
        y_val = np.asarray(eval_set[1])
        x_train, codes_train = X, targets.codes
        owned = False
    if len(x_val) == 0:
        raise InvalidArgumentError("the validation set is empty; pass a non-empty eval_set")
    check_training_targets(codes_train, targets)
    mean = scale = None
    if standardize_features:
        mean, scale = feature_stats(x_train)
        x_train = standardize(x_train, mean, scale, inplace=owned)
        x_val = standardize(x_val, mean, scale, inplace=owned)
    score = make_scorer(scoring, y_val, codes_val, multilabel=targets.multilabel)
    return FitData(x_train, codes_train, x_val, codes_val, y_val, targets, mean, scale, score)


# --------------------------------------------------------------------------- estimator base


class LinearProbeBase(ClassifierMixin, BaseEstimator):
    """Prediction shared by the probes: ``logits = standardize(X) @ coef_.T + intercept_``.

    Subclasses set in ``fit``: ``classes_``, ``coef_ (k, d)`` float32, ``intercept_ (k,)``
    float32, ``mean_``/``scale_`` (``(d,)`` float32, or None without standardisation),
    ``multilabel_`` and ``n_features_in_``. ``k`` is 1 for a binary logistic model, the number of
    classes for a softmax model, the number of labels for a multi-label one.
    """

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = check_features(self, X, reset=False)
        out = np.empty((len(X), self.coef_.shape[0]), dtype=np.float32)
        w = np.ascontiguousarray(self.coef_.T)
        for lo in range(0, len(X), PREDICT_BLOCK):
            block = standardize(X[lo : lo + PREDICT_BLOCK], self.mean_, self.scale_, inplace=False)
            np.matmul(block, w, out=out[lo : lo + PREDICT_BLOCK])
        out += self.intercept_
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits.

        Args:
            X: ``(n, d)`` features.

        Returns:
            float32 ``(n,)`` for binary (the score of ``classes_[1]``), else ``(n, k)``.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
            InvalidArgumentError: If ``X`` has the wrong number of features or NaN/inf.
        """
        z = self._logits(X)
        if self.multilabel_ or len(self.classes_) > 2:
            return z
        return z[:, 0] if z.shape[1] == 1 else z[:, 1] - z[:, 0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (float64).

        Args:
            X: ``(n, d)`` features.

        Returns:
            Single-label: ``(n, n_classes)``, rows sum to 1, columns follow ``classes_``.
            Multi-label: ``(n, L)`` independent per-label probabilities.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
            InvalidArgumentError: If ``X`` has the wrong number of features or NaN/inf.
        """
        return proba_from_logits(self._logits(X), multilabel=self.multilabel_)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels.

        Args:
            X: ``(n, d)`` features.

        Returns:
            Single-label: ``(n,)`` ``classes_[argmax proba]``. Multi-label: ``(n, L)`` 0/1
            (probability >= 0.5), in the dtype of the ``y`` given to ``fit``.

        Raises:
            sklearn.exceptions.NotFittedError: Before ``fit``.
            InvalidArgumentError: If ``X`` has the wrong number of features or NaN/inf.
        """
        z = self._logits(X)
        if self.multilabel_:
            return (z >= 0).astype(self._y_dtype)
        if z.shape[1] == 1:
            return self.classes_[(z[:, 0] > 0).astype(np.int64)]
        return self.classes_[z.argmax(axis=1)]

    def _set_fitted(self, data: FitData, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.classes_ = data.targets.classes
        self.multilabel_ = data.targets.multilabel
        self._y_dtype = data.targets.dtype
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(intercept, dtype=np.float32)
        self.mean_ = data.mean
        self.scale_ = data.scale
