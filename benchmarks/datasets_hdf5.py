"""PCam HDF5 reading vs resnet50: is reading at least 10x faster than the model it feeds?

A synthetic PCam-layout folder (``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5``, x
``(N, 96, 96, 3)`` uint8 stored contiguously like the Zenodo files) is read through
``featlab.datasets.load_dataset("pcam")``. Three throughputs, in images/s, one process each:

- source: the table's image source (``HDF5RowImages`` under ``ConcatImages``) turning rows of
  consecutive 128-row batches into PIL images;
- decode path: the engine's ``BatchDataset`` for ``timm:resnet50`` (source + resize/crop to
  224 + uint8 batch), what each DataLoader worker runs;
- model: resnet50 (random init; bf16 on CPUs with AMX/AVX512-BF16, else fp32) on pre-made
  batches, via ``build_backbone``, as in ``benchmarks/extract.py``.

Reading is measured in one process; extraction runs it in several workers, so the margin in a
real run is larger. Exits 1 unless both the source and the decode path are >= 10x the model.

Usage: python benchmarks/datasets_hdf5.py [--n 8192] [--model-images 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA_DIR, print_table

SEED = 0
TARGET = 10.0
BATCH = 128
ARCH = "resnet50"


def pcam_folder(n: int, seed: int = SEED) -> Path:
    """A PCam-layout folder with ``n`` training images (and 256 each for valid/test), cached."""
    import h5py

    root = DATA_DIR / f"pcam_{n}_seed{seed}"
    counts = {"train": n, "valid": 256, "test": 256}
    if (root / "camelyonpatch_level_2_split_test_y.h5").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    for split, count in counts.items():
        stem = root / f"camelyonpatch_level_2_split_{split}"
        with h5py.File(f"{stem}_x.h5", "w") as f:
            # Contiguous (no chunks), like the official files: row slices are plain reads.
            ds = f.create_dataset("x", shape=(count, 96, 96, 3), dtype="uint8")
            for lo in range(0, count, 1024):
                m = min(1024, count - lo)
                phase = rng.uniform(0, 6.28, (m, 1, 1, 3))
                freq = rng.uniform(2, 12, (m, 1, 1, 3))
                img = 127 + 80 * np.sin(freq * (xx[None, ..., None] + yy[None, ..., None]) + phase)
                img += rng.normal(0, 20, img.shape)
                ds[lo : lo + m] = np.clip(img, 0, 255).astype(np.uint8)
        with h5py.File(f"{stem}_y.h5", "w") as f:
            f.create_dataset("y", data=(np.arange(count) % 2).astype(np.uint8).reshape(-1, 1, 1, 1))
    return root


def train_batches(table, batch: int) -> list[np.ndarray]:
    rows = np.flatnonzero(table.splits == "train")
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


def source_rate(table, batches: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    n = sum(len(table.images.load(b)) for b in batches)
    return n / (time.perf_counter() - t0)


def decode_rate(table, batches: list[np.ndarray], spec) -> float:
    from featlab.extractors.loader import BatchDataset

    ds = BatchDataset(table.images, batches, spec)
    ds[0]  # warm-up: transform construction, file open
    t0 = time.perf_counter()
    n = 0
    for i in range(len(ds)):
        b = ds[i]
        if b.errors:
            raise RuntimeError(f"unexpected unreadable rows: {list(b.errors.items())[:3]}")
        n += len(b.rows)
    return n / (time.perf_counter() - t0)


def model_rate(spec, n_images: int, batch: int) -> tuple[float, str]:
    """resnet50 alone on a pre-made, pre-normalised batch (as ``benchmarks/extract.py``)."""
    import torch

    from featlab.extractors.backbone import build_backbone
    from featlab.extractors.device import resolve_runtime

    runtime = resolve_runtime("auto", "auto")
    bb = build_backbone(spec, runtime, seed=SEED)
    x = torch.randn(batch, *bb.spec.input_size)
    if bb.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if runtime.device == "cpu" and runtime.precision == "bf16":
        x = x.to(torch.bfloat16)
    with torch.inference_mode():
        bb.model(x)  # warm-up: oneDNN builds its kernels on the first call of a shape
        t0 = time.perf_counter()
        for _ in range(max(1, n_images // batch)):
            bb.model(x)
        seconds = time.perf_counter() - t0
    return max(1, n_images // batch) * batch / seconds, f"{runtime.precision} ({runtime.kernels})"


def main() -> int:
    from featlab.datasets import load_dataset
    from featlab.extractors.spec import resolve_spec

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=8192, help="training images in the file [8192]")
    ap.add_argument("--model-images", type=int, default=256, help="images through the model")
    ap.add_argument("--model-batch", type=int, default=64)
    args = ap.parse_args()

    root = pcam_folder(args.n)
    table = load_dataset("pcam", data_root=root)
    batches = train_batches(table, BATCH)
    spec = resolve_spec(f"timm:{ARCH}", pretrained=False)
    print(
        f"{args.n} synthetic 96x96 PCam training images in {root}; batches of {BATCH}; "
        f"{ARCH} input {spec.input_size[1]}x{spec.input_size[2]}\n"
    )
    src = source_rate(table, batches)  # cold-ish first pass (page cache may already hold it)
    dec = decode_rate(table, batches, spec)
    mod, kernels = model_rate(spec, args.model_images, args.model_batch)
    rows = [
        {"stage": "source (HDF5 rows -> PIL)", "img/s": f"{src:.0f}",
         "x model": f"{src / mod:.1f}"},
        {"stage": f"decode path (BatchDataset, {ARCH})", "img/s": f"{dec:.0f}",
         "x model": f"{dec / mod:.1f}"},
        {"stage": f"model only ({ARCH}, {kernels})", "img/s": f"{mod:.1f}", "x model": "1.0"},
    ]  # fmt: skip
    print_table(rows, ["stage", "img/s", "x model"])
    slow = [r["stage"] for r, rate in zip(rows, (src, dec), strict=False) if rate < TARGET * mod]
    if slow:
        print(f"\nMISSED: {', '.join(slow)} below {TARGET:.0f}x the model's throughput.")
        return 1
    print(f"\nTarget met: reading is >= {TARGET:.0f}x the model's throughput (one process).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
