"""``NAME@RUN_DIR``: a run's checkpoints resolve by name, role or architecture, loudly."""

from __future__ import annotations

import pytest
import timm

from featlab.errors import TrainingError, UnknownModelError, WeightsError
from featlab.extractors.runs import resolve_run_model
from featlab.extractors.spec import resolve_spec
from featlab.train.checkpoint import save_weights
from featlab.train.run_dir import prepare_run_dir, read_manifest, write_manifest


@pytest.fixture
def cass_run(tmp_path):
    run = prepare_run_dir(tmp_path / "cass", kind="pretrain", method="cass", config={})
    manifest = read_manifest(run)
    models = []
    for role, arch in (("cnn", "test_resnet"), ("vit", "test_vit")):
        sha = save_weights(run / f"{role}.pt", timm.create_model(arch, num_classes=0))
        spec = resolve_spec(f"timm:{arch}", pretrained=False, img_size=32)
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
