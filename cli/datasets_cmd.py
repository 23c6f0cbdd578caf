"""``featlab datasets``."""

from __future__ import annotations

import json
from typing import Any

import click


def _dataset_row(info: Any) -> dict[str, Any]:
    """What ``featlab datasets`` shows of one registered dataset (JSON-ready)."""
    from featlab.datasets.registry import dataset_root
    from featlab.errors import FeatlabError

    root = dataset_root(info)
    # Sized datasets (MedMNIST) are looked for in their default size, the one a bare name loads.
    options = {"size": info.sizes[0]} if info.sizes else {}
    try:
        found, problem = bool(info.present(root, **options)), None
    except (FeatlabError, OSError) as err:
        found, problem = False, str(err)
    return {
        "name": info.name,
        "task": info.task,
        "n_classes": len(info.classes),
        "split_sizes": dict(info.split_sizes),
        "metric": info.default_metric,
        "sizes": list(info.sizes),
        "options": {k: list(v) for k, v in info.options.items()},
        "downloadable": bool(info.downloads),
        # Present without a folder means it needs no files (digits ships with scikit-learn).
        "builtin": found and not root.exists(),
        "found": found,
        "path": str(root),
        "problem": problem,
        "url": info.url,
        "access": info.access,
    }


def _splits_text(sizes: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sizes.items()) or "-"


def _table_cells(r: dict[str, Any]) -> list[str]:
    name = r["name"] + (f"@{r['sizes'][0]}" if r["sizes"] else "")
    get = "built-in" if r["builtin"] else "download" if r["downloadable"] else "manual"
    found = "yes  (no files needed)" if r["builtin"] else f"yes  {r['path']}"
    found = found if r["found"] else f"no   (looked in {r['path']})"
    cells = [name, r["task"], str(r["n_classes"]), _splits_text(r["split_sizes"]), r["metric"]]
    return [*cells, get, found]


def _extras(r: dict[str, Any]) -> list[str]:
    extras = [f"sizes {', '.join(map(str, r['sizes']))}"] if r["sizes"] else []
    if r["options"]:
        extras.append(
            "options " + ", ".join(f"{k}={'|'.join(map(str, v))}" for k, v in r["options"].items())
        )
    if r["problem"]:
        extras.append(f"problem: {r['problem']}")
    return extras


def _echo_table(rows: list[dict[str, Any]]) -> None:
    header = ["name", "task", "cls", "splits", "metric", "get", "found"]
    table = [header] + [_table_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i == 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells[:-1], widths, strict=True))
        ]
        return "  ".join([*padded, cells[-1]])

    click.echo(line(header))
    for r, cells in zip(rows, table[1:], strict=True):
        click.echo(line(cells))
        extras = _extras(r)
        if extras:
            click.echo(" " * (widths[0] + 2) + "; ".join(extras))


@click.command("datasets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets_cmd(as_json: bool) -> None:
    """List the registered datasets: task, classes, splits, metric, and where they were found.

    Each dataset is looked for in <datasets dir>/<folder>, with the datasets dir from
    $FEATLAB_DATA (default ~/.cache/featlab/datasets). Any image tree also works as
    folder:PATH, any manifest as csv:PATH.
    """
    from featlab.datasets import DATASET_FORMS, datasets_dir, list_datasets
    from featlab.datasets.registry import DATA_ENV

    rows = [_dataset_row(info) for info in list_datasets()]
    forms = {
        "folder:PATH": "class sub-folders, optionally under train/val/test",
        "csv:PATH": "a CSV manifest with columns path,label[,split]",
    }
    if as_json:
        payload = {"datasets_dir": str(datasets_dir()), "datasets": rows, "forms": forms}
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(f"datasets dir: {datasets_dir()} (set ${DATA_ENV} to change it)\n")
    _echo_table(rows)
    click.echo(f"\nforms: {', '.join(DATASET_FORMS)}")
    for form, meaning in forms.items():
        click.echo(f"  {form:<12} {meaning}")
    click.echo("get a dataset: featlab download NAME (prints the steps for manual ones)")
