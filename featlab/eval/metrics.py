"""Classification metrics for featlab's evaluations (DESIGN section 6, "Metrics").

Data conventions (the rest of featlab produces these):

- Single-label tasks (``binary``, ``multiclass``, ``ordinal``): ``y_true (n,)`` int labels in
  ``0..C-1`` (unknown ``-1`` labels already dropped) and ``scores (n, C)`` float class
  probabilities. The prediction is the row argmax (the first class on ties); binary AUC uses
  ``scores[:, 1]``. ``C`` is the dataset's class count, so a class may be absent from a small
  test set.
- ``multilabel``: ``y_true (n, L)`` int with 1 positive, 0 negative, -1 unknown (CheXpert's
  "ignore" policy) and ``scores (n, L)`` per-label probabilities; the prediction is
  ``scores >= 0.5``. Every metric masks unknown entries per label.

The metrics are written for the bootstrap (:mod:`featlab.eval.stats`), which scores thousands of
resamples of ~30k samples: AUC is the Mann-Whitney statistic from one argsort per column made
once, the rest come from a confusion matrix made with :func:`numpy.bincount`, and a resample is
scored as integer sample weights (how often each sample was drawn), which gives exactly the value
of the metric on the resampled arrays. scikit-learn is the reference in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from featlab.datasets.registry import DEFAULT_METRICS
from featlab.errors import InvalidArgumentError

TASKS = ("binary", "multiclass", "ordinal", "multilabel")
METRIC_NAMES = ("auc", "mean_auc", "accuracy", "balanced_accuracy", "quadratic_kappa", "macro_f1")

# What applies to each task; the first is the task's default (the dataset registry's
# DEFAULT_METRICS, checked in the tests). The aliases below are accepted on top of these.
_TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "accuracy", "balanced_accuracy", "macro_f1"),
    "multiclass": ("accuracy", "balanced_accuracy", "auc", "macro_f1"),
    "ordinal": ("quadratic_kappa", "accuracy", "balanced_accuracy", "auc", "macro_f1"),
    "multilabel": ("mean_auc", "macro_f1"),
}
# "auc" of a multi-label task is its mean AUC; "mean_auc" of a single-label task is its AUC.
_ALIASES: dict[str, dict[str, str]] = {
    "binary": {"mean_auc": "auc"},
    "multiclass": {"mean_auc": "auc"},
    "ordinal": {"mean_auc": "auc"},
    "multilabel": {"auc": "mean_auc"},
}
# Why a metric can be undefined on a (re)sample; used in the error raised for it.
_UNDEFINED: dict[str, str] = {
    "auc": "no class has both positive and negative samples",
    "mean_auc": "no label has both positive and negative known entries",
    "accuracy": "there are no samples",
    "balanced_accuracy": "there are no samples",
    "quadratic_kappa": (
        "all labels and predictions are one and the same class, so chance agreement is total"
    ),
    "macro_f1": "no label has a known positive entry or a positive prediction",
}
_MULTILABEL_THRESHOLD = 0.5


def _check_task(task: str) -> str:
    if task not in _TASK_METRICS:
        raise InvalidArgumentError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return task


def metrics_for_task(task: str) -> tuple[str, ...]:
    """The metric names that apply to ``task``, its default first.

    Raises:
        InvalidArgumentError: If ``task`` is not one of :data:`TASKS`.
    """
    return _TASK_METRICS[_check_task(task)]


def default_metric(task: str) -> str:
    """The metric a ``task`` is judged by unless a dataset says otherwise.

    It is the dataset registry's ``DEFAULT_METRICS`` entry: ``auc`` (binary), ``accuracy``
    (multiclass), ``quadratic_kappa`` (ordinal), ``mean_auc`` (multilabel).

    Raises:
        InvalidArgumentError: If ``task`` is not one of :data:`TASKS`.
    """
    return DEFAULT_METRICS[_check_task(task)]


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better (true of all current metrics).

    Raises:
        InvalidArgumentError: If ``name`` is not one of :data:`METRIC_NAMES`.
    """
    if name not in METRIC_NAMES:
        raise InvalidArgumentError(
            f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}"
        )
    return True


def resolve_metric(name: str, task: str) -> str:
    """The canonical name of metric ``name`` for ``task`` (resolving the AUC aliases).

    Raises:
        InvalidArgumentError: If ``task`` is unknown, or ``name`` is unknown or does not apply
            to ``task``; the message lists the valid choices.
    """
    _check_task(task)
    if name not in METRIC_NAMES:
        raise InvalidArgumentError(
            f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}"
        )
    canonical = _ALIASES[task].get(name, name)
    if canonical not in _TASK_METRICS[task]:
        valid = (*_TASK_METRICS[task], *_ALIASES[task])
        raise InvalidArgumentError(
            f"metric {name!r} does not apply to a {task} task; choose one of {', '.join(valid)}"
        )
    return canonical


def _as_labels(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.dtype.kind not in "iub":
        raise InvalidArgumentError(
            f"y_true must hold integer labels; got dtype {y.dtype} "
            "(convert with y.astype(int) if the values are whole numbers)"
        )
    return y.astype(np.int64, copy=False)


def check_inputs(
    y_true: np.ndarray, scores: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores for ``task``; return them as int64 and float64 arrays.

    Args:
        y_true: ``(n,)`` labels in ``0..C-1`` (single-label) or ``(n, L)`` entries in
            ``{-1, 0, 1}`` (multilabel).
        scores: ``(n, C)`` class probabilities or ``(n, L)`` per-label probabilities.
        task: One of :data:`TASKS`.

    Returns:
        ``(y, scores)`` as ``int64`` and ``float64`` arrays of the same shapes.

    Raises:
        InvalidArgumentError: On an unknown task, wrong dimensions, a sample-count or
            column-count mismatch, non-integer or out-of-range labels, no samples, or
            non-finite scores.
    """
    _check_task(task)
    y = _as_labels(y_true)
    s = np.asarray(scores)
    if s.dtype.kind not in "fiub":
        raise InvalidArgumentError(f"scores must be numeric; got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if task == "multilabel":
        if y.ndim != 2:
            raise InvalidArgumentError(
                f"multilabel y_true must be (n, L) with entries 1/0/-1; got shape {y.shape}"
            )
        if s.shape != y.shape:
            raise InvalidArgumentError(
                f"multilabel scores must have y_true's shape {y.shape} (one probability per "
                f"sample and label); got {s.shape}"
            )
        bad = (y < -1) | (y > 1)
        if bad.any():
            raise InvalidArgumentError(
                f"multilabel y_true entries must be 1 (positive), 0 (negative) or -1 (unknown); "
                f"found {sorted(set(y[bad].tolist()))[:5]}"
            )
    else:
        if y.ndim != 1:
            raise InvalidArgumentError(
                f"{task} y_true must be (n,) int labels; got shape {y.shape}"
            )
        if s.ndim != 2:
            raise InvalidArgumentError(
                f"{task} scores must be (n, C) class probabilities; got shape {s.shape} "
                "(for a binary positive-class column p use np.c_[1 - p, p])"
            )
        if len(s) != len(y):
            raise InvalidArgumentError(f"y_true has {len(y)} samples but scores has {len(s)} rows")
        n_classes = s.shape[1]
        if task == "binary" and n_classes != 2:
            raise InvalidArgumentError(
                f"binary scores must have 2 columns (negative, positive); got {n_classes}"
            )
        if n_classes < 2:
            raise InvalidArgumentError(
                f"{task} scores need one column per class (at least 2); got {n_classes}"
            )
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            found = y[(y < 0) | (y >= n_classes)]
            raise InvalidArgumentError(
                f"labels must be in 0..{n_classes - 1} (scores has {n_classes} columns); found "
                f"{sorted(set(found.tolist()))[:5]} (drop unknown -1 labels before scoring)"
            )
    if len(y) == 0:
        raise InvalidArgumentError("no samples to score (y_true is empty)")
    if not np.isfinite(s).all():
        raise InvalidArgumentError(
            f"scores contain {int((~np.isfinite(s)).sum())} NaN or infinite values; "
            "metrics need finite scores"
        )
    return y, s


class _RankedColumns:
    """Weighted Mann-Whitney AUC of several score columns, sorted once.

    Column ``j`` holds the scores of samples ``index_j`` and whether each is positive. The
    columns, each sorted ascending, are concatenated into one flat array. For sample weights
    ``w`` one cumulative sum of the negatives' weights along it gives, for every positive, the
    negative weight below its tie group and within it; the AUC numerator is then a weighted sum
    over the positives only.
    """

    def __init__(self, columns: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        samples, negatives, pos_flat, pos_lo, pos_hi, pos_col, bounds = [], [], [], [], [], [], [0]
        offset = 0
        for j, (values, positive, index) in enumerate(columns):
            order = np.argsort(values, kind="stable")
            v, is_pos = values[order], positive[order]
            # Tie groups: [start, end) runs of equal sorted scores, never straddling columns.
            starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
            ends = np.r_[starts[1:], len(v)]
            group = np.repeat(np.arange(len(starts)), ends - starts)
            where = np.flatnonzero(is_pos)
            samples.append(index[order])
            negatives.append(~is_pos)
            pos_flat.append(where + offset)
            pos_lo.append(starts[group[where]] + offset)
            pos_hi.append(ends[group[where]] + offset)
            pos_col.append(np.full(len(where), j, dtype=np.int64))
            offset += len(v)
            bounds.append(offset)
        self.n_columns = len(columns)
        self._sample = np.concatenate(samples)
        self._negative = np.concatenate(negatives).astype(np.float64)
        self._pos_sample = self._sample[np.concatenate(pos_flat)]
        self._pos_lo = np.concatenate(pos_lo)
        self._pos_hi = np.concatenate(pos_hi)
        self._pos_col = np.concatenate(pos_col)
        self._bounds = np.asarray(bounds)

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """``(n_columns,)`` AUCs for float64 sample ``weights (n,)``; NaN where a class is missing.

        AUC = P(score of a positive > score of a negative) + 0.5 P(tie), each pair weighted by
        the product of the two samples' weights (Mann-Whitney U / (n_pos n_neg) with midranks).
        With integer weights every sum is exact in float64 (below 2**53).
        """
        # cum[i] = negative weight in flat positions < i (across columns; offsets removed below).
        cum = np.zeros(len(self._sample) + 1)
        np.cumsum(weights[self._sample] * self._negative, out=cum[1:])
        base = cum[self._bounds[:-1]]  # per column: negative weight of the columns before it
        neg = cum[self._bounds[1:]] - base
        w_pos = weights[self._pos_sample]
        pos = np.bincount(self._pos_col, w_pos, minlength=self.n_columns)
        # Negatives strictly below a positive's tie group, plus half of those tied with it.
        mid = 0.5 * (cum[self._pos_lo] + cum[self._pos_hi])
        wins = np.bincount(self._pos_col, w_pos * mid, minlength=self.n_columns) - pos * base
        out = np.full(self.n_columns, np.nan)
        ok = (pos > 0) & (neg > 0)
        out[ok] = wins[ok] / (pos[ok] * neg[ok])
        return out


class PreparedScores:
    """One set of validated labels and scores, ready to be scored many times.

    Sorting and prediction happen once, on first use by a metric; :meth:`score` then evaluates
    any applicable metric for optional integer sample weights (a bootstrap resample given as
    draw counts) at linear cost.

    Args:
        y_true: Labels as described in :func:`check_inputs`.
        scores: Scores as described in :func:`check_inputs`.
        task: One of :data:`TASKS`.

    Raises:
        InvalidArgumentError: As :func:`check_inputs`.
    """

    def __init__(self, y_true: np.ndarray, scores: np.ndarray, task: str) -> None:
        self.y, self.scores = check_inputs(y_true, scores, task)
        self.task = task
        self.n = len(self.y)

    # --- single-label -------------------------------------------------------------------------
    @cached_property
    def _codes(self) -> np.ndarray:
        # Flat confusion-matrix cell of each sample: true * C + predicted.
        c = self.scores.shape[1]
        return self.y * c + self.scores.argmax(axis=1)

    def _confusion(self, weights: np.ndarray | None) -> np.ndarray:
        c = self.scores.shape[1]
        return np.bincount(self._codes, weights, minlength=c * c).reshape(c, c).astype(float)

    @cached_property
    def _ranked(self) -> _RankedColumns:
        if self.task == "multilabel":
            columns = []
            for j in range(self.y.shape[1]):
                known = np.flatnonzero(self.y[:, j] >= 0)
                columns.append((self.scores[known, j], self.y[known, j] == 1, known))
            return _RankedColumns(columns)
        index = np.arange(self.n)
        if self.task == "binary":
            return _RankedColumns([(self.scores[:, 1], self.y == 1, index)])
        return _RankedColumns(
            [(self.scores[:, k], self.y == k, index) for k in range(self.scores.shape[1])]
        )

    # --- multilabel ---------------------------------------------------------------------------
    @cached_property
    def _f1_parts(self) -> np.ndarray:
        # (3, L, n) indicators of true positives, false positives and false negatives among the
        # known entries; a weighted count per label is then one matrix-vector product.
        pred = self.scores.T >= _MULTILABEL_THRESHOLD
        pos, neg = self.y.T == 1, self.y.T == 0
        return np.stack([pos & pred, neg & pred, pos & ~pred]).astype(np.float64)

    def per_column_auc(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AUC of each scored column: ``(1,)`` binary, ``(C,)`` one-vs-rest, ``(L,)`` labels.

        NaN marks a column whose positives or negatives are all missing (or weighted zero).
        """
        w = np.ones(self.n) if weights is None else weights
        return self._ranked.auc(w)

    def score(self, metric: str, weights: np.ndarray | None = None) -> float:
        """Metric ``metric`` of these scores, NaN where it is undefined.

        Args:
            metric: A name from :data:`METRIC_NAMES` that applies to the task (aliases resolve).
            weights: Optional ``(n,)`` float64 sample weights; integer counts reproduce the
                metric of the resample that drew each sample that often. Not validated here
                (the hot path of the bootstrap).

        Returns:
            The metric as a float, or NaN when it is undefined for these (weighted) samples.

        Raises:
            InvalidArgumentError: If ``metric`` is unknown or does not apply to the task.
        """
        name = resolve_metric(metric, self.task)
        if name in ("auc", "mean_auc"):
            aucs = self.per_column_auc(weights)
            # Macro averages over the columns that are computable (DESIGN section 6).
            return float(np.mean(aucs[~np.isnan(aucs)])) if (~np.isnan(aucs)).any() else np.nan
        if self.task == "multilabel":  # macro_f1
            w = np.ones(self.n) if weights is None else weights
            tp, fp, fn = self._f1_parts @ w
            return _macro_f1(tp, fp, fn)
        cm = self._confusion(weights)
        total = cm.sum()
        if total == 0:
            return np.nan
        diag = np.diag(cm)
        if name == "accuracy":
            return float(diag.sum() / total)
        support = cm.sum(axis=1)
        if name == "balanced_accuracy":
            # Mean recall over the classes that occur in y_true (scikit-learn's definition).
            present = support > 0
            return float(np.mean(diag[present] / support[present]))
        if name == "macro_f1":
            return _macro_f1(diag, cm.sum(axis=0) - diag, support - diag)
        # quadratic_kappa: weights (i - j)^2 by grade value (labels 0..C-1), so a grade missing
        # from both y_true and the predictions does not shrink the distance between its
        # neighbours, as it would with scikit-learn's default labels (the ones present).
        grades = np.arange(cm.shape[0], dtype=np.float64)
        w_mat = (grades[:, None] - grades[None, :]) ** 2
        expected = np.outer(support, cm.sum(axis=0)) / total
        chance = float((w_mat * expected).sum())
        if chance == 0:
            return np.nan
        return float(1.0 - (w_mat * cm).sum() / chance)


def _macro_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> float:
    # F1 = 2TP / (2TP + FP + FN), averaged over the classes (labels) where it is defined: for
    # single-label tasks these are the classes in y_true or the predictions (scikit-learn's
    # default labels); a multi-label label with neither a known positive nor a positive
    # prediction is skipped (scikit-learn's zero_division=np.nan).
    denom = 2 * tp + fp + fn
    ok = denom > 0
    if not ok.any():
        return np.nan
    return float(np.mean(2 * tp[ok] / denom[ok]))


def _raise_undefined(metric: str, task: str) -> None:
    name = resolve_metric(metric, task)
    raise InvalidArgumentError(
        f"{metric} is undefined for these samples: {_UNDEFINED[name]}; "
        "score a larger or more varied test set"
    )


def score_metric(name: str, y_true: np.ndarray, scores: np.ndarray, task: str) -> float:
    """One metric of ``scores`` against ``y_true``.

    Args:
        name: One of :func:`metrics_for_task` of ``task`` (or the AUC alias: ``auc`` for a
            multilabel task means ``mean_auc``, ``mean_auc`` for a single-label task ``auc``).
        y_true: ``(n,)`` int labels in ``0..C-1``, or ``(n, L)`` multilabel entries 1/0/-1.
        scores: ``(n, C)`` float class probabilities, or ``(n, L)`` per-label probabilities.
        task: ``"binary"``, ``"multiclass"``, ``"ordinal"`` or ``"multilabel"``.

    Returns:
        The metric as a float. AUC is the binary ROC AUC of ``scores[:, 1]``, the one-vs-rest
        macro AUC over the classes with both positives and negatives, or the mean over the
        labels with both among their known entries (see :func:`per_label_auc`).
        ``quadratic_kappa`` equals scikit-learn's ``cohen_kappa_score(y, pred,
        weights="quadratic", labels=range(C))``; ``macro_f1`` averages the classes present in
        ``y_true`` or the predictions.

    Raises:
        InvalidArgumentError: On an unknown or inapplicable metric, invalid inputs (see
            :func:`check_inputs`), or a metric undefined for these samples (e.g. AUC when no
            class has both positives and negatives).
    """
    resolve_metric(name, task)
    value = PreparedScores(y_true, scores, task).score(name)
    if np.isnan(value):
        _raise_undefined(name, task)
    return value


def compute_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str,
    metrics: Sequence[str] | str | None = None,
) -> dict[str, float]:
    """Several metrics of the same scores, computed from one validation and one sort.

    Args:
        y_true: As in :func:`score_metric`.
        scores: As in :func:`score_metric`.
        task: As in :func:`score_metric`.
        metrics: Names to compute (a single name is accepted); ``None`` = all of
            :func:`metrics_for_task`.

    Returns:
        ``{name: value}`` in the order asked.

    Raises:
        InvalidArgumentError: As :func:`score_metric`.
    """
    if metrics is None:
        names: Sequence[str] = metrics_for_task(task)
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in names:
        resolve_metric(name, task)
    prepared = PreparedScores(y_true, scores, task)
    out = {}
    for name in names:
        value = prepared.score(name)
        if np.isnan(value):
            _raise_undefined(name, task)
        out[name] = value
    return out


def per_label_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each label of a multilabel task over its known entries.

    Args:
        y_true: ``(n, L)`` int entries, 1 positive, 0 negative, -1 unknown (masked).
        scores: ``(n, L)`` float per-label probabilities.

    Returns:
        ``(L,)`` float64 AUCs; NaN for a label whose known entries lack positives or negatives.
        ``mean_auc`` is the mean of the non-NaN entries, so these show which labels it used.

    Raises:
        InvalidArgumentError: As :func:`check_inputs`.
    """
    return PreparedScores(y_true, scores, "multilabel").per_column_auc()
