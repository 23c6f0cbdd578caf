"""Compiled (numba) top-k selection of the exact kNN search: screen tiles, re-score, keep k.

Each query owns a buffer of ``cap >= k + SCREEN_CHUNK`` slots. A screen tile row (approximate
similarities, see :mod:`featlab.eval._screens`) is first checked in chunks of
``SCREEN_CHUNK`` against the query's k-th best so far lowered by the screen's error bound (a
vectorised count, in its own function so that it compiles to vector code); only chunks holding
a possible candidate are walked, each candidate is re-scored exactly
(:func:`exact_similarity`) and appended branch-free, and a full buffer is cut back to its best
``k`` by a quickselect. Once a few thousand rows are seen almost no chunk holds a candidate.
Measured at d = 384, k = 200 on 2 cores (2026-12-06), AMX screen: ~2,400 rows re-scored per
query of 262,144, half of them in the first 8,192 rows while the k-th best still rises (~1,500
with the AMX screen's warm start, ``featlab.eval._amx.warm_start``), ~450 within the bf16
screen's error of the final k-th best.

Order: a larger similarity is better, and among equal similarities the lower row id. Cuts keep
the best ``k`` under that whole order, so the result does not depend on the screen, tiling,
blocks or threads, and the first k' of a k-search are exactly a k'-search. Rows are offered in
ascending id, so a similarity merely equal to the k-th best would lose its cut; it is not
appended. All kernels release the GIL: threads search disjoint sets of queries.
"""

from __future__ import annotations

import numba
import numpy as np

from featlab.eval._llvm import prefetch

SCREEN_CHUNK = 32  # similarities screened at once (32 and 64 ran alike; 16 was slower)

_jit = numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@_jit
def _better(sa, ia, sb, ib):  # type: ignore[no-untyped-def]
    # Bitwise, not `or` / `and`: short-circuits compile to branches that mispredict half the time.
    return (sa > sb) | ((sa == sb) & (ia < ib))


@_jit
def _select_best(sims, ids, n, k):  # type: ignore[no-untyped-def]
    """Move the ``k`` best of ``sims[:n], ids[:n]`` to the front, unordered; return the k-th
    best similarity.

    Quickselect with a branch-free Lomuto partition: every element is swapped whether or not
    it moves, and ``_better`` compares bitwise, so the loop has no data-dependent branch to
    mispredict (a ~300-slot cut: 2.5-3 us here, 5.5 us with a Hoare partition and
    short-circuit comparisons).
    """
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        sims[mid], sims[hi - 1] = sims[hi - 1], sims[mid]
        ids[mid], ids[hi - 1] = ids[hi - 1], ids[mid]
        ps, pi = sims[hi - 1], ids[hi - 1]
        store = lo
        for i in range(lo, hi - 1):
            xs, xi = sims[i], ids[i]
            sims[i], ids[i] = sims[store], ids[store]
            sims[store], ids[store] = xs, xi
            store += _better(xs, xi, ps, pi)
        sims[hi - 1], ids[hi - 1] = sims[store], ids[store]
        sims[store], ids[store] = ps, pi
        if store == k - 1 or store == k:
            break
        if store < k - 1:
            lo = store + 1
        else:
            hi = store
    worst = sims[0]
    for t in range(1, k):
        worst = min(worst, sims[t])
    return worst


@_jit
def _prefetch_row(row):  # type: ignore[no-untyped-def]
    for offset in range(0, row.size * row.itemsize, 64):
        prefetch(row.ctypes.data + offset)


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc"})
def exact_similarity(a, b):  # type: ignore[no-untyped-def]
    """The similarity the search reports: ``a . b`` of two float32 rows, summed in float64 and
    rounded to float32 once.

    Every product of two float32 numbers is exact in float64 and the float64 sum's error is
    ~2^-44 relative, so the float32 result does not depend on the order the vector code sums
    in (``reassoc``): the same bits on every CPU, except when the sum lands within ~2^-44 of
    a float32 rounding boundary.
    """
    s = 0.0
    for t in range(a.size):
        s += np.float64(a[t]) * np.float64(b[t])
    return np.float32(s)


@_jit
def _hot_chunks(row, row_slack, threshold, hot):  # type: ignore[no-untyped-def]
    """Starts of the ``SCREEN_CHUNK``-long chunks of ``row`` with a ``row + row_slack`` above
    ``threshold``, into ``hot``; returns how many. Kept apart from the appends so that the
    count vectorises."""
    n = 0
    for j in range(0, row.size, SCREEN_CHUNK):
        chunk = row[j : j + SCREEN_CHUNK]
        slack = row_slack[j : j + SCREEN_CHUNK]
        hits = 0
        for t in range(chunk.size):  # no branch, no early exit
            hits += chunk[t] + slack[t] > threshold
        hot[n] = j
        n += hits > 0
    return n


@_jit
def offer_tile(  # type: ignore[no-untyped-def]
    tile, nj, first_id, first_query, buf_sims, buf_ids, counts, kth, k,
    queries, rows, row_slack, query_slack,
):
    """Offer rows ``first_id..first_id + nj`` (ascending ids, after every row offered before)
    to queries ``first_query..``, screened by ``tile (ni, >= nj) float32``, approximate
    similarities of the queries with the rows.

    A row is re-scored exactly (:func:`exact_similarity` of ``queries[q]`` and ``rows[j]``,
    float32 unit rows) unless the screen proves it cannot beat the query's k-th best:
    ``|tile[i, j] - exact| <= row_slack[j] + query_slack[q]`` must hold for every pair (the
    callers bound their screen's error that way). So the result is the exact one whatever the
    screen's precision, and the same bits for every screen.

    ``buf_sims / buf_ids (m, cap)`` hold each query's candidates (``cap >= k + SCREEN_CHUNK``),
    ``counts (m,)`` how many, ``kth (m,)`` float32 a lower bound of the query's final k-th best:
    the k-th best exact similarity kept at the last cut, or before the first the warm start's
    bound (``-inf`` without one); all are updated in place.
    """
    ni = tile.shape[0]
    cap = buf_sims.shape[1]
    hot = np.empty((ni, (nj + SCREEN_CHUNK - 1) // SCREEN_CHUNK), dtype=np.int64)
    n_hot = np.empty(ni, dtype=np.int64)
    # Screen every query first, and fetch the rows of those with candidates while the others
    # are screened: a re-score otherwise waits on its query's row (6 KiB at d = 1536), which
    # leaves the caches between tiles.
    for i in range(ni):
        q = first_query + i
        n_hot[i] = _hot_chunks(tile[i, :nj], row_slack[:nj], kth[q] - query_slack[q], hot[i])
        if n_hot[i] > 0:
            _prefetch_row(queries[q])
    for i in range(ni):
        if n_hot[i] == 0:
            continue
        q = first_query + i
        bs, bi, query = buf_sims[q], buf_ids[q], queries[q]
        th, c = kth[q], counts[q]
        screen = th - query_slack[q]
        row = tile[i, :nj]
        for h in range(n_hot[i]):
            j = hot[i, h]
            end = min(j + SCREEN_CHUNK, nj)
            if c + (end - j) > cap:  # room for the whole chunk: cut back to the best k
                th = _select_best(bs, bi, c, k)
                screen = th - query_slack[q]
                c = k
            for t in range(j, end):
                if row[t] + row_slack[t] > screen:
                    s = exact_similarity(query, rows[t])
                    bs[c] = s  # written always, kept if better
                    bi[c] = first_id + t
                    c += s > th
        kth[q], counts[q] = th, c


@_jit
def finish_queries(buf_sims, buf_ids, counts, k, lo, hi):  # type: ignore[no-untyped-def]
    """Sort the best ``k`` of queries ``lo..hi`` into ``buf_sims / buf_ids[:, :k]``, in place,
    best first (similarity descending, then id ascending). Returns how many of the queries hold
    fewer than ``k`` candidates (none, unless a screen's error bound was broken)."""
    short = 0
    for q in range(lo, hi):
        if counts[q] < k:
            short += 1
            continue
        bs, bi = buf_sims[q], buf_ids[q]
        if counts[q] > k:
            _select_best(bs, bi, counts[q], k)
        # Ids ascending, then a stable sort by similarity descending: ties keep id order.
        by_id = np.argsort(bi[:k], kind="mergesort")
        s, i = bs[:k][by_id], bi[:k][by_id]
        order = np.argsort(-s, kind="mergesort")
        for t in range(k):
            bs[t] = s[order[t]]
            bi[t] = i[order[t]]
    return short
