"""Finetuning throughput: fp32 vs bf16 autocast training steps, side by side.

One training step = forward, loss, backward, Adam step, on a fixed random batch at 224 px,
random-init timm models (no download), in featlab's autocast. Reports images/s per precision and
the ratio, and which kernels ran; on a CPU without AMX/AVX512-BF16 the bf16 line says it is
emulated (its ratio says nothing about featlab). CNNs are timed in both memory layouts: featlab
finetunes them channels-last (``featlab.train.layout``). ``--steps`` and
``--batch-size`` trade time for noise.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import print_table

from featlab.extractors.device import cpu_bf16_kernels
from featlab.train.precision import autocast


def step_rate(arch: str, precision: str, batch: int, steps: int, channels_last: bool) -> float:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=10)
    x = torch.randn(batch, 3, 224, 224)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def one() -> None:
        with autocast("cpu", precision):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    one()  # warm-up: oneDNN primitive creation
    t = time.perf_counter()
    for _ in range(steps):
        one()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--arch", default="resnet50,vit_small_patch16_224")
    args = parser.parse_args()
    native = cpu_bf16_kernels()
    print(f"kernels: cpu fp32 vs bf16 autocast ({native or 'emulated: no AMX/AVX512-BF16'}), "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.steps} steps")
    rows = []
    for arch in args.arch.split(","):
        layouts = (False, True) if "resnet" in arch else (False,)
        for cl in layouts:
            layout = " channels_last (featlab)" if cl else ""
            layout = layout or (" (default layout)" if len(layouts) > 1 else "")
            fp32 = step_rate(arch, "fp32", args.batch_size, args.steps, cl)
            bf16 = step_rate(arch, "bf16", args.batch_size, args.steps, cl)
            rows.append({
                "model": arch + layout,
                "fp32 img/s": f"{fp32:.1f}", "bf16 img/s": f"{bf16:.1f}",
                "bf16 / fp32": f"{bf16 / fp32:.2f}x" if native else "n/a (emulated)",
            })
    print_table(rows, ["model", "fp32 img/s", "bf16 img/s", "bf16 / fp32"])


if __name__ == "__main__":
    main()
