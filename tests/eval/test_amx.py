"""The AMX bf16 screen's kernels against torch's bf16 rounding and float64 products, and the
error bound the exact re-scoring relies on."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.eval import _amx
from featlab.eval._screens import ROUNDING_MARGIN
from featlab.eval._topk import exact_similarity

needs_amx = pytest.mark.skipif(
    not _amx.amx_bf16_available(), reason="this CPU (or process) cannot run AMX bf16 tiles"
)


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _packed(x: np.ndarray, as_queries: bool) -> tuple[np.ndarray, np.ndarray]:
    q_shape, r_shape = _amx.packed_shapes(len(x), x.shape[1])
    shape = q_shape if as_queries else r_shape
    packed = np.full(shape, 0xFFFF, np.uint16 if as_queries else np.uint32)  # no stale zeros
    err = np.full(shape[0] * _amx.GROUP, np.nan, np.float32)
    pack = _amx.pack_queries if as_queries else _amx.pack_rows
    pack(x, 0, shape[0] * _amx.GROUP, packed, err)
    return packed, err


def _bf16_values(x: np.ndarray) -> np.ndarray:
    """torch's round-to-nearest-even float32 -> bf16, back as float64 (the reference)."""
    torch = pytest.importorskip("torch")
    return torch.from_numpy(x).to(torch.bfloat16).to(torch.float64).numpy()


def test_packing_rounds_like_torch_and_measures_the_error():
    rng = np.random.default_rng(0)
    x = _unit_rows(rng, 40, 70)  # 40 rows -> 48 (3 groups); 70 features -> 96
    x[0, :4] = [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 2.0**-130]  # ties, a denormal
    ref = _bf16_values(x)
    q, q_err = _packed(x, as_queries=True)
    r, r_err = _packed(x, as_queries=False)
    # Undo each layout: queries (groups, kp/32, 16, 32); rows (groups, kp/2, 16) of two halves.
    from_q = q.transpose(0, 2, 1, 3).reshape(-1, 96).astype(np.uint32) << 16
    words = r.transpose(0, 2, 1).reshape(-1, 48)
    from_r = np.stack([words & 0xFFFF, words >> 16], axis=2).reshape(-1, 96) << 16
    for unpacked in (from_q, from_r):
        values = unpacked.astype(np.uint32).view(np.float32).astype(np.float64)
        np.testing.assert_array_equal(values[:40, :70], ref)
        assert not values[40:].any()
        assert not values[:, 70:].any()
    true_err = np.linalg.norm(ref - x.astype(np.float64), axis=1)
    for err in (q_err, r_err):
        assert (err[:40] >= true_err).all()
        assert np.allclose(err[:40], true_err, rtol=1e-4)
        assert not err[40:].any()
        assert err[1:40].max() <= 2.0**-8  # a unit row's bf16 error is below 2^-8 of its norm


@needs_amx
def test_tiles_are_float32_sums_of_bf16_products_within_the_screen_bound():
    rng = np.random.default_rng(1)
    d = 200  # kp = 224: 7 steps of 32 features
    queries, rows = _unit_rows(rng, 64, d), _unit_rows(rng, 96, d)
    rows[5] = queries[3]  # a pair at similarity 1, where the relative error is largest
    q, q_err = _packed(queries, as_queries=True)
    r, r_err = _packed(rows, as_queries=False)
    out = np.empty((32, 128), np.float32)
    bf16_exact = _bf16_values(queries) @ _bf16_values(rows).T
    true = queries.astype(np.float64) @ rows.astype(np.float64).T
    kp = q.shape[1] * _amx.K_STEP
    for strip in (0, 1):
        # Rows 32..95 (the first 32 skipped) into columns 0..63.
        _amx.strip_similarities(q, strip, r, 32, 64, out, _amx.tile_config())
        got = out[:, :64].astype(np.float64)
        lo = 32 * strip
        np.testing.assert_allclose(got, bf16_exact[lo : lo + 32, 32:96], atol=kp * 2.0**-24)
        # The bound the screen uses (see _screens.AmxScreen): per query + per row.
        qe, re = q_err[lo : lo + 32, None], r_err[None, 32:96]
        bound = qe * (1 + 2.0**-7) + re + kp * 2.0**-23 + ROUNDING_MARGIN
        assert (np.abs(got - true[lo : lo + 32, 32:96]) <= bound).all()
    _amx.strip_similarities(q, 0, r, 0, 32, out, _amx.tile_config())
    assert out[3, 5] == pytest.approx(1.0, abs=0.01)


def test_exact_similarity_is_the_float64_sum_rounded_once():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 1000, 385)).astype(np.float32)
    got = np.array([exact_similarity(x, y) for x, y in zip(a, b, strict=True)])
    ref = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64)).astype(np.float32)
    np.testing.assert_array_equal(got, ref)


def test_amx_is_not_compiled_for_a_target_numba_was_told_lacks_it(monkeypatch):
    # NUMBA_CPU_NAME=generic (a portable cache) has no AMX: a tile instruction would abort
    # the process inside LLVM, so the screen must not be used at all.
    import numba

    monkeypatch.setattr(numba.config, "CPU_NAME", "generic")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    assert not _amx._numba_targets_amx()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx512f,+amx-tile,+amx-bf16")
    assert _amx._numba_targets_amx()


def test_no_amx_without_compiled_code(monkeypatch):
    # NUMBA_DISABLE_JIT runs kernels as Python, where the tile intrinsics do not exist.
    import numba

    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    assert not _amx.amx_bf16_available.__wrapped__()
