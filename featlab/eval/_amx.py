"""bf16 similarity tiles on Intel AMX, for the screen of the exact kNN search (numba kernels).

On CPUs with AMX (Sapphire Rapids and later) a core multiplies bf16 tiles ~5-8x faster than it
runs a float32 GEMM; measured here on one core (2026-12-06) at the search's shapes: this kernel
1,100-1,290 GFLOP/s alone (d = 384 and 1536; ~600-1,000 inside the search, which shares the
caches with the re-scoring), numpy's OpenBLAS float32 GEMM ~140-160, MKL's ~200. The search
uses these tiles only to *screen* rows: :mod:`featlab.eval._topk` re-scores every row that
could still be among a query's best k exactly, so the neighbours and their similarities are
the same bits as with the float32 screen. The error of a bf16 tile value is bounded per pair
of rows (:func:`pack_queries`), which is what makes that screen safe.

Layouts (a "group" is 16 rows, the height of an AMX tile; ``kp`` is ``d`` rounded up to 32):

- queries, packed by :func:`pack_queries`: ``(groups, kp / 32, 16, 32)``
  uint16, so one 16 x 32 tile of bf16 values is 1 KiB of contiguous memory;
- rows, packed by :func:`pack_rows`: ``(groups, kp / 2, 16)`` uint32, the "VNNI" layout
  an AMX ``B`` tile wants (two consecutive features of one row per 32-bit word);
- a 32 x 32 block of similarities is four accumulator tiles (tmm0-3), fed by two query tiles
  (tmm4-5) and two row tiles (tmm6-7): all eight tile registers.

Nothing here runs, or is even compiled, unless :func:`amx_bf16_available` said yes: on a CPU
without AMX the tile instructions cannot be compiled (LLVM would abort the process).
"""

from __future__ import annotations

import ctypes
import functools
import math
import platform
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from featlab.eval._llvm import I8, I64, PTR, call_intrinsic
from featlab.eval._topk import offer_tile

GROUP = 16  # rows of an AMX tile
K_STEP = 32  # bf16 features per tile row (64 bytes)
# Linux: ask for the AMX tile-data state before the first tile instruction (kernel >= 5.16).
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")

@intrinsic
def _load_tile_config(typingctx, address):  # type: ignore[no-untyped-def]
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        call_intrinsic(builder, "llvm.x86.ldtilecfg", [builder.inttoptr(args[0], PTR)], [PTR])
        return context.get_dummy_value()

    return types.void(types.uintp), codegen


@intrinsic
def _release_tiles(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        call_intrinsic(builder, "llvm.x86.tilerelease", [], [])
        return context.get_dummy_value()

    return types.void(), codegen


def _tile_memory_op(name: str, tile: int):  # type: ignore[no-untyped-def]
    """``name(tile, address, stride in bytes)``: a tile load or store (the tile number must be
    a constant of the instruction, so each tile gets its own function)."""

    @intrinsic
    def op(typingctx, address, stride):  # type: ignore[no-untyped-def]
        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            ptr = builder.inttoptr(args[0], PTR)
            call_intrinsic(builder, name, [ir.Constant(I8, tile), ptr, args[1]], [I8, PTR, I64])
            return context.get_dummy_value()

        return types.void(types.uintp, types.int64), codegen

    return op


def _tile_op(name: str, *tiles: int):  # type: ignore[no-untyped-def]
    """``name(*tiles)`` on constant tile numbers: ``tilezero`` or ``tdpbf16ps``."""

    @intrinsic
    def op(typingctx):  # type: ignore[no-untyped-def]
        def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
            call_intrinsic(builder, name, [ir.Constant(I8, t) for t in tiles], [I8] * len(tiles))
            return context.get_dummy_value()

        return types.void(), codegen

    return op


_load_q0, _load_q1 = (_tile_memory_op("llvm.x86.tileloadd64", t) for t in (4, 5))
_load_r0, _load_r1 = (_tile_memory_op("llvm.x86.tileloadd64", t) for t in (6, 7))
_store_00, _store_01, _store_10, _store_11 = (
    _tile_memory_op("llvm.x86.tilestored64", t) for t in range(4)
)
_zero_00, _zero_01, _zero_10, _zero_11 = (_tile_op("llvm.x86.tilezero", t) for t in range(4))
# acc[query tile][row tile] += queries x rows: tmm0..3 += (tmm4 | tmm5) x (tmm6 | tmm7)
_dot_00, _dot_01 = _tile_op("llvm.x86.tdpbf16ps", 0, 4, 6), _tile_op("llvm.x86.tdpbf16ps", 1, 4, 7)
_dot_10, _dot_11 = _tile_op("llvm.x86.tdpbf16ps", 2, 5, 6), _tile_op("llvm.x86.tdpbf16ps", 3, 5, 7)


def tile_config() -> np.ndarray:
    """The 64-byte ``ldtilecfg`` operand: palette 1, all eight tiles 16 rows x 64 bytes."""
    cfg = np.zeros(64, np.uint8)
    cfg[0] = 1
    cfg[16:32].view(np.uint16)[:] = 64  # bytes per row of tiles 0..7
    cfg[48:56] = GROUP  # rows of tiles 0..7
    return cfg


@_jit
def strip_similarities(queries, strip, rows, first_row, n_rows, out, cfg):  # type: ignore[no-untyped-def]
    """``out[:, :n]`` float32 = bf16 dot products of the 32 queries of query groups
    ``2 * strip, 2 * strip + 1`` with rows ``first_row..first_row + n`` (``first_row`` a
    multiple of 32, ``n`` = ``n_rows`` rounded up to 32: the packed zero rows fill the rest).

    ``queries`` and ``rows`` are packed by :func:`pack_queries` and :func:`pack_rows`; ``cfg``
    is :func:`tile_config`. Accumulation is float32 (each bf16 product is exact in float32).
    """
    k_tiles = queries.shape[1]
    q_bytes = k_tiles * GROUP * K_STEP * 2  # one packed query group
    r_bytes = k_tiles * GROUP * 64  # one packed row group: (kp / 2) x 16 words
    out_stride = out.shape[1] * 4
    q0 = queries.ctypes.data + 2 * strip * q_bytes
    q1 = q0 + q_bytes
    g0 = first_row // GROUP
    g1 = g0 + (n_rows + 2 * GROUP - 1) // (2 * GROUP) * 2
    _load_tile_config(cfg.ctypes.data)
    for g in range(g0, g1, 2):
        r0 = rows.ctypes.data + g * r_bytes
        r1 = r0 + r_bytes
        _zero_00()
        _zero_01()
        _zero_10()
        _zero_11()
        for t in range(k_tiles):  # 1 KiB per tile and step of 32 features
            _load_q0(q0 + t * 1024, 64)
            _load_q1(q1 + t * 1024, 64)
            _load_r0(r0 + t * 1024, 64)
            _load_r1(r1 + t * 1024, 64)
            _dot_00()
            _dot_01()
            _dot_10()
            _dot_11()
        o = out.ctypes.data + (g - g0) * GROUP * 4
        _store_00(o, out_stride)
        _store_01(o + 64, out_stride)
        _store_10(o + GROUP * out_stride, out_stride)
        _store_11(o + GROUP * out_stride + 64, out_stride)
    _release_tiles()


@_jit
def offer_block(  # type: ignore[no-untyped-def]
    q_packed, q_lo, q_hi, r_packed, n_rows, first_id, tile_rows, strip, cfg,
    buf_sims, buf_ids, counts, kth, k, queries, rows, row_slack, query_slack,
):
    """Offer a block's ``n_rows`` rows (ids ``first_id..``) to queries ``q_lo..q_hi``
    (``q_lo`` a multiple of 32): for each tile of ``tile_rows`` rows, each 32-query strip's bf16
    similarities go into ``strip (32, tile_rows)`` and from there to
    :func:`featlab.eval._topk.offer_tile` (arguments from ``buf_sims`` on as there)."""
    for r0 in range(0, n_rows, tile_rows):
        width = min(tile_rows, n_rows - r0)
        for s0 in range(q_lo, q_hi, 2 * GROUP):
            strip_similarities(q_packed, s0 // (2 * GROUP), r_packed, r0, width, strip, cfg)
            offer_tile(
                strip[: min(2 * GROUP, q_hi - s0)], width, first_id + r0, s0, buf_sims,
                buf_ids, counts, kth, k, queries, rows[r0:], row_slack[r0:], query_slack,
            )


# The warm start's histogram of lower bounds: bins of 1/512 over [-1.0625, 1.0625).
WARM_BINS_PER_UNIT, WARM_LOWEST = 512, -1.0625
WARM_BINS = int(-2 * WARM_LOWEST * WARM_BINS_PER_UNIT)


@_jit
def warm_start(  # type: ignore[no-untyped-def]
    q_packed, q_lo, q_hi, r_packed, warm_rows, tile_rows, strip, hist, cfg, kth, k,
    row_slack, query_slack,
):
    """Raise the k-th-best thresholds ``kth`` of queries ``q_lo..q_hi`` to a lower bound of
    their final k-th best similarity, before any row is offered.

    The bound comes from the screen of the first ``warm_rows >= k`` rows: a row's tile value
    minus its error bound is at most its exact similarity. Those lower bounds are counted in a
    histogram (``hist (32, WARM_BINS)`` int32, scratch); the lower edge of the bin where the
    count from the top reaches k, minus the query's part of the error bound, is at most the k-th
    best exact similarity of the first rows, hence of the whole base. Rows scoring at least
    that are still appended (and at least k do); the others would have been re-scored for
    nothing. Measured at d = 384, k = 200 (2026-12-06): half of the ~2,400 exact re-scores per
    query fell in the first 8,192 rows, where the running k-th best still rises; a histogram
    costs ~1 ns per row where numba's ``np.partition`` took 8.
    """
    for s0 in range(q_lo, q_hi, 2 * GROUP):
        hist[:] = 0
        for r0 in range(0, warm_rows, tile_rows):
            width = min(tile_rows, warm_rows - r0)
            strip_similarities(q_packed, s0 // (2 * GROUP), r_packed, r0, width, strip, cfg)
            for i in range(2 * GROUP):
                bins = hist[i]
                for j in range(width):
                    at = (strip[i, j] - row_slack[r0 + j] - WARM_LOWEST) * WARM_BINS_PER_UNIT
                    # Below the range counts in bin 0, whose edge is then -inf (no bound).
                    bins[min(max(int(at), 0), WARM_BINS - 1)] += 1
        for i in range(min(2 * GROUP, q_hi - s0)):
            seen, b = 0, WARM_BINS - 1
            while b > 0:
                seen += hist[i, b]
                if seen >= k:
                    break
                b -= 1
            if b > 0:
                q = s0 + i
                edge = np.float32(WARM_LOWEST + b / WARM_BINS_PER_UNIT)
                # Just below the bound: a row scoring exactly the bound is appended too.
                kth[q] = max(kth[q], edge - query_slack[q] - np.float32(2.0**-22))


@_jit
def _round_row(row, half, rounded):  # type: ignore[no-untyped-def]
    """``row (d,) float32`` rounded to bf16 (to nearest, ties to even): the bits into
    ``half[:d]``, the values as float32 bits into ``rounded``; returns ``||bf16(row) - row||``
    rounded up."""
    bits = row.view(np.uint32)
    for f in range(row.size):
        u = bits[f]
        h = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        half[f] = h
        rounded[f] = h << np.uint32(16)
    e2 = 0.0
    as_float = rounded.view(np.float32)
    for f in range(row.size):
        e = np.float64(as_float[f]) - np.float64(row[f])  # exact in float64
        e2 += e * e
    # The factor covers the float64 sum and square root, and the rounding to float32.
    return np.float32(math.sqrt(e2) * (1.0 + 2.0**-16))


@_jit
def _row_bits(x, i, half, rounded, err):  # type: ignore[no-untyped-def]
    """Row ``i`` of ``x`` as bf16 bits in ``half`` (zeros for a padding row ``i >= n``) and its
    rounding error in ``err[i]``."""
    if i < x.shape[0]:
        err[i] = _round_row(x[i], half, rounded)
    else:
        half[:] = 0
        err[i] = 0.0


@_jit
def pack_queries(x, lo, hi, packed, err):  # type: ignore[no-untyped-def]
    """Rows ``lo..hi`` (multiples of 16) of ``x (n, d) float32`` rounded to bf16 into
    ``packed (groups, kp / 32, 16, 32) uint16``, zero beyond ``n`` rows and ``d`` features;
    ``err[i]`` = ``||bf16(x_i) - x_i||``, rounded up.

    The error bounds how far a tile value can be from the float32 dot product:
    ``|bf16(x).bf16(y) - x.y| <= |e_x| |y| + |x| |e_y| + |e_x| |e_y|`` (Cauchy-Schwarz), plus
    the float32 accumulation error.
    """
    half = np.zeros(packed.shape[1] * K_STEP, np.uint32)
    rounded = np.empty(x.shape[1], np.uint32)
    for i in range(lo, hi):
        _row_bits(x, i, half, rounded, err)
        g, r = i // GROUP, i % GROUP
        for f in range(half.size):
            packed[g, f // K_STEP, r, f % K_STEP] = np.uint16(half[f])


@_jit
def pack_rows(x, lo, hi, packed, err):  # type: ignore[no-untyped-def]
    """As :func:`pack_queries`, into the rows' layout ``packed (groups, kp / 2, 16) uint32``."""
    half = np.zeros(packed.shape[1] * 2, np.uint32)
    rounded = np.empty(x.shape[1], np.uint32)
    for i in range(lo, hi):
        _row_bits(x, i, half, rounded, err)
        g, r = i // GROUP, i % GROUP
        for f in range(0, half.size, 2):
            packed[g, f // 2, r] = half[f] | (half[f + 1] << np.uint32(16))


def packed_shapes(n: int, d: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Shapes of ``n`` rows packed as queries and as rows (``n`` rounded up to 32)."""
    groups = -(-n // (2 * GROUP)) * 2
    kp = -(-d // K_STEP) * K_STEP
    return (groups, kp // K_STEP, GROUP, K_STEP), (groups, kp // 2, GROUP)


@functools.cache
def amx_bf16_available() -> bool:
    """Whether this process can run AMX bf16 tiles: x86-64 Linux, a CPU with ``amx_tile`` and
    ``amx_bf16``, an LLVM that targets them, the kernel's permission for the tile state, and a
    32 x 32 x 32 product that matches numpy's."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    if numba.config.DISABLE_JIT:  # the tile intrinsics exist only in compiled code
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    if not all(f in flags for f in ("amx_tile", "amx_bf16")) or not _numba_targets_amx():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    request = (ctypes.c_long(v) for v in (_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM,
                                          _XFEATURE_XTILEDATA))
    if libc.syscall(*request) != 0:  # e.g. a kernel before 5.16, or AMX disabled by the OS
        return False
    return _self_test()


def _numba_targets_amx() -> bool:
    """Whether numba compiles for a CPU with AMX: the host's features, unless
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` chose another target (e.g. a portable cache),
    where a tile instruction would abort the process in LLVM."""
    if numba.config.CPU_NAME or numba.config.CPU_FEATURES:
        features = (numba.config.CPU_FEATURES or "").split(",")
        return all(f"+{f}" in features for f in ("amx-tile", "amx-bf16"))
    from llvmlite import binding

    host = binding.get_host_cpu_features()
    return all(host.get(f) for f in ("amx-tile", "amx-bf16"))


def _self_test() -> bool:
    """A 32 x 32 x 32 product of small integers (exact in bf16 and float32) against numpy."""
    x = (np.arange(32 * 32, dtype=np.float32).reshape(32, 32) % 7) - 3
    y = (np.arange(32 * 32, dtype=np.float32).reshape(32, 32) % 5) - 2
    q_shape, r_shape = packed_shapes(32, 32)
    q, r = np.empty(q_shape, np.uint16), np.empty(r_shape, np.uint32)
    err = np.empty(32, np.float32)
    pack_queries(x, 0, 32, q, err)
    pack_rows(y, 0, 32, r, err)
    out = np.empty((32, 32), np.float32)
    strip_similarities(q, 0, r, 0, 32, out, tile_config())
    return bool(np.array_equal(out, x @ y.T))
