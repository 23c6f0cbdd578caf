"""Low-shot curves: a metric against the number of labelled training samples, from saved runs.

One line per (model, method variant), the mean over folds with a band of +- one standard
deviation (the "mean ± std over 5 folds" of the DVME paper's Table 1), on a log x axis. The x
position of a training size is the mean number of samples the folds really trained on (a
``500``-shot draw of a class-poor dataset may hold fewer; ``all`` lands at the pool's size), and
the tick says which size it was.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.plots._figure import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from featlab.eval.protocol import ProbeRun, SummaryRow

METRIC_LABELS = {
    "auc": "AUC",
    "mean_auc": "mean AUC",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "quadratic_kappa": "quadratic kappa",
    "macro_f1": "macro F1",
}


def metric_label(metric: str) -> str:
    """How axes and legends name ``metric`` (``"auc"`` -> ``"AUC"``)."""
    return METRIC_LABELS.get(metric, metric)


def run_label(run: ProbeRun, variant: str) -> str:
    """Legend text of one run's variant: ``"dino-vits8 · knn k=20"``, ``"swav · linear"``."""
    method = run.config.method
    return f"{run.model} · {method if variant == method else f'{method} {variant}'}"


def check_one_dataset(runs: Sequence[ProbeRun]) -> str:
    """The dataset all ``runs`` share.

    Raises:
        InvalidArgumentError: No runs, or runs of several datasets.
    """
    if not runs:
        raise InvalidArgumentError("no runs to plot; pass at least one saved run")
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1:
        raise InvalidArgumentError(
            f"one figure plots runs of one dataset; got runs of {datasets}: plot each dataset "
            "separately (e.g. --dataset NAME)"
        )
    return datasets[0]


def _common_metric(runs: Sequence[ProbeRun], metric: str | None) -> str:
    from featlab.eval.metrics import resolve_metric

    if metric is None:
        found = sorted({r.metric for r in runs})
        if len(found) > 1:
            raise InvalidArgumentError(
                f"the runs have different headline metrics {found}; pass metric= (--metric) to "
                "plot one they all computed"
            )
        return found[0]
    names = {resolve_metric(metric, r.task) for r in runs}  # one task per dataset
    return names.pop()


def _variant_rows(run: ProbeRun, variant: str | None) -> dict[str, list[SummaryRow]]:
    """Summary rows of ``run`` per variant (in the run's order), sizes in the order run."""
    out: dict[str, list[SummaryRow]] = {}
    for row in run.summary:
        if variant is None or row.variant == variant:
            out.setdefault(row.variant, []).append(row)
    if not out:
        have = sorted({r.variant for r in run.summary})
        raise InvalidArgumentError(
            f"run {run.run_id or run.model!r} has no variant {variant!r}; it has {have}"
        )
    return out


def plot_lowshot(
    runs: Sequence[ProbeRun],
    *,
    metric: str | None = None,
    variant: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Figure:
    """Metric against labelled training samples, one line per model and method variant.

    Args:
        runs: Saved or fresh runs of one dataset (:func:`featlab.eval.results.load_run`).
        metric: A metric every run computed (aliases resolve, e.g. ``auc`` of a multi-label
            task); default the runs' shared headline metric.
        variant: Only this variant (e.g. ``"k=20"``); default every variant of every run.
        out: Write the figure here (``.png`` or ``.svg``).

    Returns:
        The figure: one axes, log x. Each line's x data are the mean training-set sizes
        (samples actually trained on, averaged over folds), y the fold mean of ``metric``; the
        band spans mean +- std (sample std over folds, 0 for one fold).

    Raises:
        InvalidArgumentError: No runs, runs of different datasets, different headline metrics
            with ``metric`` unset, a metric that does not apply, a variant a run lacks, or an
            ``out`` that is not .png/.svg.

    Examples:
        >>> runs = [latest_run(store, "pcam", m, "knn") for m in ("dino-vits8", "swav-resnet50")]
        >>> plot_lowshot(runs, variant="k=20", out="lowshot.png")  # doctest: +SKIP
    """
    from matplotlib.ticker import NullLocator

    runs = list(runs)
    dataset = check_one_dataset(runs)
    metric = _common_metric(runs, metric)
    fig = new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    ticks: dict[str, list[float]] = {}
    for run in runs:
        for var, rows in _variant_rows(run, variant).items():
            _draw_line(ax, run, var, rows, metric)
            for r in rows:
                ticks.setdefault(r.size, []).append(r.n_train)
    ax.set_xscale("log")
    positions = {label: float(np.mean(xs)) for label, xs in ticks.items()}
    ax.set_xticks(list(positions.values()), [_tick(lbl, x) for lbl, x in positions.items()])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labelled training samples (log scale)")
    ax.set_ylabel(metric_label(metric))
    folds = sorted({r.n_folds for run in runs for r in run.summary})
    fold_text = f"{folds[0]} folds" if len(folds) == 1 else f"{folds[0]}-{folds[-1]} folds"
    ax.set_title(f"{dataset}: {metric_label(metric)}, mean ± std over {fold_text}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    if out is not None:
        save_figure(fig, out)
    return fig


def _draw_line(
    ax: Axes, run: ProbeRun, variant: str, rows: list[SummaryRow], metric: str
) -> None:
    missing = [r.size for r in rows if metric not in r.means]
    if missing:
        raise InvalidArgumentError(
            f"run {run.run_id or run.model!r} has no {metric!r} for sizes {missing}; it has "
            f"{sorted(rows[0].means)}"
        )
    x = np.array([r.n_train for r in rows])
    mean = np.array([r.means[metric] for r in rows])
    std = np.array([r.stds[metric] for r in rows])
    order = np.argsort(x, kind="stable")
    x, mean, std = x[order], mean[order], std[order]
    (line,) = ax.plot(x, mean, marker="o", label=run_label(run, variant))
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _tick(label: str, n: float) -> str:
    # Shot counts are the size already; "all" and fractions also say how many samples that was.
    if label.isdigit():
        return label
    return f"{label}\n({n:,.0f})"


__all__ = ["check_one_dataset", "metric_label", "plot_lowshot", "run_label"]
