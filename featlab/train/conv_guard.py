"""Single-pixel convolutions in fp32 while training in bf16 on the CPU (a torch kernel bug).

Measured on torch 2.14.1 (oneDNN, AMX): under CPU bf16 autocast, the weight gradient of a
``Conv2d`` with a kernel larger than 1 and stride 2 is wrong when its input is 1 x 1 pixels and
the batch has 128 or more samples — NaN, inf, or finite values off by orders of magnitude (the
output and the input gradient are right; 2 x 2 inputs and stride 1 are right). A resnet's last
stage meets it on inputs of 16 px or less: DINO's 14-px local crops of 32-px images did, in a
batch of 8 x 32 crops, and training diverged after one step.
A finite wrong gradient would corrupt a run silently, so every convolution whose input is a
single pixel runs in fp32 instead: exact, and cheap (a 1 x 1 map is the smallest work there is).
"""

from __future__ import annotations

import torch
from torch import nn


class SinglePixelFp32Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that leaves CPU autocast for 1 x 1 inputs (same parameters and state)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (1, 1) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def guard_single_pixel_convs(model: nn.Module) -> int:
    """Make every ``Conv2d`` of ``model`` with a kernel larger than 1 a
    :class:`SinglePixelFp32Conv2d`, in place (its class only: weights, hooks and the state dict
    are unchanged).

    Returns:
        The number of convolutions guarded.
    """
    count = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and max(module.kernel_size) > 1:
            module.__class__ = SinglePixelFp32Conv2d
            count += 1
    return count
