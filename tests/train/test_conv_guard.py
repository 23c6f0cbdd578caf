"""CPU bf16 training: convolutions on single-pixel maps get exact weight gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from featlab.train.conv_guard import SinglePixelFp32Conv2d, guard_single_pixel_convs
from featlab.train.precision import autocast


def _weight_grad(conv: nn.Conv2d, x: torch.Tensor, precision: str) -> torch.Tensor:
    conv.zero_grad()
    with autocast("cpu", precision):
        y = conv(x)
    y.float().sum().backward()
    return conv.weight.grad.clone()


@pytest.mark.parametrize("size", [1, 2])
def test_guarded_conv_gradient_matches_fp32_on_the_failing_shape(size: int) -> None:
    # The shape torch 2.14.1's bf16 kernel gets wrong: 3x3, stride 2, 1x1 input, batch >= 128.
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
    x = torch.randn(256, 64, size, size)
    reference = _weight_grad(copy.deepcopy(conv), x, "fp32")
    assert guard_single_pixel_convs(conv) == 1
    got = _weight_grad(conv, x, "bf16")
    # fp32 on 1x1 maps: equal to the reference; 2x2 maps stay in bf16 (~0.3% relative error).
    tolerance = 1e-6 if size == 1 else 2e-2
    assert float((got - reference).norm() / reference.norm()) < tolerance


def test_only_convs_with_spatial_kernels_are_guarded_and_the_state_is_kept() -> None:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_spatial = sum(
        isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 for m in model.modules()
    )
    assert guard_single_pixel_convs(model) == n_spatial > 0
    assert all(
        isinstance(m, SinglePixelFp32Conv2d) == (max(m.kernel_size) > 1)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    )
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # outside autocast the guarded model computes what it did before
        plain = timm.create_model("test_resnet", num_classes=3)
        plain.load_state_dict(before)
        torch.testing.assert_close(model.eval()(x), plain.eval()(x))
