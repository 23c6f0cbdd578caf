"""``featlab probe`` / ``results`` / ``compare`` end to end on a synthetic store."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from featlab.cli.main import cli
from featlab.eval.results import list_runs
from featlab.store import open_store


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def store(synthetic_store):
    return synthetic_store(n_classes=2, models={"good": 1.2, "weak": 0.2})


def test_probe_low_shot_table_saves_runs(store):
    r = invoke("probe", "--store", store, "--shots", "20,all", "--folds", "3", "-k", "5,20")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].split() == ["dataset", "model", "method", "metric", "20", "all"]
    rows = [line.split() for line in lines[1:5]]
    assert [(row[1], row[3]) for row in rows] == [
        ("good", "k=5"), ("good", "k=20"), ("weak", "k=5"), ("weak", "k=20")
    ]
    assert all(row[4] == "auc" and row[6] == "±" for row in rows)
    assert float(rows[1][5]) > float(rows[3][5])  # the separable model wins
    runs = list_runs(open_store(store))
    assert [(x["model"], x["method"]) for x in runs] == [("good", "knn"), ("weak", "knn")]
    assert runs[0]["plan"]["fingerprint"] == runs[1]["plan"]["fingerprint"]


def test_probe_json_carries_every_metric_per_fold_and_aggregated(store):
    r = invoke("probe", "--store", store, "--method", "logreg", "--model", "good",
               "--fractions", "0.1,1", "--folds", "2", "--json", "--no-save")
    assert r.exit_code == 0, r.output
    (rec,) = [json.loads(line) for line in r.output.splitlines()]
    assert rec["method"] == "logreg"
    assert rec["config"]["sizes"] == ["10%", "all"]
    assert len(rec["folds"]) == 4
    for fold in rec["folds"]:
        assert set(fold["metrics"]) == {"auc", "accuracy", "balanced_accuracy", "macro_f1"}
        assert "C" in fold["info"]
    for row in rec["summary"]:
        assert set(row["means"]) == set(row["stds"]) == set(rec["folds"][0]["metrics"])
    assert list_runs(open_store(store), dataset="toy") == []  # --no-save


def test_probe_csv(store):
    r = invoke("probe", "--store", store, "--model", "good", "--folds", "1", "-k", "5",
               "--csv", "--no-save")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["metric"] for row in rows} == {"auc", "accuracy", "balanced_accuracy",
                                               "macro_f1"}
    assert {(row["model"], row["variant"], row["size"]) for row in rows} == {
        ("good", "k=5", "all")
    }


def test_results_list_and_reprint(store):
    assert invoke("probe", "--store", store, "--folds", "1", "-k", "5").exit_code == 0
    r = invoke("results", "--store", store)
    assert r.exit_code == 0, r.output
    header, *rows = r.output.strip().splitlines()
    assert header.split()[:4] == ["run_id", "dataset", "model", "method"]
    run_id = rows[0].split()[0]
    r = invoke("results", "--store", store, run_id)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{run_id}  toy | good | knn")
    assert "k=5" in r.output
    assert "2 saved evaluation run(s)" in invoke("info", "--store", store).output  # good, weak
    r = invoke("results", "--store", store, "--model", "nothing")
    assert r.exit_code == 1
    assert "no saved runs" in r.output
    r = invoke("results", "--store", store, "nope")
    assert r.exit_code == 1
    assert "no saved run 'nope'" in r.output


def test_compare_by_model_names_and_run_ids(store):
    assert invoke("probe", "--store", store, "--shots", "30", "--folds", "2",
                  "-k", "10").exit_code == 0
    r = invoke("compare", "--store", store, "--dataset", "toy", "good", "weak",
               "--n-boot", "200", "--json")
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.output.splitlines()]
    assert row["size"] == "30"
    assert row["metric"] == "auc"
    assert row["difference"] > 0
    ids = [x["run_id"] for x in list_runs(open_store(store))]
    r = invoke("compare", "--store", store, *ids, "--test", "delong")
    assert r.exit_code == 0, r.output
    assert "DeLong" in r.output
    assert r.output.count("\n30 ") == 2


def test_compare_across_methods_needs_their_variants(store):
    for method in ("knn", "logreg"):
        r = invoke("probe", "--store", store, "--model", "good", "--method", method,
                   "--shots", "30", "--folds", "2", "-k", "10")
        assert r.exit_code == 0, r.output
    knn_id, logreg_id = (x["run_id"] for x in list_runs(open_store(store)))
    r = invoke("compare", "--store", store, logreg_id, knn_id, "--variant-b", "k=10",
               "--n-boot", "100", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["size"] == "30"
    r = invoke("compare", "--store", store, "--dataset", "toy", "good", "weak")
    assert r.exit_code != 0  # weak has no saved run
