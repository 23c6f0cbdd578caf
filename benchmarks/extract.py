"""Extraction benchmark: featlab end to end vs the plain loop peers use, on the same images.

The same N synthetic 224x224 RGB images stored as an HDF5 array; resnet50 and
vit_small_patch16_224 with (identical, seeded) random weights. For each model it reports:

- featlab end to end (``featlab.extractors.extract`` into a fresh store) in images/s;
- a plain loop: timm model + timm eval transform + torch DataLoader + fp32 inference, results
  gathered in memory and saved once (what peer tools do);
- model-only throughput of featlab's backbone on pre-made tensors, and the machine's measured
  bf16 and fp32 matmul GFLOP/s, so the pipeline's overhead and the distance to the limit show;
- the mean cosine similarity between featlab's embeddings and the fp32 loop's;
- the share of featlab's wall time spent writing the store.

Targets (2-core CPU with AMX): featlab >= 2.5x the plain loop, pipeline overhead <= 15% of
model-only time, cosine >= 0.999, store writes <= 3% of wall time. Exits 1 if one is missed.
On a CPU without native bf16 the speed ratio target is reported as not applicable.

Usage: python benchmarks/extract.py [--n 2048] [--models resnet50,vit_small_patch16_224]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import matmul_gflops, print_table, synthetic_h5

SEED = 0
TARGETS = {"speedup": 2.5, "overhead": 0.15, "cosine": 0.999, "write_share": 0.03}


def plain_loop(
    arch: str, h5: Path, batch_size: int, workers: int, out: Path
) -> tuple[float, np.ndarray]:
    """The peer baseline: timm model + timm eval transform + DataLoader + fp32, saved once."""
    import h5py
    import timm
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    class H5Images(Dataset):
        def __init__(self, path: Path, transform) -> None:
            self.path, self.transform, self.f = path, transform, None
            with h5py.File(path) as f:
                self.n = len(f["x"])

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            if self.f is None:
                self.f = h5py.File(self.path)
            return self.transform(Image.fromarray(self.f["x"][i]))

    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model = timm.create_model(arch, num_classes=0).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**cfg, is_training=False)
    loader = DataLoader(H5Images(h5, transform), batch_size=batch_size, num_workers=workers)
    feats = []
    with torch.inference_mode():
        for x in loader:
            feats.append(model(x))
    result = torch.cat(feats).numpy()
    np.save(out, result)
    return time.perf_counter() - t0, result


def featlab_end_to_end(arch: str, h5: Path, n: int, batch_size: int, workers: int, store: Path):
    from featlab.datasets import table_from_hdf5
    from featlab.extractors import extract
    from featlab.store import open_store

    t0 = time.perf_counter()
    table = table_from_hdf5(h5, "x", np.zeros(n, np.int32), name="synthetic", classes=["x"])
    result = extract(
        f"timm:{arch}",
        table,
        store,
        random_init=True,
        seed=SEED,
        batch_size=batch_size,
        workers=workers,
        progress=False,
    )
    wall = time.perf_counter() - t0
    values = open_store(store)["synthetic"].embeddings(f"timm:{arch}")
    return wall, result, values


def model_only(arch: str, n: int, batch_size: int) -> tuple[float, str]:
    """featlab's backbone alone on a pre-made, pre-normalised tensor: images/s over ``n`` images.

    Measured over the same number of images as the end-to-end run, right before it, after one
    warm-up batch: throughput on this shared machine drifts over minutes, so a short or distant
    measurement would make the pipeline's overhead look larger or smaller than it is.
    """
    import torch

    from featlab.extractors.backbone import build_backbone
    from featlab.extractors.device import resolve_runtime
    from featlab.extractors.spec import resolve_spec

    runtime = resolve_runtime("auto", "auto")
    bb = build_backbone(resolve_spec(f"timm:{arch}", pretrained=False), runtime, seed=SEED)
    x = torch.randn(batch_size, *bb.spec.input_size)
    if bb.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if runtime.device == "cpu" and runtime.precision == "bf16":
        x = x.to(torch.bfloat16)
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    with torch.inference_mode():
        bb.model(x)  # warm-up: oneDNN creates its kernels on the first call of a shape
        t0 = time.perf_counter()
        for b in sizes:
            bb.model(x[:b])
        seconds = time.perf_counter() - t0
    return n / seconds, runtime.kernels


def main() -> int:
    from featlab.extractors.device import cpu_bf16_kernels
    from featlab.extractors.engine import default_workers

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2048, help="images [2048]")
    ap.add_argument("--models", default="resnet50,vit_small_patch16_224")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=default_workers())
    args = ap.parse_args()

    h5 = synthetic_h5(args.n)
    native = cpu_bf16_kernels()
    fp32_peak, bf16_peak = matmul_gflops("float32"), matmul_gflops("bfloat16")
    print(
        f"{args.n} synthetic 224x224 images in {h5.name}; batch {args.batch_size}, "
        f"{args.workers} decoding worker(s)"
    )
    print(
        f"matmul peak: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s "
        f"(x{bf16_peak / fp32_peak:.1f}); native bf16 kernels: {native or 'none'}\n"
    )
    rows, failed = [], []
    for arch in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t_plain, ref = plain_loop(
                arch, h5, args.batch_size, args.workers, Path(tmp) / "plain.npy"
            )
            ips_model, kernels = model_only(arch, args.n, args.batch_size)
            wall, res, ours = featlab_end_to_end(
                arch, h5, args.n, args.batch_size, args.workers, Path(tmp) / "bench.zarr"
            )
        ips_plain, ips_ours = args.n / t_plain, args.n / wall
        cos = float(
            np.mean(
                np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
            )
        )
        speedup, overhead = ips_ours / ips_plain, ips_model / ips_ours - 1
        write_share = res.write_seconds / wall
        rows.append(
            {
                "model": arch,
                "plain fp32 img/s": f"{ips_plain:.1f}",
                "featlab img/s": f"{ips_ours:.1f}",
                "speedup": f"{speedup:.2f}x",
                "model-only img/s": f"{ips_model:.1f}",
                "overhead": f"{overhead:.1%}",
                "cosine": f"{cos:.5f}",
                "store writes": f"{write_share:.2%}",
                "kernels": f"{res.precision} ({kernels})",
            }
        )
        if native and speedup < TARGETS["speedup"]:
            failed.append(f"{arch}: speedup {speedup:.2f}x < {TARGETS['speedup']}x")
        if overhead > TARGETS["overhead"]:
            failed.append(f"{arch}: overhead {overhead:.1%} > {TARGETS['overhead']:.0%}")
        if cos < TARGETS["cosine"]:
            failed.append(f"{arch}: cosine {cos:.5f} < {TARGETS['cosine']}")
        if write_share > TARGETS["write_share"]:
            failed.append(f"{arch}: store writes {write_share:.2%} > 3%")
    print_table(rows, list(rows[0]))
    if not native:
        print(
            "\nThis CPU has no AMX/AVX512-BF16: featlab runs fp32 here, so the speedup target "
            "(which assumes native bf16) is not applicable; the ratio above is fp32 vs fp32."
        )
    if failed:
        print("\nMISSED TARGETS:\n  " + "\n  ".join(failed))
        return 1
    print("\nAll targets met: speedup >= 2.5x, overhead <= 15%, cosine >= 0.999, writes <= 3%.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
