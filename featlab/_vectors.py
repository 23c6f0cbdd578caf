"""Row-wise L2 normalisation shared by the kNN search and the neighbour index (cosine = dot)."""

from __future__ import annotations

import numpy as np

_TINY = np.finfo(np.float32).tiny  # zero rows stay zero instead of becoming NaN


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new C-contiguous float32 array (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _TINY)


def normalize_rows_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` without a copy when ``x`` is writeable C-contiguous float32."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        return l2_normalize(x)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _TINY)
    return x
