"""``featlab models``."""

from __future__ import annotations

import json

import click


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per model.")
def models_cmd(as_json: bool) -> None:
    """List the zoo: architecture, dims per view, weight source, and whether it is local."""
    from featlab.extractors.catalog import model_catalog

    rows = model_catalog()
    if as_json:
        for r in rows:
            click.echo(json.dumps(r))
        return
    click.echo(f"{'name':<24} {'architecture':<44} {'dim':>5}  {'views':<34} local  source")
    for r in rows:
        views = ", ".join(f"{v} {d}" for v, d in r["views"].items())
        local = "yes" if r["local_path"] else "no"
        click.echo(
            f"{r['name']:<24} {r['architecture']:<44} {r['default_dim']:>5}  "
            f"{views:<34} {local:<5}  {r['source']}"
        )
    click.echo("\nany timm model: timm:<name>; any checkpoint: --weights PATH [--converter NAME]")
