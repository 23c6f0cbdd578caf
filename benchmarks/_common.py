"""Helpers shared by the benchmark scripts: matmul peaks, table printing, synthetic data."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "_data"


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(dtype_name: str, n: int = 2048) -> float:
    """Measured square-GEMM GFLOP/s of torch on the CPU for ``float32`` or ``bfloat16``."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_time(lambda: a @ b) / 1e9


def synthetic_h5(n: int, size: int = 224, seed: int = 0) -> Path:
    """``n`` random RGB images ``(n, size, size, 3)`` uint8 in an HDF5 file (cached by shape)."""
    import h5py

    DATA_DIR.mkdir(exist_ok=True)
    path = DATA_DIR / f"synthetic_{n}x{size}_seed{seed}.h5"
    if not path.exists():
        rng = np.random.default_rng(seed)
        # Smooth blobs plus noise: decodes and resizes like real images, not like constant ones.
        with h5py.File(path.with_suffix(".tmp"), "w") as f:
            ds = f.create_dataset(
                "x", shape=(n, size, size, 3), dtype="uint8", chunks=(min(n, 32), size, size, 3)
            )
            yy, xx = np.mgrid[0:size, 0:size] / size
            for lo in range(0, n, 256):
                m = min(256, n - lo)
                phase = rng.uniform(0, 6.28, (m, 1, 1, 3))
                freq = rng.uniform(2, 12, (m, 1, 1, 3))
                img = 127 + 80 * np.sin(freq * (xx[None, ..., None] + yy[None, ..., None]) + phase)
                img += rng.normal(0, 20, img.shape)
                ds[lo : lo + m] = np.clip(img, 0, 255).astype(np.uint8)
        path.with_suffix(".tmp").rename(path)
    return path


def print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) + " |")
