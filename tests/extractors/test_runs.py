"""``NAME@RUN_DIR``: a run's checkpoints resolve by name, role or architecture, loudly."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from featlab.errors import (
    InvalidArgumentError,
    TrainingError,
    UnknownModelError,
    WeightsError,
)
from featlab.extractors.backbone import _create
from featlab.extractors.engine import extract
from featlab.extractors.runs import resolve_run_model, run_spec_of_weights
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.zoo import ZOO
from featlab.store import open_store
from featlab.train.checkpoint import save_weights
from featlab.train.run_dir import prepare_run_dir, read_manifest, write_manifest


@pytest.fixture
def cass_run(tmp_path):
    run = prepare_run_dir(tmp_path / "cass", kind="pretrain", method="cass", config={})
    manifest = read_manifest(run)
    models = []
    for role, arch in (("cnn", "test_resnet"), ("vit", "test_vit")):
        spec = resolve_spec(f"timm:{arch}", pretrained=False, img_size=32)
        # Built from the spec, so the ViT's position embedding is the 32 px one it records.
        sha = save_weights(run / f"{role}.pt", _create(spec, pretrained=False, num_classes=0))
        models.append({"name": f"timm:{arch}", "role": role, "architecture": arch,
                       "file": f"{role}.pt", "sha256": sha, "spec": spec.to_dict()})
    write_manifest(run, {**manifest, "models": models, "status": "complete"})
    return run


def test_by_name_role_and_architecture(cass_run):
    by_role = resolve_run_model(f"cnn@{cass_run}")
    assert by_role.weights == cass_run / "cnn.pt"
    assert by_role.spec.input_size == (3, 32, 32)  # the spec it was trained with
    assert by_role.spec.pretrained is False
    assert by_role.provenance["kind"] == "pretrain"
    assert resolve_run_model(f"timm:test_vit@{cass_run}").weights == cass_run / "vit.pt"
    # Another name of the same architecture (a tagged timm name) finds the single match.
    assert resolve_run_model(f"timm:test_vit.r160_in1k@{cass_run}").weights.name == "vit.pt"


def test_unknown_name_lists_the_checkpoints(cass_run):
    with pytest.raises(UnknownModelError, match=r"timm:test_resnet \(role cnn, test_resnet\)"):
        resolve_run_model(f"timm:resnet50@{cass_run}")


def test_changed_checkpoint_is_refused(cass_run):
    save_weights(cass_run / "cnn.pt", timm.create_model("test_resnet", num_classes=0))
    with pytest.raises(WeightsError, match="changed after the run wrote it"):
        resolve_run_model(f"cnn@{cass_run}")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(TrainingError, match="not a featlab run folder"):
        resolve_run_model(f"cnn@{tmp_path}")


def test_the_fixture_checkpoints_fit_their_recorded_spec(cass_run):
    state = torch.load(cass_run / "vit.pt", weights_only=True)
    spec = resolve_run_model(f"vit@{cass_run}").spec
    patches = (spec.input_size[1] // 16) * (spec.input_size[2] // 16)
    assert state["pos_embed"].shape[1] == patches + 1  # + the class token


@pytest.fixture
def converter_zoo_model(monkeypatch):
    """A zoo model whose published weights need a converter (as mocov3-vits16 does)."""
    spec = ModelSpec(name="tiny-mocov3", architecture="test_vit", pretrained=False,
                     model_kwargs={"img_size": 32}, input_size=(3, 32, 32), converter="mocov3",
                     local_only=True)
    monkeypatch.setitem(ZOO, spec.name, spec)
    return spec


def test_weights_of_a_run_extract_with_the_runs_spec_not_the_zoo_converter(
    cass_run, converter_zoo_model, tiny_table, tmp_path
):
    # A flat timm state dict (what finetune's best.pt and pretrain's arms are) would fail the
    # MoCo v3 converter ("module.base_encoder." keys).
    store = tmp_path / "st.zarr"
    extract("tiny-mocov3", tiny_table, store, weights=cass_run / "vit.pt", precision="fp32",
            workers=0)
    extract(f"vit@{cass_run}", tiny_table, store, precision="fp32", workers=0)
    ds = open_store(store)["tiny"]
    np.testing.assert_array_equal(ds.values_at("tiny-mocov3", np.arange(ds.n)),
                                  ds.values_at(f"vit@{cass_run.as_posix()}", np.arange(ds.n)))
    assert ds.model_attrs("tiny-mocov3")["run"]["run_dir"] == str(cass_run.resolve())


def test_weights_of_a_run_refuse_another_architecture_or_size(cass_run, converter_zoo_model):
    spec = run_spec_of_weights(cass_run / "vit.pt", converter_zoo_model)
    assert (spec.name, spec.converter, spec.input_size) == ("tiny-mocov3", None, (3, 32, 32))
    with pytest.raises(WeightsError, match="not a test_vit"):
        run_spec_of_weights(cass_run / "cnn.pt", converter_zoo_model)
    with pytest.raises(InvalidArgumentError, match="trained at 32x32"):
        run_spec_of_weights(cass_run / "vit.pt", converter_zoo_model, img_size=64)
    assert run_spec_of_weights(cass_run / "missing.pt", converter_zoo_model) is None
