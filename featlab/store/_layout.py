"""On-disk layout of a featlab store (format 1): names, the format version, model keys."""

from __future__ import annotations

import os
import re
from pathlib import Path

FORMAT_VERSION = 1
FORMAT_ATTR = "featlab_format"
DEFAULT_STORE = "featlab.zarr"
STORE_ENV = "FEATLAB_STORE"

SAMPLES = "samples"
EMBEDDINGS = "embeddings"
RESULTS = "results"
INDEXES = "indexes"
SAMPLE_ARRAYS = ("id", "label", "split", "source")

# Rows per chunk: at most 4096 (DESIGN section 3) and about 8 MiB per chunk, so that the
# read-modify-write of a chunk on every batch stays cheap even for 2048-d embeddings.
MAX_CHUNK_ROWS = 4096
TARGET_CHUNK_BYTES = 8 * 2**20
SAMPLE_CHUNK_ROWS = 65536

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def default_store_path() -> Path:
    """``$FEATLAB_STORE`` if set, else ``./featlab.zarr``."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def model_key(name: str) -> str:
    """The zarr group name of a model: its name with ``:``, ``/`` and the like made safe.

    The real name is kept in the group's attrs; ``timm:resnet18`` is stored as ``timm~resnet18``.
    """
    return _UNSAFE.sub("~", name)


def chunk_rows_for(dim: int, batch_size: int) -> int:
    """Rows per chunk for a ``dim``-wide float32 array written in batches of ``batch_size``.

    A multiple of ``batch_size`` (batches never straddle chunks), near ``TARGET_CHUNK_BYTES``,
    at most ``MAX_CHUNK_ROWS`` unless one batch is larger.
    """
    rows = min(MAX_CHUNK_ROWS, max(1, TARGET_CHUNK_BYTES // (4 * dim)))
    return max(batch_size, rows // batch_size * batch_size)
