"""t-SNE: determinism per seed, separation kept, stratified subsampling, the store cache, panels."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

import featlab
from featlab.errors import InvalidArgumentError
from featlab.eval import tsne as tsne_mod
from featlab.eval.tsne import (
    NO_FINDING,
    class_groups,
    group_names,
    resolve_backend,
    stratified_subsample,
    tsne_embed,
    tsne_for_model,
)
from featlab.plots._figure import DPI
from featlab.plots.tsne import class_colours, figure_size, plot_tsne_panels
from featlab.store._index import embeddings_fingerprint
from featlab.store._tsne import TSNE, tsne_key

# 300 iterations in all, one thread: a few tenths of a second for a few hundred points
FAST = {"n_iter": 50, "perplexity": 10.0, "n_jobs": 1}


def blobs(n=200, d=16, k=4, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * sep
    y = np.arange(n) % k
    return (centres[y] + rng.standard_normal((n, d)) + 3.0).astype(np.float32), y


def loo_knn_accuracy(coords, y, k=5):
    """Leave-one-out majority-vote kNN accuracy in the 2-D map (plain numpy reference)."""
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    votes = np.array([np.bincount(y[row], minlength=y.max() + 1).argmax() for row in nn])
    return float((votes == y).mean())


# -- the array core ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_same_seed_gives_identical_coords(backend):
    x, _ = blobs()
    kwargs = {**FAST, "n_jobs": 2}
    a = tsne_embed(x, seed=7, backend=backend, **kwargs)
    b = tsne_embed(x, seed=7, backend=backend, **kwargs)
    assert a.coords.shape == (200, 2)
    assert a.coords.dtype == np.float32
    assert np.array_equal(a.coords, b.coords)  # bit-identical, two threads
    assert (a.backend, a.seed, a.perplexity, a.n_iter, a.fallback) == (backend, 7, 10.0, 50, None)
    if backend == "opentsne":  # its PCA initialisation is seeded; scikit-learn's exact PCA
        # of a small input is not random at all, so there the seed changes nothing here
        c = tsne_embed(x, seed=8, backend=backend, **kwargs)
        assert not np.allclose(a.coords, c.coords)


def test_separated_clusters_stay_separated():
    x, y = blobs(n=240, k=4, seed=1)
    res = tsne_embed(x, seed=0, **FAST)
    assert res.backend == "opentsne"  # installed here, so "auto" picks it
    assert loo_knn_accuracy(res.coords, y) >= 0.98
    # and a structureless input gives a chance-level map (the check can fail)
    noise = np.random.default_rng(2).standard_normal((240, 16)).astype(np.float32)
    assert loo_knn_accuracy(tsne_embed(noise, seed=0, **FAST).coords, y) < 0.5


def test_auto_falls_back_to_sklearn_and_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # import openTSNE now fails
    library, note = resolve_backend("auto")
    assert library == "sklearn"
    assert "openTSNE is not installed" in note
    with pytest.raises(InvalidArgumentError, match="pip install openTSNE"):
        resolve_backend("opentsne")
    x, _ = blobs(n=100)
    res = tsne_embed(x, seed=0, **FAST)
    assert res.backend == "sklearn"
    assert "scikit-learn" in res.fallback


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.zeros((50, 4)), {"perplexity": 30.0}, "needs more than 90 points.*at most 16"),
        (np.zeros(50), {}, "2-D"),
        (np.full((100, 4), np.nan), {"perplexity": 5.0}, "non-finite.*row 0"),
        (np.zeros((100, 4)), {"perplexity": 5.0, "backend": "umap"}, "backend must be one of"),
        (np.zeros((100, 4)), {"perplexity": 5.0, "n_jobs": 0}, "n_jobs"),
    ],
)
def test_bad_inputs_are_refused(x, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        tsne_embed(x, seed=0, **kwargs)


# -- labels and subsampling --------------------------------------------------------------------
def test_stratified_subsample_keeps_shares():
    groups = np.repeat([0, 1, 2, -1], [500, 300, 190, 10])
    rng = np.random.default_rng(0)
    groups = groups[rng.permutation(len(groups))]
    pos = stratified_subsample(groups, 100, seed=3)
    assert len(pos) == 100
    assert np.all(np.diff(pos) > 0)
    assert {g: int((groups[pos] == g).sum()) for g in (0, 1, 2, -1)} == {0: 50, 1: 30, 2: 19, -1: 1}
    assert np.array_equal(pos, stratified_subsample(groups, 100, seed=3))
    assert not np.array_equal(pos, stratified_subsample(groups, 100, seed=4))
    assert np.array_equal(stratified_subsample(groups, None, seed=0), np.arange(1000))
    assert np.array_equal(stratified_subsample(groups, 5000, seed=0), np.arange(1000))


def test_stratified_subsample_largest_remainders():
    groups = np.repeat([0, 1, 2], [1, 1, 98])
    counts = np.bincount(groups[stratified_subsample(groups, 10, seed=0)], minlength=3)
    assert counts.tolist() == [0, 0, 10]  # shares 0.1, 0.1, 9.8: the one left goes to 9.8
    with pytest.raises(InvalidArgumentError, match="max_points"):
        stratified_subsample(groups, 0, seed=0)


def test_multilabel_groups_first_positive_or_no_finding():
    labels = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0], [-1, 0, 1]], dtype=np.int8)
    assert class_groups(labels).tolist() == [1, 0, 3, 2]
    assert group_names(("a", "b", "c"), labels) == ["a", "b", "c", NO_FINDING]
    assert class_groups(np.array([2, -1, 0])).tolist() == [2, -1, 0]


# -- the store wrapper and its cache -----------------------------------------------------------
def overwrite_embeddings(ds, model, values):
    identity = {"spec": {"arch": model}, "weights": {"seed": 0}, "precision": "fp32"}
    with ds.open_writer(
        model, dim=values.shape[1], chunk_rows=64, identity=identity, attrs={}, overwrite=True
    ) as w:
        w.write(np.arange(len(values)), values, None)
        w.update_attrs(complete=True)


def test_cache_hit_skips_the_computation(synthetic_store, monkeypatch):
    path = synthetic_store(n=300)
    ds = featlab.open_store(path, mode="a")["toy"]
    first = tsne_for_model(ds, "good", max_points=40, seed=1, **FAST)
    assert (first.cached, first.saved) == (False, True)
    test_rows = ds.rows("good", "test")
    assert len(first.rows) == 40
    assert np.isin(first.rows, test_rows).all()
    assert np.array_equal(first.labels, ds.labels[first.rows])

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(tsne_mod, "tsne_embed", boom)
    again = tsne_for_model(featlab.open_store(path, mode="a")["toy"], "good", max_points=40,
                           seed=1, **FAST)  # fmt: skip
    assert again.cached
    assert not again.saved
    assert np.array_equal(again.coords, first.coords)
    assert np.array_equal(again.rows, first.rows)
    assert again.coords.dtype == np.float32

    params = {"model": "good", "split": "test", "seed": 1, "max_points": 40, "perplexity": 10.0,
              "n_iter": 50, "backend": "opentsne"}  # fmt: skip
    g = featlab.open_store(path)["toy"]._g[TSNE][tsne_key(params)]
    attrs = dict(g.attrs.asdict())
    assert attrs["complete"] is True
    assert attrs["n_points"] == 40
    assert attrs["fingerprint"] == embeddings_fingerprint(ds, "good", "test")
    assert {k: attrs[k] for k in params} == params
    assert attrs["featlab_version"] == featlab.__version__
    assert attrs["created"]
    assert g["rows"].dtype == np.int64
    assert g["coords"].dtype == np.float32
    with pytest.raises(AssertionError, match="recomputed"):  # other parameters: a new record
        tsne_for_model(ds, "good", max_points=40, seed=2, **FAST)


def test_rewritten_embeddings_invalidate_the_cache(synthetic_store, embedding_writer):
    synthetic_embeddings, _ = embedding_writer
    path = synthetic_store(n=300)
    ds = featlab.open_store(path, mode="a")["toy"]
    first = tsne_for_model(ds, "good", seed=0, **FAST)
    overwrite_embeddings(ds, "good", synthetic_embeddings(ds.labels, 16, 3.0, seed=99))
    second = tsne_for_model(featlab.open_store(path, mode="a")["toy"], "good", seed=0, **FAST)
    assert not second.cached
    assert second.saved
    assert np.array_equal(second.rows, first.rows)
    assert not np.allclose(second.coords, first.coords)
    third = tsne_for_model(featlab.open_store(path, mode="a")["toy"], "good", seed=0, **FAST)
    assert third.cached
    assert np.array_equal(third.coords, second.coords)


def test_incomplete_record_is_recomputed(synthetic_store):
    path = synthetic_store(n=300)
    ds = featlab.open_store(path, mode="a")["toy"]
    first = tsne_for_model(ds, "good", seed=0, **FAST)
    (key,) = ds._g[TSNE].group_keys()
    ds._g[TSNE][key].attrs["complete"] = False  # as left by a writer killed before its attrs
    again = tsne_for_model(featlab.open_store(path, mode="a")["toy"], "good", seed=0, **FAST)
    assert not again.cached
    assert again.saved
    assert np.array_equal(again.coords, first.coords)  # same seed, same coordinates


def test_read_only_store_computes_without_writing(synthetic_store):
    path = synthetic_store(n=300)
    ds = featlab.open_store(path)["toy"]  # mode="r"
    res = tsne_for_model(ds, "good", split="all", max_points=None, seed=0, **FAST)
    assert (res.cached, res.saved) == (False, False)
    assert np.array_equal(res.rows, np.arange(300))  # every written row
    assert not (path / "toy" / TSNE).exists()
    no_cache = tsne_for_model(featlab.open_store(path, mode="a")["toy"], "good", seed=0,
                              cache=False, **FAST)  # fmt: skip
    assert not no_cache.saved
    assert not (path / "toy" / TSNE).exists()


# -- the panel figure --------------------------------------------------------------------------
def panel_pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)


def test_panels_png_size_and_content(tmp_path):
    x, y = blobs(n=120, k=3)
    coords = x[:, :2]
    names = ["normal", "tumor", "necrosis"]
    panels = [(f"model-{i}", coords + i, y) for i in range(5)]  # 4 in a row, then 1
    out = plot_tsne_panels(panels, names, tmp_path / "t.png") and tmp_path / "t.png"
    img = Image.open(out)
    w, h = figure_size(5, names)
    assert img.size == (round(w * DPI), round(h * DPI))
    assert h == pytest.approx(2 * figure_size(4, names)[1])  # wrapped to a second row
    px = panel_pixels(out)
    assert px.std() > 10  # not blank
    tab0 = np.asarray(class_colours(3)[0, :3]) * 255  # class 0's colour is drawn
    assert (np.abs(px - tab0).max(axis=2) < 8).sum() > 50


def test_panels_svg_and_errors(tmp_path):
    x, y = blobs(n=60, k=3)
    labels = np.eye(3, dtype=np.uint8)[y]
    labels[:5] = 0  # "no finding"
    plot_tsne_panels([("m", x[:, :2], labels)], ["a", "b", "c"], tmp_path / "t.svg",
                     task="multilabel")  # fmt: skip
    assert ET.parse(tmp_path / "t.svg").getroot().tag.endswith("svg")
    # matplotlib draws text as glyph paths and names each text in a comment
    assert f"<!-- {NO_FINDING} -->" in (tmp_path / "t.svg").read_text()
    with pytest.raises(InvalidArgumentError, match=r"\.png or \.svg"):
        plot_tsne_panels([("m", x[:, :2], y)], ["a", "b", "c"], tmp_path / "t.jpg")
    with pytest.raises(InvalidArgumentError, match="label 2 has no name"):
        plot_tsne_panels([("m", x[:, :2], y)], ["a", "b"])
    with pytest.raises(InvalidArgumentError, match="no panels"):
        plot_tsne_panels([], ["a"])


def test_multilabel_store_and_bad_parameters(synthetic_store, tmp_path):
    path = synthetic_store(n=300, task="multilabel", n_classes=3)
    ds = featlab.open_store(path)["toy"]
    res = tsne_for_model(ds, "good", max_points=40, seed=0, **FAST)
    assert res.labels.shape == (40, 3)
    groups_all = class_groups(ds.labels[ds.rows("good", "test")])
    assert len(groups_all) > 40  # so the subsample is a real one
    share = np.bincount(groups_all, minlength=4) * 40 / len(groups_all)
    assert np.all(np.abs(np.bincount(class_groups(res.labels), minlength=4) - share) < 1)
    plot_tsne_panels([("good", res.coords, res.labels)], ds.classes, tmp_path / "m.png",
                     task=ds.task)  # fmt: skip
    assert (tmp_path / "m.png").stat().st_size > 0
    with pytest.raises(InvalidArgumentError, match="seed must be a non-negative int"):
        tsne_for_model(ds, "good", seed=-1)
    with pytest.raises(InvalidArgumentError, match="no split 'holdout'"):
        tsne_for_model(ds, "good", split="holdout")
