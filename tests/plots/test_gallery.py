"""Neighbour galleries: real thumbnails from files and array-backed datasets, placeholders."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_embeddings, write_embeddings, write_png_tree
from PIL import Image
from plot_helpers import check_png, check_svg

from featlab.datasets import load_digits_table, read_image_folder
from featlab.errors import InvalidArgumentError
from featlab.plots.gallery import dataset_image_loader, plot_neighbor_gallery
from featlab.store import open_store


@pytest.fixture(scope="module")
def folder_ds(tmp_path_factory):
    """A folder dataset (3 classes x 4 PNGs) with synthetic 8-d embeddings."""
    root = write_png_tree(tmp_path_factory.mktemp("gal") / "imgs")
    table = read_image_folder(root)
    store = open_store(root.parent / "s.zarr", mode="a")
    ds = store.add_dataset(table)
    write_embeddings(ds, "m", synthetic_embeddings(ds.labels, 8, 3.0, seed=1))
    return ds


def tile_titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_written_at_expected_size_and_not_blank(folder_ds, tmp_path, suffix):
    hits = folder_ds.neighbors("m", ids=[str(folder_ds.ids[0]), str(folder_ds.ids[5])], k=4)
    out = tmp_path / f"nn{suffix}"
    plot_neighbor_gallery(hits, dataset_image_loader(folder_ds), out=out)
    size = (1.7 * 5, 1.7 * 1.05 * 2 + 0.5)  # k + 1 columns, 2 query rows
    (check_png if suffix == ".png" else check_svg)(out, size)


def test_tiles_show_the_samples_images_with_label_score_and_id(folder_ds):
    query = str(folder_ds.ids[2])
    hits = folder_ds.neighbors("m", ids=[query], k=3)
    fig = plot_neighbor_gallery(hits, dataset_image_loader(folder_ds))
    axes = fig.axes
    assert len(axes) == 4
    assert axes[0].get_title() == f"query\n{query}"
    for ax, sid, score, label, rank in zip(
        axes[1:], hits.id, hits.score, hits.label, hits.rank, strict=True
    ):
        assert ax.get_title() == f"#{rank} {label}\n{score:.3f}\n{sid}"
    for ax, sid in zip(axes, [query, *hits.id], strict=True):
        row = int(np.flatnonzero(folder_ds.ids == sid)[0])
        with Image.open(str(folder_ds.sources[row])) as img:
            want = np.asarray(img.convert("RGB"))
        np.testing.assert_array_equal(ax.images[0].get_array(), want)
    assert "unavailable" not in fig.get_suptitle()


def test_array_backed_dataset_images_are_read_through_its_reader(tmp_path):
    table = load_digits_table()
    store = open_store(tmp_path / "d.zarr", mode="a")
    ds = store.add_dataset(table)  # sources: "sklearn.datasets.load_digits#i", not files
    write_embeddings(ds, "m", synthetic_embeddings(ds.labels, 8, 3.0, seed=2))
    hits = ds.neighbors("m", ids=["0007"], k=2)
    fig = plot_neighbor_gallery(hits, dataset_image_loader(ds))
    for ax, sid in zip(fig.axes, ["0007", *hits.id], strict=True):
        (img,) = table.images.load([int(sid)])
        np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(img))


def test_missing_images_become_placeholders_not_errors(synthetic_store, tmp_path):
    ds = open_store(synthetic_store(n=60), mode="a")["toy"]  # sources /data/i.png don't exist
    hits = ds.neighbors("good", ids=["toy/0001", "toy/0002"], k=3)
    out = tmp_path / "nn.png"
    fig = plot_neighbor_gallery(hits, dataset_image_loader(ds), out=out)
    assert all(not ax.images for ax in fig.axes)
    assert all(any(t.get_text() == "no image" for t in ax.texts) for ax in fig.axes)
    n_keys = len({"toy/0001", "toy/0002", *hits.id})
    assert f"{n_keys} of {n_keys} images unavailable, e.g. not found: /data/" in (
        fig.get_suptitle()
    )
    assert out.stat().st_size > 0
    assert tile_titles(fig)[1].startswith("#1 c")  # labels and scores still shown


def test_default_and_mapping_inputs(folder_ds):
    hits = folder_ds.neighbors("m", ids=[str(folder_ds.ids[0])], k=2)
    # No loader: the neighbours' source files are opened; the query (an id) is not a file.
    fig = plot_neighbor_gallery(hits)
    assert not fig.axes[0].images
    assert all(ax.images for ax in fig.axes[1:])
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    fig = plot_neighbor_gallery(hits, {str(folder_ds.ids[0]): red})
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), red)
    assert "2 of 3 images unavailable, e.g. no image given for this id" in fig.get_suptitle()


def test_errors(folder_ds, tmp_path):
    hits = folder_ds.neighbors("m", ids=[str(i) for i in folder_ds.ids[:2]], k=2)
    with pytest.raises(InvalidArgumentError, match=r"one image .* per id"):
        plot_neighbor_gallery(hits, lambda keys: [])
    with pytest.raises(InvalidArgumentError, match=r"\.png or \.svg"):
        plot_neighbor_gallery(hits, out=tmp_path / "nn.pdf")
    many = folder_ds.neighbors("m", vectors=np.ones((33, 8), np.float32), k=1)
    with pytest.raises(InvalidArgumentError, match="at most 32 queries"):
        plot_neighbor_gallery(many)
