"""``featlab extract``."""

from __future__ import annotations

from pathlib import Path

import click

from featlab.cli._common import store_option


def _splits(_: click.Context, __: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else None


@click.command("extract")
@click.argument("dataset")
@click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    required=True,
    help="Model to extract; repeat for several. timm:<architecture[.tag]>.",
)
@click.option(
    "--split",
    "splits",
    callback=_splits,
    default=None,
    help="Comma-separated splits to extract (train,val,test,unlabeled) [default: all].",
)
@store_option
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Image-decoding worker processes [default: one per spare core].",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:i].")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="auto: bf16 on CUDA and on CPUs with AMX/AVX512-BF16.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local checkpoint for the architecture (every backbone key must load).",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Seeded random weights instead of the published ones (no download).",
)
@click.option(
    "--img-size",
    type=click.IntRange(min=8),
    default=None,
    help="Square input size overriding the model's default.",
)
@click.option("--name", default=None, help="Store the embeddings under this name (one model).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N selected samples (for a quick try).",
)
@click.option("--overwrite", is_flag=True, help="Replace stored embeddings of the same name.")
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Record unreadable images as bad and go on, instead of stopping.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random-init.")
def extract_cmd(
    dataset: str,
    models: tuple[str, ...],
    splits: tuple[str, ...] | None,
    store_path: Path | None,
    batch_size: int,
    workers: int | None,
    device: str,
    precision: str,
    weights: Path | None,
    random_init: bool,
    img_size: int | None,
    name: str | None,
    limit: int | None,
    overwrite: bool,
    skip_bad: bool,
    seed: int,
) -> None:
    """Extract embeddings of DATASET (digits, folder:PATH or csv:PATH) into the store.

    Rerunning the same command resumes an interrupted run, or reuses a complete one.
    """
    from featlab.datasets import load_dataset
    from featlab.extractors import extract
    from featlab.store import default_store_path

    if name and len(models) > 1:
        raise click.UsageError("--name applies to one --model only")
    if weights is not None and random_init:
        raise click.UsageError("--weights and --random-init exclude each other")
    table = load_dataset(dataset)
    store = store_path or default_store_path()
    for model in models:
        r = extract(
            model,
            table,
            store,
            name=name,
            splits=splits,
            batch_size=batch_size,
            workers=workers,
            device=device,
            precision=precision,
            weights=weights,
            random_init=random_init,
            img_size=img_size,
            limit=limit,
            overwrite=overwrite,
            skip_bad=skip_bad,
            seed=seed,
        )
        if r.status == "reused":
            click.echo(
                f"{r.model} | {r.dataset}: already complete in {store} (reused; "
                "--overwrite to redo)"
            )
            continue
        state = "complete" if r.complete else "partial"
        click.echo(
            f"{r.model} | {r.dataset}: {r.status} {r.n_computed} images, {r.dim}-d, "
            f"{r.images_per_s:.1f} img/s ({r.device}, {r.precision}, {r.kernels}) "
            f"-> {store} [{state}]"
        )
        if r.bad:
            click.echo(f"  {len(r.bad)} unreadable image(s) recorded as bad and excluded:")
            for sid, reason in list(r.bad.items())[:20]:
                click.echo(f"    {sid}: {reason}")
