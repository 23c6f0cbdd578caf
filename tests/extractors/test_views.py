"""Embedding views: one forward pass, several stored entries, each checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import featlab
from featlab.errors import UnknownModelError
from featlab.extractors import extract
from featlab.extractors.views import compute_views, split_view


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", img_size=32, num_classes=0).eval()


def test_view_dims_and_cls_equals_the_model_output():
    model, x = _vit(), torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = compute_views(model, x, ("default", "cls", "cls4", "avg", "cls+avg"))
        ref = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "default": (3, 64),
        "cls": (3, 64),
        "cls4": (3, 256),
        "avg": (3, 64),
        "cls+avg": (3, 128),
    }
    torch.testing.assert_close(out["cls"], ref)
    torch.testing.assert_close(out["default"], ref)


def test_cls4_and_avg_by_hand_from_the_blocks():
    """DINO's get_intermediate_layers: norm(x) after each of the last 4 blocks, CLS of each."""
    model, x = _vit(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        outs = []
        for blk in model.blocks:
            h = blk(h)
            outs.append(model.norm(h))
        cls4 = torch.cat([o[:, 0] for o in outs[-4:]], dim=-1)
        avg = outs[-1][:, 1:].mean(dim=1)
        got = compute_views(model, x, ("cls4", "avg", "cls+avg"))
    torch.testing.assert_close(got["cls4"], cls4)
    torch.testing.assert_close(got["avg"], avg)
    torch.testing.assert_close(got["cls+avg"], torch.cat([outs[-1][:, 0], avg], dim=-1))


def test_split_view():
    assert split_view("timm:vit_small_patch16_224:cls4") == ("timm:vit_small_patch16_224", "cls4")
    assert split_view("timm:resnet50") == ("timm:resnet50", None)
    assert split_view("dino-vits8:cls+avg") == ("dino-vits8", "cls+avg")


def test_one_pass_writes_one_entry_per_view(tmp_path, tiny_table):
    kw = {"random_init": True, "img_size": 32, "workers": 0, "progress": False, "precision": "fp32"}
    results = extract(
        "timm:test_vit", tiny_table, tmp_path / "a.zarr", views=("default", "cls4"), **kw
    )
    assert [r.model for r in results] == ["timm:test_vit", "timm:test_vit:cls4"]
    assert [r.dim for r in results] == [64, 256]
    single = extract("timm:test_vit:cls4", tiny_table, tmp_path / "b.zarr", **kw)
    assert single.model == "timm:test_vit:cls4"
    a = featlab.open_store(tmp_path / "a.zarr")["tiny"]
    b = featlab.open_store(tmp_path / "b.zarr")["tiny"]
    assert set(a.models) == {"timm:test_vit", "timm:test_vit:cls4"}
    np.testing.assert_array_equal(
        a.embeddings("timm:test_vit:cls4"), b.embeddings("timm:test_vit:cls4")
    )
    assert a.model_attrs("timm:test_vit:cls4")["embedding"] == "cls4"
    # The default view asked for by its name is the same entry, not a second one.
    again = extract("timm:test_vit:cls", tiny_table, tmp_path / "a.zarr", **kw)
    assert (again.model, again.status) == ("timm:test_vit", "reused")


def test_cnn_has_only_the_pooled_view(tmp_path, tiny_table):
    with pytest.raises(UnknownModelError, match=r"view\(s\) \['cls4'\]"):
        extract(
            "timm:test_resnet:cls4",
            tiny_table,
            tmp_path / "s.zarr",
            random_init=True,
            img_size=32,
            workers=0,
            progress=False,
        )
    r = extract(
        "timm:test_resnet:avg",
        tiny_table,
        tmp_path / "s.zarr",
        random_init=True,
        img_size=32,
        workers=0,
        progress=False,
    )
    assert r.model == "timm:test_resnet"  # avg is a CNN's default view


def test_cli_runs_the_backbone_once_for_all_views(tmp_path, image_folder, monkeypatch):
    from click.testing import CliRunner

    import featlab.extractors.backbone as backbone_module
    from featlab.cli.main import cli

    calls = []
    original = backbone_module.Backbone.embed_views

    def counting(self, images, views):
        calls.append(views)
        return original(self, images, views)

    monkeypatch.setattr(backbone_module.Backbone, "embed_views", counting)
    store = tmp_path / "s.zarr"
    args = [
        "extract",
        "--model",
        "timm:test_vit",
        "--model",
        "timm:test_vit:cls4",
        "--random-init",
        "--img-size",
        "32",
        "--workers",
        "0",
        "--batch-size",
        "64",
        f"folder:{image_folder}",
        "--store",
        str(store),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert calls == [("default", "cls4")]  # 12 images, one batch, both views
    ds = featlab.open_store(store)["folder-imgs"]
    assert {m: ds.dim(m) for m in ds.models} == {"timm:test_vit": 64, "timm:test_vit:cls4": 256}
