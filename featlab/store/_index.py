"""Persisted FAISS indexes of a model's embeddings: build, fingerprint, store, load.

Layout (DESIGN section 3): ``<dataset>/indexes/<model key>`` is a 1-D uint8 zarr array holding
exactly the bytes of ``faiss.serialize_index(index)``, with attrs naming the fingerprint of the
embeddings it was built from, the index type and parameters, its size and a CRC32 of the bytes.
An index restricted to one split lives next to it as ``<model key>@<split>``.

The index searches cosine similarity: the usable rows of the model (``ds.rows(model, split)``:
written and not bad) are L2-normalised float32 and added to an inner-product index, in ascending
row order, so FAISS position ``i`` is dataset row ``rows[i]``. ``rows`` is not stored: it is a
function of the written/bad masks and the split, all of which the fingerprint covers.

Staleness: the fingerprint hashes what identifies the stored embeddings (their provenance attrs,
including ``created``, which every ``--overwrite`` re-extraction renews, and ``complete``), the
array shape, the written and bad masks (a resumed extraction changes them) and the raw bytes of
64 strided rows. Those rows are read with byte-range requests on the uncompressed chunks, so the
fingerprint of a 262,144 x 1536 store costs two mask reads and 64 x 6 KiB, not 1.6 GB. An index
whose fingerprint, parameters, size, CRC, ``ntotal`` or ``d`` do not match is rebuilt, never used.

Persistence: an index is written only into a store opened with ``mode="a"``; a read-only store
gets the index built in memory, without a warning (read-only was asked for; the result's index
status says "not persisted"). Writers of one dataset's indexes take an ``flock`` on its
``indexes`` group; a query that finds it held builds in memory instead of waiting. Bytes stream
through FAISS's callback writer/reader in 1 MiB pieces into 16 MiB chunks, so neither writing
nor loading holds a second copy of the index in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab._vectors import normalize_rows_in_place
from featlab._version import __version__
from featlab.errors import InvalidArgumentError, StoreError, StoreLockedError
from featlab.store import _layout as L
from featlab.store._writer import ModelLock

if TYPE_CHECKING:
    import faiss
    import zarr

    from featlab.store._store import DatasetGroup

INDEX_TYPES = ("flat", "ivf")
FINGERPRINT_VERSION = 1
SAMPLE_ROWS = 64  # rows of values hashed into the fingerprint
INDEX_CHUNK_BYTES = 16 * 2**20  # chunk of the persisted byte array
BUILD_BLOCK_BYTES = 16 * 2**20  # values read per step while building
IVF_TRAIN_PER_LIST = 50  # faiss wants >= 39 training points per list; sampled, seeded
CACHE_SIZE = 2  # indexes kept in memory per process (each can be as large as its matrix)

# Model attrs that identify the stored embeddings; anything that rewrites them changes one of
# these (created: every (re)creation; complete: a finished extraction) or the masks.
_FINGERPRINT_ATTRS = (
    "name",
    "spec",
    "weights",
    "weights_path",
    "precision",
    "embedding",
    "view",
    "created",
    "generation",
    "complete",
    "n_bad",
)


@dataclass(frozen=True)
class IndexParams:
    """How an index is built.

    Attributes:
        kind: ``flat`` (exact inner product, the default: the neighbours of a sample are exact)
            or ``ivf`` (inverted lists over spherical k-means centroids, approximate; for very
            large stores).
        nlist: IVF lists; default ``round(4 * sqrt(n))``, capped so every list gets at least
            39 training points (faiss's minimum), at least 1.
        seed: Seed of the IVF training sample and of k-means.
    """

    kind: str = "flat"
    nlist: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_TYPES:
            raise InvalidArgumentError(
                f"index must be one of {INDEX_TYPES}; got {self.kind!r} (flat is exact, ivf "
                "approximate for very large stores)"
            )
        if self.nlist is not None and (isinstance(self.nlist, bool) or self.nlist < 1):
            raise InvalidArgumentError(f"nlist must be a positive int; got {self.nlist!r}")

    def resolved(self, n: int) -> dict[str, Any]:
        """The parameters as stored for an index of ``n`` rows (``nlist`` resolved)."""
        if self.kind == "flat":
            return {"type": "flat", "metric": "inner_product"}
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // 39))
        if nlist > n:
            raise InvalidArgumentError(f"nlist={nlist} exceeds the {n} rows to index")
        return {"type": "ivf", "metric": "inner_product", "nlist": int(nlist), "seed": self.seed}


@dataclass(frozen=True)
class StoredIndex:
    """A FAISS index of a model's usable rows, and where it came from.

    Attributes:
        index: The FAISS index (cosine = inner product of L2-normalised vectors).
        rows: ``(ntotal,)`` int64 dataset rows; FAISS position ``i`` is row ``rows[i]``.
        fingerprint: Fingerprint of the embeddings it was built from.
        params: Index type and parameters (as persisted).
        key: Array name under ``<dataset>/indexes/``.
        status: ``cached`` (this process already had it), ``loaded`` (read from the store),
            ``built`` (built and persisted), or ``built, not persisted (<why>)``.
        dim: Embedding width ``d``.
        usable: ``(n,)`` bool over all dataset rows: written and not bad (any split).
    """

    index: Any
    rows: np.ndarray
    fingerprint: str
    params: dict[str, Any]
    key: str
    status: str
    dim: int = 0
    usable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: key, status, fingerprint, n, dim and the parameters."""
        return {
            "key": self.key,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "n": len(self.rows),
            "dim": self.dim,
            **self.params,
        }


_CACHE: OrderedDict[tuple[str, str, str], StoredIndex] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def clear_index_cache() -> None:
    """Forget the indexes this process holds in memory (the next query loads or builds)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def index_key(model: str, split: str | None = None) -> str:
    """Array name of ``model``'s index under ``<dataset>/indexes/`` (``@<split>`` if filtered).

    A model name that happens to collide with another's ``@split`` key costs a rebuild, never a
    wrong answer: the model name and split are part of the fingerprint.
    """
    key = L.model_key(model)
    if split is None:
        return key
    return f"{key}@{L.model_key(split) if split else 'unlabeled'}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _values(ds: DatasetGroup, model: str) -> zarr.Array:
    return ds._model_group(model)["values"]


# -- fingerprint -------------------------------------------------------------------------------
def sample_rows(n: int, count: int = SAMPLE_ROWS) -> np.ndarray:
    """``count`` (at most ``n``) strided row numbers spanning ``0..n-1``, deterministic."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64))


def _plain_layout(values: zarr.Array) -> bool:
    """True if each chunk file is the rows' little-endian float32 bytes, C order, unpadded rows.

    featlab writes values like that (uncompressed, chunks of whole rows), so a row is one byte
    range of one chunk file. Any other layout is read through zarr (whole chunks).
    """
    try:
        from zarr.codecs import BytesCodec

        codecs = values.metadata.codecs  # type: ignore[union-attr]
        endian = getattr(codecs[0], "endian", None)
        return (
            len(codecs) == 1
            and isinstance(codecs[0], BytesCodec)
            and getattr(endian, "value", endian) in ("little", None)
            and np.dtype(values.dtype) == np.float32
            and values.ndim == 2
            and values.chunks[1] == values.shape[1]
        )
    except (AttributeError, IndexError, TypeError):
        return False


def read_row_bytes(values: zarr.Array, rows: np.ndarray) -> list[bytes]:
    """Little-endian float32 bytes of each row of a 2-D values array.

    Rows of never-written chunks read as their fill value (0), like zarr itself returns them.
    For featlab's uncompressed layout each row is one byte-range request; otherwise the rows are
    read through zarr, which decodes whole chunks (same bytes, more I/O).
    """
    d = int(values.shape[1])
    if not _plain_layout(values):
        block = np.asarray(values.oindex[np.asarray(rows, dtype=np.int64)], dtype="<f4")
        return [r.tobytes() for r in block]
    from zarr.abc.store import RangeByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    c = int(values.chunks[0])
    row_bytes = 4 * d
    fill = np.full(d, values.fill_value or 0.0, dtype="<f4").tobytes()
    proto = default_buffer_prototype()
    path = values.store_path  # type: ignore[attr-defined]

    async def one(r: int) -> bytes:
        key = values.metadata.encode_chunk_key((r // c, 0))  # type: ignore[union-attr]
        start = (r % c) * row_bytes
        buf = await (path / key).get(
            prototype=proto, byte_range=RangeByteRequest(start, start + row_bytes)
        )
        return fill if buf is None else buf.to_bytes()

    async def all_rows() -> list[bytes]:
        return list(await asyncio.gather(*(one(int(r)) for r in rows)))

    out = sync(all_rows())
    if any(len(b) != row_bytes for b in out):
        # A truncated chunk file: let zarr read (and complain about) it the ordinary way.
        block = np.asarray(values.oindex[np.asarray(rows, dtype=np.int64)], dtype="<f4")
        return [r.tobytes() for r in block]
    return out


def embeddings_fingerprint(
    ds: DatasetGroup,
    model: str,
    split: str | None = None,
    *,
    masks: tuple[np.ndarray, np.ndarray] | None = None,
) -> str:
    """Fingerprint (hex sha256) of ``model``'s embeddings of ``ds`` as an index would see them.

    It changes when the embeddings change through featlab (re-extraction with ``--overwrite``
    renews ``created``; a resumed or completed extraction changes the written mask and
    ``complete``; ``--skip-bad`` rows change the bad mask) and when the searched rows change
    (``split``), and hashes 64 strided rows of values as a check on the values themselves.

    Cost: the attrs, the two ``(n,)`` masks (or ``masks``: ``(written, bad)`` already read)
    and 64 rows (byte ranges), whatever ``d`` is.

    Raises:
        UnknownModelError: No embeddings of ``model`` in ``ds``.
    """
    group = ds._model_group(model)
    values = group["values"]
    attrs = dict(group.attrs.asdict())
    head = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "dataset": ds.name,
        "dataset_created": ds._g.attrs.get("created"),
        "model": model,
        "split": split,
        "shape": list(values.shape),
        "chunks": list(values.chunks),
        "attrs": {k: attrs.get(k) for k in _FINGERPRINT_ATTRS},
    }
    h = hashlib.sha256(json.dumps(head, sort_keys=True, default=str).encode())
    for mask in masks or (ds.written_mask(model), ds.bad_mask(model)):
        h.update(np.packbits(mask).tobytes())
    for b in read_row_bytes(values, sample_rows(int(values.shape[0]))):
        h.update(b)
    return h.hexdigest()


# -- building ----------------------------------------------------------------------------------
def iter_normalized_blocks(
    values: zarr.Array, rows: np.ndarray, *, block_bytes: int = BUILD_BLOCK_BYTES
) -> Iterator[np.ndarray]:
    """L2-normalised float32 blocks of ``values[rows]``, in ``rows`` order (ascending rows).

    Reads whole chunk-aligned blocks of about ``block_bytes`` and keeps only ``rows`` of each,
    so memory stays at one block whatever the store size.
    """
    n, d = (int(s) for s in values.shape)
    c = int(values.chunks[0])
    step = max(c, block_bytes // (4 * d) // c * c)
    rows = np.asarray(rows, dtype=np.int64)
    for b in np.unique(rows // step):
        lo, hi = int(b) * step, min(int(b) * step + step, n)
        sel = rows[(rows >= lo) & (rows < hi)] - lo
        block = np.asarray(values[lo:hi], dtype=np.float32)
        part = block if len(sel) == hi - lo else block[sel]
        if not (part.flags.c_contiguous and part.flags.writeable):
            part = np.array(part, dtype=np.float32, order="C")
        yield normalize_rows_in_place(part)


def build_index(values: zarr.Array, rows: np.ndarray, params: dict[str, Any]) -> faiss.Index:
    """A FAISS inner-product index of the L2-normalised ``values[rows]``, streamed by blocks.

    Memory: the index's own storage, sized once, plus one block of values (and, for IVF, the
    training sample while training). Building with ``index.add`` block by block would grow the
    storage by reallocation, briefly holding old and new buffers (measured 1.7x the matrix at
    peak for a flat 262,144 x 384 index); the result is the same index either way.

    Args:
        values: ``(n, d)`` float32 zarr array.
        rows: ``(m,)`` ascending row numbers; position ``i`` of the index is ``rows[i]``.
        params: From :meth:`IndexParams.resolved`.

    Returns:
        ``IndexFlatIP`` (exact) or ``IndexIVFFlat`` (inner product, spherical k-means).
    """
    import faiss

    d = int(values.shape[1])
    if params["type"] == "flat":
        index = faiss.IndexFlatIP(d)
        codes = _presized_codes(index, len(rows), d)
        if codes is None:
            for block in iter_normalized_blocks(values, rows):
                index.add(block)
            return index
        pos = 0
        for block in iter_normalized_blocks(values, rows):
            codes[pos : pos + len(block)] = block
            pos += len(block)
        index.ntotal = len(rows)
        return index
    nlist, seed = int(params["nlist"]), int(params["seed"])
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    # Cosine k-means: centroids re-normalised each iteration (spherical), seeded; trained on a
    # seeded sample of IVF_TRAIN_PER_LIST rows per list.
    index.cp.spherical = True
    index.cp.seed = seed
    n_train = min(len(rows), IVF_TRAIN_PER_LIST * nlist)
    train_rows = np.sort(np.random.default_rng(seed).choice(rows, size=n_train, replace=False))
    train = np.empty((n_train, d), dtype=np.float32)
    pos = 0
    for block in iter_normalized_blocks(values, train_rows):
        train[pos : pos + len(block)] = block
        pos += len(block)
    index.train(train)
    del train
    _fill_ivf(index, values, rows)
    return index


def _fill_ivf(index: Any, values: zarr.Array, rows: np.ndarray) -> None:
    """Add ``values[rows]`` to a trained IndexIVFFlat with every inverted list sized once.

    Pass 1 assigns each row to its nearest centroid (what ``add`` does); each list is then
    resized to its final length and pass 2 writes the raw vectors (IVFFlat's codes) and ids in
    row order, so lists hold exactly what ``index.add`` would put there, in the same order.
    """
    import faiss

    nlist = int(index.nlist)
    assign = np.empty(len(rows), dtype=np.int64)
    pos = 0
    for block in iter_normalized_blocks(values, rows):
        assign[pos : pos + len(block)] = index.quantizer.assign(block, 1)[:, 0]
        pos += len(block)
    try:
        invlists = faiss.downcast_InvertedLists(index.invlists)
        resize, update = invlists.resize, invlists.update_entries
    except AttributeError:  # lists not array-backed: the ordinary path (same index)
        for block in iter_normalized_blocks(values, rows):
            index.add(block)
        return
    counts = np.bincount(assign, minlength=nlist)
    for lst in np.flatnonzero(counts):
        resize(int(lst), int(counts[lst]))
    filled = np.zeros(nlist, dtype=np.int64)
    for block, lo in _blocks_with_offsets(values, rows):
        a = assign[lo : lo + len(block)]
        order = np.argsort(a, kind="stable")  # by list, row order kept within each list
        lists, starts = np.unique(a[order], return_index=True)
        ends = np.append(starts[1:], len(a))
        for lst, s, e in zip(lists.tolist(), starts.tolist(), ends.tolist(), strict=True):
            sel = order[s:e]
            ids = np.ascontiguousarray(lo + sel, dtype=np.int64)
            codes = np.ascontiguousarray(block[sel]).view(np.uint8)  # raw float32 bytes
            update(lst, int(filled[lst]), e - s, faiss.swig_ptr(ids), faiss.swig_ptr(codes))
            filled[lst] += e - s
    index.ntotal = len(rows)


def _blocks_with_offsets(values: zarr.Array, rows: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """``(block, position of its first row in rows)`` from :func:`iter_normalized_blocks`."""
    lo = 0
    for block in iter_normalized_blocks(values, rows):
        yield block, lo
        lo += len(block)


def _presized_codes(index: Any, n: int, d: int) -> np.ndarray | None:
    """A writable ``(n, d)`` float32 view of a flat index's storage, sized once.

    ``index.add`` block by block grows the storage vector by reallocation, which briefly holds
    the old and the new buffer (measured 1.7x the matrix at peak for 262,144 x 384); filling a
    buffer sized once keeps the build at the matrix plus one block. ``None`` if this FAISS build
    does not expose the storage (then blocks are added the ordinary way: same index).
    """
    import faiss

    try:
        index.codes.resize(n * d * 4)
        raw = faiss.rev_swig_ptr(index.codes.data(), n * d * 4)
    except (AttributeError, TypeError, RuntimeError):
        raw = None
    if not isinstance(raw, np.ndarray) or raw.size != n * d * 4:
        index.reset()  # back to an empty index for the ordinary path
        return None
    return raw.view(np.float32).reshape(n, d)


# -- persisting --------------------------------------------------------------------------------
def _write_index_array(group: zarr.Group, key: str, index: Any, attrs: dict[str, Any]) -> None:
    """Write ``serialize_index(index)`` bytes to ``group[key]`` and mark it complete last.

    Two passes through FAISS's callback writer (count, then write), so the array has its exact
    size and no copy of the serialised bytes is held. ``complete``/``fingerprint`` are written
    after the bytes: an interrupted write leaves an array that is never used.
    """
    import faiss

    size = 0

    def count(b: bytes) -> int:
        nonlocal size
        size += len(b)
        return len(b)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    if key in set(group.array_keys()) or key in set(group.group_keys()):
        del group[key]
    chunk = max(1, min(size, INDEX_CHUNK_BYTES))
    arr = group.create_array(
        key,
        shape=(size,),
        dtype="uint8",
        chunks=(chunk,),
        compressors=None,
        fill_value=0,
        attributes={"complete": False},
    )
    buf = bytearray()
    pos = 0
    crc = 0

    def flush() -> None:
        nonlocal pos, crc
        data = np.frombuffer(bytes(buf), dtype=np.uint8)
        arr[pos : pos + len(data)] = data
        crc = zlib.crc32(data, crc)
        pos += len(data)
        buf.clear()

    def write(b: bytes) -> int:
        buf.extend(b)
        if len(buf) >= chunk:
            flush()
        return len(b)

    faiss.write_index(index, faiss.PyCallbackIOWriter(write))
    if buf:
        flush()
    if pos != size:
        raise StoreError(f"index serialisation gave {pos} bytes, then {size}; not persisted")
    arr.attrs.update({**attrs, "nbytes": size, "crc32": crc, "complete": True})


def _read_index_array(arr: zarr.Array) -> Any:
    """Deserialize the index in ``arr`` chunk by chunk; raises on any inconsistency."""
    import faiss

    size = int(arr.shape[0])
    chunk = int(arr.chunks[0])
    state = {"pos": 0, "buf": b"", "off": 0, "crc": 0}

    def read(n: int) -> bytes:
        out = bytearray()
        while n > 0:
            if state["off"] >= len(state["buf"]):
                pos = state["pos"]
                if pos >= size:
                    break
                data = np.asarray(arr[pos : min(pos + chunk, size)], dtype=np.uint8).tobytes()
                state.update(buf=data, off=0, pos=pos + len(data))
                state["crc"] = zlib.crc32(data, state["crc"])
            take = state["buf"][state["off"] : state["off"] + n]
            state["off"] += len(take)
            out += take
            n -= len(take)
        return bytes(out)

    index = faiss.read_index(faiss.PyCallbackIOReader(read))
    while state["pos"] < size:  # trailing bytes FAISS did not ask for still count in the CRC
        read(chunk)
    if state["crc"] != arr.attrs.get("crc32"):
        raise StoreError("index bytes do not match their CRC32")
    return index


def _check_index(index: Any, params: dict[str, Any], n: int, d: int) -> None:
    import faiss

    index = faiss.downcast_index(index)
    want = faiss.IndexFlatIP if params["type"] == "flat" else faiss.IndexIVFFlat
    if not isinstance(index, want):
        raise StoreError(f"index is a {type(index).__name__}, expected {want.__name__}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise StoreError("index metric is not inner product")
    if int(index.ntotal) != n or int(index.d) != d:
        raise StoreError(f"index holds {index.ntotal} x {index.d}, expected {n} x {d}")
    if params["type"] == "ivf" and int(index.nlist) != int(params["nlist"]):
        raise StoreError(f"index has {index.nlist} lists, expected {params['nlist']}")


def _load_persisted(
    ds: DatasetGroup, key: str, fingerprint: str, params: dict[str, Any], n: int, d: int
) -> tuple[Any | None, str | None]:
    """``(index, None)`` if a fresh, intact index is persisted; else ``(None, why not)``."""
    if L.INDEXES not in set(ds._g.group_keys()):
        return None, "missing"
    group = ds._g[L.INDEXES]
    if key not in set(group.array_keys()):
        return None, "missing"
    arr = group[key]
    attrs = dict(arr.attrs.asdict())
    if not attrs.get("complete") or attrs.get("fingerprint") != fingerprint:
        return None, "stale"
    if attrs.get("index") != params or attrs.get("nbytes") != int(arr.shape[0]):
        return None, "stale"
    try:
        index = _read_index_array(arr)
        _check_index(index, params, n, d)
    except Exception:  # any unreadable or inconsistent bytes: rebuild, never use them
        return None, "corrupt"
    try:  # reopened: another process may have rewritten it while we read it
        again = ds._g[L.INDEXES][key].attrs.get("fingerprint")
    except KeyError:
        again = None
    if again != fingerprint:
        return None, "stale"
    return index, None


def _persist(ds: DatasetGroup, key: str, index: Any, attrs: dict[str, Any]) -> str | None:
    """Write the index into the store; ``None`` on success, else why it was not written."""
    if ds.store.mode != "a":
        return "store opened read-only"
    try:
        group = ds._g.require_group(L.INDEXES)
        lock = ModelLock(ds.store.path / ds.name / L.INDEXES, f"indexes of {ds.name!r}")
        try:
            lock.acquire()
        except StoreLockedError:
            return "another process is writing this dataset's indexes"
        try:
            _write_index_array(group, key, index, attrs)
        finally:
            lock.release()
    except Exception as err:  # a cache that cannot be saved must not fail the query
        warnings.warn(
            f"the {key!r} index of {ds.name!r} was built but could not be saved in "
            f"{ds.store.path} ({type(err).__name__}: {err}); it will be rebuilt next time",
            RuntimeWarning,
            stacklevel=3,
        )
        return f"write failed: {type(err).__name__}"
    return None


def open_index(
    ds: DatasetGroup,
    model: str,
    *,
    split: str | None = None,
    params: IndexParams | None = None,
    partial: bool = False,
    persist: bool = True,
) -> StoredIndex:
    """The index of ``model``'s usable rows of ``split``: cached, loaded, or (re)built.

    Args:
        ds: The dataset.
        model: Stored model name.
        split: Only rows of this split (``None``: all usable rows).
        params: Index type and parameters; default exact flat inner product.
        partial: Index the written rows of an incomplete model (see ``DatasetGroup.rows``).
        persist: Save a (re)built index into the store when it was opened with ``mode="a"``.

    Raises:
        UnknownModelError, IncompleteEmbeddingError, InvalidArgumentError: As ``ds.rows``.
        InvalidArgumentError: No usable rows to index.
    """
    params = params or IndexParams()
    written, bad = ds.written_mask(model), ds.bad_mask(model)
    in_split = ds.split_mask(split)
    if not partial and (in_split & ~written).any():
        ds.rows(model, split)  # raises IncompleteEmbeddingError, with its standard message
    usable = written & ~bad
    rows = np.flatnonzero(in_split & usable)
    if len(rows) == 0:
        where = f"split {split!r} of " if split is not None else ""
        raise InvalidArgumentError(
            f"no usable {model!r} embeddings in {where}{ds.name!r} to search (all unwritten or "
            "bad); extract them first"
        )
    values = _values(ds, model)
    d = int(values.shape[1])
    resolved = params.resolved(len(rows))
    # Flat and IVF indexes of one model live side by side (switching does not rebuild).
    key = index_key(model, split) + ("" if params.kind == "flat" else f"#{params.kind}")
    fingerprint = embeddings_fingerprint(ds, model, split, masks=(written, bad))
    cache_key = (str(ds.store.path.resolve()), ds.name, key)
    with _CACHE_LOCK:
        hit = _CACHE.get(cache_key)
        if hit is not None and hit.fingerprint == fingerprint and hit.params == resolved:
            _CACHE.move_to_end(cache_key)
            return StoredIndex(hit.index, rows, fingerprint, resolved, key, "cached", d, usable)
    index, why = _load_persisted(ds, key, fingerprint, resolved, len(rows), d)
    if index is not None:
        status = "loaded"
    else:
        index = build_index(values, rows, resolved)
        attrs = {
            "fingerprint": fingerprint,
            "index": resolved,
            "model": model,
            "split": split,
            "n": len(rows),
            "dim": d,
            "created": _now(),
            "featlab_version": __version__,
            "faiss_version": _faiss_version(),
        }
        not_saved = _persist(ds, key, index, attrs) if persist else "persist=False"
        status = "built" if not_saved is None else f"built, not persisted ({not_saved})"
        if why == "corrupt":
            status += "; the persisted index was corrupt"
    out = StoredIndex(index, rows, fingerprint, resolved, key, status, d, usable)
    with _CACHE_LOCK:
        _CACHE[cache_key] = out
        _CACHE.move_to_end(cache_key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out


def _faiss_version() -> str:
    import faiss

    return str(getattr(faiss, "__version__", "?"))


__all__ = [
    "INDEX_TYPES",
    "IndexParams",
    "StoredIndex",
    "build_index",
    "clear_index_cache",
    "embeddings_fingerprint",
    "index_key",
    "open_index",
]
