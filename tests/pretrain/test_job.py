"""The pretrain job: run folders, checkpoints that extract into the store, resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from featlab.errors import InvalidArgumentError, TrainingError, WeightsError
from featlab.extractors.pretrain_job import arm_name, arm_spec, pretrain
from featlab.extractors.weights import sha256_file
from featlab.train.run_dir import read_manifest
from featlab.train.runlog import read_runlog

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"img_size": 32, "batch_size": 16, "init": "random", "precision": "fp32", "workers": 0}
CASS = {"cnn": "test_resnet", "vit": "test_vit", **TINY}
BOLT = {"arch": "test_vit", **TINY}


class Killed(Exception):
    """Stands in for a kill right after an epoch's checkpoint was written."""


def _kill_after(epoch: int):
    def hook(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Killed

    return hook


def _digits():
    from featlab.datasets import load_digits_table

    return load_digits_table()


def test_zoo_names_for_the_default_architectures() -> None:
    assert arm_name("cass", "cnn", "resnet50") == "cass-resnet50"
    assert arm_name("cass", "vit", "vit_base_patch16_384") == "cass-vitb16"
    assert arm_name("bolt", "backbone", "vit_base_patch16_224") == "bolt-vitb16"
    assert arm_name("cass", "cnn", "resnet18") == "timm:resnet18"
    assert arm_name("dino", "backbone", "deit_small_patch16_224") == "timm:deit_small_patch16_224"


def test_cass_arm_spec_is_its_training_preprocessing() -> None:
    spec = arm_spec("cass", "cass-resnet50", "resnet50", 64)
    assert spec.input_size == (3, 64, 64)
    assert (spec.crop_pct, spec.crop_mode, spec.interpolation) == (1.0, "squash", "bilinear")
    assert spec.mean == (0.485, 0.456, 0.406)
    assert spec.converter is None  # a plain timm state dict, not the pickled official layout


def test_checkpoint_extracts_into_the_store(tmp_path: Path) -> None:
    import timm

    from featlab.extractors import extract
    from featlab.store import open_store

    table = _digits()
    out = tmp_path / "run"
    result = pretrain("cass", table, epochs=1, limit=32, out=out, **CASS)
    assert result.status == "trained"
    manifest = read_manifest(out)
    assert (manifest["status"], manifest["epochs_done"]) == ("complete", 1)
    assert [m["role"] for m in manifest["models"]] == ["cnn", "vit"]
    assert manifest["timing"]["images_per_s"] > 0
    pixels = np.stack([np.asarray(im) for im in table.images.load(list(range(8)))])
    for m in manifest["models"]:
        done = extract(
            f"{m['role']}@{out}", table, tmp_path / "s.zarr", precision="fp32", limit=8, workers=0
        )
        got = open_store(tmp_path / "s.zarr")["digits"].values_at(done.model, np.arange(8))
        # Reference: the headless timm model with the saved weights, normalised by hand.
        kw = {"img_size": 32} if m["role"] == "vit" else {}
        model = timm.create_model(m["architecture"], num_classes=0, **kw)
        model.load_state_dict(torch.load(out / m["file"], weights_only=True), strict=True)
        mean, std = (torch.tensor(m["spec"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        x = torch.tensor(pixels, dtype=torch.float32).permute(0, 3, 1, 2) / 255
        with torch.no_grad():
            want = model.eval()((x - mean) / std).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_a_run_checkpoint_initialises_another_run(tmp_path: Path) -> None:
    first = pretrain("bolt", _digits(), epochs=1, limit=32, out=tmp_path / "a", **BOLT)
    second = pretrain(
        "bolt",
        _digits(),
        epochs=1,
        limit=32,
        out=tmp_path / "b",
        lr=0.0,
        **{**BOLT, "init": f"backbone@{tmp_path / 'a'}"},
    )
    # lr 0 keeps the initial weights: the second run's arm is byte for byte the first's.
    assert second.models[0]["sha256"] == first.models[0]["sha256"]
    assert read_manifest(tmp_path / "b")["init_sources"]["backbone"]["source"] == "file"


@pytest.mark.parametrize(("method", "kwargs"), [("cass", CASS), ("bolt", BOLT)])
def test_resume_after_a_kill_matches_an_uninterrupted_run(
    tmp_path: Path, method: str, kwargs: dict
) -> None:
    table = _digits()
    straight = pretrain(method, table, epochs=2, limit=32, out=tmp_path / "a", **kwargs)
    with pytest.raises(Killed):
        pretrain(
            method, table, epochs=2, limit=32, out=tmp_path / "b", on_epoch=_kill_after(1), **kwargs
        )
    assert read_manifest(tmp_path / "b")["epochs_done"] == 1
    resumed = pretrain(method, table, epochs=2, limit=32, out=tmp_path / "b", **kwargs)
    assert (resumed.status, resumed.start_epoch, resumed.epochs_done) == ("resumed", 1, 2)
    assert [m["sha256"] for m in resumed.models] == [m["sha256"] for m in straight.models]
    assert [r["epoch"] for r in read_runlog(tmp_path / "b" / "runlog.jsonl")] == [1, 2]


def test_kill_in_the_middle_of_an_epoch_redoes_that_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featlab.pretrain.cass import CASSTrainer

    table = _digits()
    straight = pretrain("cass", table, epochs=2, limit=32, out=tmp_path / "a", **CASS)
    step = CASSTrainer.train_step

    def dies_at_step_3(self, images, *, epoch, **kw):
        if kw["step"] == 3:  # second step of epoch 2 (two steps per epoch)
            raise Killed
        return step(self, images, epoch=epoch, **kw)

    monkeypatch.setattr(CASSTrainer, "train_step", dies_at_step_3)
    with pytest.raises(Killed):
        pretrain("cass", table, epochs=2, limit=32, out=tmp_path / "b", **CASS)
    monkeypatch.setattr(CASSTrainer, "train_step", step)
    resumed = pretrain("cass", table, epochs=2, limit=32, out=tmp_path / "b", **CASS)
    assert resumed.start_epoch == 1
    assert [m["sha256"] for m in resumed.models] == [m["sha256"] for m in straight.models]


def test_rerun_of_a_finished_run_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featlab.extractors.pretrain_job as job

    table = _digits()
    first = pretrain("bolt", table, epochs=1, limit=32, out=tmp_path / "r", **BOLT)
    build = job._models

    def no_networks(*args, **kwargs):
        raise AssertionError("a finished run was answered by building its networks")

    monkeypatch.setattr(job, "_models", no_networks)
    again = pretrain("bolt", table, epochs=1, limit=32, out=tmp_path / "r", **BOLT)
    assert (again.status, again.models) == ("complete", first.models)
    assert again.seconds == pytest.approx(first.seconds)
    # A deleted arm is written again from last.pt (this path builds the networks).
    monkeypatch.setattr(job, "_models", build)
    (tmp_path / "r" / "backbone.pt").unlink()
    restored = pretrain("bolt", table, epochs=1, limit=32, out=tmp_path / "r", **BOLT)
    assert restored.status == "complete"
    assert sha256_file(tmp_path / "r" / "backbone.pt") == first.models[0]["sha256"]


def test_another_run_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    table = _digits()
    pretrain("bolt", table, epochs=1, limit=32, out=tmp_path / "r", **BOLT)
    with pytest.raises(TrainingError, match="epochs: 1 -> 2"):
        pretrain("bolt", table, epochs=2, limit=32, out=tmp_path / "r", **BOLT)


def test_init_from_a_checkpoint_loads_every_key(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(5)
    source = timm.create_model("test_vit", num_classes=0, img_size=32).state_dict()
    path = tmp_path / "init.pt"
    torch.save(source, path)
    # lr 0: the online ViT keeps its initial weights, so the saved arm is the file's weights.
    result = pretrain(
        "bolt",
        _digits(),
        epochs=1,
        limit=32,
        out=tmp_path / "r",
        lr=0.0,
        **{**BOLT, "init": str(path)},
    )
    saved = torch.load(Path(result.run_dir) / "backbone.pt", weights_only=True)
    assert saved.keys() == source.keys()
    for key, value in source.items():
        torch.testing.assert_close(saved[key], value)
    assert read_manifest(result.run_dir)["init_sources"]["backbone"]["source"] == "file"


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    import timm

    path = tmp_path / "cnn.pt"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), path)
    with pytest.raises(WeightsError, match="missing"):
        pretrain(
            "bolt", _digits(), epochs=1, limit=32, out=tmp_path / "r", **{**BOLT, "init": str(path)}
        )


def test_options_of_another_method_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="--cnn and --vit"):
        pretrain("cass", _digits(), arch="test_vit", out=tmp_path / "r", **TINY)
    with pytest.raises(InvalidArgumentError, match="CNN_PATH,VIT_PATH"):
        pretrain("cass", _digits(), out=tmp_path / "r", **{**CASS, "init": "one.pt"})


def test_manifest_records_timing_and_what_was_saved(tmp_path: Path) -> None:
    result = pretrain("cass", _digits(), epochs=1, limit=32, out=tmp_path / "r", **CASS)
    manifest = json.loads((Path(result.run_dir) / "featlab-run.json").read_text())
    assert manifest["kind"] == "pretrain"
    assert manifest["method"] == "cass"
    assert manifest["dataset"] == "digits"
    assert manifest["runtime"]["precision"] == "fp32"
    assert manifest["method_settings"]["saved_weights"].startswith("trained")
    assert len(manifest["timing"]["epoch_seconds"]) == 1
    assert manifest["timing"]["images"] == 32


def test_dino_run_saves_a_teacher_that_loads_into_plain_timm(tmp_path: Path) -> None:
    import timm

    result = pretrain(
        "dino", _digits(), arch="test_vit", epochs=1, limit=16, out=tmp_path / "r", **TINY
    )
    (arm,) = result.models
    assert (arm["name"], arm["role"], arm["weights"]) == (
        "timm:test_vit",
        "backbone",
        "teacher backbone",
    )
    model = timm.create_model("test_vit", num_classes=0, img_size=32)
    state = torch.load(Path(result.run_dir) / arm["file"], weights_only=True)
    model.load_state_dict(state, strict=True)
    settings = read_manifest(result.run_dir)["method_settings"]
    assert settings["momentum"] == 0.99
    assert settings["weight_decay"] == [1e-5, 1e-4]
    assert settings["peak_lr"] == pytest.approx(1e-4 * 16 / 256)


def _fake_imagenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """timm's published weights stand-ins: seeded test models with their 1000-class heads."""
    import timm

    import featlab.extractors.backbone as backbone

    states = {}
    for arch in ("test_resnet", "test_vit"):
        torch.manual_seed(11)
        states[arch] = timm.create_model(arch).state_dict()
        torch.save(states[arch], tmp_path / f"{arch}.pth")
    monkeypatch.setattr(backbone, "pretrained_file", lambda arch: tmp_path / f"{arch}.pth")
    return states


def test_imagenet_init_keeps_the_logits_head_for_cass_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featlab.extractors.pretrain_job import CASS_LOGITS, build_model

    states = _fake_imagenet(tmp_path, monkeypatch)
    spec = arm_spec("cass", "timm:test_resnet", "test_resnet", 32)
    cnn, info = build_model(spec, "imagenet", seed=0, num_classes=CASS_LOGITS)
    assert info["source"] == "timm"
    for key, value in states["test_resnet"].items():  # the ImageNet logits head included
        torch.testing.assert_close(cnn.state_dict()[key], value)
    spec = arm_spec("bolt", "timm:test_vit", "test_vit", 32)
    vit, info = build_model(spec, "imagenet", seed=0, num_classes=0)
    assert info["head"] == "removed"
    assert set(vit.state_dict()) == set(states["test_vit"]) - {"head.weight", "head.bias"}


def test_pretraining_leaves_test_images_out_unless_asked(tmp_path: Path) -> None:
    table = _digits()
    splits = np.asarray(table.splits)
    first = pretrain("bolt", table, epochs=1, out=tmp_path / "a", **{**BOLT, "batch_size": 512})
    assert first.n_images == int((splits != "test").sum())
    assert read_manifest(tmp_path / "a")["config"]["splits"] == ["train", "val", "unlabeled"]
    with pytest.raises(InvalidArgumentError, match=r"no images in the splits \['unlabeled'\]"):
        pretrain("bolt", table, epochs=1, out=tmp_path / "b", splits=("unlabeled",), **BOLT)


def test_missing_imagenet_weights_fail_before_the_run_folder_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featlab.extractors.backbone as backbone

    def not_cached(arch: str) -> Path:
        raise WeightsError(f"weights for timm:{arch} are not in the cache")

    monkeypatch.setattr(backbone, "pretrained_file", not_cached)
    with pytest.raises(WeightsError, match=r"not in the cache.*--init PATH"):
        pretrain("bolt", _digits(), epochs=1, limit=32, out=tmp_path / "run",
                 **{**BOLT, "init": "imagenet"})
    assert not (tmp_path / "run").exists()
