"""Confusion matrices: true class (rows) against predicted class (columns), annotated.

With ``normalize="true"`` (default) cells are coloured by the fraction of their true class (the
row sums to 100 %, so a small class is as readable as a large one) and annotated with the count
and that percentage; with ``normalize=None`` colour and text are counts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.plots._figure import new_figure, save_figure
from featlab.plots.roc import run_scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from featlab.eval.protocol import ProbeRun

NORMALIZE = ("true", None)
MAX_ANNOTATED = 30  # more classes than this: cells too small to print numbers in


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts, ``[i, j]`` = samples of true class ``i`` predicted ``j``.

    Raises:
        InvalidArgumentError: Lengths differ, or a label is outside ``0..C-1``.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise InvalidArgumentError(
            f"y_true and y_pred must be (n,) of equal length; got {y_true.shape} and "
            f"{y_pred.shape}"
        )
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= n_classes)):
            raise InvalidArgumentError(
                f"{name} must hold integer labels in 0..{n_classes - 1} (one per class name); "
                f"got dtype {y.dtype}, values {sorted(set(y.tolist()))[:6]}"
            )
    codes = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def run_predictions(
    run: ProbeRun, *, fold: int = 0, size: str | None = None, variant: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_pred)`` of one fold of a single-label run: the argmax of its test scores
    (the first class on ties, as :mod:`featlab.eval.metrics` predicts).

    Raises:
        InvalidArgumentError: A multilabel run (no single predicted class), or a size, variant
            or fold the run lacks.
    """
    if run.task == "multilabel":
        raise InvalidArgumentError(
            f"run {run.run_id or run.model!r} is multilabel: a sample has several labels, so "
            "there is no single true and predicted class; plot its ROC curves instead"
        )
    y, scores, _ = run_scores(run, fold=fold, size=size, variant=variant)
    return y.astype(np.int64), scores.argmax(axis=1)


def plot_confusion(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    *,
    normalize: str | None = "true",
    title: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Figure:
    """A confusion matrix of single-label predictions.

    Args:
        y_true: ``(n,)`` int true classes in ``0..C-1``.
        y_pred: ``(n,)`` int predicted classes.
        class_names: The ``C`` class names (rows and columns, in order).
        normalize: ``"true"``: colour by the row fraction, annotate ``count`` and ``percent``;
            ``None``: colour and annotate counts.
        title: Axes title; default ``confusion matrix (n = ...)``.
        out: Write the figure here (``.png`` or ``.svg``).

    Returns:
        The figure. Cell ``(i, j)``'s text starts with the count of true ``i`` predicted ``j``
        (cells are not annotated beyond 30 classes).

    Raises:
        InvalidArgumentError: Bad labels (see :func:`confusion_counts`), fewer than 2 class
            names, or an unknown ``normalize``.
    """
    if normalize not in NORMALIZE:
        raise InvalidArgumentError(f"normalize must be 'true' or None; got {normalize!r}")
    names = [str(c) for c in class_names]
    if len(names) < 2:
        raise InvalidArgumentError(f"need at least 2 class names; got {names}")
    counts = confusion_counts(y_true, y_pred, len(names))
    rows = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    values = frac if normalize == "true" else counts
    c = len(names)
    side = float(np.clip(1.5 + 0.55 * c, 4.0, 14.0))
    fig = new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize == "true" else max(int(counts.max()), 1)
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(c), names, rotation=45 if c > 4 else 0, ha="right" if c > 4 else "center")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix (n = {int(counts.sum()):,})", fontsize="medium")
    if c <= MAX_ANNOTATED:
        _annotate(ax, counts, frac, values / vmax, normalize, fontsize=max(5.0, 10 - 0.2 * c))
    if out is not None:
        save_figure(fig, out)
    return fig


def _annotate(
    ax: Axes,
    counts: np.ndarray,
    frac: np.ndarray,
    shade: np.ndarray,
    normalize: str | None,
    fontsize: float,
) -> None:
    for i, j in np.ndindex(counts.shape):
        text = f"{counts[i, j]:,}"
        if normalize == "true":
            text += f"\n{100 * frac[i, j]:.1f}%"
        # White text on dark cells, black on light ones.
        color = "white" if shade[i, j] > 0.55 else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)


__all__ = ["confusion_counts", "plot_confusion", "run_predictions"]
