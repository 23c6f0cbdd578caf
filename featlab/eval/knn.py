"""k-nearest-neighbour classification of embeddings (exact cosine: screen tiles + compiled top-k).

Protocol (DESIGN section 6): L2-normalised embeddings, exact inner-product search, and DINO's
temperature-weighted vote: each of the k neighbours votes for its class with weight
exp(cos / T), T = 0.07 (Caron et al. 2021, section 4.1 / eval_knn.py); a plain majority vote
is the alternative. k = 20 and 200 by default: 20 is DINO's headline, 200 what the ViT study
uses (pretrained-vits-medical-knn-finetune.txt, section 3).

The search streams the training matrix in blocks (each normalised on its own), screens
similarities tile by tile (:mod:`featlab.eval._screens`: Intel AMX bf16 tiles where the CPU
has them, else numpy's float32 GEMM), re-scores exactly (float64 sums) every row the screen's
error bound cannot rule out, and keeps each query's best k with the compiled selection of
:mod:`featlab.eval._topk`. Peak memory is one block, one tile per thread, the queries and
their k-best buffers, whatever the size of the training set. It does not import torch: a
CUDA build of torch is ~0.5 GiB resident on import alone, more than the whole search holds at
PCam scale (d = 384).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from featlab._vectors import l2_normalize, normalize_rows_into
from featlab.errors import FeatlabError, InvalidArgumentError
from featlab.eval._screens import TILE_ROWS, AmxScreen, Fp32Screen, resolve_kernel

DEFAULT_KS = (20, 200)
DEFAULT_TEMPERATURE = 0.07
VOTES = ("weighted", "majority")
BLOCK_BYTES = 16 * 2**20  # training rows read (and normalised) at a time: ~16 MiB of float32
# (16 MiB blocks held ~50 MiB less than 64 MiB blocks at the same speed, 2026-12-06).
VOTE_BLOCK = 4096  # queries per vote step: bounds the (m, k, L) multi-label gather
EXTRA_SLOTS = 64  # candidate slots per query beyond k (k // 2 if more) before a cut to k
QUERY_ALIGN = 64  # each thread's queries are whole groups of this (zero rows pad the last)


@dataclass(frozen=True)
class KNNPrediction:
    """``scores (m, C)`` float32 class probabilities and ``labels`` (argmax, or ``>= 0.5``).

    Single-label rows sum to 1; multi-label scores are per-label probabilities ``(m, L)``.
    """

    scores: np.ndarray
    labels: np.ndarray


def block_rows_for(dim: int) -> int:
    """Training rows per search block for ``dim``-d float32 embeddings: ~16 MiB, rounded to
    whole float32 screen tiles (a partial tile at every block's end runs the GEMM at a worse
    shape)."""
    rows = BLOCK_BYTES // (4 * max(dim, 1))
    return max(TILE_ROWS, round(rows / TILE_ROWS) * TILE_ROWS)


def search_threads() -> int:
    """Threads the search uses: as many as numpy's BLAS would (``OMP_NUM_THREADS``,
    ``OPENBLAS_NUM_THREADS`` and threadpoolctl limits apply), at most the usable cores."""
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(blas[0] if blas else cores or 1, cores or 1))


def array_blocks(base: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """``base`` in consecutive blocks of ``rows`` rows (views, no copy)."""
    for lo in range(0, len(base), rows):
        yield base[lo : lo + rows]


def knn_search(
    queries: np.ndarray,
    base: np.ndarray | Iterable[np.ndarray],
    k: int,
    *,
    n_base: int | None = None,
    threads: int | None = None,
    kernel: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN: ``(sims, indices)``, each ``(m, k)``, best first.

    Args:
        queries: ``(m, d)`` embeddings (any float dtype; normalised here).
        base: ``(n, d)`` training embeddings, or an iterable of consecutive ``(b_i, d)`` blocks
            of them (e.g. read from the store) — only one block is in memory at a time, and
            float32 blocks from an iterable are normalised in place (they are the caller's
            fresh reads; an array ``base`` is never modified).
        k: Neighbours per query.
        n_base: Number of base rows when ``base`` is an iterable (checks ``k`` up front).
        threads: Search threads (default :func:`search_threads`).
        kernel: The screen: ``"amx-bf16"`` (Intel AMX), ``"fp32"`` (float32 GEMM) or
            ``"auto"`` (AMX where the CPU has it; ``$FEATLAB_KNN_KERNEL`` overrides).

    Returns:
        ``sims (m, k) float32`` cosine similarities of the normalised float32 embeddings
        (summed in float64, rounded once), descending, and ``indices (m, k) int64`` positions
        in ``base``. Equal similarities are ordered by ascending index, and the neighbours kept
        are the lowest indices among those tied with the k-th: the first k' columns of a
        k-search are exactly a k'-search (``k = 20`` scores the same whether or not
        ``k = 200`` was searched; ties are common with duplicate images). The result is the
        same bits for every kernel, thread count and blocking: the screen only decides which
        rows are scored (see :mod:`featlab.eval._screens`).

    Raises:
        InvalidArgumentError: The dimensions differ, ``k`` is not in ``1..n``, an embedding
            is not finite, or ``kernel`` is unknown or cannot run here.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidArgumentError(f"k must be a whole number >= 1; got {k!r}")
    owned = not isinstance(base, np.ndarray)
    if not owned:
        n_base = len(base)
        blocks: Iterable[np.ndarray] = array_blocks(base, block_rows_for(base.shape[1]))
    else:
        blocks = base
    if n_base is not None and k > n_base:
        raise InvalidArgumentError(f"k must be in 1..{n_base} (the base size); got {k}")
    kernel = resolve_kernel(kernel)
    q = _normalized_queries(queries)
    m = len(queries)
    n_threads = max(1, min(threads or search_threads(), len(q) // QUERY_ALIGN))
    top = _TopK(m, k, np.int32 if n_base is not None and n_base < 2**31 else np.int64)
    screen = AmxScreen(q) if kernel == "amx-bf16" else Fp32Screen(q)
    offset = 0
    from threadpoolctl import threadpool_limits

    with (
        threadpool_limits(1, user_api="blas"),
        ThreadPoolExecutor(n_threads, initializer=_one_blas_thread) as pool,
    ):
        # Whole QUERY_ALIGN groups per thread: the screens work on full groups of queries.
        shares = np.linspace(0, len(q) // QUERY_ALIGN, n_threads + 1).astype(np.int64)
        shares *= QUERY_ALIGN
        work = [screen.new_worker() for _ in range(n_threads)]
        scratch = None  # an array base's blocks are normalised into a copy, made once
        for block in blocks:
            if block.shape[1] != q.shape[1]:
                raise InvalidArgumentError(
                    f"queries have {q.shape[1]} features, the base {block.shape[1]}; "
                    "both must come from the same model"
                )
            if owned and block.dtype == np.float32 and block.flags.c_contiguous:
                b = block if block.flags.writeable else block.copy()
            else:
                if scratch is None or len(scratch) < len(block):
                    scratch = np.empty((len(block), block.shape[1]), np.float32)
                b = scratch[: len(block)]
            # The threads prepare their share of the rows (whole 32-row groups, zero rows
            # padding the last), then all search the whole block.
            screen.start_block(len(b))
            rows = np.linspace(0, -(-len(b) // 32), n_threads + 1).astype(np.int64) * 32
            _run_all(pool, _prepare_rows, [
                (block, b, lo, hi, offset, screen) for lo, hi in pairwise(rows)
            ])
            _run_all(pool, screen.offer, [
                (top, b, offset, lo, hi, w) for (lo, hi), w in zip(pairwise(shares), work,
                                                                 strict=True)
            ])
            offset += len(block)
            # Let go of this block before the stream reads the next: two would be alive at once.
            del b, block
        if k > offset:
            raise InvalidArgumentError(f"k must be in 1..{offset} (the base size); got {k}")
        del q, work, scratch, screen  # the results are made next: memory peaks there
        return top.result(pool, np.minimum(shares, m))


def _normalized_queries(queries: np.ndarray) -> np.ndarray:
    """Unit-norm float32 queries, with zero rows appended up to a multiple of QUERY_ALIGN."""
    m = len(queries)
    q = np.zeros((-(-m // QUERY_ALIGN) * QUERY_ALIGN, queries.shape[1]), np.float32)
    _normalize_rows(queries, q, 0, m, 0, "query")
    return q


def _one_blas_thread() -> None:
    # threadpoolctl's limit is per calling thread for some BLAS builds (MKL, OpenMP OpenBLAS):
    # each search thread sets its own, or its GEMMs would spawn threads of their own.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def _run_all(pool: ThreadPoolExecutor, fn: Callable[..., Any], calls: list[tuple]) -> list:
    """``fn(*args)`` for every ``args`` on the pool: their results, when all are done
    (re-raising)."""
    return [job.result() for job in [pool.submit(fn, *args) for args in calls]]


def _prepare_rows(
    src: np.ndarray, dst: np.ndarray, lo: int, hi: int, offset: int, screen
) -> None:
    """Rows ``lo..hi`` of a block: normalised from ``src`` into ``dst``, then packed for the
    screen (``hi`` may pass the block's end: the screen pads with zero rows)."""
    _normalize_rows(src, dst, lo, min(hi, len(dst)), offset, "base")
    screen.pack_rows(dst, lo, hi)


def _normalize_rows(
    src: np.ndarray, dst: np.ndarray, lo: int, hi: int, offset: int, what: str
) -> None:
    """``dst[lo:hi]`` = rows ``lo:hi`` of ``src`` scaled to unit norm, as float32 (``dst`` may
    be ``src``).

    Raises:
        InvalidArgumentError: A row holds NaN or inf, named as ``what`` row ``offset + i``
            (NaN is never a neighbour and would silently leave a query with fewer than k).
    """
    out = dst[lo:hi]
    normalize_rows_into(np.asarray(src[lo:hi], dtype=np.float32), out)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise InvalidArgumentError(
            f"{bad.sum()} {what} embedding(s) hold NaN or inf (first: {what} row "
            f"{offset + lo + bad.argmax()}); re-extract them (e.g. with `--precision fp32`) or "
            "leave those samples out"
        )


class _TopK:
    """Every query's best k similarities so far (see :mod:`featlab.eval._topk`); the screens
    offer rows to its buffers."""

    def __init__(self, m: int, k: int, id_dtype: type) -> None:
        self.m, self.k = m, k
        cap = k + max(EXTRA_SLOTS, k // 2)  # >= k + SCREEN_CHUNK
        self.sims = np.empty((m, cap), dtype=np.float32)
        self.ids = np.empty((m, cap), dtype=id_dtype)
        self.counts = np.zeros(m, dtype=np.int64)
        self.kth = np.full(m, -np.inf, dtype=np.float32)

    def result(
        self, pool: ThreadPoolExecutor, shares: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(sims (m, k) float32, ids (m, k) int64)`` sorted best first; the buffers go."""
        from featlab.eval._topk import finish_queries

        short = sum(_run_all(pool, finish_queries, [
            (self.sims, self.ids, self.counts, self.k, lo, hi) for lo, hi in pairwise(shares)
        ]))
        if short:  # the screens' error bounds guarantee k; never silently return fewer
            raise FeatlabError(
                f"internal error: {short} queries kept fewer than k = {self.k} neighbours; "
                "please report it (with kernel='fp32' as a workaround if it was amx-bf16)"
            )
        # One buffer at a time becomes a result, so at most one and a half are alive.
        sims = np.ascontiguousarray(self.sims[:, : self.k])
        del self.sims
        ids = self.ids[:, : self.k].astype(np.int64)
        del self.ids
        return sims, ids


def knn_vote(
    sims: np.ndarray,
    indices: np.ndarray,
    train_y: np.ndarray,
    *,
    k: int,
    temperature: float = DEFAULT_TEMPERATURE,
    vote: str = "weighted",
    n_classes: int | None = None,
) -> np.ndarray:
    """Class scores from the first ``k`` neighbours of each query.

    Args:
        sims, indices: ``(m, >= k)`` from :func:`knn_search`, best first.
        train_y: ``(n,)`` int labels in ``0..C-1``, or ``(n, L)`` multi-label with 1 / 0 and
            ``-1`` unknown.
        vote: ``"weighted"`` — weight ``exp(cos / T)`` (DINO); ``"majority"`` — weight 1.
        n_classes: ``C`` for single-label (default ``train_y.max() + 1``).

    Returns:
        ``(m, C)`` float32 rows summing to 1; multi-label ``(m, L)``: the weighted mean of the
        neighbours' known label entries (the training prevalence when none is known).
    """
    if vote not in VOTES:
        raise InvalidArgumentError(f"vote must be one of {VOTES}; got {vote!r}")
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0; got {temperature}")
    if not 1 <= k <= sims.shape[1]:
        raise InvalidArgumentError(f"k must be in 1..{sims.shape[1]} (neighbours searched)")
    s, idx = sims[:, :k], indices[:, :k]
    multilabel = train_y.ndim == 2
    if multilabel:
        known = train_y >= 0
        prior = (train_y == 1).sum(0) / np.maximum(known.sum(0), 1)
        out = np.empty((len(s), train_y.shape[1]), dtype=np.float32)
    else:
        train_y = np.asarray(train_y, dtype=np.int64)
        c = int(n_classes if n_classes is not None else train_y.max() + 1)
        out = np.empty((len(s), c), dtype=np.float32)
    for lo in range(0, len(s), VOTE_BLOCK):  # bounded temporaries, whatever the query count
        sb, ib = s[lo : lo + VOTE_BLOCK], idx[lo : lo + VOTE_BLOCK]
        if vote == "weighted":
            # Subtracting the row max before exp is exact after normalisation; never overflows.
            w = np.exp((sb - sb[:, :1]) / temperature, dtype=np.float64)
        else:
            w = np.ones(sb.shape, dtype=np.float64)
        missing = ib < 0  # an approximate (IVF) search may return fewer than k neighbours
        if missing.any():
            w[missing], ib = 0.0, np.where(missing, 0, ib)
        if multilabel:
            out[lo : lo + VOTE_BLOCK] = _multilabel_vote(w, train_y[ib], prior)
        else:
            scores = np.zeros((len(sb), c), dtype=np.float64)
            np.add.at(scores, (np.arange(len(sb))[:, None], train_y[ib]), w)
            out[lo : lo + VOTE_BLOCK] = scores / scores.sum(axis=1, keepdims=True)
    return out


def _multilabel_vote(w: np.ndarray, y: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Weighted mean of the neighbours' known entries ``y (b, k, L)``; ``prior`` if none."""
    num = (w[:, :, None] * (y == 1)).sum(axis=1)
    den = (w[:, :, None] * (y >= 0)).sum(axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-300), prior)


def predicted_labels(scores: np.ndarray, multilabel: bool) -> np.ndarray:
    """Argmax class, or per-label ``scores >= 0.5`` (int8) for multi-label."""
    return (scores >= 0.5).astype(np.int8) if multilabel else scores.argmax(axis=1)


def knn_classify(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    *,
    k: int = DEFAULT_KS[0],
    temperature: float = DEFAULT_TEMPERATURE,
    vote: str = "weighted",
    n_classes: int | None = None,
) -> KNNPrediction:
    """Classify ``test_x`` by a vote of its k nearest training samples (cosine).

    Args:
        train_x: ``(n, d)`` embeddings.
        train_y: ``(n,)`` int labels in ``0..C-1``, or ``(n, L)`` multi-label (-1 unknown).
        test_x: ``(m, d)`` embeddings.
        k: Neighbours per query.
        temperature: Weighted vote's ``T`` in ``exp(cos / T)``.
        vote: ``"weighted"`` (DINO) or ``"majority"``.
        n_classes: ``C``; default ``train_y.max() + 1``.

    Returns:
        :class:`KNNPrediction` with class probabilities and predicted labels.
    """
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0; got {temperature}")
    train_y = np.asarray(train_y)
    sims, idx = knn_search(test_x, train_x, k)
    scores = knn_vote(
        sims, idx, train_y, k=k, temperature=temperature, vote=vote, n_classes=n_classes
    )
    return KNNPrediction(scores, predicted_labels(scores, train_y.ndim == 2))


def votes_for_ks(
    sims: np.ndarray,
    indices: np.ndarray,
    train_y: np.ndarray,
    ks: Sequence[int],
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    vote: str = "weighted",
    n_classes: int | None = None,
) -> dict[int, np.ndarray]:
    """``{k: scores}`` for every k from one search of ``max(ks)`` (or all) neighbours.

    A k larger than the training set uses every training sample (the key stays the k asked
    for; callers record ``min(k, n)``).
    """
    n = len(train_y)
    return {
        k: knn_vote(
            sims, indices, train_y, k=min(k, n), temperature=temperature, vote=vote,
            n_classes=n_classes,
        )
        for k in ks
    }


def knn_scores_for_ks(
    train_x: np.ndarray | Iterable[np.ndarray],
    train_y: np.ndarray,
    test_x: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    vote: str = "weighted",
    n_classes: int | None = None,
) -> dict[int, np.ndarray]:
    """One exact search with the largest k, then a vote per k: ``{k: (m, C) scores}``."""
    n = len(train_y)
    sims, idx = knn_search(test_x, train_x, min(max(ks), n), n_base=n)
    return votes_for_ks(
        sims, idx, train_y, ks, temperature=temperature, vote=vote, n_classes=n_classes
    )


# -- approximate search for very large stores ----------------------------------------------


def build_ivf_index(base: np.ndarray, *, nlist: int | None = None, seed: int = 0):
    """An IVF-Flat inner-product index over normalised ``base`` (``nlist`` ~ 4 sqrt(n)).

    The coarse quantiser is trained on at most 256 points per list, drawn with ``seed``.
    """
    import faiss

    x = l2_normalize(base)
    nlist = int(nlist or max(1, min(len(x) // 39, round(4 * np.sqrt(len(x))))))
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = x[rng.choice(len(x), size=min(len(x), 256 * nlist), replace=False)]
    index.cp.seed = seed
    index.train(train)
    index.add(x)
    return index


def ivf_search(
    index, queries: np.ndarray, k: int, *, nprobe: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine k-NN through an IVF index: ``(sims, indices)``, best first."""
    index.nprobe = nprobe
    return index.search(l2_normalize(queries), k)


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean share of each query's exact top-k found by the approximate search."""
    hits = [len(np.intersect1d(e, a)) for e, a in zip(exact, approx, strict=True)]
    return float(np.mean(hits) / exact.shape[1])
