"""Device and precision: CUDA when present, bf16 where the hardware runs it fast, else fp32."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from featlab.errors import InvalidArgumentError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs.

    Attributes:
        device: ``cpu`` or ``cuda[:i]``.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        kernels: What the hardware offers for that precision (e.g. ``cpu AMX-BF16``), recorded
            so a benchmark or a store says which kernels produced its numbers.
    """

    device: str
    precision: str
    kernels: str


def cpu_bf16_kernels() -> str | None:
    """``AMX-BF16`` or ``AVX512-BF16`` when this CPU has native bf16 matmul, else None."""
    import torch

    checks = (("AMX-BF16", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for label, fn in checks:
        probe = getattr(torch.cpu, fn, None)
        if probe is not None and probe():
            return label
    # Older torch: read the CPU flags directly (Linux).
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        m = re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.MULTILINE)
        flags = m.group(1) if m else ""
    if " amx_bf16" in flags:
        return "AMX-BF16"
    if " avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Pick the device and precision.

    ``device="auto"`` is CUDA when available, else CPU. ``precision="auto"`` is bf16 on CUDA
    (fp16 on GPUs without bf16) and on CPUs with AMX or AVX512-BF16, else fp32: bf16 on a CPU
    without native support is emulated and slower than fp32.

    Raises:
        ValueError: Unknown device or precision, or CUDA requested but not available.
    """
    import torch

    if precision not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {device!r} requested but CUDA is not available here; "
                "use --device cpu (or auto)"
            )
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "auto":
            precision = "bf16" if bf16 else "fp16"
        return Runtime(device, precision, f"cuda {torch.cuda.get_device_name(device)}")
    if device != "cpu":
        raise InvalidArgumentError(f"device must be auto, cpu or cuda[:i]; got {device!r}")
    native = cpu_bf16_kernels()
    if precision == "auto":
        precision = "bf16" if native else "fp32"
    if precision == "fp16":
        raise InvalidArgumentError(
            "fp16 on the CPU is slow and lossy; use --precision bf16 or fp32"
        )
    if precision == "bf16":
        kernels = f"cpu {native}" if native else "cpu bf16 emulated (no AMX/AVX512-BF16)"
    else:
        kernels = "cpu fp32"
    return Runtime("cpu", precision, kernels)
