"""Finetuning end to end on tiny models: learning, the saved result, the low-shot rows shared
with the probes, the checkpoint extracting into the store, and the store/manifest hand-over
after a kill. (The loop's own resume and kill windows: test_resume.py.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from conftest import colour_table
from sklearn.metrics import accuracy_score, roc_auc_score

from featlab.errors import TrainingError
from featlab.eval.lowshot import TrainingSize
from featlab.eval.protocol import ProbeConfig, plan_for
from featlab.eval.results import list_runs, load_run
from featlab.extractors import finetune_job
from featlab.extractors.engine import extract
from featlab.extractors.finetune_job import finetune_model
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.train_transforms import eval_transform
from featlab.extractors.zoo import ZOO
from featlab.store import open_store
from featlab.train.data import TrainImages
from featlab.train.finetune import predict
from featlab.train.run_dir import MANIFEST, read_manifest, write_manifest
from featlab.train.runlog import read_runlog

# 9 shots x 3 classes = 27 training images: batches of 9 divide them (3 steps per epoch).
FAST = {"model": "timm:test_resnet", "random_init": True, "img_size": 32, "precision": "fp32",
        "max_epochs": 3, "batch_size": 9, "shots": 9}
SHARED = {**FAST, "fold": 1, "seed": 3, "lr": 3e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _finetune(table, tmp_path, out="run", store="st.zarr", **kw):
    return finetune_model(dataset=table, store=tmp_path / store, out=tmp_path / out,
                          **{**FAST, **kw})


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One finetune that the tests which only read its outputs share: (table, folder, report)."""
    root = tmp_path_factory.mktemp("shared")
    table = colour_table()
    done_per_epoch = []

    def progress(record):
        if record["event"] == "epoch":
            done_per_epoch.append(read_manifest(root / "run")["epochs_done"])

    report = _finetune(table, root, callback=progress, **SHARED)
    assert done_per_epoch == [1, 2, 3]  # the manifest follows the run epoch by epoch
    return table, root, report


def test_loss_decreases_and_the_run_log_records_epochs(shared):
    _, root, report = shared
    log = [r for r in read_runlog(root / "run" / "log.jsonl") if r["event"] == "epoch"]
    assert [r["epoch"] for r in log] == [0, 1, 2]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert {"val_accuracy", "val_loss", "lr", "seconds", "images_per_s"} <= set(log[0])
    assert report.status == "trained"
    assert report.epochs_run == 3
    manifest = read_manifest(root / "run")
    assert manifest["epochs_done"] == 3
    assert manifest["result_id"] == report.result_id


def test_reloaded_best_checkpoint_reproduces_the_saved_test_metric(shared):
    table, root, report = shared
    store = open_store(root / "st.zarr")
    run = load_run(store, report.result_id)
    assert run.config.method == "finetune"
    assert run.folds[0].metrics["accuracy"] == pytest.approx(report.test_metric)
    spec = resolve_spec("timm:test_resnet", pretrained=False, img_size=32)
    model = timm.create_model("test_resnet", num_classes=3)
    model.load_state_dict(torch.load(root / "run" / "best.pt", weights_only=True))
    ds = store["colours"]
    test = TrainImages(table.images, run.test_rows, eval_transform(spec), seed=0,
                       targets=ds.labels[run.test_rows])
    proba = predict(model, test, task=ds.task, batch_size=16, device="cpu", precision="fp32")
    y = ds.labels[run.test_rows]
    assert accuracy_score(y, proba.argmax(1)) == pytest.approx(report.test_metric)


def test_training_rows_are_the_probes_low_shot_draw(shared):
    _, root, report = shared
    ds = open_store(root / "st.zarr")["colours"]
    probe_plan = plan_for(ds, ProbeConfig(method="linear", sizes=(TrainingSize("shots", 9),),
                                          folds=5, seed=3))
    run = load_run(open_store(root / "st.zarr"), report.result_id)
    np.testing.assert_array_equal(run.train_rows["9/1"], probe_plan.folds[1].train)
    np.testing.assert_array_equal(run.test_rows, probe_plan.test)
    assert np.bincount(ds.labels[run.train_rows["9/1"]]).tolist() == [3, 3, 3]


def test_finetuned_checkpoint_extracts_into_the_store_with_its_run(shared, tmp_path):
    table, root, report = shared
    store_path = tmp_path / "extracted.zarr"
    extract(report.extract_name, table, store_path, precision="fp32", workers=0)
    # The file alone: the run's spec (input size included) comes from its manifest.
    extract("timm:test_resnet", table, store_path, precision="fp32", workers=0,
            weights=root / "run" / "best.pt", name="by-weights")
    ds = open_store(store_path)["colours"]
    run = ds.model_attrs(report.extract_name)["run"]
    assert run["kind"] == "finetune"
    assert run["result"] == report.result_id
    assert ds.model_attrs("by-weights")["run"]["run_dir"] == run["run_dir"]
    a = ds.values_at(report.extract_name, np.arange(ds.n))
    b = ds.values_at("by-weights", np.arange(ds.n))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_rerun_of_a_complete_run_loads_nothing(shared, monkeypatch):
    table, root, report = shared

    def refuse(*args, **kwargs):
        raise AssertionError("a complete run loaded its model")

    monkeypatch.setattr(finetune_job, "load_model", refuse)
    again = _finetune(table, root, **SHARED)
    assert again.status == "complete"
    assert again.result_id == report.result_id


def _finetune_results(store_path):
    return [r for r in list_runs(open_store(store_path)) if r["method"] == "finetune"]


def test_a_kill_between_the_store_and_the_manifest_saves_no_second_result(shared, tmp_path):
    table, root, report = shared
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copytree(root / "st.zarr", tmp_path / "st.zarr")
    manifest = read_manifest(tmp_path / "run")
    for key in ("models", "result", "report"):  # the manifest as it was before "complete"
        manifest.pop(key)
    write_manifest(tmp_path / "run", {**manifest, "status": "running"})
    again = _finetune(table, tmp_path, **SHARED)
    assert again.result_id == report.result_id
    assert [r["run_id"] for r in _finetune_results(tmp_path / "st.zarr")] == [report.result_id]
    assert read_manifest(tmp_path / "run")["status"] == "complete"


def test_a_complete_run_whose_result_the_store_lacks_saves_it_again(shared, tmp_path):
    table, root, report = shared
    shutil.copytree(root / "run", tmp_path / "run")
    again = _finetune(table, tmp_path, store="other.zarr", **SHARED)
    assert again.status == "rescored"
    assert again.result_id == report.result_id
    assert again.test_metric == report.test_metric
    assert [r["run_id"] for r in _finetune_results(tmp_path / "other.zarr")] == [report.result_id]
    assert _finetune(table, tmp_path, store="other.zarr", **SHARED).status == "complete"


def test_beit_recipe_trains_the_last_blocks_only(colours, tmp_path):
    report = _finetune(colours, tmp_path, model="timm:test_vit", recipe="beit", max_epochs=1,
                       unfreeze="last:1")
    assert 0 < report.n_trainable < report.n_total
    assert report.config["optimizer"] == "adamw"


def test_another_setting_in_the_same_folder_is_refused(shared):
    table, root, _ = shared
    with pytest.raises(TrainingError, match="lr"):
        _finetune(table, root, **{**SHARED, "lr": 0.5})


def test_the_head_sees_the_pooling_extraction_uses(colours, tmp_path, monkeypatch):
    """A ViT built with average pooling whose spec asks for the CLS token: the head must be
    trained on the CLS token, the embedding extraction stores."""
    monkeypatch.setitem(ZOO, "tiny-vit-cls", ModelSpec(
        name="tiny-vit-cls", architecture="test_vit", pretrained=False,
        model_kwargs={"img_size": 32, "global_pool": "avg"}, input_size=(3, 32, 32),
        pool="cls"))
    report = _finetune(colours, tmp_path, model="tiny-vit-cls", random_init=False,
                       img_size=None, max_epochs=1)
    entry = read_manifest(tmp_path / "run")["models"][0]
    assert entry["spec"]["pool"] == "cls"
    extract(report.extract_name, colours, tmp_path / "st.zarr", precision="fp32", workers=0)
    store = open_store(tmp_path / "st.zarr")
    run = load_run(store, report.result_id)
    embedding = torch.from_numpy(store["colours"].values_at(report.extract_name, run.test_rows))
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    head_proba = torch.softmax(embedding @ best["head.weight"].T + best["head.bias"], dim=1)
    (scores,) = run.test_scores.values()
    np.testing.assert_allclose(head_proba.numpy(), scores, rtol=1e-4, atol=1e-5)


def test_multilabel_with_unknown_labels(tmp_path):
    """Per-label targets with -1 (unknown) train, predict sigmoids and score mean AUC."""
    from featlab.datasets import SampleTable
    from featlab.datasets.images import ArrayImages

    rng = np.random.default_rng(0)
    n = 48
    labels = rng.integers(0, 2, (n, 2)).astype(np.int8)
    images = rng.integers(0, 60, (n, 16, 16, 3), dtype=np.uint8)
    images[:, :, :, 0] += (labels[:, 0] == 1).astype(np.uint8)[:, None, None] * 150
    images[:, :, :, 1] += (labels[:, 1] == 1).astype(np.uint8)[:, None, None] * 150
    labels[::7, 1] = -1
    splits = np.array(["train"] * 30 + ["val"] * 9 + ["test"] * 9)
    table = SampleTable(
        name="multi", ids=[f"{i:03d}" for i in range(n)], labels=labels, splits=splits,
        sources=[""] * n, classes=("red", "green"), task="multilabel",
        images=ArrayImages(images),
    )
    report = _finetune(table, tmp_path, max_epochs=2, shots=None, batch_size=10)
    assert report.metric == "mean_auc"
    run = load_run(open_store(tmp_path / "st.zarr"), report.result_id)
    scores = run.test_scores[f"truong|{run.folds[0].size}/0"]
    assert scores.shape == (9, 2)
    assert ((scores >= 0) & (scores <= 1)).all()
    # Mean AUC by scikit-learn over each label's known entries.
    y = labels[run.test_rows]
    aucs = [roc_auc_score(y[y[:, j] >= 0, j], scores[y[:, j] >= 0, j]) for j in range(2)
            if len(set(y[y[:, j] >= 0, j])) == 2]
    assert aucs
    assert report.test_metric == pytest.approx(float(np.mean(aucs)))
    assert run.folds[0].metrics["mean_auc"] == pytest.approx(float(np.mean(aucs)))


def test_the_manifest_records_the_request_and_resolved_pool(shared):
    _, root, _ = shared
    config = json.loads((root / "run" / MANIFEST).read_text())["config"]
    assert config["request"]["model"] == "timm:test_resnet"
    assert config["pool"] == "avg"
