"""``featlab pretrain``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from featlab.cli._common import device_option, precision_option, workers_option
from featlab.cli.extract_cmd import _dataset_options, _splits

if TYPE_CHECKING:
    from featlab.extractors.pretrain_job import PretrainResult

METHODS = ("cass", "bolt", "dino")  # featlab.extractors.pretrain_job.METHODS, torch-free here


def _epoch_line(record: dict[str, Any]) -> None:
    losses = [f"{k} {record[k]:.4f}" for k in record if k.startswith("loss")]
    click.echo(
        f"epoch {record['epoch']}/{record['epochs']}  {'  '.join(losses)}  "
        f"{record['seconds']:.1f} s  {record['images_per_s']:.1f} img/s"
    )


@click.command("pretrain")
@click.argument("dataset")
@click.option("--method", type=click.Choice(METHODS), required=True, help="SSL method.")
@click.option("--cnn", default=None, help="CASS: CNN arm, a timm architecture [resnet50].")
@click.option(
    "--vit", default=None, help="CASS: Transformer arm, a timm ViT [vit_base_patch16_384]."
)
@click.option(
    "--arch",
    default=None,
    help="BOLT: a timm ViT [vit_base_patch16_224]; DINO: a timm model [deit_small_patch16_224].",
)
@click.option(
    "--img-size",
    type=click.IntRange(min=8),
    default=None,
    help="Square training input size, also the arms' extraction size [cass 384, else 224].",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="[cass 100, bolt 100, dino 300]."
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="[cass 16, bolt 64, dino 256]."
)
@click.option(
    "--init",
    default="imagenet",
    show_default=True,
    help="imagenet (timm's published weights), random (seeded), or a checkpoint: a file or "
    "NAME@RUN_DIR (CASS: two, CNN,VIT).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Run folder [runs/<method>-<dataset>]; rerun the same command to resume it.",
)
@click.option(
    "--split",
    "splits",
    callback=_splits,
    default=None,
    help="Comma-separated splits to train on (train,val,test,unlabeled) [default: all but "
    "test, which probes score on].",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the first N selected images (for a quick try).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Learning rate [cass: Adam 1e-3; bolt: 1.5e-4 and dino: 1e-4 per 256 images].",
)
@click.option(
    "--no-difficulty",
    is_flag=True,
    help="BOLT: drop the difficulty-ranking loss (the paper's ablation).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@precision_option
@workers_option
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder holding a registered DATASET's files.",
)
def pretrain_cmd(
    dataset: str,
    method: str,
    cnn: str | None,
    vit: str | None,
    arch: str | None,
    img_size: int | None,
    epochs: int | None,
    batch_size: int | None,
    init: str,
    out: Path | None,
    splits: tuple[str, ...] | None,
    limit: int | None,
    lr: float | None,
    no_difficulty: bool,
    seed: int,
    device: str,
    precision: str,
    workers: int | None,
    data_root: Path | None,
) -> None:
    """Self-supervise backbones on DATASET's images (labels are not used).

    DATASET is a registered name, folder:PATH or csv:PATH. A checkpoint is written every
    epoch; rerunning the same command resumes after a kill. The arms extract by name:
    featlab extract --model cass-resnet50@runs/NAME DATASET.
    """
    from featlab.datasets import load_dataset
    from featlab.extractors.pretrain_job import pretrain

    if method == "cass" and arch is not None:
        raise click.UsageError("CASS trains a --cnn and a --vit; --arch is for bolt and dino")
    if method != "cass" and (cnn is not None or vit is not None):
        raise click.UsageError(f"{method} trains one --arch; --cnn/--vit are for cass")
    if no_difficulty and method != "bolt":
        raise click.UsageError("--no-difficulty applies to --method bolt")
    table = load_dataset(dataset, data_root=data_root, **_dataset_options(dataset, data_root))
    result = pretrain(
        method,
        table,
        cnn=cnn,
        vit=vit,
        arch=arch,
        img_size=img_size,
        epochs=epochs,
        batch_size=batch_size,
        init=init,
        out=out,
        splits=splits,
        limit=limit,
        lr=lr,
        difficulty=not no_difficulty,
        seed=seed,
        device=device,
        precision=precision,
        workers=workers,
        on_epoch=_epoch_line,
    )
    _report(result)


def _report(r: PretrainResult) -> None:
    done = {"complete": "already complete", "resumed": f"resumed at epoch {r.start_epoch}"}
    click.echo(
        f"{r.method} | {r.dataset}: {done.get(r.status, 'trained')}, {r.epochs_done}/{r.epochs} "
        f"epochs on {r.n_images} images, {r.seconds:.1f} s, {r.images_per_s:.1f} img/s "
        f"({r.device}, {r.precision}, {r.kernels}) -> {r.run_dir}"
    )
    for m in r.models:
        click.echo(
            f"  {m['role']}: {m['name']} ({m['architecture']}) {r.run_dir}/{m['file']}; "
            f"extract with --model {m['name']}@{r.run_dir}"
        )
