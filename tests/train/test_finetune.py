"""Finetuning end to end on tiny models: learning, resume after a kill, the saved result, the
low-shot rows shared with the probes, and the checkpoint extracting into the store."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from featlab.errors import TrainingError
from featlab.eval.lowshot import TrainingSize
from featlab.eval.metrics import score_metric
from featlab.eval.protocol import ProbeConfig, plan_for
from featlab.eval.results import load_run
from featlab.extractors.engine import extract
from featlab.extractors.finetune_job import finetune_model
from featlab.extractors.spec import resolve_spec
from featlab.extractors.train_transforms import eval_transform
from featlab.store import open_store
from featlab.train.data import TrainImages
from featlab.train.finetune import predict
from featlab.train.runlog import read_runlog

FAST = {"model": "timm:test_resnet", "random_init": True, "img_size": 32, "precision": "fp32",
        "max_epochs": 3, "batch_size": 16}


def _finetune(table, tmp_path, out="run", **kw):
    return finetune_model(dataset=table, store=tmp_path / "st.zarr", out=tmp_path / out,
                          **{**FAST, **kw})


def test_loss_decreases_and_the_run_log_records_epochs(colours, tmp_path):
    report = _finetune(colours, tmp_path, max_epochs=4, lr=3e-3)
    log = [r for r in read_runlog(tmp_path / "run" / "log.jsonl") if r["event"] == "epoch"]
    assert [r["epoch"] for r in log] == [0, 1, 2, 3]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert {"val_accuracy", "lr", "seconds", "images_per_s"} <= set(log[0])
    assert report.status == "trained"
    assert report.epochs_run == 4


def test_killed_mid_epoch_resumes_and_finishes_the_same_schedule(colours, tmp_path):
    whole = _finetune(colours, tmp_path, out="whole")

    class Killed(Exception):
        pass

    def kill(record):
        if record["event"] == "step" and record["epoch"] == 1 and record["step"] == 1:
            raise Killed

    with pytest.raises(Killed):
        _finetune(colours, tmp_path, out="killed", callback=kill)
    resumed = _finetune(colours, tmp_path, out="killed")
    assert resumed.status == "resumed"
    a = torch.load(tmp_path / "whole" / "best.pt", weights_only=True)
    b = torch.load(tmp_path / "killed" / "best.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.test_metric == whole.test_metric
    # Once complete, the same command trains nothing more.
    assert _finetune(colours, tmp_path, out="killed").status == "complete"


def test_reloaded_best_checkpoint_reproduces_the_saved_test_metric(colours, tmp_path):
    report = _finetune(colours, tmp_path)
    store = open_store(tmp_path / "st.zarr")
    run = load_run(store, report.result_id)
    assert run.config.method == "finetune"
    assert run.folds[0].metrics["accuracy"] == pytest.approx(report.test_metric)
    spec = resolve_spec("timm:test_resnet", pretrained=False, img_size=32)
    model = timm.create_model("test_resnet", num_classes=3)
    model.load_state_dict(torch.load(tmp_path / "run" / "best.pt", weights_only=True))
    ds = store["colours"]
    test = TrainImages(colours.images, run.test_rows, eval_transform(spec), seed=0,
                       targets=ds.labels[run.test_rows])
    proba = predict(model, test, task=ds.task, batch_size=16, device="cpu", precision="fp32")
    assert score_metric("accuracy", ds.labels[run.test_rows], proba, ds.task) == pytest.approx(
        report.test_metric)


def test_training_rows_are_the_probes_low_shot_draw(colours, tmp_path):
    report = _finetune(colours, tmp_path, shots=9, fold=1, seed=3, max_epochs=1)
    ds = open_store(tmp_path / "st.zarr")["colours"]
    probe_plan = plan_for(ds, ProbeConfig(method="linear", sizes=(TrainingSize("shots", 9),),
                                          folds=5, seed=3))
    run = load_run(open_store(tmp_path / "st.zarr"), report.result_id)
    np.testing.assert_array_equal(run.train_rows["9/1"], probe_plan.folds[1].train)
    np.testing.assert_array_equal(run.test_rows, probe_plan.test)
    assert np.bincount(ds.labels[run.train_rows["9/1"]]).tolist() == [3, 3, 3]


def test_finetuned_checkpoint_extracts_into_the_store_with_its_run(colours, tmp_path):
    report = _finetune(colours, tmp_path, max_epochs=1)
    store_path = tmp_path / "st.zarr"
    extract(report.extract_name, colours, store_path, precision="fp32", workers=0)
    extract("timm:test_resnet", colours, store_path, precision="fp32", workers=0,
            weights=tmp_path / "run" / "best.pt", img_size=32, name="by-weights")
    ds = open_store(store_path)["colours"]
    run = ds.model_attrs(report.extract_name)["run"]
    assert run["kind"] == "finetune"
    assert run["result"] == report.result_id
    assert ds.model_attrs("by-weights")["run"]["run_dir"] == run["run_dir"]
    a = ds.values_at(report.extract_name, np.arange(ds.n))
    b = ds.values_at("by-weights", np.arange(ds.n))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_beit_recipe_trains_the_last_blocks_only(colours, tmp_path):
    report = _finetune(colours, tmp_path, model="timm:test_vit", recipe="beit", max_epochs=1,
                       unfreeze="last:1")
    assert 0 < report.n_trainable < report.n_total
    assert report.config["optimizer"] == "adamw"


def test_another_setting_in_the_same_folder_is_refused(colours, tmp_path):
    _finetune(colours, tmp_path, max_epochs=1)
    with pytest.raises(TrainingError, match="lr"):
        _finetune(colours, tmp_path, max_epochs=1, lr=0.5)


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
    report = _finetune(table, tmp_path, max_epochs=2)
    assert report.metric == "mean_auc"
    run = load_run(open_store(tmp_path / "st.zarr"), report.result_id)
    scores = run.test_scores[f"truong|{run.folds[0].size}/0"]
    assert scores.shape == (9, 2)
    assert ((scores >= 0) & (scores <= 1)).all()
