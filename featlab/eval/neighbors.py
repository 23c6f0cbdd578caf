"""Nearest stored samples of sample ids, vectors or images, by a model's embeddings.

Similarity is cosine: stored and query embeddings are L2-normalised float32 and searched by inner
product (DESIGN section 6), exactly by default (``IndexFlatIP``), so "the neighbours of a sample"
are a fact of the store, not of an approximation. The index is persisted in the store and reused
while the embeddings it was built from are unchanged (:mod:`featlab.store._index`).

``ds.neighbors(model, ids=... | vectors=... | images=..., k=10)`` returns a
:class:`NeighborResult`: one row per (query, rank) with the neighbour's id, score, label, split and
source.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab._vectors import l2_normalize
from featlab.errors import InvalidArgumentError

if TYPE_CHECKING:
    import pandas as pd

    from featlab.store import DatasetGroup

COLUMNS = ("query", "query_id", "rank", "id", "score", "label", "split", "source", "row")
UNKNOWN_LABEL = "?"
SEARCH_BLOCK = 4096  # queries per FAISS call: bounded memory for (block, k) results


@dataclass(frozen=True)
class NeighborResult:
    """Neighbours of ``m`` queries, one entry per (query, rank), queries in order, best first.

    Every array has one element per entry (``m * k``, fewer only when an approximate ``ivf``
    index returned fewer than ``k`` neighbours for a query).

    Attributes:
        dataset: Dataset name.
        model: Model whose embeddings were searched.
        k: Neighbours asked for per query.
        searched_split: The split searched (``None``: all usable rows).
        query: ``(N,)`` int, index of the query (0..m-1) in the order given.
        query_id: ``(N,)`` str, the query: its sample id, ``vector[i]``, the image path, or
            ``image[i]`` for in-memory images.
        rank: ``(N,)`` int, 1 = nearest.
        id: ``(N,)`` str, neighbour sample id.
        score: ``(N,)`` float32 cosine similarity in [-1, 1].
        label: ``(N,)`` str, class name; ``?`` unknown; multi-label: the present labels joined
            by ``|`` (``""`` if none), an unknown label as ``name?``.
        split: ``(N,)`` str, neighbour's split (``""`` = unlabeled).
        source: ``(N,)`` str, the file (or ``file.h5#row``) the neighbour was read from.
        row: ``(N,)`` int64, neighbour's row in the dataset (index into ``ds.ids``, ``ds.labels``).
        index: How the search ran: index type, its status (``cached``, ``loaded``, ``built``...),
            fingerprint, rows indexed.
    """

    dataset: str
    model: str
    k: int
    searched_split: str | None
    query: np.ndarray
    query_id: np.ndarray
    rank: np.ndarray
    id: np.ndarray
    score: np.ndarray
    label: np.ndarray
    split: np.ndarray
    source: np.ndarray
    row: np.ndarray
    index: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.id)

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-able dict per entry with keys :data:`COLUMNS`."""
        cols = {c: getattr(self, c).tolist() for c in COLUMNS}
        return [{c: cols[c][i] for c in COLUMNS} for i in range(len(self))]

    def to_dataframe(self) -> pd.DataFrame:
        """A pandas DataFrame with columns :data:`COLUMNS`."""
        import pandas as pd

        return pd.DataFrame({c: getattr(self, c) for c in COLUMNS})

    def to_dict(self) -> dict[str, Any]:
        """Metadata plus ``neighbors``: the records; JSON-serialisable."""
        return {
            "dataset": self.dataset,
            "model": self.model,
            "k": self.k,
            "searched_split": self.searched_split,
            "index": dict(self.index),
            "neighbors": self.to_records(),
        }


def label_names(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Readable labels: class names; ``?`` for -1; multi-label ``a|b`` (``name?`` if unknown).

    Args:
        labels: ``(N,)`` int class indices, or ``(N, L)`` 0/1/-1 multi-label entries.
        classes: The ``C`` (or ``L``) class names.
    """
    if labels.ndim == 1:
        names = np.asarray([*classes, UNKNOWN_LABEL], dtype=object)
        return names[np.where(labels < 0, len(classes), labels)].astype(str)
    out = []
    for vec in np.asarray(labels, dtype=np.int64):
        parts = [classes[j] for j in np.flatnonzero(vec == 1)]
        parts += [f"{classes[j]}?" for j in np.flatnonzero(vec < 0)]
        out.append("|".join(parts))
    return np.asarray(out, dtype=str)


_BLAS_LOCK = threading.Lock()


@contextlib.contextmanager
def _blas_search() -> Iterator[None]:
    """Let FAISS's flat search use BLAS for any number of queries, restored afterwards.

    faiss 1.15 scans the whole base once per query below ``distance_compute_blas_threshold``
    queries (default 128000 there); measured on 262,144 x 384 with 2 cores: 10 queries 0.22 s
    -> 0.11 s, 64 queries 1.39 s -> 0.20 s with BLAS. Same scores up to float rounding.
    """
    import faiss

    with _BLAS_LOCK:
        old = faiss.cvar.distance_compute_blas_threshold
        faiss.cvar.distance_compute_blas_threshold = 1
        try:
            yield
        finally:
            faiss.cvar.distance_compute_blas_threshold = old


def search(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of L2-normalised ``queries`` in a FAISS inner-product index, optionally
    skipping one position per query.

    Args:
        index: A FAISS index of L2-normalised vectors.
        queries: ``(m, d)`` float32, any norm (normalised here).
        k: Neighbours per query, ``1 <= k <= ntotal``.
        exclude: ``(m,)`` int, a position to drop from each query's list (-1: none). The search
            asks for ``k + 1`` and removes it wherever it ranks (not only at rank 1).
        nprobe: IVF lists visited per query (IVF indexes only).

    Returns:
        ``scores (m, k)`` float32 and ``positions (m, k)`` int64, best first; ``-1`` positions
        (with score ``-inf``) where an approximate index found fewer than ``k``.
    """
    import faiss

    q = l2_normalize(queries)
    if nprobe is not None:
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = int(nprobe)
    extra = int(exclude is not None and bool((exclude >= 0).any()))
    kk = min(k + extra, int(index.ntotal))
    scores = np.empty((len(q), kk), dtype=np.float32)
    pos = np.empty((len(q), kk), dtype=np.int64)
    with _blas_search():
        for lo in range(0, len(q), SEARCH_BLOCK):
            scores[lo : lo + SEARCH_BLOCK], pos[lo : lo + SEARCH_BLOCK] = index.search(
                q[lo : lo + SEARCH_BLOCK], kk
            )
    if extra:
        drop = pos == np.asarray(exclude)[:, None]
        # Stable sort on the drop flag moves the excluded entry last and keeps the rest in order.
        order = np.argsort(drop, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        pos = np.take_along_axis(pos, order, axis=1)
        dropped = np.take_along_axis(drop, order, axis=1)
        pos[dropped], scores[dropped] = -1, -np.inf
    if pos.shape[1] < k:  # only when exclusion left fewer than k (checked by the caller)
        pad = k - pos.shape[1]
        pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    pos, scores = pos[:, :k], scores[:, :k]
    scores[pos < 0] = -np.inf
    return scores, pos


def _strings(a: np.ndarray) -> np.ndarray:
    """Fixed-width ``<U`` copy of a string array (the store's are numpy ``StringDType``)."""
    return np.asarray(a.tolist(), dtype=str)


def _as_list(x: Any, what: str) -> list[Any]:
    if isinstance(x, (str, os.PathLike)) or not isinstance(x, Sequence | np.ndarray):
        return [x]
    out = list(x)
    if not out:
        raise InvalidArgumentError(f"{what} is empty; give at least one")
    return out


def _image_items(images: Any) -> list[Any]:
    """Query images as a list: one image (path, PIL image, 2-D/3-D array) or a sequence of them;
    a 4-D array is a stack of images."""
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4 and len(images):
            return list(images)
        raise InvalidArgumentError(
            f"an image array must be (H, W[, C]), or (m, H, W, C) for several; got {images.shape}"
        )
    return _as_list(images, "images")


def close_ids(query: str, ids: np.ndarray, n: int = 3) -> list[str]:
    """Up to ``n`` ids similar to ``query``, among those sharing its longest matched prefix.

    Narrowing by prefix first keeps this fast on large datasets (difflib over 262,144 ids takes
    seconds) and suits ids that are paths or numbered names (``test/00042``).
    """
    cands = ids
    for size in range(len(query), 0, -1):
        hit = ids[np.char.startswith(ids, query[:size])]
        if len(hit):
            cands = hit
            break
    return difflib.get_close_matches(query, [str(c) for c in cands], n=n, cutoff=0.5)


def _id_rows(ds: DatasetGroup, ids: Any) -> tuple[list[str], np.ndarray]:
    """Dataset rows of the query ids; unknown ids are an error suggesting close ones."""
    queries = [str(i) for i in _as_list(ids, "ids")]
    all_ids = ds.ids
    if len(queries) <= 64:  # a few vectorised comparisons beat building a dict of all ids
        found = [np.flatnonzero(all_ids == q) for q in queries]
        lookup = {q: int(f[0]) for q, f in zip(queries, found, strict=True) if len(f)}
    else:
        lookup = {s: r for r, s in enumerate(all_ids.tolist())}
    rows = []
    for q in queries:
        if q not in lookup:
            close = close_ids(q, all_ids)
            hint = f" Did you mean {close}?" if close else ""
            example = ", ".join(repr(str(s)) for s in ds.ids[:3])
            raise InvalidArgumentError(
                f"sample id {q!r} is not in dataset {ds.name!r} ({ds.n} samples, ids like "
                f"{example}).{hint}"
            )
        rows.append(lookup[q])
    return queries, np.asarray(rows, dtype=np.int64)


def _check_vectors(vectors: Any, d: int, model: str) -> np.ndarray:
    try:
        v = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InvalidArgumentError(
            f"vectors must be a numeric (m, {d}) array; could not convert: {err}"
        ) from err
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[0] == 0:
        raise InvalidArgumentError(
            f"vectors must be an (m, {d}) array (or one ({d},) vector); got shape {v.shape}"
        )
    if v.shape[1] != d:
        raise InvalidArgumentError(
            f"vectors have {v.shape[1]} features, but {model!r} embeddings have {d}; pass "
            f"vectors from the same model (or view)"
        )
    finite = np.isfinite(v).all(axis=1)
    zero = ~(np.abs(v) > 0).any(axis=1)
    if not finite.all() or zero.any():
        i = int(np.flatnonzero(~finite | zero)[0])
        what = "non-finite values" if not finite[i] else "only zeros (no direction for cosine)"
        raise InvalidArgumentError(f"query vector {i} has {what}")
    return v


def neighbors(
    ds: DatasetGroup,
    model: str,
    *,
    ids: str | Sequence[str] | None = None,
    vectors: np.ndarray | None = None,
    images: Any = None,
    k: int = 10,
    split: str | None = None,
    exclude_self: bool = True,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    partial: bool = False,
    persist: bool = True,
    device: str = "auto",
    batch_size: int = 32,
    weights: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
) -> NeighborResult:
    """The ``k`` stored samples nearest (cosine) to each query.

    Give exactly one of ``ids``, ``vectors`` or ``images``.

    Args:
        ds: The dataset to search.
        model: Stored model (or view) name, e.g. ``dino-vits8`` or ``dino-vits8:cls4``.
        ids: Sample id(s) of ``ds``; their stored embeddings are the queries.
        vectors: ``(m, d)`` (or ``(d,)``) embeddings of the same model.
        images: Image path(s), PIL image(s) or ``(H, W[, C])`` uint8/uint16 arrays, embedded with
            the model's stored spec, weights, precision and view
            (:func:`featlab.extractors.query.embed_images`).
        k: Neighbours per query.
        split: Search only this split's rows (``train``, ``val``, ``test``; ``unlabeled`` or
            ``""`` for samples without a split). The queries may come from any split.
        exclude_self: For ``ids`` queries, leave the query sample out of its own neighbours
            (someone asking "what looks like this sample" does not want itself at rank 1).
            Exact duplicates of it stay in. Ignored for vectors and images.
        index: ``flat`` (exact, default) or ``ivf`` (approximate, for very large stores).
        nlist: IVF lists (default ``4 * sqrt(n)``, see :class:`featlab.store._index.IndexParams`).
        nprobe: IVF lists visited per query (default ``nlist // 16``, at least 1).
        seed: Seed of IVF training (sample and k-means).
        partial: Search the written rows of an incomplete model.
        persist: Save a (re)built index in the store, if it was opened with ``mode="a"``.
        device, batch_size, weights, trust_checkpoint: For ``images`` only: where to run the
            model, images per forward pass, the checkpoint's new location if the one recorded
            in the store moved (its sha256 must match), and permission to unpickle a
            whole-module checkpoint.

    Returns:
        :class:`NeighborResult`, ``m * k`` entries.

    Raises:
        InvalidArgumentError: Not exactly one query kind, an unknown sample id (close ids are
            suggested), a query sample without a usable embedding, vectors of the wrong width
            or non-finite, ``k`` outside ``1..`` the number of searchable samples, an unknown
            split or index type.
        UnknownModelError: ``model`` is not stored for ``ds``.
        IncompleteEmbeddingError: The model is incomplete and ``partial`` is False.
        WeightsError, BadImageError: For ``images``: weights that cannot be rebuilt (or whose
            sha256 differs from the stored one), unreadable images.
    """
    from featlab.store._index import IndexParams, open_index

    kinds = {"ids": ids, "vectors": vectors, "images": images}
    given = [name for name, value in kinds.items() if value is not None]
    if len(given) != 1:
        raise InvalidArgumentError(
            "give exactly one of ids=, vectors= or images=; got "
            + (" and ".join(given) if given else "none")
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InvalidArgumentError(f"k must be a positive int; got {k!r}")
    if nprobe is not None and (isinstance(nprobe, bool) or nprobe < 1):
        raise InvalidArgumentError(f"nprobe must be a positive int; got {nprobe!r}")
    if nprobe is not None and index != "ivf":
        raise InvalidArgumentError(
            f"nprobe applies to index='ivf' (lists visited per query); index={index!r} is exact"
        )
    if split == "unlabeled":
        split = ""
    params = IndexParams(kind=index, nlist=nlist, seed=seed)
    d = ds.dim(model)
    exclude_rows: np.ndarray | None = None
    if ids is not None:
        query_ids, qrows = _id_rows(ds, ids)
        stored = open_index(ds, model, split=split, params=params, partial=partial, persist=persist)
        ok = stored.usable[qrows]
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            why = (
                "was unreadable during extraction (bad)"
                if ds.written_mask(model)[qrows[i]]
                else "is not extracted yet"
            )
            raise InvalidArgumentError(
                f"sample {query_ids[i]!r} has no usable {model!r} embedding: it {why}; query "
                f"by image or vector instead, or finish the extraction"
            )
        q = ds.values_at(model, qrows)
        exclude_rows = qrows if exclude_self else None
    elif vectors is not None:
        q = _check_vectors(vectors, d, model)
        query_ids = [f"vector[{i}]" for i in range(len(q))]
    else:
        import importlib

        # The one call from the core into the model zoo: embedding a new image needs the
        # backbone the store's provenance describes (imported lazily; featlab stays torch-free).
        query_mod = importlib.import_module("featlab.extractors.query")
        items = _image_items(images)
        q = query_mod.embed_images(
            ds,
            model,
            items,
            device=device,
            batch_size=batch_size,
            weights=weights,
            trust_checkpoint=trust_checkpoint,
        )
        query_ids = [
            str(x) if isinstance(x, (str, os.PathLike)) else f"image[{i}]"
            for i, x in enumerate(items)
        ]
    if ids is None:
        stored = open_index(ds, model, split=split, params=params, partial=partial, persist=persist)
    n_index = len(stored.rows)
    exclude = None
    if exclude_rows is not None:
        # Position of each query row in the index (-1 if it is not searched, e.g. other split).
        p = np.searchsorted(stored.rows, exclude_rows)
        inside = (p < n_index) & (stored.rows[np.minimum(p, n_index - 1)] == exclude_rows)
        exclude = np.where(inside, p, -1)
    limit = n_index - int(exclude is not None and bool((exclude >= 0).any()))
    if k > limit:
        where = f"split {split!r} of " if split is not None else ""
        self_note = " (the query sample itself excluded)" if limit < n_index else ""
        raise InvalidArgumentError(
            f"k={k} but only {limit} samples of {where}{ds.name!r} can be returned"
            f"{self_note}; use k <= {limit}"
        )
    if stored.params["type"] == "ivf" and nprobe is None:
        nprobe = max(1, int(stored.params["nlist"]) // 16)
    scores, pos = search(stored.index, q, k, exclude=exclude, nprobe=nprobe)
    valid = pos >= 0
    if not valid.all():
        warnings.warn(
            f"the approximate {stored.params['type']} index returned fewer than k={k} neighbours "
            f"for {int((~valid.all(axis=1)).sum())} query(ies); raise nprobe (now {nprobe}) or "
            "use index='flat'",
            RuntimeWarning,
            stacklevel=2,
        )
    # Inner products of unit vectors can round past +-1 by an ulp; a cosine cannot.
    scores = np.clip(scores, -1.0, 1.0)
    qi, ranks = np.nonzero(valid)
    nrows = stored.rows[pos[valid]]
    info = stored.describe()
    if nprobe is not None and stored.params["type"] == "ivf":
        info["nprobe"] = int(nprobe)
    return NeighborResult(
        dataset=ds.name,
        model=model,
        k=k,
        searched_split=split,
        query=qi.astype(np.int64),
        query_id=np.asarray(query_ids, dtype=str)[qi],
        rank=(ranks + 1).astype(np.int64),
        id=_strings(ds.ids[nrows]),
        score=scores[valid].astype(np.float32),
        label=label_names(ds.labels[nrows], ds.classes),
        split=_strings(ds.splits[nrows]),
        source=_strings(ds.sources[nrows]),
        row=nrows.astype(np.int64),
        index=info,
    )


__all__ = ["COLUMNS", "NeighborResult", "close_ids", "label_names", "neighbors", "search"]
