"""Row-wise L2 normalisation shared by the kNN search and the neighbour index (cosine = dot)."""

from __future__ import annotations

import numpy as np

_TINY = np.finfo(np.float32).tiny  # zero rows stay zero instead of becoming NaN
_NORM_ROWS = 8192


def row_norms(x: np.ndarray) -> np.ndarray:
    """``(n, 1)`` L2 norms of the rows, floored at the smallest normal float32.

    ``np.linalg.norm(x, axis=1)`` first builds ``x * x``, a temporary as large as ``x`` (128 MiB
    per block of the kNN's stream); taken over slices of rows it stays small, with the same bits.
    """
    out = np.empty((len(x), 1), dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    for lo in range(0, len(x), _NORM_ROWS):
        out[lo : lo + _NORM_ROWS, 0] = np.linalg.norm(x[lo : lo + _NORM_ROWS], axis=1)
    return np.maximum(out, _TINY)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new C-contiguous float32 array (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / row_norms(x)


def normalize_rows_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` without a copy when ``x`` is writeable C-contiguous float32."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        return l2_normalize(x)
    x /= row_norms(x)
    return x
