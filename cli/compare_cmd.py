"""``featlab compare``: a paired test between two saved runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from featlab.cli._common import store_option


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--dataset", default=None,
              help="With model names as A and B: compare their latest runs on this dataset.")
@click.option("--method", default=None, help="With model names: the method of the runs.")
@click.option("--metric", default=None, help="Metric to compare [default: the runs' headline].")
@click.option("--variant", default=None, help="Variant of both runs, e.g. k=200 [default: first].")
@click.option("--variant-a", default=None, help="Variant of A only (e.g. k=200 against logreg).")
@click.option("--variant-b", default=None, help="Variant of B only.")
@click.option("--test", "test", type=click.Choice(["bootstrap", "delong"]), default="bootstrap",
              show_default=True, help="Paired bootstrap, or DeLong's test (binary AUC).")
@click.option("--n-boot", type=click.IntRange(min=100), default=1000, show_default=True,
              help="Bootstrap replicates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Bootstrap seed.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def compare_cmd(
    a: str,
    b: str,
    dataset: str | None,
    method: str | None,
    metric: str | None,
    variant: str | None,
    variant_a: str | None,
    variant_b: str | None,
    test: str,
    n_boot: int,
    seed: int,
    store_path: Path | None,
    as_json: bool,
) -> None:
    """Is A better than B? A and B are run ids (`featlab results`), or model names with
    --dataset (their latest runs). Prints A − B per training size with a 95% CI and p-value.
    """
    from featlab.eval.compare import compare_runs
    from featlab.eval.results import format_table, latest_run, load_run
    from featlab.store import open_store

    store = open_store(store_path, mode="r")
    if dataset:
        run_a, run_b = (latest_run(store, dataset, m, method) for m in (a, b))
        if not method and run_a.config.method != run_b.config.method:
            raise click.UsageError(
                f"the latest runs are {run_a.config.method} ({a}) and {run_b.config.method} "
                f"({b}); give --method, or compare run ids"
            )
    else:
        run_a, run_b = load_run(store, a), load_run(store, b)
    rows = compare_runs(
        run_a, run_b, metric=metric, variant_a=variant_a or variant,
        variant_b=variant_b or variant, test=test,
        n_boot=n_boot, seed=seed,
    )
    if as_json:
        for r in rows:
            click.echo(json.dumps({"a": run_a.run_id, "b": run_b.run_id, **r.to_dict()}))
        return
    click.echo(f"A = {run_a.model} ({run_a.run_id})\nB = {run_b.model} ({run_b.run_id})")
    table = [
        {
            "size": r.size,
            "fold": r.fold,
            "metric": r.metric,
            "A": f"{r.estimate_a:.4f}",
            "B": f"{r.estimate_b:.4f}",
            "A-B": f"{r.difference:+.4f}",
            "95% CI": f"[{r.low:+.4f}, {r.high:+.4f}]",
            "p": f"{r.p_value:.4g}",
            "test": r.test,
            "n_test": str(r.n_test),
        }
        for r in rows
    ]
    click.echo(format_table(table))
