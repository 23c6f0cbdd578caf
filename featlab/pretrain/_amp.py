"""Losses in float32: forward passes autocast, the loss itself does not.

Autocast runs matmul-like ops (``einsum``, ``linear``) in bf16/fp16 even on float32 inputs, so a
loss built from them (DINO's cross-entropy is an ``einsum``) would be computed to 8 bits of
mantissa. Losses are computed inside :func:`float32` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def float32(device: str) -> Iterator[None]:
    """Turn autocast off for a block on ``device``'s type (``cpu`` or ``cuda``)."""
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    with torch.autocast(device_type=kind, enabled=False):
        yield
