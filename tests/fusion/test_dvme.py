"""DVME: shapes, attention rows, the ablation and listing variants, learning vs chance, the
protocol run beside the best single model, the derived model's provenance and its refusal."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from featlab.cli.main import cli
from featlab.errors import InvalidArgumentError
from featlab.eval.lowshot import parse_sizes
from featlab.eval.protocol import ProbeConfig, run_probe
from featlab.eval.results import load_run
from featlab.eval.sweep import evaluate_store
from featlab.fusion import dvme, fuse_into_store, run_dvme
from featlab.fusion.dvme import DVMEClassifier
from featlab.store import open_store
from featlab.store._results import run_ids

FAST = {"proj_dim": 32, "heads": 4, "min_epochs": 5, "max_epochs": 8, "lr": 3e-3}


@pytest.fixture
def small_dvme(monkeypatch):
    """The protocol's DVME at 32-d projections (the paper's 512 trains ~50x slower)."""
    monkeypatch.setattr(dvme, "PROJ_DIM", 32)
    monkeypatch.setattr(dvme, "HEADS", 4)


def _two_views(n=300, seed=0):
    """Two 'models' of 3 classes: each sees the classes in its own feature space."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(3, 6))[y] * 2 + rng.normal(size=(n, 6))
    b = rng.normal(size=(3, 10))[y] * 2 + rng.normal(size=(n, 10))
    return np.hstack([a, b]).astype(np.float32), y


@pytest.mark.parametrize("kw", [{}, {"token_dim": 1}, {"attention": False}])
def test_shapes_attention_rows_and_learning(kw):
    x, y = _two_views()
    model = DVMEClassifier((6, 10), seed=0, **FAST, **kw).fit(x[:200], y[:200])
    proba = model.predict_proba(x[200:])
    assert proba.shape == (100, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert model.transform(x[:7]).shape == (7, 32)
    assert (model.predict(x[200:]) == y[200:]).mean() > 0.9
    attention = model.mean_attention(x[200:], max_rows=60)
    if kw.get("attention") is False:
        assert attention is None
        assert model.net_.attn is None
    else:
        attention, rows = attention
        assert rows == 60  # a seeded sample of the 100
        assert attention.shape == (2, 2)
        np.testing.assert_allclose(attention.sum(axis=1), 1, atol=1e-6)
        assert (attention >= 0).all()


def test_listing_variant_uses_one_token_per_feature():
    x, y = _two_views(n=120)
    model = DVMEClassifier((6, 10), token_dim=1, **FAST).fit(x, y)
    import torch

    tokens = model.net_.tokens(torch.from_numpy(x[:3]))
    assert tuple(tokens.shape) == (3, 64, 1)  # 2 models x 32 projected features, 1-d each
    assert model.net_.attention_weights(torch.from_numpy(x[:3])).shape == (3, 64, 64)


def test_labels_independent_of_the_features_stay_near_chance():
    # Shuffled labels on clustered data map whole clusters to random classes (accuracy 0 or 1
    # per cluster); features carrying no information about the labels test chance cleanly.
    _, y = _two_views(n=600, seed=1)
    x = np.random.default_rng(2).normal(size=(600, 16)).astype(np.float32)
    accuracy = [
        (DVMEClassifier((6, 10), seed=s, **FAST).fit(x[:400], y[:400]).predict(x[400:])
         == y[400:]).mean()
        for s in range(3)
    ]
    assert abs(np.mean(accuracy) - 1 / 3) < 0.08


def test_same_seed_same_model_and_caller_rng_untouched():
    import torch

    x, y = _two_views(n=150)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    p1 = DVMEClassifier((6, 10), seed=4, **FAST).fit(x, y).predict_proba(x)
    assert torch.rand(1) == before  # dropout and init drew from a forked generator
    p2 = DVMEClassifier((6, 10), seed=4, **FAST).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(p1, p2)


def test_bad_arguments():
    x, y = _two_views(n=60)
    with pytest.raises(InvalidArgumentError, match="at least 2 models"):
        DVMEClassifier((16,), **FAST).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="add up to 15"):
        DVMEClassifier((5, 10), **FAST).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="token_dim"):
        DVMEClassifier((6, 10), token_dim=8, **FAST).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="token_dim"):
        ProbeConfig(method="dvme", token_dim=7)
    # The linear probe's schedule checks hold for DVME too.
    with pytest.raises(InvalidArgumentError, match="batch_size must be an int >= 1"):
        DVMEClassifier((6, 10), **{**FAST, "batch_size": 0}).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="must not exceed max_epochs"):
        DVMEClassifier((6, 10), **{**FAST, "min_epochs": 9}).fit(x, y)
    with pytest.raises(InvalidArgumentError, match="heads must be an int >= 1"):
        DVMEClassifier((6, 10), **{**FAST, "heads": 0}).fit(x, y)


def test_protocol_run_records_attention_and_refuses_one_model(synthetic_store, small_dvme):
    ds = open_store(synthetic_store(n=240, d=8, models={"a": 2.0, "b": 1.0}))["toy"]
    config = ProbeConfig(method="dvme", folds=2)
    run = run_dvme(ds, ["a", "b"], config)
    assert run.model == "dvme(a+b)"
    assert [r.variant for r in run.summary] == ["dvme"]
    info = run.folds[0].info
    assert info["attention_models"] == ["a", "b"]
    np.testing.assert_allclose(np.sum(info["attention"], axis=1), 1, atol=1e-5)
    assert run.summary[0].mean > 0.8  # separable classes
    assert set(run.model_identity["sources"]) == {"a", "b"}
    # The same folds as any single model's run: paired comparisons hold.
    single = run_probe(ds, "a", ProbeConfig(method="linear", folds=2))
    for key, rows in single.train_rows.items():
        np.testing.assert_array_equal(run.train_rows[key], rows)
    with pytest.raises(InvalidArgumentError, match="at least 2 models"):
        run_dvme(ds, ["a", "a"], config)
    with pytest.raises(InvalidArgumentError, match="several models"):
        run_probe(ds, "a", config)


def test_fused_model_provenance_knn_and_refusals(synthetic_store):
    path = synthetic_store(n=240, d=8, models={"a": 2.0, "b": 1.0})
    ds = open_store(path, mode="a")["toy"]
    small = DVMEClassifier(**FAST, seed=3)
    name = fuse_into_store(ds, ["a", "b"], estimator=small)
    assert name == "fused-dvme(a+b)"
    assert ds.dim(name) == 32
    assert name in ds.models
    derived = ds.model_attrs(name)["derived"]
    assert derived["sources"] == ["a", "b"]
    assert derived["fit_splits"] == ["train", "val"]
    assert derived["trained_splits"] == ["train"]
    assert derived["n_fit"] == int((ds.splits == "train").sum())
    assert derived["params"]["seed"] == 3  # the estimator's, as trained
    knn = run_probe(ds, name, ProbeConfig(method="knn", folds=1, ks=(5,)))
    assert knn.summary[0].mean > 0.8
    # Low-shot subsets of a split whose every label the features have seen: refused.
    with pytest.raises(InvalidArgumentError, match="would claim fewer labels"):
        run_probe(ds, name, ProbeConfig(method="knn", folds=1, ks=(5,),
                                        sizes=parse_sizes("30,all")))
    with pytest.raises(InvalidArgumentError, match="already has a model named"):
        fuse_into_store(ds, ["a", "b"], estimator=small)
    leaky = fuse_into_store(ds, ["a", "b"], name="fit-on-test", fit_split="test", estimator=small)
    with pytest.raises(InvalidArgumentError, match="includes the \\['test'\\] split scored"):
        run_probe(ds, leaky, ProbeConfig(method="knn", folds=1, ks=(5,)))
    # Fusing the leaky model again does not launder its fit split.
    laundered = fuse_into_store(ds, [leaky, "a"], name="laundered", estimator=small)
    assert "test" in ds.model_attrs(laundered)["derived"]["fit_splits"]
    with pytest.raises(InvalidArgumentError, match="scored here"):
        run_probe(ds, laundered, ProbeConfig(method="knn", folds=1, ks=(5,)))


def test_fuse_leaves_out_unlabelled_samples(synthetic_store):
    ds = open_store(synthetic_store(n=200, d=8, models={"a": 2.0, "b": 1.0}), mode="a")["toy"]
    train = np.flatnonzero(ds.splits == "train")
    ds.labels[train[:5]] = -1  # unknown labels, as readers record them (in the loaded copy)
    name = fuse_into_store(ds, ["a", "b"], estimator=DVMEClassifier(**FAST))
    assert ds.model_attrs(name)["derived"]["n_fit"] == len(train) - 5


def test_cli_probe_dvme_beside_best_single_and_fuse(synthetic_store, small_dvme):
    path = synthetic_store(n=200, d=8, models={"a": 2.0, "b": 0.0})
    runner = CliRunner()
    out = runner.invoke(cli, ["probe", "--method", "dvme", "--model", "a,b", "--folds", "1",
                              "--store", str(path)])
    assert out.exit_code == 0, out.output
    assert "dvme(a+b)" in out.output
    assert "vs the best single model's linear probe" in out.output
    store = open_store(path)
    runs = [load_run(store, r) for r in run_ids(store["toy"])]
    assert sorted(r.config.method for r in runs) == ["dvme", "linear", "linear"]
    fused = next(r for r in runs if r.config.method == "dvme")
    best = max((r for r in runs if r.config.method == "linear"), key=lambda r: r.summary[0].mean)
    assert fused.plan["best_single"]["all"]["model"] == best.model
    assert fused.plan["best_single"]["all"]["run_id"] == best.run_id
    assert f"({best.model}, " in out.output
    out = runner.invoke(cli, ["fuse", "toy", "--model", "a,b", "--name", "fused",
                              "--store", str(path)])
    assert out.exit_code == 0, out.output
    assert "stored 'fused' (32-d)" in out.output


def test_sweep_skips_a_dataset_without_two_models_and_baselines_share_rows(
    tmp_path, small_dvme, embedding_writer
):
    from conftest import make_store

    path = make_store(tmp_path / "s.zarr", n=200, d=8, models={"a": 2.0, "b": 1.0})
    make_store(tmp_path / "s.zarr", n=100, d=8, models={"a": 2.0}, name="aaa")
    store = open_store(path, mode="a")
    ds = store["toy"]
    synthetic, write = embedding_writer
    bad = np.zeros(ds.n, dtype=bool)
    bad[np.flatnonzero(ds.splits == "test")[:7]] = True  # b could not embed 7 test images
    write(ds, "c", synthetic(ds.labels, 8, 1.0, 9), bad=bad)
    result = evaluate_store(store, ProbeConfig(method="dvme", folds=1), models=["a", "c"],
                            save=False)
    assert [s[0] for s in result.skipped] == ["aaa"]
    scored = {run.model: len(run.test_rows) for run in result.runs}
    assert scored == {"a": scored["c"], "c": scored["c"], "dvme(a+c)": scored["c"]}
    assert scored["c"] == int((ds.splits == "test").sum()) - 7
