"""Pretraining time: CASS against DINO on the same images and architectures (CASS Table 2).

The CASS paper (Table 2, section 5.1) reports that CASS pretrains a CNN and a Transformer in
about 69% less time than DINO pretraining the same two networks, i.e. a time ratio of about
0.31. This script times ``featlab pretrain`` end to end on the same N synthetic RGB images
(HDF5), with seeded random init and each method's own settings:

- CASS: both arms (``--cnn``, ``--vit``) on one augmented view per image;
- DINO: the CNN, then the ViT (2 global + 8 local crops each, EMA teacher, 65536-d head).

Each run trains ``--epochs`` epochs (default 2); the last epoch's wall time is compared, so
first-call costs (kernel selection, allocator warm-up) stay out of the ratio. The table says
which precision and kernels ran, and the machine's measured matmul peaks. Target: CASS takes
less time than DINO (ratio < 1); exits 1 if it does not.

Usage: python benchmarks/pretrain.py [--n 64] [--cnn resnet18] [--vit vit_small_patch16_224]
       [--img-size 224] [--batch-size 16] [--precision auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import matmul_gflops, print_table, synthetic_h5

PAPER_RATIO = 0.31  # CASS Table 2: "69% less time than DINO"
SEED = 0


def time_run(method: str, table: object, out: Path, args: argparse.Namespace, **arch: str):
    """Pretrain for ``args.epochs`` epochs; the last epoch's seconds and the result."""
    from featlab.extractors.pretrain_job import pretrain
    from featlab.train.run_dir import read_manifest

    result = pretrain(
        method,
        table,
        img_size=args.img_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        init="random",
        out=out,
        seed=SEED,
        precision=args.precision,
        workers=args.workers,
        **arch,
    )
    last = float(read_manifest(out)["timing"]["epoch_seconds"][-1])
    return last, result


def main() -> int:
    from featlab.datasets import table_from_hdf5
    from featlab.extractors.device import cpu_bf16_kernels
    from featlab.extractors.engine import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images [64]")
    ap.add_argument("--cnn", default="resnet18")
    ap.add_argument("--vit", default="vit_small_patch16_224")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--workers", type=int, default=default_workers())
    args = ap.parse_args()

    h5 = synthetic_h5(args.n, size=args.img_size)
    labels = np.arange(args.n) % 2  # unused by pretraining; a table needs some
    table = table_from_hdf5(h5, "x", labels, name="bench")
    native = cpu_bf16_kernels()
    fp32_peak, bf16_peak = matmul_gflops("float32"), matmul_gflops("bfloat16")
    print(
        f"{args.n} synthetic {args.img_size}x{args.img_size} images in {h5.name}; batch "
        f"{args.batch_size}, {args.epochs} epochs each, last epoch timed; "
        f"{args.workers} decoding worker(s)"
    )
    print(
        f"matmul peak: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s; "
        f"native bf16 kernels: {native or 'none'}\n"
    )
    runs = [
        ("cass", f"{args.cnn} + {args.vit}", {"cnn": args.cnn, "vit": args.vit}),
        ("dino", args.cnn, {"arch": args.cnn}),
        ("dino", args.vit, {"arch": args.vit}),
    ]
    rows, seconds = [], {"cass": 0.0, "dino": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, label, arch) in enumerate(runs):
            last, result = time_run(method, table, Path(tmp) / f"run{i}", args, **arch)
            seconds[method] += last
            images = (args.n // args.batch_size) * args.batch_size
            rows.append(
                {
                    "method": method,
                    "networks": label,
                    "epoch s": f"{last:.1f}",
                    "img/s": f"{images / last:.1f}",
                    "precision (kernels)": f"{result.precision} ({result.kernels})",
                }
            )
    ratio = seconds["cass"] / seconds["dino"]
    rows.append(
        {
            "method": "cass / dino",
            "networks": "both networks",
            "epoch s": f"{seconds['cass']:.1f} / {seconds['dino']:.1f}",
            "img/s": f"time ratio {ratio:.2f} (paper {PAPER_RATIO})",
        }
    )
    print_table(rows, ["method", "networks", "epoch s", "img/s", "precision (kernels)"])
    if ratio >= 1.0:
        print(f"\nMISSED TARGET: CASS took {ratio:.2f}x DINO's time (target < 1).")
        return 1
    print(f"\nCASS took {1 - ratio:.0%} less time than DINO (paper: 69% less).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
