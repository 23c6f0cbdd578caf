"""The evaluation protocol on synthetic stores: scores, pairing, leakage, saving, comparing."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.errors import InvalidArgumentError, UnknownRunError
from featlab.eval.compare import compare_runs
from featlab.eval.lowshot import parse_sizes
from featlab.eval.protocol import ProbeConfig, plan_for, run_probe
from featlab.eval.results import latest_run, list_runs, load_run, save_run
from featlab.store import open_store


def _knn(**kw) -> ProbeConfig:
    return ProbeConfig(method="knn", ks=(5, 20), **kw)


def test_knn_separable_near_perfect_and_noise_near_chance(synthetic_store):
    ds = open_store(synthetic_store(), mode="r")["toy"]
    good = run_probe(ds, "good", _knn(folds=1))
    noise = run_probe(ds, "noise", _knn(folds=1))
    assert good.metric == "accuracy"
    assert good.summary_for("k=20")[0].mean > 0.95
    assert abs(noise.summary_for("k=20")[0].mean - 1 / 3) < 0.12


def test_knn_run_matches_sklearn_on_the_same_rows(synthetic_store):
    from sklearn.neighbors import KNeighborsClassifier

    ds = open_store(synthetic_store(models={"m": 0.7}), mode="r")["toy"]
    run = run_probe(ds, "m", ProbeConfig(ks=(15,), vote="majority", sizes=parse_sizes("60"),
                                         folds=2, seed=3))
    x, y = ds.embeddings("m"), ds.labels
    for fold in (0, 1):
        train = run.train_rows[f"60/{fold}"]
        ref = KNeighborsClassifier(n_neighbors=15, metric="cosine").fit(x[train], y[train])
        np.testing.assert_allclose(
            run.test_scores[f"k=15 majority|60/{fold}"], ref.predict_proba(x[run.test_rows]),
            atol=1e-6,
        )
        acc = next(f for f in run.folds if f.fold == fold).metrics["accuracy"]
        assert acc == pytest.approx(ref.score(x[run.test_rows], y[run.test_rows]))


def test_folds_identical_across_models_and_methods_and_never_leak(synthetic_store):
    ds = open_store(synthetic_store(), mode="r")["toy"]
    config = _knn(sizes=parse_sizes("30,all"), folds=3, seed=5)
    a, b = run_probe(ds, "good", config), run_probe(ds, "noise", config)
    c = run_probe(ds, "good", ProbeConfig(method="logreg", sizes=config.sizes, folds=3, seed=5))
    assert a.plan["fingerprint"] == b.plan["fingerprint"] == c.plan["fingerprint"]
    for key, rows in a.train_rows.items():
        np.testing.assert_array_equal(rows, b.train_rows[key])
        np.testing.assert_array_equal(rows, c.train_rows[key])
        assert not np.isin(rows, np.concatenate([a.test_rows, a.val_rows])).any()
        assert set(ds.splits[rows]) == {"train"}
    assert set(ds.splits[a.test_rows]) == {"test"}
    assert set(ds.splits[a.val_rows]) == {"val"}


def test_identical_training_sets_are_evaluated_once(synthetic_store):
    ds = open_store(synthetic_store(), mode="r")["toy"]
    run = run_probe(ds, "good", _knn(folds=3))
    infos = [f.info for f in run.folds if f.variant == "k=5"]
    assert "same_rows_as" not in infos[0]
    assert [i.get("same_rows_as") for i in infos[1:]] == ["all/0", "all/0"]
    assert run.summary_for("k=5")[0].std == 0.0


def test_bad_rows_are_excluded(synthetic_store, embedding_writer):
    synthetic_embeddings, write_embeddings = embedding_writer
    ds = open_store(synthetic_store(models={"a": 2.0}), mode="a")["toy"]
    bad = np.zeros(ds.n, bool)
    bad[np.flatnonzero(ds.splits == "test")[:4]] = True
    bad[np.flatnonzero(ds.splits == "train")[:4]] = True
    write_embeddings(ds, "b", synthetic_embeddings(ds.labels, 16, 2.0, 9), bad=bad)
    run = run_probe(ds, "b", _knn(folds=1))
    assert len(run.test_rows) == (ds.splits == "test").sum() - 4
    assert not bad[run.test_rows].any()
    assert not bad[run.train_rows["all/0"]].any()


def test_multilabel_knn_and_logreg(synthetic_store):
    ds = open_store(synthetic_store(task="multilabel", n_classes=4), mode="r")["toy"]
    assert ds.task == "multilabel"
    knn = run_probe(ds, "good", _knn(folds=1))
    assert knn.metric == "mean_auc"
    assert knn.summary_for("k=20")[0].mean > 0.9
    assert knn.test_scores["k=20|all/0"].shape == (len(knn.test_rows), 4)
    lr = run_probe(ds, "good", ProbeConfig(method="logreg", folds=1))
    assert lr.summary[0].mean > 0.9


def test_metric_must_apply(synthetic_store):
    ds = open_store(synthetic_store(), mode="r")["toy"]
    with pytest.raises(InvalidArgumentError, match="does not apply to a multiclass task"):
        run_probe(ds, "good", _knn(metric="quadratic_kappa"))
    with pytest.raises(InvalidArgumentError, match="unknown metric"):
        run_probe(ds, "good", _knn(metric="mean_auc_typo"))


def test_bootstrap_interval_brackets_the_mean(synthetic_store):
    ds = open_store(synthetic_store(models={"m": 0.8}), mode="r")["toy"]
    row = run_probe(ds, "m", _knn(folds=1, bootstrap=200)).summary_for("k=20")[0]
    assert row.ci["low"] <= row.mean <= row.ci["high"]
    assert row.ci["n_boot"] == 200
    assert row.ci["high"] - row.ci["low"] > 0


def test_save_load_round_trip(synthetic_store):
    store = open_store(synthetic_store(), mode="a")
    ds = store["toy"]
    run = run_probe(ds, "good", _knn(sizes=parse_sizes("30,all"), folds=2, seed=1))
    run_id = save_run(ds, run)
    back = load_run(open_store(store.path, mode="r"), run_id)
    assert back.to_dict() == run.to_dict()
    for key in run.train_rows:
        np.testing.assert_array_equal(back.train_rows[key], run.train_rows[key])
    for key in run.test_scores:
        np.testing.assert_array_equal(back.test_scores[key], run.test_scores[key])
    np.testing.assert_array_equal(back.test_labels, run.test_labels)
    assert [r["run_id"] for r in list_runs(store, model="good")] == [run_id]
    assert latest_run(store, "toy", "good").run_id == run_id
    with pytest.raises(UnknownRunError):
        load_run(store, "no-such-run")


def test_compare_paired_runs(synthetic_store):
    ds = open_store(synthetic_store(n_classes=2, models={"good": 1.0, "weak": 0.3}),
                    mode="r")["toy"]
    config = _knn(sizes=parse_sizes("40,all"), folds=3, seed=2)
    plan = plan_for(ds, config)
    good, weak = (run_probe(ds, m, config, plan=plan) for m in ("good", "weak"))
    rows = compare_runs(good, weak, n_boot=300, seed=0)
    assert [r.size for r in rows] == ["40", "all"]
    assert rows[0].metric == "auc"
    for r in rows:
        assert r.difference > 0
        assert r.low > 0
        assert r.p_value < 0.05
    same = compare_runs(good, good, n_boot=200)
    assert all(r.difference == 0 and r.p_value == 1 for r in same)
    delong = compare_runs(good, weak, test="delong")
    # "all" repeats one draw in every fold: DeLong runs once for it, per fold for "40".
    assert [(r.size, r.fold) for r in delong] == [("40", "0"), ("40", "1"), ("40", "2"),
                                                   ("all", "0")]
    assert all(r.p_value < 0.05 for r in delong)


def test_compare_refuses_unpaired_runs_and_pairs_shared_sizes(synthetic_store):
    ds = open_store(synthetic_store(), mode="r")["toy"]
    a = run_probe(ds, "good", _knn(sizes=parse_sizes("30,all"), folds=2, seed=1))
    b = run_probe(ds, "noise", _knn(sizes=parse_sizes("30"), folds=2, seed=2))
    with pytest.raises(InvalidArgumentError, match="different rows for size 30"):
        compare_runs(a, b)
    # Only the sizes both runs have are compared, and "all" is the same draw for any seed.
    c = run_probe(ds, "noise", _knn(sizes=parse_sizes("all"), folds=2, seed=2))
    assert [r.size for r in compare_runs(a, c, n_boot=100)] == ["all"]
    with pytest.raises(InvalidArgumentError, match="DeLong"):
        compare_runs(a, a, test="delong")  # multiclass accuracy


def test_linear_probe_through_the_protocol(synthetic_store):
    ds = open_store(synthetic_store(n=300, models={"good": 3.0, "noise": 0.0}), mode="r")["toy"]
    config = ProbeConfig(method="linear", sizes=parse_sizes("30,all"), folds=2, seed=4)
    good, noise = run_probe(ds, "good", config), run_probe(ds, "noise", config)
    by_size = {r.size: r for r in good.summary}
    assert by_size["all"].mean > 0.95
    assert abs(noise.summary_for("linear")[-1].mean - 1 / 3) < 0.15
    # The probe is seeded per fold: the two folds of "all" train the same rows differently.
    infos = [f.info for f in good.folds if f.size == "all"]
    assert all("best_epoch" in i and "same_rows_as" not in i for i in infos)
    assert 30 <= infos[0]["n_epochs"] <= 50


def test_linear_probe_learns_small_scale_features(synthetic_store, embedding_writer):
    # Random-init CNN features can have std ~1e-3: unstandardised, Adam at lr 1e-3 cannot grow
    # the weights enough in 50 epochs and the paper's probe stays at chance.
    synthetic_embeddings, write_embeddings = embedding_writer
    ds = open_store(synthetic_store(n=300, models={}), mode="a")["toy"]
    write_embeddings(ds, "tiny", synthetic_embeddings(ds.labels, 16, 3.0, 1) * 1e-3)
    config = ProbeConfig(method="linear", folds=1, seed=0)
    assert run_probe(ds, "tiny", config).summary[0].mean > 0.9
    literal = ProbeConfig(method="linear", folds=1, seed=0, standardize=False)
    assert run_probe(ds, "tiny", literal).summary[0].mean < 0.6


def test_fraction_sizes_survive_save_and_load(synthetic_store):
    store = open_store(synthetic_store(), mode="a")
    config = _knn(sizes=parse_sizes(fractions="0.007,0.1"), folds=1)
    run = run_probe(store["toy"], "good", config)
    assert load_run(store, save_run(store["toy"], run)).config == config


def test_probe_trains_when_a_draw_misses_a_class(synthetic_store):
    # 2 shots of 3 classes: the probe cannot predict the third; its val rows are left out of
    # model selection (and counted) instead of failing the run.
    ds = open_store(synthetic_store(), mode="r")["toy"]
    run = run_probe(ds, "good", ProbeConfig(method="logreg", sizes=parse_sizes("2"), folds=2))
    assert all(f.info["n_val_dropped"] > 0 for f in run.folds)
    assert run.test_scores["logreg|2/0"].shape[1] == 3


def test_sweep_named_model_skips_datasets_without_it(synthetic_store, embedding_writer):
    from featlab.datasets import SampleTable
    from featlab.errors import UnknownModelError
    from featlab.eval.sweep import evaluate_store

    store = open_store(synthetic_store(), mode="a")
    # A second dataset that cannot be planned (no test split) and has no "good" model.
    n = 40
    other = store.add_dataset(SampleTable(
        name="unlabelled", ids=[f"u{i}" for i in range(n)], labels=np.full(n, -1, np.int32),
        splits=np.array([""] * n, dtype=object), sources=[""] * n, classes=("a", "b"),
        task="binary", attrs={},
    ))
    embedding_writer[1](other, "x", np.ones((n, 4), np.float32))
    result = evaluate_store(store, _knn(folds=1), models=["good"], save=False)
    assert [(r.dataset, r.model) for r in result.runs] == [("toy", "good")]
    assert result.skipped == []
    with pytest.raises(UnknownModelError):
        evaluate_store(store, _knn(folds=1), models=["nope"], save=False)


def test_majority_vote_ignores_missing_ivf_neighbours():
    from featlab.eval.knn import knn_vote

    sims = np.array([[0.9, 0.8, -3.4e38]], np.float32)
    idx = np.array([[0, 1, -1]])
    y = np.array([1, 1, 0])
    np.testing.assert_allclose(knn_vote(sims, idx, y, k=3, vote="majority", n_classes=2),
                               [[0.0, 1.0]])
