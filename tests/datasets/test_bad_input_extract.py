"""Bad image files end to end: extraction fails naming sample and file, or records them as bad."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import write_png_tree

import featlab
from featlab.datasets import read_image_folder, table_from_arrays
from featlab.errors import BadImageError

pytest.importorskip("timm")

MODEL = "timm:test_vit"
BAD_ID = "b/001.png"  # row 4 of a 3-class x 3-image folder
BAD_ROW = 4

# kind of damage -> text the reason must contain
DAMAGE = {
    "empty": r"file is empty \(0 bytes\)",
    "truncated": "truncated",
    "garbage": "cannot identify image file",
    "missing": "No such file",
}


def _damage(path, kind):
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"this is not a png" * 10)
    elif kind == "missing":
        path.unlink()
    else:  # pragma: no cover
        raise AssertionError(kind)


def _folder(tmp_path, kind):
    """A 9-image folder table whose image ``b/001.png`` is damaged after the table is read."""
    root = write_png_tree(tmp_path / "imgs", per_class=3, size=16)
    table = read_image_folder(root)
    assert table.ids[BAD_ROW] == BAD_ID
    _damage(root / BAD_ID, kind)
    return table, root / BAD_ID


def _extract(table, store, **kw):
    from featlab.extractors import extract

    kw.setdefault("workers", 0)
    return extract(
        MODEL,
        table,
        store,
        random_init=True,
        img_size=32,
        device="cpu",
        precision="fp32",
        progress=False,
        **kw,
    )


@pytest.mark.parametrize("kind", ["empty", "truncated", "garbage"])
def test_bad_image_fails_naming_sample_and_file(tmp_path, kind):
    table, bad_file = _folder(tmp_path, kind)
    store = tmp_path / "s.zarr"
    with pytest.raises(BadImageError) as info:
        _extract(table, store)
    msg = str(info.value)
    assert BAD_ID in msg
    assert f"(row {BAD_ROW})" in msg
    assert str(bad_file) in msg
    assert "--skip-bad" in msg
    assert re.search(DAMAGE[kind], msg), msg  # the reason is kept
    # Nothing was written: the one batch holding the bad image was not stored.
    ds = featlab.open_store(store)[table.name]
    assert MODEL not in ds.models
    if MODEL in ds.all_models():
        assert ds.n_written(MODEL) == 0
        assert not ds.bad_mask(MODEL).any()


def test_bad_image_message_quotes_the_plain_id(tmp_path):
    table, _ = _folder(tmp_path, "empty")
    with pytest.raises(BadImageError, match=rf"sample '{BAD_ID}' \(row {BAD_ROW}\) cannot be read"):
        _extract(table, tmp_path / "s.zarr")


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_skip_bad_records_and_excludes(tmp_path, kind):
    table, bad_file = _folder(tmp_path, kind)
    store = tmp_path / "s.zarr"
    result = _extract(table, store, skip_bad=True)
    assert result.complete
    assert result.n_computed == 9
    assert set(result.bad) == {BAD_ID}
    assert str(bad_file) in result.bad[BAD_ID]
    assert re.search(DAMAGE[kind], result.bad[BAD_ID])

    ds = featlab.open_store(store)[table.name]
    assert MODEL in ds.models
    expected_bad = np.zeros(9, dtype=bool)
    expected_bad[BAD_ROW] = True
    np.testing.assert_array_equal(ds.bad_mask(MODEL), expected_bad)
    assert ds.written_mask(MODEL).all()
    attrs = ds.model_attrs(MODEL)
    assert attrs["n_bad"] == 1
    assert set(attrs["bad_samples"]) == {BAD_ID}

    split = str(table.splits[BAD_ROW])
    in_split = table.splits == split
    x, y = ds.xy(MODEL, split)
    assert x.shape == (int(in_split.sum()) - 1, result.dim)
    keep = in_split & ~expected_bad
    np.testing.assert_array_equal(y, table.labels[keep])
    assert np.isfinite(x).all()
    x_all, y_all = ds.xy(MODEL)
    assert x_all.shape[0] == 8
    np.testing.assert_array_equal(y_all, np.delete(table.labels, BAD_ROW))
    # Other splits are untouched by the bad sample.
    for other in {"train", "val", "test"} - {split}:
        if (table.splits == other).any():
            assert ds.xy(MODEL, other)[0].shape[0] == int((table.splits == other).sum())


def test_failed_batch_not_written_then_skip_bad_resumes(tmp_path):
    table, _ = _folder(tmp_path, "truncated")
    store = tmp_path / "s.zarr"
    with pytest.raises(BadImageError, match=BAD_ID.replace(".", r"\.")):
        _extract(table, store, batch_size=2)
    ds = featlab.open_store(store)[table.name]
    written = ds.written_mask(MODEL)
    k = int(written.sum())
    # Batches before the bad one are kept (at least rows 0-1), the failing batch and everything
    # after it are not: the written rows are a prefix that stops before the bad row.
    assert 2 <= k <= BAD_ROW
    np.testing.assert_array_equal(written, np.arange(9) < k)
    assert not ds.bad_mask(MODEL).any()

    resumed = _extract(table, store, batch_size=2, skip_bad=True)
    assert resumed.status == "resumed"
    assert resumed.complete
    assert resumed.n_computed == 9 - k
    assert set(resumed.bad) == {BAD_ID}
    ds = featlab.open_store(store)[table.name]
    assert ds.written_mask(MODEL).all()
    assert np.flatnonzero(ds.bad_mask(MODEL)).tolist() == [BAD_ROW]

    # Same embeddings as an uninterrupted run.
    fresh = tmp_path / "fresh.zarr"
    _extract(table, fresh, batch_size=2, skip_bad=True)
    a = featlab.open_store(store)[table.name].embeddings(MODEL)
    b = featlab.open_store(fresh)[table.name].embeddings(MODEL)
    np.testing.assert_array_equal(a, b)


def test_uint16_arrays_extract_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, (6, 8, 8), dtype=np.uint16)
    table = table_from_arrays(images, np.arange(6) % 2, name="g16")
    result = _extract(table, tmp_path / "s.zarr")
    assert result.complete
    assert result.bad == {}
    x, y = featlab.open_store(tmp_path / "s.zarr")["g16"].xy(MODEL)
    np.testing.assert_array_equal(y, np.arange(6) % 2)
    assert x.shape == (6, result.dim)
    assert np.isfinite(x).all()
