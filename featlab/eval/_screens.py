"""The screens of the exact kNN search: similarity tiles that decide which rows are re-scored.

The search (:func:`featlab.eval.knn.knn_search`) offers every training row to every query
through a *screen*, a tile of approximate similarities with a proven error bound; the
selection (:func:`featlab.eval._topk.offer_tile`) re-scores exactly every row that the bound
cannot rule out of a query's best k. Two screens, one result (the same bits):

- ``fp32``: numpy's float32 GEMM (OpenBLAS here); error ``<= d 2^-24`` for unit rows.
- ``amx-bf16``: Intel AMX bf16 tiles (:mod:`featlab.eval._amx`), ~5-8x the float32 GEMM's
  speed on one core of this machine; error ``<= |e_q| + |e_r| + |e_q| |e_r| + kp 2^-24``, with
  ``e`` a row's bf16 rounding error (~0.0017 for a unit row at d = 384). Its first block also
  bounds each query's k-th best before any row is offered (``_amx.warm_start``).

Each bound is split into a per-query and a per-row part (``query_slack``, ``row_slack``) with
a margin of 2^-20 for the float32 rounding of the comparisons themselves.
"""

from __future__ import annotations

import os

import numpy as np

from featlab.errors import InvalidArgumentError

KERNELS = ("auto", "amx-bf16", "fp32")
KERNEL_ENV = "FEATLAB_KNN_KERNEL"  # overrides "auto" (e.g. fp32 to compare the two screens)
ROUNDING_MARGIN = 2.0**-20  # > the float32 rounding of a screen comparison and of a result
# fp32 screen: each thread runs single-threaded GEMMs of (queries x TILE_ROWS), tile_bytes_for(d)
# at a time. Measured at d = 384 on 2 cores (2026-12-06): 2048-row tiles of 8 MiB ran ~8%
# faster than 256-row tiles of 2 MiB that stay in L2 (the GEMM's shape matters more than the
# selection's cache misses).
TILE_ROWS = 2048
MIN_TILE_BYTES, MAX_TILE_BYTES = 8 * 2**20, 32 * 2**20
# amx-bf16 screen: a tile of rows is ~1.5 MiB of bf16, so it stays in L2 (2 MiB per core
# here) while every 32-query strip of a thread runs over it.
AMX_TILE_BYTES = 3 * 2**19
WARM_ROWS = 8192  # rows whose screen bounds each query's k-th best before the first offer


def resolve_kernel(kernel: str = "auto") -> str:
    """``"amx-bf16"`` or ``"fp32"``: the screen ``kernel`` names. ``"auto"`` takes
    ``$FEATLAB_KNN_KERNEL`` if set, else AMX when this CPU and process can run it.

    Raises:
        InvalidArgumentError: An unknown name, or ``"amx-bf16"`` where AMX cannot run.
    """
    if kernel == "auto":
        kernel = os.environ.get(KERNEL_ENV, "auto")
    if kernel not in KERNELS:
        raise InvalidArgumentError(
            f"kNN kernel must be one of {KERNELS}; got {kernel!r}"
            + (f" (from ${KERNEL_ENV})" if os.environ.get(KERNEL_ENV) == kernel else "")
        )
    from featlab.eval._amx import amx_bf16_available

    if kernel == "auto":
        return "amx-bf16" if amx_bf16_available() else "fp32"
    if kernel == "amx-bf16" and not amx_bf16_available():
        raise InvalidArgumentError(
            "the amx-bf16 kNN kernel needs an x86-64 Linux CPU with AMX (amx_tile, amx_bf16 "
            "in /proc/cpuinfo); this one has none: use kernel='fp32' (same results)"
        )
    return kernel


def tile_bytes_for(dim: int) -> int:
    """Bytes of one thread's float32 similarity tile: 8 MiB at d <= 384, growing with d up to
    32 MiB (at d = 1536 small tiles re-read the rows' tile too often)."""
    return min(MAX_TILE_BYTES, max(MIN_TILE_BYTES, MIN_TILE_BYTES * dim // 384))


class Fp32Screen:
    """float32 GEMM tiles; ``queries (m', d)`` unit rows, ``m'`` a multiple of 64."""

    def __init__(self, queries: np.ndarray) -> None:
        dim = queries.shape[1]
        self.queries = queries
        self.query_slack = np.full(len(queries), dim * 2.0**-23 + ROUNDING_MARGIN, np.float32)
        self.row_slack = np.zeros(TILE_ROWS, np.float32)
        per_tile = tile_bytes_for(dim) // (4 * TILE_ROWS) // 64 * 64
        self.step = max(64, per_tile)  # queries per GEMM

    def new_worker(self) -> np.ndarray:
        """One thread's similarity tile."""
        return np.empty((self.step, TILE_ROWS), np.float32)

    def start_block(self, n_rows: int) -> None:
        """Nothing to prepare: the GEMM reads the normalised rows."""

    def pack_rows(self, rows: np.ndarray, lo: int, hi: int) -> None:
        """Nothing to pack."""

    def offer(
        self, top, rows: np.ndarray, first_id: int, lo: int, hi: int, sims: np.ndarray
    ) -> None:
        """Queries ``lo..hi`` against the block ``rows`` (ids ``first_id..``)."""
        from featlab.eval._topk import offer_tile

        for r in range(0, len(rows), TILE_ROWS):
            tile_rows = rows[r : r + TILE_ROWS]
            width = len(tile_rows)
            for ql in range(lo, hi, self.step):
                n = min(self.step, hi - ql)
                tile = sims[:n, :width]
                np.matmul(self.queries[ql : ql + n], tile_rows.T, out=tile)
                real = min(n, top.m - ql)  # the padding queries are not offered
                offer_tile(
                    tile[:real], width, first_id + r, ql, top.sims, top.ids, top.counts,
                    top.kth, top.k, self.queries, tile_rows, self.row_slack, self.query_slack,
                )


class AmxScreen:
    """AMX bf16 tiles; ``queries (m', d)`` unit rows, ``m'`` a multiple of 64."""

    def __init__(self, queries: np.ndarray) -> None:
        from featlab.eval import _amx

        if not _amx.amx_bf16_available():  # also what asks the OS for the tile state
            raise InvalidArgumentError("the amx-bf16 screen needs a CPU with AMX; use fp32")
        self._amx = _amx
        self.queries = queries
        q_shape, _ = _amx.packed_shapes(len(queries), queries.shape[1])
        self.q_packed = np.empty(q_shape, np.uint16)
        q_err = np.empty(len(queries), np.float32)
        _amx.pack_queries(queries, 0, len(queries), self.q_packed, q_err)
        kp = q_shape[1] * _amx.K_STEP
        # |e_q| |e_r| <= |e_q| 2^-8: a unit row's bf16 error is at most 2^-8 of its norm.
        self.query_slack = (q_err * (1 + 2.0**-7) + kp * 2.0**-23 + ROUNDING_MARGIN).astype(
            np.float32
        )
        self.tile_rows = max(32, AMX_TILE_BYTES // (6 * kp) // 32 * 32)
        self.cfg = _amx.tile_config()
        self.r_packed = np.empty((0, kp // 2, _amx.GROUP), np.uint32)  # grown per block
        self.row_slack = np.empty((0,), np.float32)

    def new_worker(self) -> tuple[np.ndarray, np.ndarray]:
        """One thread's strip of similarities (32 queries x a tile of rows) and the scratch of
        the warm start's histograms."""
        strip = np.empty((32, self.tile_rows), np.float32)
        return strip, np.empty((32, self._amx.WARM_BINS), np.int32)

    def start_block(self, n_rows: int) -> None:
        """Room for a block of ``n_rows`` packed rows (grown, never shrunk)."""
        _, r_shape = self._amx.packed_shapes(n_rows, self.queries.shape[1])
        if len(self.r_packed) < r_shape[0]:
            self.r_packed = np.empty(r_shape, np.uint32)
            self.row_slack = np.empty(r_shape[0] * self._amx.GROUP, np.float32)

    def pack_rows(self, rows: np.ndarray, lo: int, hi: int) -> None:
        """Rows ``lo..hi`` (multiples of 16; zero rows past the block's end) to bf16."""
        self._amx.pack_rows(rows, lo, hi, self.r_packed, self.row_slack)

    def offer(
        self, top, rows: np.ndarray, first_id: int, lo: int, hi: int,
        worker: tuple[np.ndarray, np.ndarray],
    ) -> None:
        """Queries ``lo..hi`` (multiples of 32) against the block ``rows`` (ids ``first_id..``);
        the first block first bounds each query's k-th best (``_amx.warm_start``)."""
        strip, hist = worker
        hi = min(hi, top.m)
        warm_rows = min(len(rows), WARM_ROWS)
        if first_id == 0 and warm_rows >= top.k:
            self._amx.warm_start(
                self.q_packed, lo, hi, self.r_packed, warm_rows, self.tile_rows, strip, hist,
                self.cfg, top.kth, top.k, self.row_slack, self.query_slack,
            )
        self._amx.offer_block(
            self.q_packed, lo, hi, self.r_packed, len(rows), first_id,
            self.tile_rows, strip, self.cfg, top.sims, top.ids, top.counts, top.kth, top.k,
            self.queries, rows, self.row_slack, self.query_slack,
        )
