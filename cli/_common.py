"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path

import click

store_option = click.option(
    "--store",
    "store_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Store directory [default: $FEATLAB_STORE or ./featlab.zarr].",
)

device_option = click.option(
    "--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda[:i]."
)

precision_option = click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Autocast precision; auto: bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else fp32.",
)

workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Image-decoding worker processes [default: one per spare core].",
)
