"""``featlab results``: list saved evaluation runs, or re-print one."""

from __future__ import annotations

import json
from pathlib import Path

import click

from featlab.cli._common import store_option


@click.command("results")
@click.argument("run_ids", nargs=-1)
@click.option("--dataset", default=None, help="Only runs of this dataset.")
@click.option("--model", default=None, help="Only runs of this model.")
@click.option("--method", default=None, help="Only runs of this method (knn, linear, logreg).")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the full records as JSON lines.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every fold's metrics as CSV.")
def results_cmd(
    run_ids: tuple[str, ...],
    dataset: str | None,
    model: str | None,
    method: str | None,
    store_path: Path | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """List saved runs; with RUN_IDS, print their tables (mean ± std per training size)."""
    from featlab.errors import UnknownRunError
    from featlab.eval.results import (
        format_csv,
        format_table,
        json_safe,
        list_runs,
        load_run,
        summary_table,
    )
    from featlab.store import open_store

    store = open_store(store_path, mode="r")
    if run_ids:
        records = [load_run(store, r).to_dict() for r in run_ids]
    else:
        records = list_runs(store, dataset=dataset, model=model, method=method)
        if not records:
            raise UnknownRunError(
                f"no saved runs in {store.path} match; `featlab probe` evaluates and saves them"
            )
    if as_json:
        for rec in records:
            click.echo(json.dumps(json_safe(rec)))
    elif as_csv:
        click.echo(format_csv(records), nl=False)
    elif run_ids:
        for rec in records:
            plan = rec["plan"]
            click.echo(
                f"{rec['run_id']}  {rec['dataset']} | {rec['model']} | {rec['method']}  "
                f"seed {rec['config']['seed']}, {plan['n_folds']} fold(s), val: "
                f"{plan['val_source']}, test: {plan['n_test_scored']}, plan {plan['fingerprint']}"
            )
        click.echo(format_table(summary_table(records)))
    else:
        click.echo(format_table([_listing(rec) for rec in records]))


def _listing(rec: dict) -> dict[str, str]:
    sizes = list(dict.fromkeys(s["size"] for s in rec["summary"]))
    return {
        "run_id": rec["run_id"],
        "dataset": rec["dataset"],
        "model": rec["model"],
        "method": rec["method"],
        "metric": rec["metric"],
        "sizes": ",".join(sizes),
        "folds": str(rec["plan"]["n_folds"]),
        "created": rec["created"],
    }
