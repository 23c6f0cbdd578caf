"""ROC curves of saved runs, from the test scores each run stores (as the BEiT paper's Figure 5
compares its models' ROC curves on BreastMNIST).

What is drawn per task:

- ``binary``: one curve per run (model and method variant), its AUC in the legend.
- ``multiclass`` / ``ordinal`` (one-vs-rest) and ``multilabel`` (per label, unknown ``-1``
  entries left out): with one run, one curve per class or label, each with its AUC; with several
  runs, one macro-average curve per run (the mean true-positive rate of the per-class curves on a
  common false-positive grid), with the macro AUC in the legend — the mean of the per-class AUCs,
  which is the ``auc`` / ``mean_auc`` featlab reports (the area under the averaged curve can
  differ from it slightly). Classes without both positives and negatives are skipped, as the
  metric skips them.

Runs drawn together must be of one dataset. If their test rows differ (e.g. models with
different bad images), they are still drawn, and the title says "test sets differ".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.plots._figure import new_figure, save_figure
from featlab.plots.lowshot import check_one_dataset, run_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from featlab.eval.protocol import ProbeRun

FPR_GRID = np.linspace(0.0, 1.0, 201)


def run_scores(
    run: ProbeRun, *, fold: int = 0, size: str | None = None, variant: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Test labels and the stored test scores of one variant x size x fold of ``run``.

    Args:
        run: A saved or fresh run.
        fold: Fold index (0-based).
        size: Training size label (``"500"``, ``"10%"``, ``"all"``); default ``all`` if run,
            else the last size of the run.
        variant: E.g. ``"k=20"`` or ``"linear"``; default the run's first variant.

    Returns:
        ``(y_true, scores, key)``: ``(m,)`` int labels or ``(m, L)`` 1/0/-1 entries, ``(m, C)``
        float32 scores, and the key ``"variant|size/fold"`` they were stored under.

    Raises:
        InvalidArgumentError: A size, variant or fold the run does not have (the message lists
            what it has).
    """
    variants = list(dict.fromkeys(r.variant for r in run.summary))
    sizes = list(dict.fromkeys(r.size for r in run.summary))
    name = run.run_id or run.model
    if variant is None:
        variant = variants[0]
    elif variant not in variants:
        raise InvalidArgumentError(f"run {name!r} has no variant {variant!r}; it has {variants}")
    if size is None:
        size = "all" if "all" in sizes else sizes[-1]
    elif size not in sizes:
        raise InvalidArgumentError(f"run {name!r} has no training size {size!r}; it has {sizes}")
    key = f"{variant}|{size}/{fold}"
    if key not in run.test_scores:
        folds = sorted(f.fold for f in run.folds if f.variant == variant and f.size == size)
        raise InvalidArgumentError(
            f"run {name!r} has no fold {fold} for {variant} at size {size}; folds: {folds}"
        )
    return np.asarray(run.test_labels), np.asarray(run.test_scores[key]), key


@dataclass(frozen=True)
class RocCurve:
    """One curve: false and true positive rates, its AUC and what it is of."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    name: str


def binary_curve(y: np.ndarray, score: np.ndarray, name: str) -> RocCurve | None:
    """ROC of ``score`` for the 0/1 targets ``y`` (``None`` if one class is absent)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(y, score)
    return RocCurve(fpr, tpr, float(roc_auc_score(y, score)), name)


def column_curves(
    y: np.ndarray, scores: np.ndarray, task: str, names: Sequence[str]
) -> list[RocCurve]:
    """Per-column curves: the positive class (binary), each class one-vs-rest, or each label.

    Args:
        y: ``(m,)`` int labels, or ``(m, L)`` entries 1/0/-1 (multilabel; -1 masked).
        scores: ``(m, C)`` or ``(m, L)`` probabilities.
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        names: Class (label) names, one per column.

    Returns:
        The curves of the columns that have positives and negatives.
    """
    if task == "binary":
        curve = binary_curve(y == 1, scores[:, 1], names[1])
        return [curve] if curve else []
    out = []
    for j in range(scores.shape[1]):
        if task == "multilabel":
            known = y[:, j] >= 0
            curve = binary_curve(y[known, j] == 1, scores[known, j], names[j])
        else:
            curve = binary_curve(y == j, scores[:, j], names[j])
        if curve:
            out.append(curve)
    return out


def macro_curve(curves: Sequence[RocCurve], name: str) -> RocCurve:
    """Mean TPR of ``curves`` on :data:`FPR_GRID`; its ``auc`` is the mean of their AUCs."""
    tpr = np.mean([np.interp(FPR_GRID, c.fpr, c.tpr) for c in curves], axis=0)
    tpr[0] = 0.0
    return RocCurve(FPR_GRID, tpr, float(np.mean([c.auc for c in curves])), name)


def plot_roc(
    runs: Sequence[ProbeRun],
    *,
    fold: int = 0,
    size: str | None = None,
    variant: str | None = None,
    class_names: Sequence[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Figure:
    """ROC curves of runs of one dataset on one training size and fold (see the module doc).

    Args:
        runs: Runs of one dataset (:func:`featlab.eval.results.load_run`).
        fold: Fold whose test scores to use.
        size: Training size label; default ``all`` (or each run's last size).
        variant: Method variant, e.g. ``"k=20"``; default each run's first.
        class_names: Names of the classes (labels) for per-class curves; default ``class j``.
        out: Write the figure here (``.png`` or ``.svg``).

    Returns:
        The figure; legend entries end in ``(AUC 0.xxx)``.

    Raises:
        InvalidArgumentError: No runs, runs of several datasets, a size/variant/fold a run
            lacks, or no class with both positives and negatives.
    """
    runs = list(runs)
    dataset = check_one_dataset(runs)
    task = runs[0].task
    fig = new_figure(6.0, 5.0)
    ax = fig.add_subplot()
    tests = set()
    for run in runs:
        y, scores, key = run_scores(run, fold=fold, size=size, variant=variant)
        tests.add(np.asarray(run.test_rows).tobytes())
        names = list(class_names or [f"class {j}" for j in range(scores.shape[1])])
        curves = column_curves(y, scores, task, names)
        if not curves:
            raise InvalidArgumentError(
                f"run {run.run_id or run.model!r}: no class has both positive and negative test "
                "samples, so there is no ROC curve to draw"
            )
        label = run_label(run, key.split("|")[0])
        if task == "binary":
            drawn = [RocCurve(curves[0].fpr, curves[0].tpr, curves[0].auc, label)]
        elif len(runs) == 1:
            drawn = curves
        else:
            drawn = [macro_curve(curves, f"{label}, macro")]
        for c in drawn:
            ax.plot(c.fpr, c.tpr, linewidth=1.6, label=f"{c.name} (AUC {c.auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    variant_drawn, where = key.split("|")
    of = f" of {run_label(runs[0], variant_drawn)}" if len(runs) == 1 and task != "binary" else ""
    title = f"{dataset}: ROC{of}, size {where.replace('/', ', fold ')}"
    if len(tests) > 1:
        title += " (test sets differ)"
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    if out is not None:
        save_figure(fig, out)
    return fig


__all__ = ["RocCurve", "binary_curve", "column_curves", "macro_curve", "plot_roc", "run_scores"]
