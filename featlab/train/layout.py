"""Memory layout for training: CNNs channels-last, batches in their model's layout.

oneDNN's convolutions (AMX bf16 on CPU, cuDNN on CUDA) are fastest on channels-last tensors:
bf16 training steps of a resnet50 ran ~1.5x faster here than in the default layout
(``benchmarks/finetune.py``). ViTs gain nothing (one patchify conv) and keep the default layout.
A batch in another layout than its model's weights would be converted by every convolution.
"""

from __future__ import annotations

import torch
from torch import nn


def to_train_layout(model: nn.Module) -> nn.Module:
    """Convert a CNN's weights to channels-last in place (ViTs, with ``patch_embed``, are kept).

    Returns:
        ``model`` itself.
    """
    if not hasattr(model, "patch_embed"):
        model.to(memory_format=torch.channels_last)
    return model


def input_layout(model: nn.Module) -> torch.memory_format:
    """The memory format of ``model``'s first 4-d weight, which its batches should have."""
    for p in model.parameters():
        if p.ndim == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return torch.channels_last
            break
    return torch.contiguous_format


def batch_to(x: torch.Tensor, device: str, layout: torch.memory_format) -> torch.Tensor:
    """``(B, C, H, W)`` batch on ``device`` in ``layout`` (non-blocking from pinned memory)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=layout)
