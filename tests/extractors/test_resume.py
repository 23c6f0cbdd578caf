"""A run killed with SIGKILL and started again continues, and ends byte-identical."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

import featlab

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from featlab.datasets import table_from_arrays
    from featlab.extractors import extract

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 24, 24, 3), dtype=np.uint8)
    table = table_from_arrays(images, np.arange(96) % 3, name="resume")
    extract("timm:test_vit", table, sys.argv[1], random_init=True, img_size=32, batch_size=4,
            workers=0, progress=False, precision=sys.argv[2])
    """
)


def _run(store: Path, precision: str, *, kill_after_rows: int | None = None) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(store), precision])
    if kill_after_rows is None:
        assert proc.wait(timeout=120) == 0
        return
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.05)
        try:
            written = featlab.open_store(store)["resume"].n_written("timm:test_vit")
        except Exception:
            continue  # store or model not created yet
        if written >= kill_after_rows:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    precision = "bf16" if _native_bf16() else "fp32"
    _run(tmp_path / "full.zarr", precision)
    _run(tmp_path / "killed.zarr", precision, kill_after_rows=8)
    ds = featlab.open_store(tmp_path / "killed.zarr")["resume"]
    n_before = ds.n_written("timm:test_vit")
    assert 8 <= n_before < 96, "the kill must land mid-run for this test to mean anything"
    assert "timm:test_vit" not in ds.models
    _run(tmp_path / "killed.zarr", precision)

    full = featlab.open_store(tmp_path / "full.zarr")["resume"]
    resumed = featlab.open_store(tmp_path / "killed.zarr")["resume"]
    a = full.embeddings("timm:test_vit")
    b = resumed.embeddings("timm:test_vit")
    assert resumed.models == ("timm:test_vit",)
    assert a.tobytes() == b.tobytes()
    assert np.abs(a).sum() > 0


def _native_bf16() -> bool:
    from featlab.extractors.device import cpu_bf16_kernels

    return cpu_bf16_kernels() is not None
