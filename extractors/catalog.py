"""What ``featlab models`` shows: every zoo name with its architecture, dims, source, and whether
its weights are on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from featlab.extractors.spec import ModelSpec
from featlab.extractors.views import supported_views, view_dim
from featlab.extractors.zoo import ZOO


def weights_location(spec: ModelSpec) -> tuple[str, str | None]:
    """``(source, local path or None)``: where the weights come from and whether they are here."""
    if spec.local_only:
        return "local only: --weights PATH or featlab pretrain", None
    if spec.weights_url:
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(spec.weights_url)
        return spec.weights_url, str(target) if target.is_file() else None
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(spec.architecture)
    repo = cfg.hf_hub_id if cfg is not None else None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname) if repo else None
        if isinstance(hit, str):
            return f"timm:{spec.architecture}", hit
    return f"timm:{spec.architecture}", None


def model_catalog() -> list[dict[str, Any]]:
    """One dict per zoo model: name, architecture, dims per view, source, local path."""
    import timm

    rows = []
    for name, spec in ZOO.items():
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = timm.create_model(
                spec.architecture.split(".")[0], num_classes=0, **spec.model_kwargs
            )
        dims = {v: view_dim(model, v) for v in supported_views(model)}
        source, path = weights_location(spec)
        rows.append(
            {
                "name": name,
                "architecture": spec.architecture,
                "default_dim": int(model.num_features),
                "views": dims,
                "source": source,
                "local_path": path,
                "input_size": list(spec.input_size),
            }
        )
    return rows
