"""The named zoo: specs round-trip, carry each paper's preprocessing, and load official files."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from click.testing import CliRunner

from featlab.cli.main import cli
from featlab.errors import UnknownModelError, WeightsError
from featlab.extractors.backbone import build_backbone
from featlab.extractors.device import resolve_runtime
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.zoo import ZOO

FP32 = resolve_runtime("cpu", "fp32")
ISSUE_NAMES = {
    "supervised-resnet50",
    "supervised-deits16",
    "supervised-deitb16",
    "supervised-vitb16",
    "supervised-swint",
    "beit-large16",
    "dino-vits16",
    "dino-vits8",
    "dino-vitb16",
    "dino-vitb8",
    "dino-resnet50",
    "swav-resnet50",
    "simclr-resnet50",
    "simclrv2-resnet50",
    "mocov3-vits16",
    "mocov3-resnet50",
    "byol-resnet50",
    "bolt-vitb16",
    "cass-resnet50",
    "cass-vitb16",
}


def test_every_name_of_the_issue_is_registered_and_round_trips():
    assert set(ZOO) >= ISSUE_NAMES
    for name, spec in ZOO.items():
        assert spec.name == name
        assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_each_paper_preprocessing_is_kept():
    assert ZOO["swav-resnet50"].std == (0.228, 0.224, 0.225)
    assert ZOO["simclr-resnet50"].mean == (0.0, 0.0, 0.0)
    assert ZOO["simclr-resnet50"].std == (1.0, 1.0, 1.0)
    assert ZOO["beit-large16"].mean == (0.5, 0.5, 0.5)
    assert ZOO["mocov3-vits16"].model_kwargs == {"num_heads": 12}
    assert ZOO["cass-vitb16"].input_size == (3, 384, 384)
    assert resolve_spec("dino-vits8", img_size=96).input_size == (3, 96, 96)


def test_unknown_zoo_name_suggests_close_ones():
    with pytest.raises(UnknownModelError, match="dino-vits8"):
        resolve_spec("dino-vit8")


def _swav_file(path):
    """A SwAV checkpoint in the official layout: module. prefix, projection head, prototypes."""
    torch.manual_seed(3)
    model = timm.create_model("resnet50", num_classes=0).eval()
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.projection_head.0.weight"] = torch.zeros(8, 2048)
    sd["module.prototypes.weight"] = torch.zeros(30, 8)
    torch.save(sd, path)
    return model


def test_official_file_in_the_torch_hub_cache_loads_with_its_converter(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / "swav_800ep_pretrain.pth.tar"
    target.parent.mkdir(parents=True)
    reference = _swav_file(target)
    bb = build_backbone(resolve_spec("swav-resnet50", img_size=64), FP32)
    assert bb.weights["source"] == ZOO["swav-resnet50"].weights_url
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.228, 0.224, 0.225)).view(1, 3, 1, 1)  # SwAV's own std
    with torch.no_grad():
        ref = reference((x.float() / 255 - mean) / std)
    torch.testing.assert_close(bb.embed(x), ref, rtol=1e-3, atol=1e-3)


def test_offline_error_names_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, dst, **kw):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    target = tmp_path / "hub" / "checkpoints" / "dino_resnet50_pretrain.pth"
    with pytest.raises(WeightsError) as err:
        build_backbone(resolve_spec("dino-resnet50"), FP32)
    assert ZOO["dino-resnet50"].weights_url in str(err.value)
    assert str(target) in str(err.value)


def test_local_only_models_ask_for_weights():
    with pytest.raises(WeightsError, match="no published weights: give the checkpoint"):
        build_backbone(resolve_spec("cass-resnet50"), FP32)


def test_models_command_lists_every_model_with_dims():
    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in map(json.loads, r.output.splitlines())}
    assert set(rows) == set(ZOO)
    assert rows["dino-vits8"]["views"]["cls4"] == 1536
    assert rows["swav-resnet50"]["views"] == {"avg": 2048}
    assert rows["beit-large16"]["default_dim"] == 1024
    assert rows["bolt-vitb16"]["local_path"] is None
