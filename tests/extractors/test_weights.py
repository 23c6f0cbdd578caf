"""Local checkpoints load loudly: every backbone key must fit, or the error names the keys."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import featlab
from featlab.errors import ExtractionError, WeightsError
from featlab.extractors import extract
from featlab.extractors.backbone import build_backbone
from featlab.extractors.device import resolve_runtime
from featlab.extractors.spec import resolve_spec
from featlab.extractors.weights import read_state_dict, sha256_file

FP32 = resolve_runtime("cpu", "fp32")


def _trained_like_resnet() -> torch.nn.Module:
    """test_resnet with a classifier, its weights perturbed away from any seeded init."""
    torch.manual_seed(123)
    model = timm.create_model("test_resnet", num_classes=7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for m in model.modules():  # non-trivial BN statistics, so folding is exercised
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _reference_embedding(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("layout", ["plain", "state_dict", "module_prefix", "safetensors"])
def test_checkpoint_layouts_load_to_the_same_backbone(tmp_path, layout):
    model = _trained_like_resnet()
    sd = model.state_dict()
    path = tmp_path / "ckpt.pth"
    if layout == "plain":
        torch.save(sd, path)
    elif layout == "state_dict":
        torch.save({"state_dict": sd, "epoch": 3}, path)
    elif layout == "module_prefix":
        torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "ckpt.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    spec = resolve_spec("timm:test_resnet", pretrained=False, img_size=32)
    bb = build_backbone(spec, FP32, weights=str(path))
    assert bb.weights["sha256"] == sha256_file(path)
    assert bb.weights["dropped_keys"] == 2  # fc.weight, fc.bias
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    ref = _reference_embedding(model, (x.float() / 255 - mean) / std)
    torch.testing.assert_close(bb.embed(x), ref, rtol=1e-4, atol=1e-4)


def test_missing_backbone_key_is_named(tmp_path):
    sd = _trained_like_resnet().state_dict()
    del sd["conv1.0.weight"]
    torch.save(sd, tmp_path / "w.pth")
    spec = resolve_spec("timm:test_resnet", pretrained=False)
    with pytest.raises(WeightsError, match=r"missing from the file: conv1\.0\.weight"):
        build_backbone(spec, FP32, weights=str(tmp_path / "w.pth"))


def test_unexpected_and_misshapen_keys_are_named(tmp_path):
    sd = _trained_like_resnet().state_dict()
    sd["projection_head.0.weight"] = torch.zeros(3, 3)
    sd["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(sd, tmp_path / "w.pth")
    spec = resolve_spec("timm:test_resnet", pretrained=False)
    with pytest.raises(WeightsError) as err:
        build_backbone(spec, FP32, weights=str(tmp_path / "w.pth"))
    msg = str(err.value)
    assert "projection_head.0.weight" in msg
    assert "conv1.0.weight file (1, 1, 1, 1)" in msg


def test_wrong_architecture_is_refused(tmp_path):
    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    spec = resolve_spec("timm:test_resnet", pretrained=False)
    with pytest.raises(WeightsError, match="do not fit ResNet"):
        build_backbone(spec, FP32, weights=str(tmp_path / "vit.pth"))


def test_missing_or_pickled_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a whole pickled module
    with pytest.raises(WeightsError, match="weights_only=True"):
        read_state_dict(tmp_path / "module.pth")


def test_nan_weights_fail_naming_samples_and_write_nothing(tmp_path, tiny_table):
    sd = _trained_like_resnet().state_dict()
    key = "layer4.0.downsample.1.weight"  # a BatchNorm scale: NaN reaches every embedding
    sd[key] = torch.full_like(sd[key], float("nan"))
    torch.save(sd, tmp_path / "nan.pth")
    with pytest.raises(ExtractionError, match=r"NaN or inf, e\.g\. samples \['000000'"):
        extract(
            "timm:test_resnet",
            tiny_table,
            tmp_path / "s.zarr",
            weights=tmp_path / "nan.pth",
            img_size=32,
            workers=0,
            progress=False,
            precision="fp32",
        )
    ds = featlab.open_store(tmp_path / "s.zarr")["tiny"]
    assert ds.n_written("timm:test_resnet") == 0


def test_published_weights_come_from_the_cache_offline(tmp_path, monkeypatch):
    """timm:<arch> loads a file placed in the Hugging Face cache layout, with no network."""
    cache = tmp_path / "hf"
    snap = cache / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (cache / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (cache / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text("0" * 40)
    torch.manual_seed(5)
    published = timm.create_model("test_vit")
    from safetensors.torch import save_file

    save_file(published.state_dict(), str(snap / "model.safetensors"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(cache), raising=False)
    spec = resolve_spec("timm:test_vit", pretrained=True)
    try:
        bb = build_backbone(spec, FP32)
    except WeightsError as err:  # this huggingface_hub reads the cache dir elsewhere
        pytest.skip(f"cache redirection not supported here: {err}")
    assert bb.weights["source"] == "timm"
    x = torch.randint(0, 256, (2, 3, 160, 160), dtype=torch.uint8)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    ref = _reference_embedding(published.eval(), (x.float() / 255 - mean) / std)
    torch.testing.assert_close(bb.embed(x), ref, rtol=1e-4, atol=1e-4)


def test_published_weights_offline_error_names_url_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty"))
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(tmp_path / "empty"), raising=False)
    spec = resolve_spec("timm:test_vit", pretrained=True)
    with pytest.raises(WeightsError, match=r"huggingface\.co/timm/test_vit\.r160_in1k"):
        build_backbone(spec, FP32)


def test_random_init_is_seeded():
    spec = resolve_spec("timm:test_vit", pretrained=False, img_size=32)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    a = build_backbone(spec, FP32, seed=1).embed(x)
    b = build_backbone(spec, FP32, seed=1).embed(x)
    c = build_backbone(spec, FP32, seed=2).embed(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert np.isfinite(a.numpy()).all()
