"""Neighbour queries by id, vector and image against numpy brute-force cosine.

A tiny random-init ViT over 24 seeded 32x32 PNGs whose embeddings are well apart (the largest
cosine between two different images is about 0.89), so "an image finds itself first" is a real
check. Stores are extracted once per module; tests that change a store work on a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featlab
from featlab.datasets import read_image_folder
from featlab.datasets.table import SampleTable
from featlab.errors import InvalidArgumentError, UnknownModelError, WeightsError
from featlab.eval.neighbors import COLUMNS, label_names, search
from featlab.extractors import extract
from featlab.extractors.query import embed_images, stored_spec, stored_view
from featlab.store import _index

MODEL, CLS4, FP32 = "timm:test_vit", "timm:test_vit:cls4", "vit-fp32"
DATASET = "folder-imgs"
KW = {"random_init": True, "img_size": 32, "workers": 0, "progress": False, "seed": 1}


def write_images(root: Path, seed: int = 0) -> Path:
    """train/test x 2 classes x 6 PNGs: random 4x4 colour fields upsampled to 32x32."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                img = Image.fromarray(small).resize((32, 32), Image.BILINEAR)
                img.save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return read_image_folder(write_images(tmp_path_factory.mktemp("nb") / "imgs"))


@pytest.fixture(scope="module")
def store_path(table, tmp_path_factory) -> Path:
    """MODEL and CLS4 in the default precision (bf16 on AMX CPUs), FP32 in fp32."""
    path = tmp_path_factory.mktemp("nbs") / "s.zarr"
    extract(MODEL, table, path, views=("default", "cls4"), **KW)
    extract(MODEL, table, path, name=FP32, precision="fp32", **KW)
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    _index.clear_index_cache()
    yield
    _index.clear_index_cache()


@pytest.fixture
def ds(store_path: Path):
    return featlab.open_store(store_path)[DATASET]


@pytest.fixture
def writable(store_path: Path, tmp_path: Path):
    dst = tmp_path / "copy.zarr"
    shutil.copytree(store_path, dst)
    return featlab.open_store(dst, mode="a")[DATASET]


def brute(x: np.ndarray, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(m, len(rows))`` cosine similarities of queries to ``x[rows]``."""
    xn = x[rows] / np.linalg.norm(x[rows], axis=1, keepdims=True)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)) @ xn.T


def assert_neighbors(res, x, rows, q, k, exclude=None) -> None:
    """Scores equal brute force rank by rank; each returned row scores within the top k (ties
    may come back in either order)."""
    s = brute(x, rows, q).astype(np.float64)
    if exclude is not None:
        for i, r in enumerate(exclude):
            s[i, rows == r] = -np.inf
    got_rows = res.row.reshape(len(q), k)
    got_scores = res.score.reshape(len(q), k)
    for i in range(len(q)):
        ref = np.sort(s[i])[::-1][:k]
        np.testing.assert_allclose(got_scores[i], ref, atol=1e-5)
        col = np.searchsorted(rows, got_rows[i])
        np.testing.assert_array_equal(rows[col], got_rows[i])  # only searched rows
        np.testing.assert_allclose(s[i, col], got_scores[i], atol=1e-5)
    assert res.rank.tolist() == list(range(1, k + 1)) * len(q)


# -- by id ---------------------------------------------------------------------------------------
def test_query_by_id_matches_brute_force(ds) -> None:
    x = ds.embeddings(MODEL)
    qids = ["test/a/0.png", "train/b/3.png", "test/b/5.png"]
    qrows = np.array([int(np.flatnonzero(ds.ids == i)[0]) for i in qids])
    res = ds.neighbors(MODEL, ids=qids, k=5)
    assert len(res) == 15
    assert_neighbors(res, x, np.arange(ds.n), x[qrows], 5, exclude=qrows)
    assert res.query.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert res.query_id.tolist() == [q for q in qids for _ in range(5)]
    # Everything else comes from the store, row by row.
    assert res.id.tolist() == ds.ids[res.row].tolist()
    assert res.split.tolist() == ds.splits[res.row].tolist()
    assert res.source.tolist() == ds.sources[res.row].tolist()
    assert res.label.tolist() == [ds.classes[y] for y in ds.labels[res.row]]
    assert res.index["type"] == "flat"
    assert res.index["n"] == ds.n


def test_exclude_self(ds) -> None:
    x = ds.embeddings(MODEL)
    row = int(np.flatnonzero(ds.ids == "train/a/2.png")[0])
    without = ds.neighbors(MODEL, ids="train/a/2.png", k=4)
    assert row not in without.row
    with_self = ds.neighbors(MODEL, ids="train/a/2.png", k=4, exclude_self=False)
    assert with_self.row[0] == row
    assert with_self.score[0] == pytest.approx(1.0, abs=1e-5)
    assert with_self.row[1:].tolist() == without.row[:3].tolist()
    assert_neighbors(without, x, np.arange(ds.n), x[[row]], 4, exclude=[row])
    # All other samples can be asked for, not one more.
    assert len(ds.neighbors(MODEL, ids="train/a/2.png", k=ds.n - 1)) == ds.n - 1
    with pytest.raises(InvalidArgumentError, match=r"k=24 but only 23 samples.*itself excluded"):
        ds.neighbors(MODEL, ids="train/a/2.png", k=ds.n)


def test_split_filter(ds) -> None:
    x = ds.embeddings(MODEL)
    train = np.flatnonzero(ds.splits == "train")
    qrow = int(np.flatnonzero(ds.ids == "test/b/1.png")[0])
    res = ds.neighbors(MODEL, ids="test/b/1.png", k=6, split="train")
    assert set(res.split.tolist()) == {"train"}
    assert res.searched_split == "train"
    assert res.index["key"] == "timm~test_vit@train"
    assert_neighbors(res, x, train, x[[qrow]], 6)
    with pytest.raises(InvalidArgumentError, match="has no split 'valid'"):
        ds.neighbors(MODEL, ids="test/b/1.png", split="valid")


# -- by vector ---------------------------------------------------------------------------------
def test_query_by_vector(ds) -> None:
    x = ds.embeddings(MODEL)
    q = np.random.default_rng(0).standard_normal((4, x.shape[1])).astype(np.float32)
    res = ds.neighbors(MODEL, vectors=q, k=7)
    assert_neighbors(res, x, np.arange(ds.n), q, 7)
    assert res.query_id.tolist()[::7] == [f"vector[{i}]" for i in range(4)]
    one = ds.neighbors(MODEL, vectors=q[1], k=7)  # a single (d,) vector
    np.testing.assert_array_equal(one.row, res.row[7:14])
    # A stored vector finds its own sample first (vectors are never excluded).
    own = ds.neighbors(MODEL, vectors=x[[5]] * 3.0, k=1)
    assert own.row.tolist() == [5]


def test_vector_errors(ds) -> None:
    d = ds.dim(MODEL)
    with pytest.raises(InvalidArgumentError, match=f"have 3 features, but .* have {d}"):
        ds.neighbors(MODEL, vectors=np.ones((2, 3)))
    with pytest.raises(InvalidArgumentError, match="query vector 1 has non-finite"):
        ds.neighbors(MODEL, vectors=np.stack([np.ones(d), np.full(d, np.nan)]))
    with pytest.raises(InvalidArgumentError, match="query vector 0 has only zeros"):
        ds.neighbors(MODEL, vectors=np.zeros(d))
    with pytest.raises(InvalidArgumentError, match="numeric"):
        ds.neighbors(MODEL, vectors=[["a"] * d])


def test_query_errors(ds) -> None:
    with pytest.raises(InvalidArgumentError, match=r"'test/a/7.png' is not in dataset .*test/a/"):
        ds.neighbors(MODEL, ids=["test/a/1.png", "test/a/7.png"])
    with pytest.raises(InvalidArgumentError, match="exactly one of ids=, vectors= or images="):
        ds.neighbors(MODEL)
    with pytest.raises(InvalidArgumentError, match="got ids and vectors"):
        ds.neighbors(MODEL, ids="test/a/1.png", vectors=np.ones(64))
    with pytest.raises(InvalidArgumentError, match="k must be a positive int"):
        ds.neighbors(MODEL, ids="test/a/1.png", k=0)
    with pytest.raises(InvalidArgumentError, match="nprobe applies to index='ivf'"):
        ds.neighbors(MODEL, ids="test/a/1.png", nprobe=4)
    with pytest.raises(InvalidArgumentError, match="index must be one of"):
        ds.neighbors(MODEL, ids="test/a/1.png", index="hnsw")
    with pytest.raises(UnknownModelError, match="Did you mean"):
        ds.neighbors("timm:test_vitt", ids="test/a/1.png")
    with pytest.raises(InvalidArgumentError, match="ids is empty"):
        ds.neighbors(MODEL, ids=[])


def test_ivf_index_on_a_tiny_store_is_exact(ds) -> None:
    """With one list (24 rows -> nlist 1) IVF visits everything: same answer as flat."""
    flat = ds.neighbors(MODEL, ids=["test/a/3.png"], k=5)
    ivf = ds.neighbors(MODEL, ids=["test/a/3.png"], k=5, index="ivf")
    assert ivf.index["type"] == "ivf"
    assert ivf.index["nlist"] == 1
    np.testing.assert_allclose(ivf.score, flat.score, atol=1e-6)


# -- by image ----------------------------------------------------------------------------------
def test_query_by_image_finds_itself(ds) -> None:
    """One file of the dataset, embedded alone (bf16 where the CPU has it), is its own top-1."""
    for qid in ("train/a/1.png", "test/b/4.png"):
        row = int(np.flatnonzero(ds.ids == qid)[0])
        res = ds.neighbors(MODEL, images=str(ds.sources[row]), k=3)
        assert res.row[0] == row
        assert res.score[0] > 0.99
        assert res.score[1] < 0.95  # the next one is clearly another image
        assert res.query_id[0] == str(ds.sources[row])


def test_image_view_entry(ds) -> None:
    """A view entry (``:cls4``) embeds with its view: 4 x 64-d CLS tokens."""
    row = 7
    res = ds.neighbors(CLS4, images=[Image.open(ds.sources[row])], k=2)
    assert ds.dim(CLS4) == 256
    assert res.row[0] == row
    assert res.score[0] > 0.99
    assert res.query_id[0] == "image[0]"
    for model, view in ((CLS4, "cls4"), (MODEL, "default")):
        assert stored_view(ds.model_attrs(model), stored_spec(ds, model)) == view


def test_image_embeddings_equal_the_stored_ones_in_fp32(ds) -> None:
    """Same decoding, transform and normalisation as the engine: fp32 vectors agree closely."""
    got = embed_images(ds, FP32, list(ds.sources), batch_size=5)
    np.testing.assert_allclose(got, ds.embeddings(FP32), rtol=1e-4, atol=1e-5)


def test_image_formats_convert_like_extraction(ds, tmp_path: Path) -> None:
    rgb = np.asarray(Image.open(ds.sources[0]))
    gray8 = rgb.mean(axis=2).astype(np.uint8)
    Image.fromarray(gray8, "L").save(tmp_path / "g8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # exact /257
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    items = [
        ds.sources[0],
        Image.fromarray(rgba, "RGBA"),
        rgb,
        tmp_path / "g8.png",
        str(tmp_path / "g16.png"),
        gray8,
    ]
    e = embed_images(ds, FP32, items)
    np.testing.assert_array_equal(e[1], e[0])  # alpha dropped
    np.testing.assert_array_equal(e[2], e[0])  # an array is the same image
    np.testing.assert_array_equal(e[4], e[3])  # 16-bit scaled by 1/257, not clipped
    np.testing.assert_array_equal(e[5], e[3])
    assert not np.allclose(e[3], e[0])


def test_image_query_errors(ds, tmp_path: Path) -> None:
    from featlab.errors import BadImageError

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.png: file is empty"):
        ds.neighbors(MODEL, images=[tmp_path / "empty.png"])
    with pytest.raises(InvalidArgumentError, match="got int"):
        ds.neighbors(MODEL, images=[3])
    with pytest.raises(InvalidArgumentError, match="random weights"):
        ds.neighbors(MODEL, images=ds.sources[0], weights=tmp_path / "w.pth")


def test_checkpoint_weights_are_verified(table, tmp_path: Path) -> None:
    """A --weights model rebuilds from its recorded file; moved or changed files are errors."""
    import timm

    torch.manual_seed(11)
    ckpt = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit", img_size=32, num_classes=0).state_dict(), ckpt)
    store = tmp_path / "w.zarr"
    extract(MODEL, table, store, weights=ckpt, precision="fp32", **{**KW, "random_init": False})
    ds = featlab.open_store(store)[table.name]
    src = str(ds.sources[3])
    assert ds.neighbors(MODEL, images=src, k=1).row.tolist() == [3]
    sha = ds.model_attrs(MODEL)["weights"]["sha256"]
    moved = tmp_path / "moved.pth"
    ckpt.rename(moved)
    with pytest.raises(WeightsError, match=f"checkpoint '{ckpt}'.*weights=PATH"):
        ds.neighbors(MODEL, images=src)
    assert ds.neighbors(MODEL, images=src, k=1, weights=moved).row.tolist() == [3]
    other = tmp_path / "other.pth"
    torch.save(timm.create_model("test_vit", img_size=32, num_classes=0).state_dict(), other)
    with pytest.raises(WeightsError, match=f"has sha256 [0-9a-f]{{64}}, but .* sha256 {sha}"):
        ds.neighbors(MODEL, images=src, weights=other)


# -- the index follows the store -----------------------------------------------------------------
def test_index_persisted_reused_and_rebuilt_after_overwrite(writable, table) -> None:
    ds = writable
    first = ds.neighbors(MODEL, ids="test/a/0.png", k=3)
    assert first.index["status"] == "built"
    created = ds._g["indexes"]["timm~test_vit"].attrs["created"]
    _index.clear_index_cache()
    again = featlab.open_store(ds.store.path, mode="a")[ds.name].neighbors(
        MODEL, ids=["test/a/0.png"] * 10, k=3
    )
    assert again.index["status"] == "loaded"
    assert ds._g["indexes"]["timm~test_vit"].attrs["created"] == created
    np.testing.assert_array_equal(again.row[:3], first.row)
    # Re-extraction with another seed: new fingerprint, index rebuilt, answers follow.
    extract(MODEL, table, ds.store.path, overwrite=True, **{**KW, "seed": 2})
    ds2 = featlab.open_store(ds.store.path, mode="a")[ds.name]
    after = ds2.neighbors(MODEL, ids="test/a/0.png", k=3)
    assert after.index["status"] == "built"
    assert after.index["fingerprint"] != first.index["fingerprint"]
    x = ds2.embeddings(MODEL)
    qrow = int(np.flatnonzero(ds2.ids == "test/a/0.png")[0])
    assert_neighbors(after, x, np.arange(ds2.n), x[[qrow]], 3, exclude=[qrow])


def test_read_only_store_answers_without_writing(ds, store_path: Path) -> None:
    res = ds.neighbors(MODEL, ids="test/a/0.png", k=2)
    assert res.index["status"] == "built, not persisted (store opened read-only)"
    assert not (store_path / ds.name / "indexes").exists()


# -- results -----------------------------------------------------------------------------------
def test_result_tables(ds) -> None:
    res = ds.neighbors(MODEL, ids=["test/a/0.png", "test/b/0.png"], k=2)
    recs = res.to_records()
    assert len(recs) == 4
    assert list(recs[0]) == list(COLUMNS)
    assert recs[2]["query_id"] == "test/b/0.png"
    assert recs[2]["rank"] == 1
    assert isinstance(recs[0]["score"], float)
    df = res.to_dataframe()
    assert list(df.columns) == list(COLUMNS)
    assert df["id"].tolist() == res.id.tolist()
    d = json.loads(json.dumps(res.to_dict()))
    assert (d["dataset"], d["model"], d["k"]) == (ds.name, MODEL, 2)
    assert d["neighbors"] == recs


def test_label_names_single_and_multilabel() -> None:
    classes = ("cat", "dog", "owl")
    assert label_names(np.array([2, -1, 0]), classes).tolist() == ["owl", "?", "cat"]
    multi = np.array([[1, 0, 1], [0, 0, 0], [0, -1, 1]], dtype=np.int8)
    assert label_names(multi, classes).tolist() == ["cat|owl", "", "owl|dog?"]


def test_multilabel_store_neighbors(tmp_path: Path) -> None:
    """No model needed: embeddings written directly, labels shown by name."""
    n, d = 6, 4
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]], dtype=np.uint8)
    table = SampleTable(
        name="ml",
        ids=[f"s{i}" for i in range(n)],
        labels=labels,
        splits=["train"] * n,
        sources=[f"f{i}.png" for i in range(n)],
        classes=("edema", "mass"),
        task="multilabel",
    )
    ds = featlab.open_store(tmp_path / "m.zarr", mode="a").add_dataset(table)
    x = np.eye(n, d, dtype=np.float32) + 0.1
    with ds.open_writer("m", dim=d, chunk_rows=8, identity={}, attrs={}) as w:
        w.write(np.arange(n), x)
    res = ds.neighbors("m", vectors=x[2], k=1, partial=True)
    assert (res.id.tolist(), res.label.tolist()) == (["s2"], ["edema|mass"])


def test_search_excludes_a_position_anywhere_in_the_list() -> None:
    import faiss

    base = np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1]], dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(2)
    index.add(base)
    q = np.array([[1, 0], [1, 0]], dtype=np.float32)
    # Query 0 drops position 1 (its 2nd best), query 1 drops nothing.
    scores, pos = search(index, q, 2, exclude=np.array([1, -1]))
    assert pos.tolist() == [[0, 2], [0, 1]]
    np.testing.assert_allclose(scores[0], [1.0, base[2, 0]], atol=1e-6)


def test_query_sample_without_usable_embedding(tmp_path: Path) -> None:
    n, d = 6, 4
    table = SampleTable(
        name="t",
        ids=[f"s{i}" for i in range(n)],
        labels=np.arange(n) % 2,
        splits=["train"] * n,
        sources=[f"f{i}.png" for i in range(n)],
        classes=("x", "y"),
        task="binary",
    )
    ds = featlab.open_store(tmp_path / "t.zarr", mode="a").add_dataset(table)
    with ds.open_writer("m", dim=d, chunk_rows=8, identity={}, attrs={}) as w:
        w.write(
            np.arange(4), np.eye(4, d, dtype=np.float32) + 0.1, bad=np.array([0, 1, 0, 0], bool)
        )
    with pytest.raises(InvalidArgumentError, match="'s1' has no usable 'm' embedding: it was unr"):
        ds.neighbors("m", ids="s1", partial=True)
    with pytest.raises(InvalidArgumentError, match="'s5' has no usable 'm' embedding: it is not"):
        ds.neighbors("m", ids="s5", partial=True)
    res = ds.neighbors("m", ids="s0", k=2, partial=True)
    assert sorted(res.id.tolist()) == ["s2", "s3"]  # never bad s1, unwritten s4 or s5 (tied)
