"""Embedding views: several embeddings from one forward pass of a backbone.

A model name may end in ``:<view>`` (``dino-vits8:cls4``); without it the model's default view is
meant (DESIGN section 4). Views of a ViT come from the same tokens:

- ``cls``: the CLS token after the final norm (DINO's k-NN feature, Caron et al. 2021, 4.1);
- ``cls4``: the CLS tokens of the last 4 blocks, each after the final norm, concatenated (DINO's
  linear-evaluation feature for ViT-S, ``eval_linear.py --n_last_blocks 4``; 4 x 384 = 1536-d);
- ``avg``: the mean of the patch tokens after the final norm (class and register tokens excluded);
- ``cls+avg``: ``cls`` then ``avg``, concatenated.

CNNs have one view, ``avg``: the global average pool (2048-d for ResNet-50).
"""

from __future__ import annotations

import torch
from torch import nn

from featlab.errors import UnknownModelError

VIT_VIEWS = ("cls", "cls4", "avg", "cls+avg")
CNN_VIEWS = ("avg",)
ALL_VIEWS = tuple(dict.fromkeys(VIT_VIEWS + CNN_VIEWS))
N_LAST_BLOCKS = 4  # DINO eval_linear.py default for ViT-S


def split_view(name: str) -> tuple[str, str | None]:
    """``"timm:vit_small_patch16_224:cls4"`` -> ``("timm:vit_small_patch16_224", "cls4")``."""
    base, sep, view = name.rpartition(":")
    if sep and view in ALL_VIEWS:
        return base, view
    return name, None


def is_vit(model: nn.Module) -> bool:
    """A timm ViT-like model with a class token, token outputs and a final norm.

    Models that pool first and normalise after (BEiT: mean of patch tokens -> ``fc_norm``, its
    ``norm`` is Identity) have no "after the final norm" tokens, so they offer only their own
    pooled embedding, like a CNN.
    """
    return (
        getattr(model, "cls_token", None) is not None
        and hasattr(model, "blocks")
        and not isinstance(getattr(model, "norm", None), nn.Identity)
    )


def supported_views(model: nn.Module) -> tuple[str, ...]:
    return VIT_VIEWS if is_vit(model) else CNN_VIEWS


def check_views(model: nn.Module, views: tuple[str, ...], name: str) -> None:
    """Raise UnknownModelError for views the model cannot give."""
    ok = supported_views(model)
    bad = [v for v in views if v not in ok]
    if bad:
        raise UnknownModelError(
            f"{name}: view(s) {bad} are not available for {type(model).__name__}; it offers "
            f"{list(ok)}"
        )


def view_dim(model: nn.Module, view: str) -> int:
    """Width of ``view``'s embedding for ``model``."""
    d = int(model.num_features if not is_vit(model) else model.embed_dim)
    return {"cls4": N_LAST_BLOCKS * d, "cls+avg": 2 * d}.get(view, d)


def compute_views(
    model: nn.Module, x: torch.Tensor, views: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Every requested view of ``x`` from one forward pass.

    Args:
        model: A headless timm model in eval mode.
        x: ``(B, 3, H, W)`` normalised input in the model's dtype.
        views: ``"default"`` (what ``model(x)`` returns: the model's own pooling, e.g. BEiT's
            mean + ``fc_norm``) and names from :data:`VIT_VIEWS` or :data:`CNN_VIEWS`.

    Returns:
        ``{view: (B, dim) tensor}`` in the model's dtype.
    """
    if not is_vit(model) or set(views) <= {"default"}:
        pooled = model(x)
        return dict.fromkeys(views, pooled)
    if "cls4" in views:
        final, inter = model.forward_intermediates(
            x, indices=N_LAST_BLOCKS, norm=True, output_fmt="NLC", return_prefix_tokens=True
        )
        cls4 = torch.cat([prefix[:, 0] for _, prefix in inter], dim=-1)
    else:
        final, cls4 = model.forward_features(x), None
    n_prefix = int(getattr(model, "num_prefix_tokens", 1))
    cls, avg = final[:, 0], final[:, n_prefix:].mean(dim=1)
    out: dict[str, torch.Tensor | None] = {"cls": cls, "avg": avg, "cls4": cls4}
    if "cls+avg" in views:
        out["cls+avg"] = torch.cat([cls, avg], dim=-1)
    if "default" in views:
        out["default"] = model.forward_head(final, pre_logits=True)
    return {v: out[v] for v in views}  # type: ignore[misc]
