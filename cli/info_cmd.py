"""``featlab info``."""

from __future__ import annotations

from pathlib import Path

import click

from featlab.cli._common import store_option


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("info")
@store_option
def info_cmd(store_path: Path | None) -> None:
    """Show the store's datasets and models: dims, completeness, size on disk."""
    from featlab.store import _results, open_store

    store = open_store(store_path, mode="r")
    click.echo(f"store {store.path} ({_size(store.size_bytes())})")
    rows = store.info()
    for name in store.datasets:
        ds = store[name]
        splits = ", ".join(f"{k} {v}" for k, v in ds.spec["split_counts"].items())
        click.echo(f"\n{name}: {ds.n} samples ({splits}), {ds.task}, {len(ds.classes)} classes")
        runs = len(_results.run_ids(ds))
        if runs:
            click.echo(f"  {runs} saved evaluation run(s): featlab results --dataset {name}")
        models = [r for r in rows if r["dataset"] == name]
        if not models:
            click.echo("  no models yet")
            continue
        click.echo(
            f"  {'model':<36} {'dim':>5} {'written':>15} {'state':<9} {'precision':<9} "
            f"{'img/s':>8} {'size':>10}"
        )
        for r in models:
            state = "complete" if r["complete"] else "partial"
            ips = f"{r['images_per_s']:.1f}" if r["images_per_s"] else "-"
            click.echo(
                f"  {r['model']:<36} {r['dim']:>5} {r['written']:>7}/{r['n']:<7} "
                f"{state:<9} {r['precision'] or '-':<9} {ips:>8} {_size(r['bytes']):>10}"
            )
