"""``featlab probe``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from featlab.cli._common import store_option


@click.command("probe")
@click.option(
    "--method",
    type=click.Choice(["knn"]),
    default="knn",
    show_default=True,
    help="Evaluation protocol.",
)
@click.option("--model", "models", multiple=True, help="Only these models [default: all].")
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets [default: all].")
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Neighbours per query.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=0.07,
    show_default=True,
    help="DINO vote temperature.",
)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON lines.")
def probe_cmd(
    method: str,
    models: tuple[str, ...],
    datasets: tuple[str, ...],
    k: int,
    temperature: float,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Evaluate every complete dataset x model in the store (train -> test).

    Pairs the method cannot evaluate are listed as skipped, with the reason, when they were not
    asked for by name; a pair named with --dataset/--model that fails is an error.
    """
    from featlab.errors import FeatlabError
    from featlab.eval.knn import evaluate_knn
    from featlab.store import open_store

    store = open_store(store_path, mode="r")
    results, skipped = [], []
    for name in datasets or store.datasets:
        ds = store[name]
        for model in models or ds.models:
            try:
                results.append(evaluate_knn(ds, model, k=k, temperature=temperature))
            except FeatlabError as err:
                if datasets or models:
                    raise
                skipped.append(f"{name} | {model}: {err}")
    for line in skipped:
        click.echo(f"skipped {line}", err=True)
    if not results:
        raise click.ClickException(
            f"nothing to evaluate in {store.path}: no complete model could be probed; "
            "run featlab extract first"
        )
    if as_json:
        for r in results:
            click.echo(json.dumps(r.to_dict()))
        return
    click.echo(
        f"{'dataset':<16} {'model':<36} {'k':>4} {'n_train':>8} {'n_test':>7} "
        f"{'accuracy':>9} {'bal.acc':>8}"
    )
    for r in results:
        click.echo(
            f"{r.dataset:<16} {r.model:<36} {r.k:>4} {r.n_train:>8} {r.n_test:>7} "
            f"{r.accuracy:>9.4f} {r.balanced_accuracy:>8.4f}"
        )
