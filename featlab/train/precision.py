"""Mixed precision for training: fp32 weights, autocast for the forward pass.

bf16 autocast runs the AMX/AVX512-BF16 kernels on CPUs that have them and the tensor cores on
CUDA; fp16 (CUDA only) needs a gradient scaler. Which precision to use is decided by the caller
(``featlab.extractors.device.resolve_runtime``); this module only applies it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from featlab.errors import InvalidArgumentError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


@contextlib.contextmanager
def autocast(device: str, precision: str) -> Iterator[None]:
    """Autocast to ``precision`` (``fp32``, ``bf16``, ``fp16``) on ``device`` for a forward pass.

    Raises:
        InvalidArgumentError: Unknown precision, or fp16 on a CPU.
    """
    if precision == "fp32":
        yield
        return
    if precision not in _DTYPES:
        raise InvalidArgumentError(f"precision must be fp32, bf16 or fp16; got {precision!r}")
    kind = _device_type(device)
    if precision == "fp16" and kind == "cpu":
        raise InvalidArgumentError("fp16 training needs CUDA; use bf16 or fp32 on the CPU")
    with torch.autocast(device_type=kind, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: str, precision: str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 on CUDA (bf16 has fp32's exponent range)."""
    kind = _device_type(device)
    return torch.amp.GradScaler(kind, enabled=kind == "cuda" and precision == "fp16")
