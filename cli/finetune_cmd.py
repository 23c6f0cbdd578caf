"""``featlab finetune``: finetune a backbone on a low-shot fold; the checkpoint extracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from featlab.cli._common import device_option, precision_option, store_option


def _progress(record: dict[str, Any]) -> None:
    if record.get("event") != "epoch":
        return
    metric = next(k for k in record if k.startswith("val_") and k != "val_loss")
    click.echo(
        f"epoch {record['epoch'] + 1:>3}  loss {record['train_loss']:.4f}  val loss "
        f"{record['val_loss']:.4f}  {metric.removeprefix('val_')} {record[metric]:.4f}  best epoch "
        f"{record['best_epoch'] + 1}  lr {record['lr']:.1e}  {record['seconds']:.1f} s "
        f"({record['images_per_s']:.0f} img/s)",
        err=True,
    )


@click.command("finetune")
@click.argument("dataset")
@click.option("--model", "-m", required=True, help="Zoo name, timm:<arch>, or a run's "
              "checkpoint NAME@RUN_DIR (e.g. cass-resnet50@runs/cass-digits).")
@click.option("--recipe", type=click.Choice(["truong", "matsoukas", "beit", "cass"]),
              default="truong", show_default=True,
              help="Paper settings: truong (DVME B.2), matsoukas, beit (top 5 blocks), cass.")
@click.option("--shots", default=None, help="Class-balanced training size (e.g. 50), or 'all'.")
@click.option("--fraction", default=None, help="Stratified training fraction (e.g. 0.1).")
@click.option("--fold", type=int, default=0, show_default=True,
              help="Which seeded draw of that size (the probes' fold with the same --seed).")
@click.option("--unfreeze", default=None, help="all, or last:N (the last N blocks + head) "
              "[default: the recipe's].")
@click.option("--epochs", type=int, default=None, help="Maximum epochs [default: the recipe's].")
@click.option("--lr", type=float, default=None, help="Base learning rate [default: recipe's].")
@click.option("--batch-size", type=int, default=None, help="[default: the recipe's]")
@click.option("--loss", type=click.Choice(["ce", "focal"]), default=None,
              help="Cross-entropy or class-distribution-normalised focal loss.")
@click.option("--class-weights", type=click.Choice(["balanced"]), default=None,
              help="Weight cross-entropy by inverse class frequency.")
@click.option("--warmup-steps", type=int, default=None, help="Linear warm-up iterations.")
@click.option("--metric", default=None, help="Val/test metric [default: the dataset's].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: runs/finetune-<model>-<dataset>-<size>-fold<k>-...]; "
              "rerunning the same command resumes it.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Start from a local checkpoint of the architecture (a run's best.pt "
              "is read with its run's spec).")
@click.option("--random-init", is_flag=True, help="Start from seeded random weights.")
@click.option("--img-size", type=int, default=None, help="Square input size.")
@device_option
@precision_option
@click.option("--workers", type=int, default=0, show_default=True,
              help="Image loading processes.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@store_option
def finetune_cmd(dataset: str, model: str, recipe: str, shots: str | None,
                 fraction: str | None, fold: int, unfreeze: str | None, epochs: int | None,
                 lr: float | None, batch_size: int | None, loss: str | None,
                 class_weights: str | None, warmup_steps: int | None, metric: str | None,
                 seed: int, out: Path | None, weights: Path | None, random_init: bool,
                 img_size: int | None, device: str, precision: str, workers: int,
                 data_root: Path | None, as_json: bool, store_path: Path | None) -> None:
    """Finetune --model on one low-shot fold of DATASET (the same rows the probes of that
    --seed, size and --fold trained on), keep the best val checkpoint, score it on test and
    save the result in the store. The checkpoint is a model: `featlab extract --model
    MODEL@RUN_DIR DATASET`. A killed run resumes when the same command is run again.
    """
    from featlab.extractors.finetune_job import finetune_model

    report = finetune_model(
        model, dataset, store_path, recipe=recipe, shots=shots, fraction=fraction, fold=fold,
        seed=seed, out=out, metric=metric, device=device, precision=precision,
        workers=workers, weights=weights, random_init=random_init, img_size=img_size,
        data_root=data_root, callback=_progress, unfreeze=unfreeze, max_epochs=epochs, lr=lr,
        batch_size=batch_size, loss=loss, class_weights=class_weights,
        warmup_steps=warmup_steps,
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    if report.status == "complete":
        click.echo(f"{report.run_dir} was already complete; nothing trained.")
    elif report.status == "rescored":
        click.echo(f"{report.run_dir} was complete, but this store did not hold its result: "
                   "the best checkpoint was scored and saved again; nothing trained.")
    click.echo(
        f"{report.model} on {report.dataset} ({report.size} samples, fold {report.fold}, "
        f"recipe {report.recipe}): best epoch {report.best_epoch + 1} of {report.epochs_run}, "
        f"val {report.metric} {report.best_val:.4f}, test {report.metric} "
        f"{report.test_metric:.4f}\n"
        f"trained {report.n_trainable:,} of {report.n_total:,} parameters on {report.device} "
        f"({report.precision}, {report.kernels}) in {report.seconds:.1f} s\n"
        f"result {report.result_id} saved in the store; checkpoint {report.checkpoint}\n"
        f"extract it: featlab extract --model '{report.extract_name}' {report.dataset}"
    )
