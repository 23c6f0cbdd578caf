"""``featlab download``."""

from __future__ import annotations

from pathlib import Path

import click

# Exit code when DATASET must be fetched by hand (Kaggle login, Stanford or NIH terms): distinct
# from 0 so that `featlab download X && featlab extract X` stops with the steps on screen.
EXIT_MANUAL = 3


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _describe(result) -> str:
    checks = ", ".join(result.verified)
    verified = f"verified ({checks})" if checks else "not verified (no published checksum)"
    done = {
        "present": "already present, ",
        "downloaded": f"downloaded {_size(result.nbytes)}, ",
        "resumed": f"resumed at {_size(result.resumed_from)} of {_size(result.nbytes)}, ",
        "restarted": f"server ignored the resume request; fetched all {_size(result.nbytes)} "
        "again, ",
    }[result.status]
    lines = [f"  {result.filename}: {done}{verified}"]
    if result.set_aside is not None:
        lines.append(f"    (a file there failed verification; kept aside as {result.set_aside})")
    return "\n".join(lines)


@click.command("download")
@click.argument("dataset")
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder to put DATASET's files in [default: <datasets dir>/<dataset folder>, "
    "datasets dir = $FEATLAB_DATA or ~/.cache/featlab/datasets].",
)
@click.pass_context
def download_cmd(ctx: click.Context, dataset: str, data_root: Path | None) -> None:
    """Download DATASET (pcam, pathmnist@224, ...) with checksum checks and resume.

    Files land as distributed in the dataset's folder; a rerun skips verified files and resumes
    a partial one. Datasets behind a login or licence (Kaggle, Stanford, NIH) print the steps
    to get them instead.

    Exit codes: 0 done (or already there); 1 error (network, checksum: the message says what
    to do); 3 DATASET needs a manual download (the steps are printed).
    """
    from featlab.datasets.download import download_dataset, manual_steps, plan_download

    if ":" in dataset:
        raise click.UsageError("download takes a registered dataset name (see `featlab datasets`)")
    plan = plan_download(dataset, data_root)
    if plan.manual:
        if plan.present():
            click.echo(f"{plan.info.name}: found in {plan.root}; nothing to download")
            return
        click.echo(manual_steps(plan))
        ctx.exit(EXIT_MANUAL)
    label = plan.info.name + (f"@{plan.size}" if plan.size is not None else "")
    click.echo(f"{label}: {len(plan.files)} file(s) -> {plan.root}")
    download_dataset(plan, on_file=lambda result: click.echo(_describe(result)))
    click.echo(f"{label}: done; files in {plan.root}")
