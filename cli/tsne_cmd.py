"""``featlab tsne``: t-SNE panels of stored embeddings, one per model, coloured by class."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from featlab.cli._common import store_option


def split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--model a,b --model c`` -> ``("a", "b", "c")`` (order kept, duplicates dropped)."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(dict.fromkeys(names))


@click.command("tsne")
@click.argument("dataset")
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    required=True,
    help="Stored models, comma-separated or repeated: one panel each.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Split to embed (train, val, test, unlabeled), or 'all' for every row.",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Class-stratified, seeded subsample size per model.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the subsample, the PCA initialisation and the neighbour search.",
)
@click.option(
    "--perplexity",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="t-SNE perplexity (needs more than 3x as many points).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "opentsne", "sklearn"]),
    default="auto",
    show_default=True,
    help="auto: openTSNE if installed, else scikit-learn.",
)
@click.option(
    "--n-iter",
    type=click.IntRange(min=0),
    default=500,
    show_default=True,
    help="Iterations after the 250 of early exaggeration.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("tsne.png"),
    show_default=True,
    help="Figure to write (.png or .svg).",
)
@click.option(
    "--n-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Threads [default: all usable cores]; the coordinates do not depend on it.",
)
@click.option("--no-cache", is_flag=True, help="Recompute, and do not save coordinates.")
@store_option
def tsne_cmd(
    dataset: str,
    models: tuple[str, ...],
    split: str,
    max_points: int,
    seed: int,
    perplexity: float,
    backend: str,
    n_iter: int,
    out: Path,
    n_jobs: int | None,
    no_cache: bool,
    store_path: Path | None,
) -> None:
    """t-SNE of DATASET's embeddings by each --model, drawn side by side and coloured by class.

    Coordinates are saved in the store when it is writable (keyed by the embeddings'
    fingerprint and the parameters) and reused until the embeddings change.
    """
    from featlab.errors import StoreReadOnlyError
    from featlab.eval.tsne import tsne_for_model
    from featlab.plots._figure import check_output_path
    from featlab.plots.tsne import plot_tsne_panels
    from featlab.store import default_store_path, open_store

    names = split_names(models)
    if not names:
        raise click.UsageError("give at least one model name to --model")
    check_output_path(out)  # a bad suffix fails before minutes of t-SNE
    path = store_path or default_store_path()
    store = open_store(path, mode="r")
    if not no_cache and os.access(store.path / dataset, os.W_OK):
        # Writable: reopen so the coordinates are saved for next time; else compute only.
        with contextlib.suppress(StoreReadOnlyError):
            store = open_store(path, mode="a")
    ds = store[dataset]
    panels, noted = [], False
    for model in names:
        res = tsne_for_model(
            ds, model, split=split, max_points=max_points, seed=seed, perplexity=perplexity,
            backend=backend, n_iter=n_iter, n_jobs=n_jobs,  # type: ignore[arg-type]
            cache=not no_cache,
        )  # fmt: skip
        if res.fallback and not noted:
            click.echo(f"note: {res.fallback}")
            noted = True
        when = "cached" if res.cached else f"{res.seconds:.1f} s"
        click.echo(f"{model}: {len(res.coords):,} points, {res.backend}, {when}")
        panels.append((model, res.coords, res.labels))
    plot_tsne_panels(panels, ds.classes, out, task=ds.task)
    click.echo(f"wrote {out}")
