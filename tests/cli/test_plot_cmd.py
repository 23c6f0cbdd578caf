"""``featlab plot lowshot | roc | confusion`` end to end on a tiny store with saved runs."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from featlab.cli.main import cli
from featlab.cli.plot_cmd import select_runs
from featlab.eval.lowshot import parse_sizes
from featlab.eval.protocol import ProbeConfig, run_probe
from featlab.eval.results import save_run
from featlab.store import open_store


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Binary toy store; runs saved in this order: good knn (all), good knn (10,all),
    weak knn (10,all), good logreg (all)."""
    from conftest import make_store

    path = make_store(tmp_path_factory.mktemp("plotcli") / "s.zarr", n=200, n_classes=2,
                      models={"good": 1.0, "weak": 0.2})  # fmt: skip
    ds = open_store(path, mode="a")["toy"]
    ids = []
    plan = [("good", "knn", "all"), ("good", "knn", "10,all"), ("weak", "knn", "10,all"),
            ("good", "logreg", "all")]
    for i, (model, method, shots) in enumerate(plan):
        config = ProbeConfig(method=method, sizes=parse_sizes(shots), folds=2, ks=(5,))
        run = run_probe(ds, model, config)
        # Ids fixed in time order: generated ids made within one second sort by their hash.
        run.run_id = f"20260101-00000{i}-{method}-{model}-test"
        ids.append(save_run(ds, run))
    return path, ids


def test_latest_run_per_model_and_method(store):
    path, ids = store
    st = open_store(path)
    picked = [r.run_id for r in select_runs(st, (), None, (), None)]
    assert sorted(picked) == sorted(ids[1:])  # the first good/knn run is superseded
    assert [r.run_id for r in select_runs(st, (), "toy", ("weak,good",), "knn")] == ids[1:3]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_lowshot(store, tmp_path, suffix):
    path, _ = store
    out = tmp_path / f"curves{suffix}"
    r = invoke("plot", "lowshot", "--method", "knn", "--out", out, "--store", path)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out)
    assert out.stat().st_size > 1000
    if suffix == ".png":
        with Image.open(out) as img:
            assert img.size == (1050, 675)


def test_roc_and_confusion_by_run_id(store, tmp_path):
    path, ids = store
    r = invoke("plot", "roc", ids[1], ids[2], "--size", "10", "--fold", "1",
               "-o", tmp_path / "roc.png", "--store", path)  # fmt: skip
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "roc.png") as img:
        assert img.size == (900, 750)
    r = invoke("plot", "confusion", ids[3], "--counts", "--variant", "logreg",
               "--out", tmp_path / "cm.svg", "--store", path)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "cm.svg").read_text().startswith("<?xml")


def test_clean_errors(store, tmp_path):
    path, ids = store
    r = invoke("plot", "roc", "--out", tmp_path / "roc.jpg", "--store", path)
    assert r.exit_code == 1
    assert "must end in .png or .svg" in r.output
    r = invoke("plot", "roc", ids[0], "--model", "good", "--out", tmp_path / "r.png",
               "--store", path)  # fmt: skip
    assert r.exit_code == 2
    assert "not both" in r.output
    r = invoke("plot", "lowshot", "--model", "absent", "--out", tmp_path / "r.png",
               "--store", path)  # fmt: skip
    assert r.exit_code == 1
    assert "no saved" in r.output
    assert "featlab probe" in r.output
    r = invoke("plot", "confusion", ids[0], "--size", "50", "--out", tmp_path / "c.png",
               "--store", path)  # fmt: skip
    assert r.exit_code == 1
    assert "no training size '50'" in r.output
    assert "Traceback" not in r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("sub", ["lowshot", "roc", "confusion"])
def test_help(sub):
    r = invoke("plot", sub, "--help")
    assert r.exit_code == 0
    assert "--out" in r.output
