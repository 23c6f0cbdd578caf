"""``featlab plot lowshot | roc | confusion``: figures of saved evaluation runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from featlab.cli._common import store_option
from featlab.cli.probe_cmd import split_names

if TYPE_CHECKING:
    from featlab.eval.protocol import ProbeRun
    from featlab.store import FeatureStore

F = TypeVar("F", bound=Callable[..., Any])

out_option = click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Figure file to write: .png or .svg.",
)
variant_option = click.option(
    "--variant", default=None, help="Method variant, e.g. k=20 [default: every (lowshot) or the "
    "first (roc, confusion)]."
)
fold_option = click.option(
    "--fold", type=click.IntRange(min=0), default=0, show_default=True, help="Fold to plot."
)
size_option = click.option(
    "--size", default=None, help="Training size label, e.g. 500 or 10% [default: all]."
)


def selection(func: F) -> F:
    """RUN_IDS and the --dataset/--model/--method filters used when none are given."""
    for deco in reversed(
        [
            click.argument("run_ids", nargs=-1),
            click.option("--dataset", default=None,
                         help="Dataset of the runs [default: the store's only dataset]."),
            click.option("--model", "models", multiple=True,
                         help="Models, comma-separated or repeated [default: all with runs]."),
            click.option("--method", default=None, help="Only runs of this method."),
        ]
    ):
        func = deco(func)
    return func


def select_runs(
    store: FeatureStore,
    run_ids: tuple[str, ...],
    dataset: str | None,
    models: tuple[str, ...],
    method: str | None,
) -> list[ProbeRun]:
    """The runs named, else the latest run per (model, method) of the dataset."""
    from featlab.errors import InvalidArgumentError
    from featlab.eval.results import latest_runs, load_run

    if run_ids:
        if dataset or models or method:
            raise click.UsageError("give RUN_IDS or --dataset/--model/--method, not both")
        return [load_run(store, r) for r in run_ids]
    if dataset is None:
        if len(store.datasets) != 1:
            raise InvalidArgumentError(
                f"the store holds datasets {list(store.datasets)}; choose one with --dataset"
            )
        dataset = store.datasets[0]
    return latest_runs(store, dataset, models=split_names(models), method=method)


@click.group("plot")
def plot_cmd() -> None:
    """Figures of saved runs: low-shot curves, ROC curves, confusion matrices (PNG or SVG).

    With no RUN_IDS, the latest run of each model and method of the dataset is plotted.
    """


@plot_cmd.command("lowshot")
@selection
@click.option("--metric", default=None, help="Metric to plot [default: the runs' headline].")
@variant_option
@out_option
@store_option
def lowshot_cmd(
    run_ids: tuple[str, ...],
    dataset: str | None,
    models: tuple[str, ...],
    method: str | None,
    metric: str | None,
    variant: str | None,
    out: Path,
    store_path: Path | None,
) -> None:
    """Metric against labelled training samples (log x), mean ± std band over folds."""
    from featlab.plots._figure import check_output_path
    from featlab.plots.lowshot import plot_lowshot
    from featlab.store import open_store

    check_output_path(out)
    runs = select_runs(open_store(store_path), run_ids, dataset, models, method)
    plot_lowshot(runs, metric=metric, variant=variant, out=out)
    click.echo(out)


@plot_cmd.command("roc")
@selection
@fold_option
@size_option
@variant_option
@out_option
@store_option
def roc_cmd(
    run_ids: tuple[str, ...],
    dataset: str | None,
    models: tuple[str, ...],
    method: str | None,
    fold: int,
    size: str | None,
    variant: str | None,
    out: Path,
    store_path: Path | None,
) -> None:
    """ROC curves from the runs' stored test scores (binary: one per run; otherwise per class
    for one run, the macro average per run for several)."""
    from featlab.plots._figure import check_output_path
    from featlab.plots.roc import plot_roc
    from featlab.store import open_store

    check_output_path(out)
    store = open_store(store_path)
    runs = select_runs(store, run_ids, dataset, models, method)
    classes = store[runs[0].dataset].classes
    plot_roc(runs, fold=fold, size=size, variant=variant, class_names=classes, out=out)
    click.echo(out)


@plot_cmd.command("confusion")
@click.argument("run_id")
@fold_option
@size_option
@variant_option
@click.option("--counts", is_flag=True, help="Colour by counts, not by the fraction of each "
              "true class.")
@out_option
@store_option
def confusion_cmd(
    run_id: str,
    fold: int,
    size: str | None,
    variant: str | None,
    counts: bool,
    out: Path,
    store_path: Path | None,
) -> None:
    """Confusion matrix of RUN_ID's test predictions (argmax of its scores) on one fold."""
    from featlab.eval.results import load_run
    from featlab.plots._figure import check_output_path
    from featlab.plots.confusion import plot_confusion, run_predictions
    from featlab.plots.lowshot import run_label
    from featlab.plots.roc import run_scores
    from featlab.store import open_store

    check_output_path(out)
    store = open_store(store_path)
    run = load_run(store, run_id)
    y, pred = run_predictions(run, fold=fold, size=size, variant=variant)
    key = run_scores(run, fold=fold, size=size, variant=variant)[2]
    var, where = key.split("|")
    title = f"{run.dataset}: {run_label(run, var)}, size {where.replace('/', ', fold ')}"
    plot_confusion(
        y, pred, store[run.dataset].classes, normalize=None if counts else "true", title=title,
        out=out,
    )
    click.echo(out)
