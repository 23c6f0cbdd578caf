"""``featlab extract``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from featlab.cli._common import device_option, precision_option, store_option, workers_option

if TYPE_CHECKING:
    from featlab.extractors import ExtractionResult

# CheXpert's policies for its uncertain (-1) labels (datasets.md section 7).
UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")
FINDINGS = ("competition", "all")
# Names of featlab.extractors.converters.CONVERTERS, listed here so `--help` stays torch-free
# (a test keeps the two in step).
CONVERTER_NAMES = (
    "beit_hf",
    "byol",
    "cass",
    "deit",
    "dino",
    "mocov3",
    "simclr_v1",
    "simclr_v2",
    "swav",
    "vissl",
)


def _splits(_: click.Context, __: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value else None


def _dataset_options(dataset: str, data_root: Path | None, **given: str | None) -> dict[str, str]:
    """Reader options for ``load_dataset``; a usage error if DATASET does not take one of them."""
    from featlab.datasets.registry import get_dataset_info, list_datasets, parse_name

    options = {k: v for k, v in given.items() if v is not None}
    kind, sep, _ = dataset.partition(":")
    if sep and kind in ("folder", "csv"):
        if data_root is not None or options:
            flags = ", ".join(["--data-root", *(f"--{k}" for k in given)])
            raise click.UsageError(f"{kind}:PATH takes none of {flags}")
        return {}
    if not options:
        return {}
    info = get_dataset_info(parse_name(dataset)[0])
    for key in options:
        if key not in info.options:
            takers = [i.name for i in list_datasets() if key in i.options]
            raise click.UsageError(
                f"--{key} applies to {', '.join(takers) or 'no registered dataset'}; "
                f"{info.name!r} has no such option"
            )
    return options


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
@workers_option
@device_option
@precision_option
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
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder holding a registered DATASET's files [default: <datasets dir>/<folder>, "
    "datasets dir = $FEATLAB_DATA or ~/.cache/featlab/datasets].",
)
@click.option(
    "--uncertain",
    type=click.Choice(UNCERTAIN_POLICIES),
    default=None,
    help="How to read uncertain (-1) labels, for datasets that have them (chexpert-small): "
    "ignore (unknown), ones or zeros [default: the dataset's].",
)
@click.option(
    "--findings",
    type=click.Choice(FINDINGS),
    default=None,
    help="Which labels, for datasets that offer a choice (chexpert-small): the 5 competition "
    "findings or all 14 [default: the dataset's].",
)
@click.option(
    "--converter",
    type=click.Choice(CONVERTER_NAMES),
    default=None,
    help="Layout of the --weights file when it is an official checkpoint (dino: backbone-only "
    "or full with teacher; swav; vissl; mocov3; simclr_v1/v2; byol; beit_hf; deit; cass).",
)
@click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow unpickling a whole-module checkpoint (official CASS files). Unpickling can run "
    "code: only for files you trust.",
)
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
    data_root: Path | None,
    uncertain: str | None,
    findings: str | None,
    converter: str | None,
    trust_checkpoint: bool,
) -> None:
    """Extract embeddings of DATASET into the store.

    DATASET is a registered name (`featlab datasets` lists them; MedMNIST as NAME@size),
    folder:PATH or csv:PATH.

    Rerunning the same command resumes an interrupted run, or reuses a complete one.
    """
    from featlab.datasets import load_dataset
    from featlab.extractors import extract
    from featlab.store import default_store_path

    if name and len(models) > 1:
        raise click.UsageError("--name applies to one --model only")
    if weights is not None and random_init:
        raise click.UsageError("--weights and --random-init exclude each other")
    if (converter or trust_checkpoint) and weights is None:
        raise click.UsageError("--converter and --trust-checkpoint apply to a --weights file")
    options = _dataset_options(dataset, data_root, uncertain=uncertain, findings=findings)
    table = load_dataset(dataset, data_root=data_root, **options)
    store = store_path or default_store_path()
    for base, views in _group_views(models).items():
        results = extract(
            base,
            table,
            store,
            name=name,
            views=views,
            splits=splits,
            batch_size=batch_size,
            workers=workers,
            device=device,
            precision=precision,
            weights=weights,
            converter=converter,
            trust_checkpoint=trust_checkpoint,
            random_init=random_init,
            img_size=img_size,
            limit=limit,
            overwrite=overwrite,
            skip_bad=skip_bad,
            seed=seed,
        )
        for r in results if isinstance(results, list) else [results]:
            _report(r, store)


def _group_views(models: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``--model`` values by backbone, so each backbone runs once for all its views."""
    from featlab.extractors.views import split_view

    grouped: dict[str, list[str]] = {}
    for model in models:
        base, view = split_view(model)
        grouped.setdefault(base, []).append(view or "default")
    return {base: tuple(dict.fromkeys(views)) for base, views in grouped.items()}


def _report(r: ExtractionResult, store: Path) -> None:
    if r.status == "reused":
        click.echo(
            f"{r.model} | {r.dataset}: already complete in {store} (reused; --overwrite to redo)"
        )
        return
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
