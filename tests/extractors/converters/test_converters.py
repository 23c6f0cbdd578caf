"""Checkpoint converters: every official layout, rebuilt from a random timm model, loads strictly.

Each test writes a synthetic checkpoint in the official key layout (reference/model-zoo.md) built
from a randomly initialised timm model, runs ``load_converted`` on it, loads the result strictly
into a fresh (scrambled) headless model, and checks the embedding equals the original model's.
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import timm
import torch
from timm.models.beit import Beit
from torch import nn

from featlab.errors import WeightsError
from featlab.extractors.converters import CONVERTERS, LAYOUTS, convert, load_converted
from featlab.extractors.weights import load_backbone_state, read_state_dict

HEADS = ("fc.", "head.")


# --------------------------------------------------------------------------------------------
# helpers


def _perturb(model: nn.Module, seed: int) -> nn.Module:
    """Random values in every float tensor (BN statistics too), so nothing equals an init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.add_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_head(model.forward_features(x), pre_logits=True)


def _fresh(source: nn.Module) -> nn.Module:
    """A headless copy of ``source`` with all weights scrambled (so a load must overwrite all)."""
    target = copy.deepcopy(source)
    target.reset_classifier(0)
    return _perturb(target, seed=999)


def _assert_loads_and_matches(
    source: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor, name: str
) -> nn.Module:
    target = _fresh(source)
    assert not torch.allclose(_embed(target, x), _embed(source, x))
    load_backbone_state(target, state, source=name, classifier_prefixes=HEADS)
    torch.testing.assert_close(_embed(target, x), _embed(source, x))
    return target


def _sd(model: nn.Module, *, head: bool = True) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if head or not k.startswith(HEADS)}


# ResNet-50's exact layout (Bottleneck, 3-4-6-3 blocks, 64-channel 7x7 stem) with narrow stages:
# the same state-dict keys as timm/torchvision resnet50 (checked below), 1/20 of the tensors.
NARROW = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def rn50() -> nn.Module:
    from timm.models.resnet import Bottleneck, ResNet

    return _perturb(ResNet(Bottleneck, [3, 4, 6, 3], channels=NARROW, num_classes=10), seed=1)


def test_narrow_resnet_has_the_resnet50_keys(rn50):
    with torch.device("meta"):
        real = timm.create_model("resnet50", num_classes=10)
    assert list(rn50.state_dict()) == list(real.state_dict())


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return _perturb(timm.create_model("test_vit", num_classes=10, img_size=32), seed=2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waiting on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_every_converter_has_a_layout_description():
    assert set(CONVERTERS) == set(LAYOUTS)
    assert set(CONVERTERS) == {
        "dino", "swav", "vissl", "simclr_v1", "simclr_v2", "mocov3", "byol", "beit_hf", "deit",
        "cass",
    }  # fmt: skip


def test_no_converter_is_a_plain_state_dict(tmp_path, vit, x):
    path = tmp_path / "plain.pth"
    torch.save(_sd(vit), path)
    state = load_converted(path, None)
    assert state.keys() == read_state_dict(path).keys()
    _assert_loads_and_matches(vit, state, x, "plain")


# --------------------------------------------------------------------------------------------
# DINO


def test_dino_backbone_only_vit(tmp_path, vit, x):
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(_sd(vit, head=False), path)
    _assert_loads_and_matches(vit, load_converted(path, "dino"), x, "dino")


def _dino_head(prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}head.mlp.0.weight": torch.randn(32, 64),
        f"{prefix}head.mlp.0.bias": torch.randn(32),
        f"{prefix}head.last_layer.weight_g": torch.randn(100, 1),
        f"{prefix}head.last_layer.weight_v": torch.randn(100, 32),
    }


@pytest.mark.parametrize("arch", ["vit", "rn50"])
def test_dino_full_checkpoint_takes_the_teacher_under_weights_only(tmp_path, request, x, arch):
    source = request.getfixturevalue(arch)
    # ViT teachers are not DDP-wrapped; ResNet teachers are (BatchNorm), students always are.
    tprefix = "backbone." if arch == "vit" else "module.backbone."
    teacher = {tprefix + k: v for k, v in _sd(source, head=False).items()}
    teacher.update(_dino_head(tprefix.replace("backbone.", "")))
    student_model = _fresh(source)  # different weights: the converter must pick the teacher
    student = {"module.backbone." + k: v for k, v in _sd(student_model).items()}
    student.update(_dino_head("module."))
    ckpt = {
        "student": student,
        "teacher": teacher,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "epoch": 101,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=100, lr=5e-4),
        "dino_loss": {"center": torch.zeros(1, 100)},
    }
    path = tmp_path / "dino_full_checkpoint.pth"
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # the reason for allow-listing Namespace
        torch.load(path, weights_only=True)
    state = load_converted(path, "dino")
    assert not any(
        k.startswith(("head.mlp", "head.last_layer", "backbone.", "module.")) for k in state
    )
    _assert_loads_and_matches(source, state, x, "dino-full")


# --------------------------------------------------------------------------------------------
# ResNet-50 layouts


def test_swav_strips_module_and_drops_projection_and_prototypes(tmp_path, rn50, x):
    sd = {"module." + k: v for k, v in _sd(rn50, head=False).items()}
    sd["module.projection_head.0.weight"] = torch.randn(16, 256)
    sd["module.projection_head.0.bias"] = torch.randn(16)
    sd["module.projection_head.1.running_mean"] = torch.randn(16)
    sd["module.projection_head.3.weight"] = torch.randn(8, 16)
    sd["module.prototypes.weight"] = torch.randn(30, 8)
    path = tmp_path / "swav_800ep_pretrain.pth.tar"
    torch.save(sd, path)
    state = load_converted(path, "swav")
    assert not any(k.startswith(("projection_head", "prototypes")) for k in state)
    _assert_loads_and_matches(rn50, state, x, "swav")


def test_vissl_trunk(tmp_path, rn50, x):
    trunk = {"_feature_blocks." + k: v for k, v in _sd(rn50, head=False).items()}
    heads = {"0.clf.0.weight": torch.randn(16, 256), "0.clf.0.bias": torch.randn(16)}
    ckpt = {
        "phase_idx": 799,
        "iteration": 1000,
        "loss": {},
        "iteration_num": 1000,
        "train_phase_idx": 799,
        "classy_state_dict": {
            "base_model": {"model": {"trunk": trunk, "heads": heads}, "meta": {}},
            "loss": {},
        },
    }
    path = tmp_path / "model_final_checkpoint_phase799.torch"
    torch.save(ckpt, path)
    _assert_loads_and_matches(rn50, load_converted(path, "vissl"), x, "vissl")


def test_simclr_v1_tonylins(tmp_path, rn50, x):
    path = tmp_path / "resnet50-1x.pth"
    torch.save({"state_dict": _sd(rn50)}, path)
    state = load_converted(path, "simclr_v1")
    assert "fc.weight" in state  # left for the caller to drop
    _assert_loads_and_matches(rn50, state, x, "simclr_v1")


def test_mocov3_resnet_keeps_base_encoder_only(tmp_path, rn50, x):
    enc = _sd(rn50, head=False)
    enc.update({"fc.0.weight": torch.randn(16, 256), "fc.1.weight": torch.randn(16)})  # MLP
    sd = {"module.base_encoder." + k: v for k, v in enc.items()}
    sd.update({"module.momentum_encoder." + k: torch.zeros_like(v) for k, v in enc.items()})
    sd["module.predictor.0.weight"] = torch.randn(16, 16)
    ckpt = {"epoch": 100, "arch": "resnet50", "state_dict": sd, "optimizer": {}, "scaler": {}}
    path = tmp_path / "r-50-100ep.pth.tar"
    torch.save(ckpt, path)
    state = load_converted(path, "mocov3")
    assert not any(k.startswith("fc.") for k in state)
    _assert_loads_and_matches(rn50, state, x, "mocov3")


def test_byol_fills_num_batches_tracked(tmp_path, rn50, x):
    sd = {k: v for k, v in _sd(rn50).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pretrain_res50x1.pth.tar"
    torch.save(sd, path)
    state = load_converted(path, "byol")
    filled = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(filled) == sum(isinstance(m, nn.BatchNorm2d) for m in rn50.modules())
    assert all(int(state[k]) == 0 for k in filled)
    _assert_loads_and_matches(rn50, state, x, "byol")


# SimCLR v2: a faithful copy of the Separius/SimCLRv2-Pytorch resnet.py module layout (sk0), so
# the file has its real key names and the reference embedding comes from its own forward.


class _BNRelu(nn.Sequential):
    def __init__(self, c: int, relu: bool = True):
        super().__init__(nn.BatchNorm2d(c, eps=1e-5), nn.ReLU() if relu else nn.Identity())


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False)


class _Projection(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut = _conv(cin, cout, 1, stride)
        self.bn = _BNRelu(cout, relu=False)

    def forward(self, x):
        return self.bn(self.shortcut(x))


class _Bottleneck(nn.Module):
    def __init__(self, cin: int, c: int, stride: int, projection: bool):
        super().__init__()
        self.projection = _Projection(cin, 4 * c, stride) if projection else nn.Identity()
        self.net = nn.Sequential(
            _conv(cin, c, 1), _BNRelu(c), _conv(c, c, 3, stride), _BNRelu(c),
            _conv(c, 4 * c, 1), _BNRelu(4 * c, relu=False),
        )  # fmt: skip

    def forward(self, x):
        return torch.relu(self.projection(x) + self.net(x))


class _Blocks(nn.Module):
    def __init__(self, n: int, cin: int, c: int, stride: int):
        super().__init__()
        self.blocks = nn.ModuleList([_Bottleneck(cin, c, stride, True)])
        self.blocks.extend(_Bottleneck(4 * c, c, 1, False) for _ in range(n - 1))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class _SepariusResNet(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), widths=(64, 128, 256, 512)):
        super().__init__()
        stem = nn.Sequential(_conv(3, 64, 7, 2), _BNRelu(64), nn.MaxPool2d(3, 2, 1))
        ops, cin = [stem], 64
        for i, (n, c) in enumerate(zip(layers, widths, strict=True)):
            ops.append(_Blocks(n, cin, c, 1 if i == 0 else 2))
            cin = 4 * c
        self.net = nn.Sequential(*ops)
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x):
        return self.net(x).mean(dim=[2, 3])


def test_simclr_v2_separius_sk0_positional_rename(tmp_path, rn50, x):
    torch.manual_seed(0)
    separius = _perturb(_SepariusResNet(widths=NARROW), seed=3)
    head = {"layers.0.weight": torch.randn(8, 256), "layers.1.running_mean": torch.randn(8)}
    path = tmp_path / "r50_1x_sk0.pth"
    torch.save({"resnet": separius.state_dict(), "head": head}, path)
    state = load_converted(path, "simclr_v2")
    assert set(state) == set(rn50.state_dict())  # every timm resnet50 key, fc included
    target = _fresh(rn50)
    load_backbone_state(target, state, source="simclr_v2", classifier_prefixes=HEADS)
    with torch.no_grad():
        torch.testing.assert_close(_embed(target, x), separius(x))


def test_simclr_v2_sk1_is_refused():
    sd = {
        "net.0.0.weight": torch.zeros(32, 3, 3, 3),
        "net.0.2.weight": torch.zeros(32, 32, 3, 3),
        "net.1.blocks.0.net.2.main_conv.0.weight": torch.zeros(1),
    }
    with pytest.raises(WeightsError, match="sk1"):
        convert({"resnet": sd, "head": {}}, "simclr_v2")


# --------------------------------------------------------------------------------------------
# ViT layouts


def test_deit_model_wrapper(tmp_path, vit, x):
    ckpt = {"model": _sd(vit), "epoch": 299, "args": argparse.Namespace(model="deit_small")}
    path = tmp_path / "deit_small_patch16_224-cd65a155.pth"
    torch.save(ckpt, path)
    _assert_loads_and_matches(vit, load_converted(path, "deit"), x, "deit")


def _vit_small(heads: int) -> nn.Module:
    # depth=2 and 32 px keep it fast; the 12-block file has the same key pattern.
    return timm.create_model(
        "vit_small_patch16_224", num_classes=0, img_size=32, depth=2, num_heads=heads
    ).eval()


def test_mocov3_vits_needs_12_heads(tmp_path, x):
    """MoCo v3 ViT-S has 12 heads (timm default 6): same shapes, so only the output tells."""
    source = _perturb(_vit_small(12), seed=4)
    enc = _sd(source)
    enc.update({"head.0.weight": torch.randn(16, 384), "head.1.running_mean": torch.randn(16)})
    sd = {"module.base_encoder." + k: v for k, v in enc.items()}
    sd.update({"module.momentum_encoder." + k: torch.zeros_like(v) for k, v in enc.items()})
    path = tmp_path / "vit-s-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_small", "state_dict": sd}, path)
    state = load_converted(path, "mocov3")
    assert not any(k.startswith("head.") for k in state)
    _assert_loads_and_matches(source, state, x, "mocov3-vits16")

    six = _vit_small(6)  # loads without any error ...
    load_backbone_state(six, state, source="mocov3-vits16", classifier_prefixes=HEADS)
    assert not torch.allclose(_embed(six, x), _embed(source, x), atol=1e-3)  # ... but is wrong


# BEiT: the HF names are produced by inverting the mapping (as transformers'
# convert_beit_unilm_to_pytorch.py does in the unilm -> HF direction; model-zoo.md 2.6).


def _tiny_beit(shared: bool) -> nn.Module:
    kw = (
        {"use_abs_pos_emb": True, "use_shared_rel_pos_bias": True, "use_fc_norm": False}
        if shared
        else {"use_abs_pos_emb": False, "use_rel_pos_bias": True}
    )
    torch.manual_seed(5)
    model = Beit(
        img_size=32, patch_size=16, embed_dim=64, depth=2, num_heads=2, init_values=0.1,
        num_classes=7, global_pool="token" if shared else "avg", **kw,
    )  # fmt: skip
    return _perturb(model, seed=5)


def _timm_to_hf_beit(model: nn.Module) -> dict[str, torch.Tensor]:
    sd = dict(model.state_dict())
    d = model.embed_dim
    hf: dict[str, torch.Tensor] = {}
    for i in range(len(model.blocks)):
        p, q = f"blocks.{i}.", f"beit.encoder.layer.{i}."
        qkv = sd.pop(p + "attn.qkv.weight")
        hf[q + "attention.attention.query.weight"] = qkv[:d]
        hf[q + "attention.attention.key.weight"] = qkv[d : 2 * d]
        hf[q + "attention.attention.value.weight"] = qkv[2 * d :]
        hf[q + "attention.attention.query.bias"] = sd.pop(p + "attn.q_bias")
        hf[q + "attention.attention.value.bias"] = sd.pop(p + "attn.v_bias")
        hf[q + "lambda_1"] = sd.pop(p + "gamma_1")
        hf[q + "lambda_2"] = sd.pop(p + "gamma_2")
        if p + "attn.relative_position_bias_table" in sd:
            r = q + "attention.attention.relative_position_bias."
            hf[r + "relative_position_bias_table"] = sd.pop(p + "attn.relative_position_bias_table")
            hf[r + "relative_position_index"] = model.blocks[i].attn.relative_position_index
        for old, new in [
            ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
            ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ]:  # fmt: skip
            for t in ("weight", "bias"):
                hf[f"{q}{new}.{t}"] = sd.pop(f"{p}{old}.{t}")
    top = {
        "cls_token": "beit.embeddings.cls_token",
        "pos_embed": "beit.embeddings.position_embeddings",
        "patch_embed.proj.weight": "beit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "beit.embeddings.patch_embeddings.projection.bias",
        "rel_pos_bias.relative_position_bias_table": (
            "beit.encoder.relative_position_bias.relative_position_bias_table"
        ),
        "fc_norm.weight": "beit.pooler.layernorm.weight",
        "fc_norm.bias": "beit.pooler.layernorm.bias",
        "norm.weight": "beit.layernorm.weight",
        "norm.bias": "beit.layernorm.bias",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    for k in list(sd):
        hf[top[k]] = sd.pop(k)
    return hf


@pytest.mark.parametrize(
    ("shared", "suffix"), [(False, ".bin"), (True, ".safetensors")], ids=["per-layer", "shared"]
)
def test_beit_hf_names(tmp_path, shared, suffix):
    source = _tiny_beit(shared)
    hf = _timm_to_hf_beit(source)
    path = tmp_path / f"pytorch_model{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    else:
        torch.save(hf, path)
    state = load_converted(path, "beit_hf")
    assert not any("relative_position_index" in k for k in state)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    _assert_loads_and_matches(source, state, x, "beit_hf")


# --------------------------------------------------------------------------------------------
# CASS: whole pickled modules, saved as timm 0.5.4 did (classes under timm.models.layers.*)


def _save_as_old_timm(model: nn.Module, path) -> None:
    """``torch.save(model)``, each ``timm.layers.X`` class pickled as ``timm.models.layers.X``."""
    classes = {type(m) for m in model.modules() if type(m).__module__.startswith("timm.layers.")}
    assert classes, "the model should use timm.layers classes"
    fakes: dict[str, types.ModuleType] = {}
    originals = {cls: cls.__module__ for cls in classes}
    try:
        for cls in classes:
            name = "timm.models.layers." + cls.__module__[len("timm.layers.") :]
            fake = fakes.setdefault(name, types.ModuleType(name))
            setattr(fake, cls.__qualname__, cls)
            sys.modules[name] = fake
            cls.__module__ = name
        torch.save(model, path)
    finally:
        for cls, mod in originals.items():
            cls.__module__ = mod
        for name in fakes:
            sys.modules.pop(name, None)


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_cass_pickle_needs_trust_and_old_timm_paths_are_remapped(tmp_path, arch):
    kw = {"img_size": 32} if arch == "test_vit" else {}
    source = _perturb(timm.create_model(arch, num_classes=8, **kw), seed=6)
    path = tmp_path / "cass-r50-isic.pt"
    _save_as_old_timm(source, path)

    with warnings.catch_warnings():  # importing the timm.models.layers shim warns
        warnings.simplefilter("ignore")
        with pytest.raises(ModuleNotFoundError, match=r"timm\.models\.layers\."):
            torch.load(path, weights_only=False)  # what timm 1.x does without the remap

    with pytest.raises(WeightsError, match="--trust-checkpoint") as err:
        load_converted(path, "cass")
    assert str(path) in str(err.value)

    state = load_converted(path, "cass", trust=True)
    assert any(k.startswith(HEADS) for k in state)  # the 8-class head comes along
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    _assert_loads_and_matches(source, state, x, "cass")


def test_cass_resaved_state_dict_needs_no_trust(tmp_path, vit, x):
    path = tmp_path / "cass-vit.pt"
    torch.save(_sd(vit), path)
    _assert_loads_and_matches(vit, load_converted(path, "cass"), x, "cass")


# --------------------------------------------------------------------------------------------
# loud failures


@pytest.mark.parametrize(("arch", "block"), [("vit", "blocks.1."), ("rn50", "layer2.1.")])
def test_a_removed_block_fails_loudly_naming_the_keys(tmp_path, request, arch, block):
    source = request.getfixturevalue(arch)
    sd = {k: v for k, v in _sd(source, head=False).items() if not k.startswith(block)}
    path = tmp_path / "dino.pth"
    torch.save({"teacher": {"backbone." + k: v for k, v in sd.items()}}, path)
    state = load_converted(path, "dino")
    with pytest.raises(WeightsError, match="missing") as err:
        load_backbone_state(_fresh(source), state, source=str(path), classifier_prefixes=HEADS)
    assert block in str(err.value)
    assert str(path) in str(err.value)


def test_wrong_layout_names_file_layout_and_top_level_keys(tmp_path, rn50):
    path = tmp_path / "vissl.torch"
    torch.save({"phase_idx": 1, "classy_state_dict": {"base_model": {}}}, path)
    with pytest.raises(WeightsError) as err:
        load_converted(path, "vissl")
    msg = str(err.value)
    assert str(path) in msg
    assert "classy_state_dict" in msg
    assert "'model'" in msg  # the missing level

    flat = tmp_path / "flat.pth"
    torch.save(_sd(rn50), flat)
    with pytest.raises(WeightsError, match=r"base_encoder.*keys \[bn1\.bias") as err:
        load_converted(flat, "mocov3")
    assert "MoCo v3" in str(err.value)


def test_pickled_objects_are_refused_outside_cass_even_with_trust(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(WeightsError, match=r"weights_only=True.*torch\.nn\.modules\.linear"):
        load_converted(path, "deit", trust=True)


def test_unknown_converter_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="known: beit_hf, byol"):
        load_converted(tmp_path / "x.pth", "simclr3")
    with pytest.raises(WeightsError, match="does not exist"):
        load_converted(tmp_path / "x.pth", "dino")


def test_cli_converter_names_match_the_registry():
    from featlab.cli.extract_cmd import CONVERTER_NAMES

    assert tuple(sorted(CONVERTERS)) == CONVERTER_NAMES


def test_extract_with_an_official_layout_through_the_cli(tmp_path, image_folder):
    """A DINO full checkpoint (teacher + backbone. prefix + head) extracts via --converter."""
    import argparse

    import timm
    from click.testing import CliRunner

    import featlab
    from featlab.cli.main import cli

    torch.manual_seed(7)
    vit = timm.create_model("test_vit", img_size=32, num_classes=0).eval()
    teacher = {f"backbone.{k}": v for k, v in vit.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.zeros(4, 64)
    torch.save(
        {
            "teacher": teacher,
            "student": teacher,
            "epoch": 1,
            "args": argparse.Namespace(arch="vit_small"),
        },
        tmp_path / "dino_full.pth",
    )
    store = tmp_path / "s.zarr"
    base = [
        "extract",
        "--model",
        "timm:test_vit",
        "--img-size",
        "32",
        "--workers",
        "0",
        "--precision",
        "fp32",
        f"folder:{image_folder}",
        "--store",
        str(store),
        "--weights",
        str(tmp_path / "dino_full.pth"),
    ]
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 1  # without the converter the layout is refused, loudly
    assert "Error:" in r.output
    r = CliRunner().invoke(cli, [*base, "--converter", "dino"])
    assert r.exit_code == 0, r.output
    ds = featlab.open_store(store)["folder-imgs"]
    attrs = ds.model_attrs("timm:test_vit")
    assert attrs["spec"]["converter"] == "dino"
    from featlab.datasets import read_image_folder
    from featlab.extractors.loader import BatchDataset

    table = read_image_folder(image_folder)
    spec = featlab.extractors.resolve_spec("timm:test_vit", pretrained=False, img_size=32)
    batch = BatchDataset(table.images, [np.arange(len(table))], spec)[0]
    x = (batch.images.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(
        spec.std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = vit(x).numpy()
    np.testing.assert_allclose(ds.embeddings("timm:test_vit"), ref, rtol=1e-3, atol=1e-4)
