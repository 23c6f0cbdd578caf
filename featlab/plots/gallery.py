"""Neighbour galleries: one row per query, its thumbnail then its ``k`` neighbours', each titled
with rank, label, cosine score and id.

Images come from a loader: a callable that takes sample ids (and query ids, which are sample
ids, image paths or ``vector[i]``) and returns, per key, an image (PIL image or ``(H, W[, C])``
uint8/uint16 array) or the reason it is unavailable (a string or an exception). A tile whose
image is unavailable is drawn as a grey placeholder with the id, and the figure says how many
were missing and why, rather than failing: a store can outlive the dataset's files.
:func:`dataset_image_loader` reads a stored dataset's images by sample id.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.errors import FeatlabError, InvalidArgumentError
from featlab.plots._figure import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from featlab.eval.neighbors import NeighborResult
    from featlab.store import DatasetGroup

ImageLoader = Callable[[Sequence[str]], Sequence[Any]]
MAX_QUERIES = 32  # rows; beyond this the figure is too tall to read (split the queries)
THUMB_PX = 256  # thumbnails are downsampled to at most this side before drawing
TILE_IN = 1.7  # inches per tile


def plot_neighbor_gallery(
    result: NeighborResult,
    images: ImageLoader | Mapping[str, Any] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
) -> Figure:
    """A grid of thumbnails: per query, the query then its neighbours best first.

    Args:
        result: Neighbours from ``ds.neighbors(...)`` (:class:`NeighborResult`).
        images: A loader (see the module doc), a mapping ``{id: image}``, or ``None``: open
            the neighbours' ``source`` files and image-path queries that exist on disk.
        out: Write the figure here (``.png`` or ``.svg``).

    Returns:
        The figure: ``m`` rows x ``k + 1`` columns of ``1.7`` in tiles. Neighbour titles read
        ``#rank label``, ``score``, ``id``; unavailable images are grey placeholders.

    Raises:
        InvalidArgumentError: An empty result, more than 32 queries, or a bad ``out`` suffix.

    Examples:
        >>> hits = ds.neighbors("dino-vits8", ids=["test/00042"], k=8)
        >>> plot_neighbor_gallery(hits, dataset_image_loader(ds), out="nn.png")  # doctest: +SKIP
    """
    if len(result) == 0:
        raise InvalidArgumentError("the neighbour result is empty; nothing to draw")
    queries = np.unique(result.query)
    if len(queries) > MAX_QUERIES:
        raise InvalidArgumentError(
            f"a gallery shows at most {MAX_QUERIES} queries (one row each); got {len(queries)}: "
            "draw them in several galleries"
        )
    query_ids = [str(result.query_id[result.query == q][0]) for q in queries]
    keys = list(dict.fromkeys([*query_ids, *result.id.tolist()]))
    tiles = dict(zip(keys, _load(keys, images, result), strict=True))
    cols = int(max(np.bincount(result.query))) + 1
    fig = new_figure(TILE_IN * cols, TILE_IN * 1.05 * len(queries) + 0.5)
    grid = fig.subplots(len(queries), cols, squeeze=False)
    for r, (q, qid) in enumerate(zip(queries, query_ids, strict=True)):
        _tile(grid[r, 0], tiles[qid], f"query\n{_short(qid)}", query=True)
        hit = np.flatnonzero(result.query == q)
        for c in range(1, cols):
            ax = grid[r, c]
            if c - 1 >= len(hit):
                ax.set_axis_off()
                continue
            i = hit[c - 1]
            label = str(result.label[i]) or "-"
            title = f"#{result.rank[i]} {_short(label, 16)}\n{result.score[i]:.3f}\n"
            _tile(ax, tiles[str(result.id[i])], title + _short(str(result.id[i])))
    missing = [v for v in tiles.values() if isinstance(v, str)]
    head = f"{result.dataset} · {result.model}: {result.k} nearest (cosine)"
    if missing:
        reason = missing[0] if len(missing[0]) <= 90 else missing[0][:89] + "…"
        head += f"\n{len(missing)} of {len(tiles)} images unavailable, e.g. {reason}"
    fig.suptitle(head, fontsize="medium")
    if out is not None:
        save_figure(fig, out)
    return fig


def _load(
    keys: list[str], images: ImageLoader | Mapping[str, Any] | None, result: NeighborResult
) -> list[np.ndarray | str]:
    """Per key an RGB uint8 thumbnail array, or a one-line reason it is unavailable."""
    if images is None:
        sources = dict(zip(result.id.tolist(), result.source.tolist(), strict=True))
        raw: Sequence[Any] = [_open_file(sources.get(k, k)) for k in keys]
    elif isinstance(images, Mapping):
        raw = [images.get(k, "no image given for this id") for k in keys]
    else:
        raw = list(images(keys))
        if len(raw) != len(keys):
            raise InvalidArgumentError(
                f"the image loader returned {len(raw)} items for {len(keys)} ids; it must "
                "return one image (or reason) per id"
            )
    return [_thumbnail(x) for x in raw]


def _open_file(path: str) -> Any:
    from featlab.datasets.images import open_image_file

    if not os.path.isfile(path):
        return f"not found: {path}"
    try:
        return open_image_file(path)
    except FeatlabError as err:
        return err


def _thumbnail(x: Any) -> np.ndarray | str:
    from PIL import Image

    from featlab.datasets.images import array_to_image, to_rgb

    if x is None:
        return "no image"
    if isinstance(x, str):
        return x
    if isinstance(x, BaseException):
        return str(x).splitlines()[0] if str(x) else type(x).__name__
    try:
        img = to_rgb(x) if isinstance(x, Image.Image) else array_to_image(np.asarray(x))
    except FeatlabError as err:
        return str(err)
    img = img.copy()
    img.thumbnail((THUMB_PX, THUMB_PX))
    return np.asarray(img)


def _tile(ax: Axes, tile: np.ndarray | str, title: str, *, query: bool = False) -> None:
    if isinstance(tile, str):
        ax.set_facecolor("0.85")
        ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize=7, color="0.3",
                transform=ax.transAxes)
    else:
        # Tiny images (MedMNIST 28 px, digits) stay crisp; larger ones are smoothed.
        small = max(tile.shape[:2]) < 96
        ax.imshow(tile, interpolation="nearest" if small else "antialiased")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color("tab:blue" if query else "0.7")
        spine.set_linewidth(2.0 if query else 0.8)
    ax.set_title(title, fontsize=6.5, pad=2)


def _short(text: str, width: int = 22) -> str:
    """``text`` cut to ``width`` characters, keeping its end (ids differ at the end)."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


# -- images of a stored dataset ---------------------------------------------------------------


def dataset_image_loader(ds: DatasetGroup) -> ImageLoader:
    """A loader of ``ds``'s images by sample id, for :func:`plot_neighbor_gallery`.

    A sample whose ``source`` is a file path is opened directly (folder, csv and most
    registered datasets). Array-backed samples (``file.h5#row``, ``x.npz#train_images[i]``,
    digits) are read through the dataset's reader, re-opened once from the name and root stored
    with the dataset, after checking its ids match the store's. Keys that are not sample ids but
    image files (image queries) are opened too. Anything else comes back as a reason string.
    """
    table: list[Any] = []  # the re-read dataset table, or the reason it failed, once

    def load(keys: Sequence[str]) -> list[Any]:
        ids = ds.ids
        out: list[Any] = []
        for key in keys:
            rows = np.flatnonzero(ids == key)
            if not len(rows):
                out.append(_open_file(key) if os.path.isfile(key) else "not a sample id")
                continue
            row = int(rows[0])
            source = str(ds.sources[row])
            if os.path.isfile(source) or "#" not in source:  # a file path, present or not
                out.append(_open_file(source))
                continue
            if not table:
                table.append(_reread_table(ds))
            out.append(_table_image(table[0], row, key, source))
        return out

    return load


def _reread_table(ds: DatasetGroup) -> Any:
    """The dataset's SampleTable re-read from its files, or why that failed."""
    from featlab.datasets import load_dataset

    spec = ds.spec
    if spec.get("source") in ("folder", "csv", "arrays"):  # file paths, or memory only
        return "its image files are not on disk"
    try:
        return load_dataset(ds.name, data_root=spec.get("root"))
    except FeatlabError as err:
        return f"cannot re-open dataset {ds.name!r}: {str(err).splitlines()[0]}"


def _table_image(table: Any, row: int, key: str, source: str) -> Any:
    if isinstance(table, str):
        return f"{source}: {table}"
    if table.images is None or row >= len(table.ids) or str(table.ids[row]) != key:
        return f"{source}: the dataset on disk no longer matches the store"
    return table.images.load([row])[0]


__all__ = ["ImageLoader", "dataset_image_loader", "plot_neighbor_gallery"]
