"""JPEG decode benchmark: featlab's decode path with and without PIL draft mode.

N synthetic 2048x1536 JPEGs (smooth colour fields plus noise, quality 90; cached in
``benchmarks/_data/``) go through :class:`featlab.extractors.loader.BatchDataset` for a resnet50
spec (224 px input, resize side ``floor(224 / crop_pct)``), in one process: file decode, RGB
conversion, timm's resize and crop, uint8 batch. Once with plain ``FileImages`` (full decode),
once with draft decoding as the loader sets it up. Reports images/s for both, their ratio, and the
mean absolute pixel difference of the two outputs (quality kept at the target size).

Target: draft faster than full decode (exit 1 otherwise).

Usage: python benchmarks/datasets_jpeg.py [--n 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import DATA_DIR, print_table

WIDTH, HEIGHT = 2048, 1536
BATCH = 16


def synthetic_jpegs(n: int, seed: int = 0) -> list[Path]:
    """``n`` photo-like 2048x1536 JPEGs in ``_data/jpeg_2048x1536/`` (written once, then reused)."""
    from PIL import Image

    folder = DATA_DIR / f"jpeg_{WIDTH}x{HEIGHT}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:04d}.jpg" for i in range(n)]
    rng = np.random.default_rng(seed)
    for path in paths:
        if path.exists():
            continue
        # A smooth field drawn at 1/16 size and upsampled, plus full-resolution noise.
        low = rng.integers(30, 225, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(low).resize((WIDTH, HEIGHT), Image.BICUBIC))
        noise = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
        pixels = np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        tmp = path.with_suffix(".tmp")
        Image.fromarray(pixels).save(tmp, format="JPEG", quality=90)
        tmp.rename(path)
    return paths


def decode_all(dataset) -> tuple[float, np.ndarray]:
    """Wall time of decoding every batch of ``dataset`` once, and the stacked uint8 output."""
    t = time.perf_counter()
    out = [dataset[i].images.numpy() for i in range(len(dataset))]
    return time.perf_counter() - t, np.concatenate(out)


def best_run(dataset, repeat: int) -> tuple[float, np.ndarray]:
    runs = [decode_all(dataset) for _ in range(repeat)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from featlab.datasets.images import FileImages
    from featlab.extractors.loader import BatchDataset, resize_side
    from featlab.extractors.spec import spec_from_timm

    paths = synthetic_jpegs(args.n)
    spec = spec_from_timm("timm:resnet50", pretrained=False)
    batches = [np.arange(i, min(i + BATCH, args.n)) for i in range(0, args.n, BATCH)]
    drafted = BatchDataset(FileImages(paths), batches, spec)  # the loader turns draft on
    full = BatchDataset(FileImages(paths), batches, spec)
    full.images = FileImages(paths)  # plain full-size decode, the previous behaviour
    t_full, out_full = best_run(full, args.repeat)
    t_draft, out_draft = best_run(drafted, args.repeat)
    diff = float(np.abs(out_full.astype(np.int16) - out_draft.astype(np.int16)).mean())

    side = resize_side(spec)
    print(
        f"{args.n} JPEGs {WIDTH}x{HEIGHT} -> {spec.name} input {spec.input_size[1]} px "
        f"(resize side {side}, crop_pct {spec.crop_pct}); best of {args.repeat}, 1 process\n"
    )
    rows = [
        {"decode": "full (no draft)", "images/s": f"{args.n / t_full:.1f}", "ratio": "1.00x"},
        {
            "decode": f"draft (>= {side} px a side)",
            "images/s": f"{args.n / t_draft:.1f}",
            "ratio": f"{t_full / t_draft:.2f}x",
        },
    ]
    print_table(rows, ["decode", "images/s", "ratio"])
    print(f"\nmean |full - draft| after resize+crop: {diff:.2f} gray levels (0..255)")
    if t_draft >= t_full:
        print("FAIL: draft decoding is not faster than full decoding")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
