"""Checkpoint converters: each official file layout to a flat timm state dict.

Every converter is a pure function from the object ``torch.load`` returned (the *raw* checkpoint)
to ``{timm key: tensor}``, with keys exactly as ``timm.create_model(arch, num_classes=0)`` has them,
plus possibly classifier keys (``fc.*`` / ``head.*``) that the caller drops
(:func:`featlab.extractors.weights.load_backbone_state`). The layouts, URLs and traps are in
``reference/model-zoo.md`` (sections 1, 2 and 4); each converter's docstring names its section.

:func:`load_converted` reads a file with ``torch.load(weights_only=True)`` (``argparse.Namespace``
allow-listed, for DINO full checkpoints) and applies a converter. The only exception is a CASS
whole-module pickle, which needs full unpickling and is refused unless ``trust=True``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import re
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from featlab.errors import WeightsError
from featlab.extractors.weights import read_state_dict

__all__ = ["CONVERTERS", "LAYOUTS", "convert", "load_converted"]

_SHOW = 12
TRUST_FLAG = "--trust-checkpoint"


# --------------------------------------------------------------------------------------------
# helpers


def _describe(obj: Any) -> str:
    """The keys of ``obj`` (a sample), or its type, for error messages."""
    if isinstance(obj, Mapping):
        keys = sorted(str(k) for k in obj)
        more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
        return f"keys [{', '.join(keys[:_SHOW])}{more}]"
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object, not a dict"


def _fail(what: str, obj: Any) -> WeightsError:
    return WeightsError(f"{what}; found {_describe(obj)}")


def _tensors(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """``obj`` as a ``{str: Tensor}`` dict, or a WeightsError naming the offending keys."""
    if not isinstance(obj, Mapping) or not obj:
        raise _fail(f"expected {what} (a non-empty dict of tensors)", obj)
    bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise WeightsError(
            f"expected {what} (a dict of tensors), but {len(bad)} value(s) are not tensors: "
            f"{', '.join(bad[:_SHOW])}; found {_describe(obj)}"
        )
    return {str(k): v for k, v in obj.items()}


def _get(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise _fail(f"expected {what} with key {key!r}", obj)
    return obj[key]


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (DataParallel ``module.`` etc.)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}


def _keep(sd: dict[str, torch.Tensor], prefix: str, what: str) -> dict[str, torch.Tensor]:
    """Only the keys under ``prefix``, with it stripped; an error if there are none."""
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise _fail(f"expected {what}: no key starts with {prefix!r}", sd)
    return out


def _drop(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in sd.items() if not k.startswith(prefixes)}


def _maybe_unwrap(obj: Any, keys: tuple[str, ...] = ("state_dict",)) -> Any:
    """``obj[key]`` for the first wrapper key present whose value is a dict, else ``obj``."""
    if isinstance(obj, Mapping):
        for key in keys:
            if isinstance(obj.get(key), Mapping):
                return obj[key]
    return obj


# --------------------------------------------------------------------------------------------
# converters


def convert_dino(obj: Any) -> dict[str, torch.Tensor]:
    """DINO (model-zoo.md 2.2): backbone-only file or full training checkpoint.

    Backbone-only files (``dino_*_pretrain.pth``) are flat timm/torchvision state dicts. Full
    checkpoints (``*_full_checkpoint.pth``: ``student, teacher, optimizer, epoch, args, dino_loss``)
    give the ``teacher`` (as DINO's own loader does); only its ``backbone.`` keys are kept, with
    ``module.`` (ResNet teachers are DDP-wrapped) and ``backbone.`` stripped, so the DINO head
    (``head.mlp.*``, ``head.last_layer.*``) is dropped.
    """
    what = "a DINO checkpoint (flat backbone state dict, or a full checkpoint with 'teacher')"
    raw = obj["teacher"] if isinstance(obj, Mapping) and "teacher" in obj else obj
    sd = _strip(_tensors(raw, what), "module.")
    if any(k.startswith("backbone.") for k in sd):
        sd = _keep(sd, "backbone.", what)
    return _drop(sd, ("head.mlp.", "head.last_layer."))


def convert_swav(obj: Any) -> dict[str, torch.Tensor]:
    """SwAV hub files (model-zoo.md 2.3): flat dict, ``module.`` prefix, projection head.

    ``module.`` is stripped and ``projection_head.*`` / ``prototypes*`` (``prototypes.weight``,
    or ``prototypes.prototypes{i}.weight`` for multi-prototype runs) are dropped. A training
    checkpoint wrapping the weights under ``state_dict`` is unwrapped first.
    """
    sd = _strip(_tensors(_maybe_unwrap(obj), "a SwAV state dict (module.* keys)"), "module.")
    return _drop(sd, ("projection_head.", "prototypes"))


def convert_vissl(obj: Any) -> dict[str, torch.Tensor]:
    """VISSL ``.torch`` files (model-zoo.md 2.4): ``classy_state_dict/base_model/model/trunk``.

    The trunk keys are ``_feature_blocks.<torchvision name>``; the prefix is stripped. The heads
    (``…/model/heads``) are ignored.
    """
    node = obj
    path = []
    for key in ("classy_state_dict", "base_model", "model", "trunk"):
        path.append(key)
        node = _get(node, key, f"a VISSL checkpoint ({' -> '.join(path[:-1]) or 'top level'})")
    return _strip(_tensors(node, "a VISSL trunk state dict"), "_feature_blocks.")


def convert_simclr_v1(obj: Any) -> dict[str, torch.Tensor]:
    """SimCLR v1 converted by tonylins/simclr-converter (model-zoo.md 2.4).

    ``{'state_dict': torchvision resnet50 names incl. fc.*}``. ``fc.*`` is kept for the caller to
    drop; its bias is the random init anyway (converter bug). Inputs are *not* mean/std
    normalised for this model (spec's business, not the converter's).
    """
    sd = _tensors(_get(obj, "state_dict", "a tonylins SimCLR v1 file"), "a SimCLR v1 state dict")
    return _strip(sd, "module.")


_SIMCLR_V2_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"net\.0\.0\.weight"), lambda m: "conv1.weight"),
    (re.compile(r"net\.0\.1\.0\.(\w+)"), lambda m: f"bn1.{m[1]}"),
    (
        re.compile(r"net\.([1-4])\.blocks\.(\d+)\.projection\.shortcut\.weight"),
        lambda m: f"layer{m[1]}.{m[2]}.downsample.0.weight",
    ),
    (
        re.compile(r"net\.([1-4])\.blocks\.(\d+)\.projection\.bn\.0\.(\w+)"),
        lambda m: f"layer{m[1]}.{m[2]}.downsample.1.{m[3]}",
    ),
    (
        re.compile(r"net\.([1-4])\.blocks\.(\d+)\.net\.([024])\.weight"),
        lambda m: f"layer{m[1]}.{m[2]}.conv{int(m[3]) // 2 + 1}.weight",
    ),
    (
        re.compile(r"net\.([1-4])\.blocks\.(\d+)\.net\.([135])\.0\.(\w+)"),
        lambda m: f"layer{m[1]}.{m[2]}.bn{(int(m[3]) + 1) // 2}.{m[4]}",
    ),
    (re.compile(r"fc\.(weight|bias)"), lambda m: f"fc.{m[1]}"),
)


def convert_simclr_v2(obj: Any) -> dict[str, torch.Tensor]:
    """SimCLR v2 sk0 converted by Separius/SimCLRv2-Pytorch (model-zoo.md 2.4).

    ``{'resnet': {...}, 'head': {...}}``; ``head`` (the contrastive MLP) is ignored and the
    ``resnet`` names are renamed positionally to torchvision/timm ResNet names:
    ``net.0.0`` -> ``conv1``, ``net.0.1.0`` -> ``bn1``, ``net.{s}.blocks.{b}.projection.shortcut``
    -> ``layer{s}.{b}.downsample.0``, ``….projection.bn.0`` -> ``….downsample.1``,
    ``….net.{0,2,4}`` -> ``conv{1,2,3}``, ``….net.{1,3,5}.0`` -> ``bn{1,2,3}``; ``fc`` stays.
    Selective-kernel (sk1) files have no timm equivalent and are refused.
    """
    what = "a Separius SimCLR v2 file ({'resnet': ..., 'head': ...})"
    raw = obj["resnet"] if isinstance(obj, Mapping) and "resnet" in obj else obj
    sd = _tensors(raw, what)
    if "net.0.0.weight" not in sd:
        raise _fail(f"expected {what}: no 'net.0.0.weight' (stem conv) key", obj)
    if any(".mixing_conv." in k or ".main_conv." in k for k in sd) or "net.0.2.weight" in sd:
        raise WeightsError(
            "this SimCLR v2 file is a selective-kernel (sk1) model: its blocks and ResNet-D stem "
            "do not map to timm resnet; only sk0 files (e.g. r50_1x_sk0.pth) are supported"
        )
    out: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, value in sd.items():
        for pattern, rename in _SIMCLR_V2_RULES:
            m = pattern.fullmatch(key)
            if m:
                out[rename(m)] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise WeightsError(
            f"{len(unmatched)} SimCLR v2 key(s) match no sk0 rename rule: "
            f"{', '.join(sorted(unmatched)[:_SHOW])}"
        )
    return out


def convert_mocov3(obj: Any) -> dict[str, torch.Tensor]:
    """MoCo v3 (model-zoo.md 2.8): ``{epoch, arch, state_dict, optimizer, scaler}``.

    Keeps ``module.base_encoder.*`` (the momentum encoder and predictor are dropped), strips the
    prefix and drops the projection MLP (``head.*`` for ViTs, ``fc.*`` for ResNets), as
    ``main_lincls.py`` does. The ViT-S file needs ``vit_small_patch16_224`` with
    ``num_heads=12``: a 6-head model has the same shapes, loads, and gives wrong embeddings.
    """
    sd = _tensors(_maybe_unwrap(obj), "a MoCo v3 state dict (module.base_encoder.* keys)")
    sd = _keep(_strip(sd, "module."), "base_encoder.", "a MoCo v3 checkpoint")
    return _drop(sd, ("head.", "fc."))


def convert_byol(obj: Any) -> dict[str, torch.Tensor]:
    """BYOL converted by chigur/byol-convert (model-zoo.md 2.8).

    A flat torchvision dict (incl. ``fc.*`` from the online classifier) **without**
    ``num_batches_tracked``. Those buffers are filled with zeros (one per ``*.running_mean``) so
    the strict load passes: ``num_batches_tracked`` only matters for BatchNorm with
    ``momentum=None`` in training mode, never for an eval-mode embedding.
    """
    sd = _strip(_tensors(_maybe_unwrap(obj), "a byol-convert state dict"), "module.")
    out = dict(sd)
    for key in sd:
        if key.endswith(".running_mean"):
            out.setdefault(
                key[: -len("running_mean")] + "num_batches_tracked",
                torch.tensor(0, dtype=torch.long),
            )
    return out


def convert_deit(obj: Any) -> dict[str, torch.Tensor]:
    """DeiT releases (model-zoo.md 2.1): ``{'model': timm ViT keys incl. head.*}``."""
    sd = _tensors(_get(obj, "model", "a DeiT file ({'model': ...})"), "a DeiT state dict")
    return _strip(sd, "module.")


_BEIT_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_BEIT_LAYER_RENAMES = {
    "layernorm_before.": "norm1.",
    "layernorm_after.": "norm2.",
    "attention.output.dense.": "attn.proj.",
    "intermediate.dense.": "mlp.fc1.",
    "output.dense.": "mlp.fc2.",
    "attention.attention.relative_position_bias.relative_position_bias_table": (
        "attn.relative_position_bias_table"
    ),
    "lambda_1": "gamma_1",
    "lambda_2": "gamma_2",
}
_BEIT_TOP_RENAMES = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.": "patch_embed.proj.",
    "encoder.relative_position_bias.relative_position_bias_table": (
        "rel_pos_bias.relative_position_bias_table"
    ),
    "pooler.layernorm.": "fc_norm.",
    "layernorm.": "norm.",
    "classifier.": "head.",
}


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old) :]
    return None


def convert_beit_hf(obj: Any) -> dict[str, torch.Tensor]:
    """Hugging Face ``BeitForImageClassification`` files (transformers 4.x names; model-zoo.md 2.6).

    ``query/key/value.weight`` are concatenated into ``attn.qkv.weight``; ``query.bias`` ->
    ``q_bias``, ``value.bias`` -> ``v_bias`` (BEiT has no key bias); ``lambda_{1,2}`` ->
    ``gamma_{1,2}``; per-layer and shared relative-position-bias tables are renamed;
    ``relative_position_index`` (a non-persistent buffer in timm) and ``mask_token`` are dropped;
    ``beit.pooler.layernorm`` -> ``fc_norm``, ``beit.layernorm`` -> ``norm``, ``classifier`` ->
    ``head``. Keys with no rule pass through unchanged, so the strict load names them.
    Convert the file, not a transformers 5.x model's in-memory ``state_dict()`` (other names).
    """
    sd = _tensors(_maybe_unwrap(obj), "a Hugging Face BEiT state dict (beit.* keys)")
    sd = _strip(sd, "beit.")
    if not any(k.startswith(("embeddings.", "encoder.layer.")) for k in sd):
        raise _fail(
            "expected a Hugging Face BEiT state dict (beit.embeddings.*, beit.encoder.*)", sd
        )
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key.endswith("relative_position_index") or key == "embeddings.mask_token":
            continue
        m = _BEIT_LAYER.fullmatch(key)
        if m:
            i, rest = int(m[1]), m[2]
            if rest.startswith("attention.attention.") and rest.split(".")[2] in (
                "query",
                "key",
                "value",
            ):
                qkv.setdefault(i, {})[rest[len("attention.attention.") :]] = value
                continue
            new = _rename(rest, _BEIT_LAYER_RENAMES)
            out[f"blocks.{i}.{new if new is not None else rest}"] = value
            continue
        new = _rename(key, _BEIT_TOP_RENAMES)
        out[new if new is not None else key] = value
    for i, parts in sorted(qkv.items()):
        names = ("query.weight", "key.weight", "value.weight", "query.bias", "value.bias")
        missing = [n for n in names if n not in parts]
        if missing:
            raise WeightsError(
                f"BEiT layer {i}: attention tensors missing: "
                + ", ".join(f"beit.encoder.layer.{i}.attention.attention.{n}" for n in missing)
            )
        k_bias = parts.get("key.bias")
        if k_bias is not None and bool(k_bias.any()):
            raise WeightsError(
                f"BEiT layer {i} has a non-zero key bias; timm BEiT has none (k_bias is fixed 0)"
            )
        out[f"blocks.{i}.attn.qkv.weight"] = torch.cat(
            [parts["query.weight"], parts["key.weight"], parts["value.weight"]], dim=0
        )
        out[f"blocks.{i}.attn.q_bias"] = parts["query.bias"]
        out[f"blocks.{i}.attn.v_bias"] = parts["value.bias"]
    return out


def convert_cass(obj: Any) -> dict[str, torch.Tensor]:
    """CASS (model-zoo.md 2.5): ``torch.save(model)`` of a whole timm 0.5.4 module.

    The unpickled module's ``state_dict()`` (``fc.*`` / ``head.*`` included, for the caller to
    drop). A ``DataParallel`` wrapper is unwrapped; a state dict re-saved from such a module is
    accepted as is. Reading the pickle is :func:`load_converted`'s job (trusted files only).
    """
    if isinstance(obj, Mapping):
        obj = _maybe_unwrap(obj, ("state_dict", "model"))
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        obj = obj.module
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    return _strip(_tensors(obj, "a pickled CASS timm module or its state dict"), "module.")


CONVERTERS: dict[str, Callable[[Any], dict[str, torch.Tensor]]] = {
    "dino": convert_dino,
    "swav": convert_swav,
    "vissl": convert_vissl,
    "simclr_v1": convert_simclr_v1,
    "simclr_v2": convert_simclr_v2,
    "mocov3": convert_mocov3,
    "byol": convert_byol,
    "beit_hf": convert_beit_hf,
    "deit": convert_deit,
    "cass": convert_cass,
}

LAYOUTS: dict[str, str] = {
    "dino": "DINO backbone-only flat state dict, or full checkpoint {student, teacher, ...}",
    "swav": "SwAV flat state dict with module.* keys (projection_head, prototypes)",
    "vissl": "VISSL {classy_state_dict: {base_model: {model: {trunk: _feature_blocks.*}}}}",
    "simclr_v1": "tonylins SimCLR v1 conversion {state_dict: torchvision resnet names}",
    "simclr_v2": "Separius SimCLR v2 sk0 conversion {resnet: net.*, head: ...}",
    "mocov3": "MoCo v3 {epoch, arch, state_dict: module.base_encoder.*, optimizer, scaler}",
    "byol": "byol-convert flat torchvision state dict without num_batches_tracked",
    "beit_hf": "Hugging Face BeitForImageClassification state dict (beit.*, classifier.*)",
    "deit": "DeiT release {model: timm ViT keys}",
    "cass": "CASS torch.save(model) of a whole timm 0.5.4 module (pickle)",
}


def convert(obj: Any, converter: str) -> dict[str, torch.Tensor]:
    """Apply the converter named ``converter`` to a raw checkpoint object."""
    return _converter(converter)(obj)


def _converter(name: str) -> Callable[[Any], dict[str, torch.Tensor]]:
    try:
        return CONVERTERS[name]
    except KeyError:
        raise WeightsError(
            f"unknown checkpoint converter {name!r}; known: {', '.join(sorted(CONVERTERS))}"
        ) from None


# --------------------------------------------------------------------------------------------
# reading files


_OLD_TIMM_LAYERS = "timm.models.layers"


class _TimmRemapUnpickler(pickle.Unpickler):
    """Unpickler mapping timm <= 0.8 ``timm.models.layers.*`` module paths to ``timm.layers.*``."""

    def find_class(self, module: str, name: str) -> Any:
        if module == _OLD_TIMM_LAYERS or module.startswith(_OLD_TIMM_LAYERS + "."):
            module = "timm.layers" + module[len(_OLD_TIMM_LAYERS) :]
        return super().find_class(module, name)


def _remap_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler remaps old timm paths."""
    mod = types.ModuleType("featlab_timm_remap_pickle")
    mod.Unpickler = _TimmRemapUnpickler  # type: ignore[attr-defined]
    mod.load = pickle.load  # type: ignore[attr-defined]  # only reads legacy-format headers
    return mod


@contextlib.contextmanager
def _namespace_allowed() -> Iterator[None]:
    """Allow ``argparse.Namespace`` (DINO/DeiT ``args``) in ``weights_only`` unpickling."""
    sg = getattr(torch.serialization, "safe_globals", None)
    if sg is not None:
        with sg([argparse.Namespace]):
            yield
        return
    add = getattr(torch.serialization, "add_safe_globals", None)  # torch 2.4
    if add is not None:
        add([argparse.Namespace])
    yield


def _why_not_weights_only(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed: the pickled classes, else the error."""
    get = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    found: list[str] = []
    if get is not None:
        with contextlib.suppress(Exception):
            found = [g for g in get(str(path)) if g != "argparse.Namespace"]
    if found:
        more = f" ... (+{len(found) - _SHOW} more)" if len(found) > _SHOW else ""
        return f"it pickles objects, not just tensors: {', '.join(found[:_SHOW])}{more}"
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    # torch's weights_only message is advice to unpickle anyway; keep only its diagnosis.
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
    text = " ".join(text.split())[:300]
    return f"not a readable torch checkpoint ({type(err).__name__}: {text})"


def _read_raw(path: Path, converter: str, trust: bool) -> Any:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            return load_file(str(path))
        except Exception as err:
            raise WeightsError(
                f"cannot read safetensors file {str(path)!r} ({type(err).__name__}: {err})"
            ) from err
    try:
        with _namespace_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = err
    reason = _why_not_weights_only(path, first)
    if converter != "cass":
        raise WeightsError(
            f"cannot read {str(path)!r} as a {converter!r} checkpoint ({LAYOUTS[converter]}) "
            f"with torch.load(weights_only=True): {reason}. featlab does not unpickle arbitrary "
            "objects for this layout"
        ) from first
    if not trust:
        raise WeightsError(
            f"{str(path)!r} is not a plain state dict ({reason}); expected layout: "
            f"{LAYOUTS['cass']}. Unpickling it runs arbitrary code from the file: pass "
            f"{TRUST_FLAG} only if you trust the file (e.g. you made it yourself), or re-save "
            "model.state_dict() in the environment that created it"
        ) from first
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_remap_pickle_module()
        )
    except Exception as err:
        raise WeightsError(
            f"cannot unpickle the CASS module {str(path)!r} ({type(err).__name__}: {err}); "
            "old timm.models.layers.* paths are remapped to timm.layers.*, other classes must "
            "still exist in the installed timm"
        ) from err


def load_converted(
    path: str | os.PathLike[str], converter: str | None, *, trust: bool = False
) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and convert it to a flat timm state dict.

    Args:
        path: The checkpoint (``.pth``, ``.pth.tar``, ``.torch``, ``.pt``, ``.bin`` or
            ``.safetensors``).
        converter: A key of :data:`CONVERTERS`, or None for a plain timm/torchvision state dict
            (:func:`featlab.extractors.weights.read_state_dict`).
        trust: Allow full unpickling for the ``cass`` whole-module layout (runs code from the
            file). Every other layout is read with ``torch.load(weights_only=True)``.

    Returns:
        ``{timm key: tensor}``, possibly with classifier keys (``fc.*``, ``head.*``).

    Raises:
        WeightsError: Unknown converter, missing or unreadable file, a pickled module without
            ``trust``, or a file whose layout is not the converter's (the message names the file,
            the expected layout and the top-level keys found).
    """
    if converter is None:
        return read_state_dict(path)
    fn = _converter(converter)
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; check the --weights path")
    raw = _read_raw(p, converter, trust)
    try:
        sd = fn(raw)
    except WeightsError as err:
        top = _describe(raw)
        where = "" if top in str(err) else f"; the file's top level has {top}"
        raise WeightsError(
            f"{str(p)!r} is not a {converter!r} checkpoint ({LAYOUTS[converter]}): {err}{where}"
        ) from err
    if not sd:
        raise WeightsError(
            f"{str(p)!r}: the {converter!r} converter ({LAYOUTS[converter]}) found no weights; "
            f"the file's top level has {_describe(raw)}"
        )
    return sd
