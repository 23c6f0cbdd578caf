"""Cached t-SNE coordinates in the store: ``<dataset>/tsne/<key>``.

A record is a zarr group holding two arrays, ``coords (m, 2) float32`` and ``rows (m,) int64``
(the dataset rows embedded, in the order of ``coords``), and attrs naming what it was computed
from: model, the fingerprint of the model's embeddings
(:func:`featlab.store._index.embeddings_fingerprint`), seed, split, max_points, perplexity,
iterations, backend, the number of rows used, featlab version and creation time.

Completeness: a record is created with ``complete: False``, its arrays are written, and only
then are the attrs that mark it complete (``complete``, ``fingerprint``) written. A process
killed at any point before that leaves a record that :func:`load_tsne` ignores (and the next
run overwrites). A record whose fingerprint or parameters differ from the request is stale:
it is recomputed and overwritten, never used.

Records are written only into a store opened with ``mode="a"``; writers of one dataset's t-SNE
records take an ``flock`` on its ``tsne`` group (as the FAISS indexes do), and a writer that
finds it held computes without saving instead of waiting.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab._version import __version__
from featlab.errors import StoreLockedError
from featlab.store import _layout as L
from featlab.store._store import _group_keys
from featlab.store._writer import ModelLock

if TYPE_CHECKING:
    import zarr

    from featlab.store._store import DatasetGroup

TSNE = "tsne"  # group under each dataset
# Attrs that must equal the request for a record to be used (besides fingerprint/complete).
PARAM_KEYS = ("model", "split", "seed", "max_points", "perplexity", "n_iter", "backend")


@dataclass(frozen=True)
class TSNERecord:
    """A complete cached t-SNE: ``coords (m, 2) float32``, ``rows (m,) int64`` and its attrs."""

    coords: np.ndarray
    rows: np.ndarray
    attrs: dict[str, Any]


def tsne_key(params: dict[str, Any]) -> str:
    """Group name of a t-SNE record under ``<dataset>/tsne/``; readable, one per parameter set.

    ``params`` holds :data:`PARAM_KEYS`; e.g. ``dino-vits8@test.seed0.perp30.max10000.iter500.
    opentsne``. Two parameter sets that map to one name (model names differing only in unsafe
    characters) cost a recompute, never a wrong answer: the attrs are compared too.
    """
    split = params["split"]
    where = "all" if split is None else (L.model_key(split) if split else "unlabeled")
    max_points = "all" if params["max_points"] is None else str(params["max_points"])
    return (
        f"{L.model_key(params['model'])}@{where}.seed{params['seed']}"
        f".perp{params['perplexity']:g}.max{max_points}.iter{params['n_iter']}"
        f".{params['backend']}"
    )


def _tsne_group(ds: DatasetGroup, *, create: bool) -> zarr.Group | None:
    if TSNE in set(_group_keys(ds._g)):
        return ds._g[TSNE]
    return ds._g.create_group(TSNE) if create else None


def load_tsne(ds: DatasetGroup, params: dict[str, Any], fingerprint: str) -> TSNERecord | None:
    """The complete, fresh record for ``params``, or ``None`` (missing, incomplete, stale or
    unreadable: the caller recomputes)."""
    key = tsne_key(params)
    try:
        group = _tsne_group(ds, create=False)
        if group is None or key not in set(_group_keys(group)):
            return None
        g = group[key]
        attrs = dict(g.attrs.asdict())
        if not _fresh(attrs, params, fingerprint):
            return None
        coords = np.asarray(g["coords"][...], dtype=np.float32)
        rows = np.asarray(g["rows"][...], dtype=np.int64)
        # Reopened after reading: another process may have rewritten the record meanwhile.
        again = dict(ds._g[TSNE][key].attrs.asdict())
    except Exception:  # any unreadable record is recomputed, never used
        return None
    n = attrs.get("n_points")
    if again.get("created") != attrs.get("created") or not _fresh(again, params, fingerprint):
        return None
    if coords.shape != (n, 2) or rows.shape != (n,):
        return None
    return TSNERecord(coords, rows, attrs)


def _fresh(attrs: dict[str, Any], params: dict[str, Any], fingerprint: str) -> bool:
    return (
        attrs.get("complete") is True
        and attrs.get("fingerprint") == fingerprint
        and all(attrs.get(k) == params[k] for k in PARAM_KEYS)
    )


def save_tsne(
    ds: DatasetGroup,
    params: dict[str, Any],
    fingerprint: str,
    coords: np.ndarray,
    rows: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> str | None:
    """Write a record: arrays first, the attrs that mark it complete last.

    Args:
        ds: The dataset (its store must be open with ``mode="a"`` to write).
        params: :data:`PARAM_KEYS` of the run.
        fingerprint: Of the embeddings the coordinates were computed from.
        coords: ``(m, 2)`` float32.
        rows: ``(m,)`` int64 dataset rows, in the order of ``coords``.
        extra: More attrs to record (seconds, library versions...).

    Returns:
        ``None`` if written, else why not (read-only store, locked, write failed: a warning).
    """
    if ds.store.mode != "a":
        return "store opened read-only"
    try:
        group = _tsne_group(ds, create=True)
        lock = ModelLock(ds.store.path / ds.name / TSNE, f"t-SNE records of {ds.name!r}")
        try:
            lock.acquire()
        except StoreLockedError:
            return "another process is writing this dataset's t-SNE records"
        try:
            _write_record(group, tsne_key(params), params, fingerprint, coords, rows, extra or {})
        finally:
            lock.release()
    except Exception as err:  # a cache that cannot be saved must not fail the t-SNE
        warnings.warn(
            f"the t-SNE of {params['model']!r} on {ds.name!r} was computed but could not be "
            f"saved in {ds.store.path} ({type(err).__name__}: {err}); it will be recomputed",
            RuntimeWarning,
            stacklevel=3,
        )
        return f"write failed: {type(err).__name__}"
    return None


def _write_record(
    group: zarr.Group,
    key: str,
    params: dict[str, Any],
    fingerprint: str,
    coords: np.ndarray,
    rows: np.ndarray,
    extra: dict[str, Any],
) -> None:
    if key in set(_group_keys(group)):
        del group[key]
    g = group.create_group(key, attributes={"complete": False})
    n = len(rows)
    for name, value, dtype, dims in (
        ("coords", coords, "float32", ("point", "xy")),
        ("rows", rows, "int64", ("point",)),
    ):
        arr = g.create_array(
            name,
            shape=value.shape,
            dtype=dtype,
            chunks=value.shape if n else (1, *value.shape[1:]),
            fill_value=0,
            dimension_names=dims,
        )
        arr[...] = np.asarray(value, dtype=dtype)
    g.attrs.update(
        {
            **params,
            **extra,
            "n_points": n,
            "featlab_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="microseconds"),
            "fingerprint": fingerprint,
            "complete": True,
        }
    )


__all__ = ["PARAM_KEYS", "TSNE", "TSNERecord", "load_tsne", "save_tsne", "tsne_key"]
