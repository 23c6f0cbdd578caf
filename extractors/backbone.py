"""Backbone: a timm model built from a spec, with its weights, ready to embed uint8 batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featlab.errors import WeightsError
from featlab.extractors.converters import load_converted
from featlab.extractors.device import Runtime
from featlab.extractors.spec import ModelSpec
from featlab.extractors.views import compute_views, view_dim
from featlab.extractors.weights import load_backbone_state, sha256_file


@dataclass
class Backbone:
    """A model that maps ``(B, 3, H, W)`` uint8 images to ``(B, dim)`` float32 embeddings.

    Normalisation happens here, on the device, in float32 (the same function as torchvision's
    ``ToTensor`` + ``Normalize``, up to float rounding), so workers ship uint8 (4x less to copy)
    and no loop hard-codes a mean or std.
    """

    spec: ModelSpec
    model: nn.Module
    dim: int
    runtime: Runtime
    weights: dict[str, Any]
    channels_last: bool
    bn_folded: bool
    fused_linear: bool = False

    def __post_init__(self) -> None:
        dev = torch.device(self.runtime.device)
        self._device = dev
        self._mean = torch.tensor(self.spec.mean, device=dev).view(1, -1, 1, 1) * 255.0
        self._std = torch.tensor(self.spec.std, device=dev).view(1, -1, 1, 1) * 255.0
        self._cpu_dtype = (
            torch.bfloat16 if (dev.type == "cpu" and self.runtime.precision == "bf16") else None
        )
        self._amp_dtype = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.runtime.precision)
            if dev.type == "cuda"
            else None
        )

    def view(self) -> dict[str, Any]:
        """How the embedding is computed, for the store's provenance."""
        return {
            "pool": self.spec.pool,
            "dim": self.dim,
            "channels_last": self.channels_last,
            "bn_folded": self.bn_folded,
            "fused_linear": self.fused_linear,
        }

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch with the default view: ``(B, 3, H, W)`` uint8 -> ``(B, dim)`` float32."""
        return self.embed_views(images, ("default",))["default"]

    @torch.inference_mode()
    def embed_views(self, images: torch.Tensor, views: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Embed a batch once and return every requested view.

        Args:
            images: ``(B, 3, H, W)`` uint8 at the spec's input size (CPU tensor, pinned on CUDA).
            views: ``"default"`` and/or names of :mod:`featlab.extractors.views`.

        Returns:
            ``{view: (B, dim_view) float32 CPU tensor}``.
        """
        x = images.to(self._device, non_blocking=True).float()
        # (x/255 - mean)/std == (x - 255*mean)/(255*std): one pass fewer over the batch.
        x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._cpu_dtype is not None:
            out = compute_views(self.model, x.to(self._cpu_dtype), views)
        elif self._amp_dtype is not None:
            with torch.autocast("cuda", dtype=self._amp_dtype):
                out = compute_views(self.model, x, views)
        else:
            out = compute_views(self.model, x, views)
        return {v: t.float().cpu() for v, t in out.items()}

    def view_dim(self, view: str) -> int:
        return self.dim if view == "default" else view_dim(self.model, view)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    names = cfg.get("classifier") or ("head", "fc")
    names = (names,) if isinstance(names, str) else tuple(names)
    return (*tuple(f"{n}." for n in names), "head_dist.", "fc_norm_head.")


def _create(spec: ModelSpec, **extra: Any) -> nn.Module:
    import timm

    kwargs = {**spec.model_kwargs, **extra}
    try:
        return timm.create_model(spec.architecture, **kwargs)
    except TypeError as err:
        if "img_size" in kwargs and "img_size" in str(err):
            # Size-agnostic architectures (CNNs) take no img_size; their input size is the
            # transform's alone, so dropping the argument does not change the result.
            kwargs.pop("img_size")
            return timm.create_model(spec.architecture, **kwargs)
        raise


def pretrained_file(architecture: str) -> Path:
    """Local path of timm's published weights for ``architecture``: cache first, then download.

    Raises:
        WeightsError: No published weights, or not cached and not downloadable; the message
            names the URL and the cache folder to put the file in.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(architecture)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(
            f"timm publishes no weights for {architecture!r}; use --random-init "
            "or give a checkpoint with --weights PATH"
        )
    if cfg.hf_hub_id:
        from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

        names = (
            [cfg.hf_hub_filename]
            if cfg.hf_hub_filename
            else ["model.safetensors", "pytorch_model.bin"]
        )
        for fname in names:
            hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(hit, str):
                return Path(hit)
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, names[0]))
        except Exception as err:
            raise WeightsError(
                f"weights for timm:{architecture} are not in the cache and could not be "
                f"downloaded ({type(err).__name__}). Get "
                f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{names[0]} on a machine "
                f"with network and either pass it with --weights PATH or copy the Hugging Face "
                f"cache ({constants.HF_HUB_CACHE}) here."
            ) from err
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    target = hub_dir / os.path.basename(cfg.url)
    if not target.is_file():
        try:
            hub_dir.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(cfg.url, str(target), progress=False)
        except Exception as err:
            raise WeightsError(
                f"weights for timm:{architecture} are not cached and could not be downloaded "
                f"({type(err).__name__}). Download {cfg.url} and put it at {target} (or pass it "
                "with --weights PATH)."
            ) from err
    return target


def official_file(url: str) -> Path:
    """The official weights file of ``url`` in the torch hub cache, downloaded if absent.

    The cache is ``$TORCH_HOME/hub/checkpoints`` (default ``~/.cache/torch/hub/checkpoints``),
    the same place torch.hub uses, so a file placed there by hand is found.

    Raises:
        WeightsError: Not cached and not downloadable; names the URL and the exact path.
    """
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if target.is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except Exception as err:
        raise WeightsError(
            f"weights not cached and could not be downloaded ({type(err).__name__}). Download "
            f"{url} and put it at {target}, or pass it with --weights PATH."
        ) from err
    return target


def _set_pool(model: nn.Module, spec: ModelSpec) -> str:
    """Make the headless model return the spec's embedding; return the resolved pool name."""
    has_cls = getattr(model, "cls_token", None) is not None
    wanted = spec.pool
    if wanted == "auto":
        wanted = "cls" if has_cls else "model"
    if wanted == "cls":
        if not has_cls:
            raise WeightsError(
                f"{spec.name}: pool 'cls' asked for, but the model has no class token"
            )
        if getattr(model, "global_pool", "token") != "token":
            # DESIGN section 4: a ViT embedding is the CLS token after the final norm.
            model.reset_classifier(0, global_pool="token")
        return "cls"
    if wanted == "model":
        gp = getattr(model, "global_pool", None)
        return str(getattr(gp, "pool_type", gp) or "avg")
    model.reset_classifier(0, global_pool=wanted)
    return wanted


def _fold_batchnorm(model: nn.Module) -> tuple[nn.Module, bool]:
    """Fold inference BatchNorm into the preceding convolutions (same function, fewer passes)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model, False
    try:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(model, inplace=False)
    except Exception:
        return model, False  # untraceable model: identical results, only slower
    remaining = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    return fused, not remaining


class OneDNNLinear(nn.Module):
    """A Linear (optionally followed by exact GELU) as one oneDNN bf16 primitive.

    Plain ``addmm`` first copies the broadcast bias into the output and runs GELU as a separate
    pass; on a 2-core AMX CPU those two memory passes cost ~30% of a ViT's time. oneDNN applies
    the bias and the GELU inside the matmul (measured 1.35x on vit_small_patch16_224, bf16).
    """

    def __init__(self, linear: nn.Linear, gelu: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
        bias = linear.bias.detach() if linear.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.weight, self.bias, self.attr, [], self.algorithm
        )


def _fuse_linears(model: nn.Module) -> int:
    """Swap every Linear for :class:`OneDNNLinear`, folding an exact GELU that follows it.

    timm's ``Mlp`` runs ``fc1 -> act -> drop -> norm -> fc2``; in eval mode with an exact
    (erf) GELU, ``fc1 + GELU`` as one primitive is the same function.
    """
    n = 0
    for module in list(model.modules()):
        fc1, act = getattr(module, "fc1", None), getattr(module, "act", None)
        if isinstance(fc1, nn.Linear) and isinstance(act, nn.GELU) and act.approximate == "none":
            module.fc1, module.act = OneDNNLinear(fc1, gelu=True), nn.Identity()
            n += 1
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, OneDNNLinear(child))
                n += 1
    return n


def _try_fuse_linears(model: nn.Module, spec: ModelSpec) -> tuple[nn.Module, bool]:
    """Fuse when this torch build supports it and the fused model agrees with the original.

    Only speed depends on this: the check compares both on a random batch and keeps the
    original model unless the embeddings agree to bf16 precision.
    """
    import copy

    if not (
        torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    ):
        return model, False
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return model, False
    fused = copy.deepcopy(model)
    try:
        _fuse_linears(fused)
        x = torch.randn(2, *spec.input_size, generator=torch.Generator().manual_seed(0))
        x = x.to(torch.bfloat16)
        with torch.inference_mode():
            a, b = model(x).float(), fused(x).float()
        agree = torch.nn.functional.cosine_similarity(a, b).min().item() > 0.999
    except RuntimeError:
        return model, False
    return (fused, True) if agree else (model, False)


def timm_pretrained_model(
    spec: ModelSpec, create: Callable[..., nn.Module] = _create
) -> tuple[nn.Module, dict[str, Any]]:
    """``spec``'s architecture with timm's published weights, its ImageNet head included.

    The default ``num_classes`` keeps timm's load strict (it relaxes it for other sizes);
    callers remove or replace the head. ``create(spec, **kwargs)`` builds the model (default
    ``_create``; the pretraining job passes one that adds training-only kwargs).

    Returns:
        The model and the record of its weights (``source``, ``path``, ``sha256``).

    Raises:
        WeightsError: The weights are not cached and cannot be downloaded, or do not load.
    """
    path = pretrained_file(spec.architecture)  # cache, else download; offline: names the URL
    try:
        model = create(
            spec, pretrained=True, pretrained_cfg_overlay={"file": str(path), "custom_load": False}
        )
    except RuntimeError as err:
        raise WeightsError(
            f"timm weights {path} do not load into {spec.architecture}: {str(err)[:500]}"
        ) from err
    return model, {"source": "timm", "path": str(path), "sha256": sha256_file(path)}


def load_model(
    spec: ModelSpec,
    *,
    weights: str | None = None,
    seed: int = 0,
    trust_checkpoint: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The timm model of ``spec``, headless (``num_classes=0``), with its weights, on the CPU.

    Weights: ``weights`` (a local checkpoint, loaded loudly) if given; else the published
    weights when ``spec.pretrained``; else a random init seeded with ``seed``.

    Returns:
        The model (train mode as created, fp32) and the record of where its weights came from
        (``source``, ``path``, ``sha256``, ...), as the store keeps it.

    Raises:
        WeightsError: Missing or unreadable weights, or keys that do not fit.
    """
    torch.manual_seed(seed)  # random init (and any init-time randomness) is reproducible
    if weights is not None:
        model = _create(spec, pretrained=False, num_classes=0)
        path = Path(weights).expanduser()
        # The spec's converter turns the official file layout into timm keys (DINO teacher,
        # SwAV module., VISSL trunk, ...); pickled whole modules only with trust_checkpoint.
        state = load_converted(path, spec.converter, trust=trust_checkpoint)
        dropped = load_backbone_state(
            model, state, source=str(path), classifier_prefixes=_classifier_prefixes(model)
        )
        info: dict[str, Any] = {
            "source": "file",
            "path": str(path.resolve()),
            "sha256": sha256_file(path),
            "dropped_keys": len(dropped),
            "converter": spec.converter,
        }
    elif spec.pretrained and spec.local_only:
        raise WeightsError(
            f"{spec.name} has no published weights: give the checkpoint with --weights PATH "
            f"(layout: {spec.converter or 'a timm state dict'}), or make one with featlab "
            f"pretrain and name its run: {spec.name}@runs/NAME"
        )
    elif spec.pretrained and spec.weights_url:
        path = official_file(spec.weights_url)
        model = _create(spec, pretrained=False, num_classes=0)
        state = load_converted(path, spec.converter, trust=False)
        load_backbone_state(
            model, state, source=str(path), classifier_prefixes=_classifier_prefixes(model)
        )
        info = {
            "source": spec.weights_url,
            "path": str(path),
            "sha256": sha256_file(path),
            "converter": spec.converter,
        }
    elif spec.pretrained:
        model, info = timm_pretrained_model(spec)
        model.reset_classifier(0)
    else:
        model = _create(spec, pretrained=False, num_classes=0)
        info = {"source": "random-init", "seed": seed, "sha256": None}
    return model, info


def build_backbone(
    spec: ModelSpec,
    runtime: Runtime,
    *,
    weights: str | None = None,
    seed: int = 0,
    trust_checkpoint: bool = False,
) -> Backbone:
    """Create the model of ``spec`` with its weights, headless, in eval mode, on the device.

    Weights as :func:`load_model` finds them.

    Raises:
        WeightsError: Missing or unreadable weights, or keys that do not fit.
    """
    model, info = load_model(spec, weights=weights, seed=seed, trust_checkpoint=trust_checkpoint)
    pool = _set_pool(model, spec)
    spec = replace(spec, pool=pool)
    dim = int(model.num_features)
    model.eval()
    channels_last = not hasattr(model, "patch_embed")  # CNNs; ViTs gain nothing from it
    model, folded = _fold_batchnorm(model)
    model = model.to(runtime.device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.device == "cpu" and runtime.precision == "bf16":
        # On CPU, bf16 weights and activations run the AMX/AVX512-BF16 kernels without
        # autocast's per-call weight casts (measured ~1.2-1.3x faster than autocast here).
        model = model.to(torch.bfloat16)
        model, fused = _try_fuse_linears(model, spec)
    else:
        fused = False
    for p in model.parameters():
        p.requires_grad_(False)
    return Backbone(spec, model, dim, runtime, info, channels_last, folded, fused)
