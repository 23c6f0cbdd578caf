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
