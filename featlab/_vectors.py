"""Row-wise L2 normalisation shared by the kNN search and the neighbour index (cosine = dot)."""

from __future__ import annotations

import numpy as np

_NORM_ROWS = 8192
# float32 norms are accurate where the squares of the components that matter neither underflow
# (denormal below 2^-126) nor overflow (above 2^128): a row whose norm lies outside these
# bounds is normalised in float64 instead. Unit rows to ~2^-23 are what the kNN search's error
# bounds assume; a float32 norm of a row of 1e-30s is 0 or off by percents.
_SAFE_NORMS = (2.0**-40, 2.0**40)


def row_norms(x: np.ndarray) -> np.ndarray:
    """``(n, 1)`` L2 norms of the rows, computed in ``x``'s float dtype (float64 otherwise).

    ``np.linalg.norm(x, axis=1)`` first builds ``x * x``, a temporary as large as ``x`` (128 MiB
    per block of the kNN's stream); taken over slices of rows it stays small, with the same bits.
    """
    out = np.empty((len(x), 1), dtype=x.dtype if x.dtype.kind == "f" else np.float64)
    for lo in range(0, len(x), _NORM_ROWS):
        out[lo : lo + _NORM_ROWS, 0] = np.linalg.norm(x[lo : lo + _NORM_ROWS], axis=1)
    return out


def normalize_rows_into(x: np.ndarray, out: np.ndarray) -> None:
    """``out`` = the rows of float32 ``x (n, d)`` scaled to unit L2 norm (``out`` may be ``x``).

    Zero rows stay zero; a row holding NaN or inf comes out non-finite (callers refuse it).
    Rows too small or too large for float32 squares are normalised in float64.
    """
    with np.errstate(over="ignore", under="ignore"):  # such rows are redone in float64
        norms = row_norms(x)
    risky = ~((norms > _SAFE_NORMS[0]) & (norms < _SAFE_NORMS[1])).ravel()
    extreme = x[risky].astype(np.float64) if risky.any() else None  # before out overwrites x
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(x, norms, out=out)
        if extreme is not None:
            n = np.linalg.norm(extreme, axis=1, keepdims=True)
            out[risky] = extreme / np.where(n > 0, n, 1.0)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as a new C-contiguous float32 array (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    normalize_rows_into(x, out)
    return out


def normalize_rows_in_place(x: np.ndarray) -> np.ndarray:
    """:func:`l2_normalize` without a copy when ``x`` is writeable C-contiguous float32."""
    if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
        return l2_normalize(x)
    normalize_rows_into(x, x)
    return x
