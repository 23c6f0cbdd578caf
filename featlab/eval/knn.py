"""k-nearest-neighbour classification of embeddings (exact cosine; GEMM tiles + FAISS heaps).

Protocol (DESIGN section 6): L2-normalised embeddings, exact inner-product search, and DINO's
temperature-weighted vote: each of the k neighbours votes for its class with weight
exp(cos / T), T = 0.07 (Caron et al. 2021, section 4.1 / eval_knn.py); a plain majority vote
is the alternative. k = 20 and 200 by default: 20 is DINO's headline, 200 what the ViT study
uses (pretrained-vits-medical-knn-finetune.txt, section 3).

The search streams the training matrix in blocks (each normalised on its own), computes
similarities tile by tile with a GEMM and keeps each query's top k in FAISS's heaps, so peak
memory is one block, one tile and the queries, whatever the size of the training set.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from featlab._vectors import l2_normalize, normalize_rows_in_place
from featlab.errors import InvalidArgumentError

DEFAULT_KS = (20, 200)
DEFAULT_TEMPERATURE = 0.07
VOTES = ("weighted", "majority")
BLOCK_BYTES = 64 * 2**20  # training rows read (and normalised) at a time: ~64 MiB of float32
# Similarities are computed in (queries x TILE_ROWS) tiles (tile_bytes_for) by torch's GEMM (MKL on
# x86: ~93% of its square-GEMM peak at these shapes on 2 cores) and pushed into FAISS's top-k
# heaps, which hold ids so that ties break by row (see _TopK). At d = 384 the heap pass (one
# scalar comparison per similarity) takes ~25-30% of the time. Measured on a quiet machine
# (2026-12-06): FAISS's own search is as fast (its OpenBLAS GEMM + the same heaps) but breaks
# ties by arrival order; numpy's OpenBLAS GEMM is ~15% slower alone, and its spinning threads
# and FAISS's OpenMP threads slow each other down further. Tiles grow with d (tile_bytes_for):
# at d = 384, 16 MiB tiles and 64 MiB blocks ran 5% faster than 64 MiB / 128 MiB and hold
# ~140 MiB less; at d = 1536 small tiles re-read the 48 MiB row tile too often (86% -> 82%).
TILE_ROWS = 8192
MIN_TILE_BYTES, MAX_TILE_BYTES = 16 * 2**20, 64 * 2**20
VOTE_BLOCK = 4096  # queries per vote step: bounds the (m, k, L) multi-label gather


@dataclass(frozen=True)
class KNNPrediction:
    """``scores (m, C)`` float32 class probabilities and ``labels`` (argmax, or ``>= 0.5``).

    Single-label rows sum to 1; multi-label scores are per-label probabilities ``(m, L)``.
    """

    scores: np.ndarray
    labels: np.ndarray


def block_rows_for(dim: int) -> int:
    """Training rows per search block for ``dim``-d float32 embeddings: ~64 MiB, rounded to
    whole GEMM tiles (a partial tile at every block's end runs the GEMM at a worse shape)."""
    rows = BLOCK_BYTES // (4 * max(dim, 1))
    return max(TILE_ROWS, round(rows / TILE_ROWS) * TILE_ROWS)


def tile_bytes_for(dim: int) -> int:
    """Bytes of one similarity tile: 16 MiB at d <= 384, growing with d up to 64 MiB."""
    return min(MAX_TILE_BYTES, max(MIN_TILE_BYTES, MIN_TILE_BYTES * dim // 384))


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

    Returns:
        ``sims (m, k) float32`` cosine similarities, descending, and ``indices (m, k) int64``
        positions in ``base``.

    Raises:
        InvalidArgumentError: The dimensions differ, or ``k`` is not in ``1..n``.
    """
    owned = not isinstance(base, np.ndarray)
    if not owned:
        n_base = len(base)
        blocks: Iterable[np.ndarray] = array_blocks(base, block_rows_for(base.shape[1]))
    else:
        blocks = base
    if n_base is not None and not 1 <= k <= n_base:
        raise InvalidArgumentError(f"k must be in 1..{n_base} (the base size); got {k}")
    import torch

    q = torch.from_numpy(l2_normalize(queries))
    top = _TopK(len(q), k)
    tile = torch.empty(tile_bytes_for(q.shape[1]) // 4, dtype=torch.float32)
    offset = 0
    for block in blocks:
        if block.shape[1] != q.shape[1]:
            raise InvalidArgumentError(
                f"queries have {q.shape[1]} features, the base {block.shape[1]}; "
                "both must come from the same model"
            )
        b = torch.from_numpy(normalize_rows_in_place(block) if owned else l2_normalize(block))
        for lo in range(0, len(b), TILE_ROWS):
            rows = b[lo : lo + TILE_ROWS]
            held = _held_ids(np.arange(offset + lo, offset + lo + len(rows), dtype=np.int64))
            step = max(1, len(tile) // len(rows))
            for ql in range(0, len(q), step):
                sims = tile[: min(step, len(q) - ql) * len(rows)].view(-1, len(rows))
                torch.mm(q[ql : ql + len(sims)], rows.T, out=sims)
                top.push(sims.numpy(), held, ql)
        offset += len(block)
        # Let go of this block before the stream reads the next: two would be alive at once.
        del b, block, rows
    if not 1 <= k <= offset:
        raise InvalidArgumentError(f"k must be in 1..{offset} (the base size); got {k}")
    return top.result()


class _TopK:
    """The k largest similarities of every query so far, in FAISS's per-query min-heaps.

    Pushing a tile costs one comparison per similarity against the query's current k-th best
    (FAISS's ``addn_with_ids``, parallel over queries); only improvements touch the heap.
    """

    def __init__(self, m: int, k: int) -> None:
        import faiss

        self._faiss = faiss
        self.sims = np.empty((m, k), dtype=np.float32)
        self.ids = np.empty((m, k), dtype=np.int64)
        self.heaps = faiss.float_minheap_array_t()
        self.heaps.k, self.heaps.nh = k, m
        self.heaps.val = faiss.swig_ptr(self.sims)
        self.heaps.ids = faiss.swig_ptr(self.ids)
        self.heaps.heapify()  # similarities -inf, ids -1

    def push(self, sims: np.ndarray, held: np.ndarray, first_query: int) -> None:
        """Offer ``sims (ni, nj)`` (C-contiguous) of queries ``first_query..`` vs the ``nj`` rows
        whose ids the heaps hold as ``held`` (``_held_ids`` of the row ids, made once per tile
        of rows by the caller, not per push)."""
        f = self._faiss
        self.heaps.addn_with_ids(
            sims.shape[1], f.swig_ptr(sims), f.swig_ptr(held), 0, first_query, sims.shape[0]
        )

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sims, ids)`` sorted best first; equal similarities by ascending id.

        Rows reach the heaps in ascending id and only a strictly better similarity enters; a
        better one evicts the highest id among the tied worst (see ``_held_ids``). So a heap
        holds the lowest ids among the rows tied with its k-th best, and, sorted by id within
        ties, the first k' of a k-search are exactly a k'-search: ``k = 20`` scores the same
        whether or not ``k = 200`` was asked for too (equal similarities are common: exact
        duplicates, or float32 sums that round alike).
        """
        self.heaps.reorder()
        self.ids[:] = _held_ids(self.ids)  # the map is its own inverse
        tied = np.flatnonzero((self.sims[:, 1:] == self.sims[:, :-1]).any(axis=1))
        if len(tied):
            order = np.lexsort((self.ids[tied], -self.sims[tied]), axis=1)
            self.sims[tied] = np.take_along_axis(self.sims[tied], order, axis=1)
            self.ids[tied] = np.take_along_axis(self.ids[tied], order, axis=1)
        return self.sims, self.ids


def _held_ids(ids: np.ndarray) -> np.ndarray:
    """Row ids as the heaps hold them, ``-id - 2``, and back (the map is an involution).

    FAISS's min-heaps evict, among entries tied at the worst similarity, the one with the
    lowest held id; holding ``-id - 2`` makes that the highest row id. ``-1`` stays free: it
    marks an empty slot for ``reorder``.
    """
    return -2 - ids


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
