"""``featlab neighbors``."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from featlab.cli._common import store_option

if TYPE_CHECKING:
    from featlab.eval.neighbors import NeighborResult

HEADER = ("query", "rank", "id", "score", "label", "split", "source")


@click.command("neighbors")
@click.argument("dataset")
@click.option(
    "--model", "-m", required=True, help="Stored model (or view) whose embeddings to use."
)
@click.option(
    "--id", "ids", multiple=True, help="A sample id of DATASET to query by; repeat for several."
)
@click.option(
    "--image",
    "images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An image file to query by (embedded with the model's stored spec and weights); "
    "repeat for several.",
)
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours."
)
@click.option(
    "--split",
    default=None,
    help="Search only this split (train, val, test, unlabeled) [default: all samples].",
)
@click.option(
    "--include-self",
    is_flag=True,
    help="Keep an --id query sample among its own neighbours (left out by default).",
)
@click.option(
    "--index",
    "index_type",
    type=click.Choice(["flat", "ivf"]),
    default="flat",
    show_default=True,
    help="flat: exact. ivf: approximate, for very large stores.",
)
@click.option(
    "--nprobe",
    type=click.IntRange(min=1),
    default=None,
    help="IVF lists visited per query [default: nlist/16].",
)
@store_option
@click.option("--device", default="auto", show_default=True, help="For --image: auto, cpu, cuda.")
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="For --image: the model's checkpoint, if it moved since extraction (same sha256).",
)
@click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="For --image: allow unpickling a whole-module checkpoint (only files you trust).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per neighbour.")
@click.option(
    "--gallery",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the query and neighbour thumbnails (label, score, id) to this .png/.svg.",
)
def neighbors_cmd(
    dataset: str,
    model: str,
    ids: tuple[str, ...],
    images: tuple[Path, ...],
    k: int,
    split: str | None,
    include_self: bool,
    index_type: str,
    nprobe: int | None,
    store_path: Path | None,
    device: str,
    weights: Path | None,
    trust_checkpoint: bool,
    as_json: bool,
    gallery: Path | None,
) -> None:
    """Nearest stored samples of DATASET to sample ids or image files, by cosine similarity of
    MODEL's embeddings (exact by default).

    An --id query leaves the sample itself out of its neighbours (--include-self keeps it).
    The search index is saved in the store when it is writable, and rebuilt only when the
    embeddings change. --gallery draws the images too (a grey tile where an image is no longer
    on disk).
    """
    from featlab.errors import StoreReadOnlyError
    from featlab.store import default_store_path, open_store

    if bool(ids) == bool(images):
        raise click.UsageError("give --id or --image (one kind, repeatable), not both or none")
    if (weights is not None or trust_checkpoint) and not images:
        raise click.UsageError("--weights and --trust-checkpoint apply to --image queries")
    if gallery is not None:
        from featlab.plots._figure import check_output_path

        check_output_path(gallery)  # before the search, not after it
    path = store_path or default_store_path()
    store = open_store(path, mode="r")
    if os.access(store.path / dataset, os.W_OK):
        # Writable: reopen so a built index is saved for the next query; else search in memory.
        with contextlib.suppress(StoreReadOnlyError):
            store = open_store(path, mode="a")
    result = store[dataset].neighbors(
        model,
        ids=list(ids) if ids else None,
        images=[str(p) for p in images] if images else None,
        k=k,
        split=split,
        exclude_self=not include_self,
        index=index_type,
        nprobe=nprobe,
        device=device,
        weights=weights,
        trust_checkpoint=trust_checkpoint,
    )
    if as_json:
        for rec in result.to_records():
            click.echo(json.dumps(rec))
    else:
        _print_table(result)
    if gallery is not None:
        from featlab.plots.gallery import dataset_image_loader, plot_neighbor_gallery

        plot_neighbor_gallery(result, dataset_image_loader(store[dataset]), out=gallery)
        click.echo(f"gallery written to {gallery}", err=True)


def _print_table(result: NeighborResult) -> None:
    rows = [
        (
            q,
            str(rank),
            sid,
            f"{score:.4f}",
            label or "-",
            split or "unlabeled",
            source,
        )
        for q, rank, sid, score, label, split, source in zip(
            result.query_id.tolist(),
            result.rank.tolist(),
            result.id.tolist(),
            result.score.tolist(),
            result.label.tolist(),
            result.split.tolist(),
            result.source.tolist(),
            strict=True,
        )
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADER)]
    right = {1, 3}  # rank and score align right

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells[:-1], widths[:-1], strict=True))
        ]
        return "  ".join([*parts, cells[-1]])

    click.echo(line(HEADER))
    for r in rows:
        click.echo(line(r))
