"""``featlab fuse``: fit DVME on train and store its fused vectors as a derived model."""

from __future__ import annotations

from pathlib import Path

import click

from featlab.cli._common import store_option
from featlab.cli.probe_cmd import split_names


@click.command("fuse")
@click.argument("dataset")
@click.option("--model", "models", multiple=True, required=True,
              help="Models to fuse (at least 2), comma-separated or repeated.")
@click.option("--name", default=None, help="Name of the stored fused model "
              "[default: fused-dvme(a+b+...)].")
@click.option("--fit-split", default="train", show_default=True,
              help="Split DVME is trained on (val, when present, picks the epoch). The fused "
              "model is never scored on the splits it was fitted on.")
@click.option("--no-attention", is_flag=True, help="Without self-attention (Appendix C).")
@click.option("--token-dim", type=click.Choice(["512", "1"]), default="512", show_default=True,
              help="One 512-d token per model, or the listing's 1-d tokens.")
@click.option("--metric", default=None, help="Validation metric choosing the epoch "
              "[default: the dataset's].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of init and batches.")
@click.option("--device", default="cpu", show_default=True, help="Torch device to train on.")
@click.option("--overwrite", is_flag=True, help="Refit and replace a stored model of that name.")
@store_option
def fuse_cmd(
    dataset: str,
    models: tuple[str, ...],
    name: str | None,
    fit_split: str,
    no_attention: bool,
    token_dim: str,
    metric: str | None,
    seed: int,
    device: str,
    overwrite: bool,
    store_path: Path | None,
) -> None:
    """Train DVME over --model on DATASET's --fit-split and store the 512-d fused vector of
    every sample as a new model, with its provenance: kNN, t-SNE and neighbours then run on it
    like on any extracted model (`featlab probe --method knn --model NAME`).
    """
    from featlab.eval.protocol import ProbeConfig
    from featlab.fusion import fuse_into_store
    from featlab.store import open_store

    config = ProbeConfig(method="dvme", seed=seed, device=device, metric=metric,
                         attention=not no_attention, token_dim=1 if token_dim == "1" else None)
    store = open_store(store_path, mode="a")
    stored = fuse_into_store(store[dataset], split_names(models), name=name, config=config,
                             fit_split=fit_split, overwrite=overwrite)
    derived = store[dataset].model_attrs(stored)["derived"]
    click.echo(f"stored {stored!r} ({store[dataset].dim(stored)}-d) in {store.path}: fitted on "
               f"{derived['fit_splits']} ({derived['n_fit']} + {derived['n_val']} samples), "
               f"best epoch {derived['best_epoch']}, seed {derived['params']['seed']}")
