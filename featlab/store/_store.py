"""FeatureStore and DatasetGroup: the zarr store that extraction writes and evaluation reads."""

from __future__ import annotations

import difflib
import json
import os
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr

from featlab._version import __version__
from featlab.datasets.table import SampleTable
from featlab.errors import (
    IncompleteEmbeddingError,
    InvalidArgumentError,
    ModelMismatchError,
    StoreError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
    StoreReadOnlyError,
    UnknownDatasetError,
    UnknownModelError,
)
from featlab.store import _layout as L
from featlab.store._writer import EmbeddingWriter, ModelLock

if TYPE_CHECKING:
    import xarray as xr

    from featlab.eval.neighbors import NeighborResult

Mode = Literal["r", "a"]
# What makes two extractions "the same model": a stored model is reused or resumed only if all of
# these match, otherwise it is an error naming both (never a silent mix of two models' rows).
IDENTITY_KEYS = ("spec", "weights", "precision")


def _group_keys(group: zarr.Group) -> list[str]:
    """Child groups of ``group``. A child another process is creating right now (directory made,
    ``zarr.json`` not yet written) is skipped quietly: it is not part of the store yet."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at .* is not recognized")
        return list(group.group_keys())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def open_store(path: str | os.PathLike[str] | None = None, mode: Mode = "r") -> FeatureStore:
    """Open a featlab store.

    Args:
        path: Store directory; default ``$FEATLAB_STORE`` or ``./featlab.zarr``.
        mode: ``"r"`` read-only (the store must exist); ``"a"`` read-write, created if missing.

    Raises:
        StoreNotFoundError: ``mode="r"`` and there is no store at ``path``.
        StoreFormatError: The directory is not a featlab store, or one of a newer format.
        StoreReadOnlyError: ``mode="a"`` and ``path`` cannot be written.
    """
    if mode not in ("r", "a"):
        raise InvalidArgumentError(f"mode must be 'r' or 'a'; got {mode!r}")
    p = Path(path) if path is not None else L.default_store_path()
    p = p.expanduser()
    exists = (p / "zarr.json").is_file()
    if not exists:
        if mode == "r":
            hint = " (it exists but is not a zarr store)" if p.exists() else ""
            raise StoreNotFoundError(
                f"no featlab store at {str(p)!r}{hint}; create one with `featlab extract ... "
                f"--store {p}`, or pass the right --store / set ${L.STORE_ENV}"
            )
        if p.exists() and (not p.is_dir() or any(p.iterdir())):
            what = "exists and is not empty" if p.is_dir() else "is a file"
            raise StoreExistsError(
                f"{str(p)!r} {what}, but is not a featlab store; refusing to "
                "write into it. Choose another --store path."
            )
        _check_writable(p)
        root = zarr.open_group(str(p), mode="w", zarr_format=3)
        root.attrs.update(
            {L.FORMAT_ATTR: L.FORMAT_VERSION, "featlab_version": __version__, "created": _now()}
        )
        return FeatureStore(p, root, mode)
    if mode == "a":
        _check_writable(p)
    root = zarr.open_group(str(p), mode="r" if mode == "r" else "r+", zarr_format=3)
    fmt = root.attrs.get(L.FORMAT_ATTR)
    if fmt is None:
        raise StoreFormatError(
            f"{str(p)!r} is a zarr group but not a featlab store (no {L.FORMAT_ATTR!r} attribute)"
        )
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise StoreFormatError(
            f"{str(p)!r} has a malformed {L.FORMAT_ATTR!r} attribute {fmt!r} (expected an "
            "integer); the store was not written by featlab or was edited by hand"
        )
    if fmt > L.FORMAT_VERSION:
        raise StoreFormatError(
            f"{str(p)!r} has featlab store format {fmt} (written by featlab "
            f"{root.attrs.get('featlab_version', '?')}); this featlab {__version__} reads format "
            f"{L.FORMAT_VERSION} at most. Upgrade featlab: pip install -U featlab"
        )
    return FeatureStore(p, root, mode)


def _check_writable(p: Path) -> None:
    target = p if p.exists() else p.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if target != p and not target.is_dir():
        raise StoreExistsError(
            f"cannot create the store at {str(p)!r}: {str(target)!r} is a file, not a directory; "
            "choose another --store path"
        )
    if not os.access(target, os.W_OK):
        raise StoreReadOnlyError(
            f"cannot write the store at {str(p)!r}: {str(target)!r} is not writable; choose "
            "another --store path"
        )


class FeatureStore:
    """A featlab store: datasets, each with samples and the embeddings of several models."""

    def __init__(self, path: Path, root: zarr.Group, mode: Mode) -> None:
        self.path, self._root, self.mode = path, root, mode

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, mode={self.mode!r}, datasets={self.datasets})"

    @property
    def datasets(self) -> tuple[str, ...]:
        """Names of the datasets in the store, sorted."""
        return tuple(sorted(_group_keys(self._root)))

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def __getitem__(self, name: str) -> DatasetGroup:
        if name not in self.datasets:
            close = difflib.get_close_matches(name, self.datasets, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise UnknownDatasetError(
                f"dataset {name!r} is not in the store {str(self.path)!r}; it holds "
                f"{list(self.datasets) or 'no datasets yet'}.{hint}"
            )
        return DatasetGroup(self, self._root[name])

    def _require_writable(self) -> None:
        if self.mode == "r":
            raise StoreReadOnlyError(
                f"the store {str(self.path)!r} is open read-only; use open_store(path, mode='a')"
            )

    def add_dataset(self, table: SampleTable) -> DatasetGroup:
        """Write a dataset's samples once; adding the same samples again returns the stored one.

        Raises:
            StoreExistsError: A dataset of that name with different ids, labels or splits exists.
        """
        self._require_writable()
        if table.name in self.datasets:
            ds = self[table.name]
            ds.check_same_samples(table)
            return ds
        g = self._root.create_group(table.name)
        g.attrs.update(
            {"dataset": table.describe(), "featlab_version": __version__, "created": _now()}
        )
        s = g.create_group(L.SAMPLES)
        n = len(table)
        rows = min(max(n, 1), L.SAMPLE_CHUNK_ROWS)
        for key, arr in (("id", table.ids), ("split", table.splits), ("source", table.sources)):
            a = s.create_array(
                key, shape=(n,), dtype=str, chunks=(rows,), dimension_names=("sample",)
            )
            a[:] = arr
        dims = ("sample",) if table.labels.ndim == 1 else ("sample", "class")
        lab = s.create_array(
            "label",
            shape=table.labels.shape,
            dtype=table.labels.dtype,
            chunks=(rows, *table.labels.shape[1:]),
            dimension_names=dims,
            fill_value=-1 if table.labels.ndim == 1 else 0,
        )
        lab[...] = table.labels
        g.create_group(L.EMBEDDINGS)
        return DatasetGroup(self, g)

    def info(self) -> list[dict[str, Any]]:
        """One dict per (dataset, model): dims, completeness, size on disk."""
        out = []
        for name in self.datasets:
            ds = self[name]
            for model in ds.all_models():
                a = ds.model_attrs(model)
                out.append(
                    {
                        "dataset": name,
                        "model": model,
                        "n": ds.n,
                        "dim": ds.dim(model),
                        "written": ds.n_written(model),
                        "complete": bool(a.get("complete")),
                        "precision": a.get("precision"),
                        "images_per_s": a.get("images_per_s"),
                        "bytes": _du(self.path / name / L.EMBEDDINGS / L.model_key(model)),
                    }
                )
        return out

    def size_bytes(self) -> int:
        return _du(self.path)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


class DatasetGroup:
    """One dataset in a store: its samples and its models' embeddings."""

    def __init__(self, store: FeatureStore, group: zarr.Group) -> None:
        self.store, self._g = store, group
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        return f"DatasetGroup({self.name!r}, n={self.n}, models={self.models})"

    # -- samples ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._g.basename

    @property
    def spec(self) -> dict[str, Any]:
        """The dataset spec written with it (name, source, root, task, classes, split counts)."""
        return dict(self._g.attrs["dataset"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.spec["classes"])

    @property
    def task(self) -> str:
        return str(self.spec["task"])

    def _sample(self, key: str) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = np.asarray(self._g[L.SAMPLES][key][...])
        return self._cache[key]

    @property
    def ids(self) -> np.ndarray:
        return self._sample("id")

    @property
    def labels(self) -> np.ndarray:
        return self._sample("label")

    @property
    def splits(self) -> np.ndarray:
        return self._sample("split")

    @property
    def sources(self) -> np.ndarray:
        return self._sample("source")

    @property
    def n(self) -> int:
        return int(self._g[L.SAMPLES]["id"].shape[0])

    def check_same_samples(self, table: SampleTable) -> None:
        """Raise StoreExistsError unless ``table`` has the stored ids, labels and splits."""
        for what, stored, new in (
            ("ids", self.ids, table.ids),
            ("labels", self.labels, table.labels),
            ("splits", self.splits, table.splits),
        ):
            # Cast the new side to the stored dtype: stored strings are variable-width, so
            # casting them to the new fixed width ("<U2") would truncate "a10" to "a1".
            if stored.shape != new.shape or not np.array_equal(stored, new.astype(stored.dtype)):
                raise StoreExistsError(
                    f"the store already has a dataset {self.name!r} whose {what} differ from "
                    f"the one being added ({len(stored)} stored samples, {len(new)} new); use "
                    "another --store, or remove the dataset from this store first"
                )

    def split_mask(self, split: str | None) -> np.ndarray:
        """``(n,)`` bool for the samples in ``split`` (``None``: all samples)."""
        if split is None:
            return np.ones(self.n, dtype=bool)
        mask = self.splits == split
        if not mask.any():
            names = sorted({str(s) or "''" for s in np.unique(self.splits)})
            raise InvalidArgumentError(
                f"dataset {self.name!r} has no split {split!r}; it has {names}"
            )
        return mask

    # -- models ----------------------------------------------------------------------------
    def _emb(self) -> zarr.Group:
        return self._g[L.EMBEDDINGS]

    def all_models(self, *, include_partial: bool = True) -> tuple[str, ...]:
        names = []
        for key in sorted(_group_keys(self._emb())):
            g = self._emb()[key]
            if "values" not in set(g.array_keys()):
                continue  # left by a writer killed while creating it: no embeddings yet
            attrs = g.attrs
            if include_partial or attrs.get("complete"):
                names.append(str(attrs.get("name", key)))
        return tuple(names)

    @property
    def models(self) -> tuple[str, ...]:
        """Names of the models whose embeddings are complete."""
        return self.all_models(include_partial=False)

    def _model_group(self, model: str) -> zarr.Group:
        key = L.model_key(model)
        emb = self._emb()
        if key in set(_group_keys(emb)):
            stored = emb[key].attrs.get("name")
            if stored is not None and stored != model:  # 'a:b' and 'a~b' share the key 'a~b'
                raise UnknownModelError(
                    f"no embeddings of model {model!r} for dataset {self.name!r}: its store key "
                    f"{key!r} holds {stored!r}; use that name"
                )
        if key not in set(_group_keys(emb)) or "values" not in set(emb[key].array_keys()):
            known = self.all_models()
            close = difflib.get_close_matches(model, known, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise UnknownModelError(
                f"no embeddings of model {model!r} for dataset {self.name!r}; stored models: "
                f"{list(known) or 'none yet'}.{hint} Extract with `featlab extract --model "
                f"{model} {self.name}`"
            )
        return self._emb()[key]

    def model_attrs(self, model: str) -> dict[str, Any]:
        """Provenance of a model's embeddings: spec, weights, precision, device, throughput..."""
        return dict(self._model_group(model).attrs.asdict())

    def dim(self, model: str) -> int:
        return int(self._model_group(model)["values"].shape[1])

    def written_mask(self, model: str) -> np.ndarray:
        return np.asarray(self._model_group(model)["written"][:], dtype=bool)

    def bad_mask(self, model: str) -> np.ndarray:
        return np.asarray(self._model_group(model)["bad"][:], dtype=bool)

    def n_written(self, model: str) -> int:
        return int(self.written_mask(model).sum())

    def rows(self, model: str, split: str | None = None, *, partial: bool = False) -> np.ndarray:
        """Row indices of ``split`` with usable embeddings (written and not bad), ascending.

        Raises:
            IncompleteEmbeddingError: Some rows of ``split`` are not written yet and ``partial``
                is False.
        """
        mask = self.split_mask(split)
        written = self.written_mask(model)
        missing = mask & ~written
        if missing.any() and not partial:
            where = f"split {split!r}" if split else "the dataset"
            raise IncompleteEmbeddingError(
                f"{int(missing.sum())} of {int(mask.sum())} samples of {where} in "
                f"{self.name!r} have no {model!r} embedding yet "
                f"(first: {str(self.ids[missing][0])!r}); "
                f"finish with `featlab extract --model {model} {self.name}`, or pass partial=True"
            )
        return np.flatnonzero(mask & written & ~self.bad_mask(model))

    def embeddings(
        self, model: str, split: str | None = None, *, partial: bool = False
    ) -> np.ndarray:
        """``(m, d)`` float32 embeddings of ``split``'s usable rows (see :meth:`rows`)."""
        return self.values_at(model, self.rows(model, split, partial=partial))

    def values_at(self, model: str, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), d)`` float32 embeddings of dataset ``rows`` (any order), as stored."""
        values = self._model_group(model)["values"]
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            # A contiguous run (a whole split, a streamed block): a slice reads ~4x faster.
            return np.asarray(values[rows[0] : rows[-1] + 1], dtype=np.float32)
        return np.asarray(values.oindex[rows], dtype=np.float32)

    def xy(
        self, model: str, split: str | None = None, *, partial: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of ``split``: ``X (m, d) float32``, ``y (m,)`` int32 (or (m, L))."""
        rows = self.rows(model, split, partial=partial)
        return self.values_at(model, rows), self.labels[rows]

    def to_xarray(self, model: str, *, partial: bool = False) -> xr.DataArray:
        """A lazy ``xr.DataArray`` (sample, feature) with coords id, label, split, source.

        Nothing is read until the array is indexed or computed. Multi-label datasets carry no
        ``label`` coord (it would need a third dimension); use :meth:`xy` for their labels.

        Raises:
            IncompleteEmbeddingError: The model is not complete and ``partial`` is False.
        """
        import xarray as xr

        group = self._model_group(model)
        if not group.attrs.get("complete") and not partial:
            raise IncompleteEmbeddingError(
                f"{model!r} is incomplete for {self.name!r} ({self.n_written(model)}/{self.n} "
                "rows); finish the extraction or pass partial=True"
            )
        path = f"{self.name}/{L.EMBEDDINGS}/{L.model_key(model)}"
        ds = xr.open_dataset(
            str(self.store.path),
            group=path,
            engine="zarr",
            zarr_format=3,
            consolidated=False,
            chunks=None,
            mask_and_scale=False,
        )
        coords: dict[str, Any] = {
            "id": ("sample", self.ids),
            "split": ("sample", self.splits),
            "source": ("sample", self.sources),
        }
        if self.labels.ndim == 1:
            coords["label"] = ("sample", self.labels)
        da = ds["values"].assign_coords(coords)
        da.name = model
        da.attrs = {
            "dataset": self.name,
            "model": model,
            "provenance": json.dumps(dict(group.attrs.asdict()), default=str),
        }
        return da

    def neighbors(
        self,
        model: str,
        *,
        ids: str | list[str] | None = None,
        vectors: np.ndarray | None = None,
        images: Any = None,
        k: int = 10,
        split: str | None = None,
        exclude_self: bool = True,
        **options: Any,
    ) -> NeighborResult:
        """The ``k`` stored samples nearest (cosine) to each query; exactly one of ``ids``,
        ``vectors`` (``(m, d)``) or ``images`` (paths, PIL images).

        ``ids`` queries leave the query sample out of its own neighbours unless
        ``exclude_self=False``. The FAISS index (exact by default) is persisted under
        ``indexes/<model>`` when the store is open with ``mode="a"`` and rebuilt when the
        embeddings change. Other options (``index``, ``nprobe``, ``partial``, ``device``...) and
        the errors raised: :func:`featlab.eval.neighbors.neighbors`.

        Returns:
            :class:`featlab.eval.neighbors.NeighborResult` (``to_dataframe()``, ``to_records()``).
        """
        from featlab.eval.neighbors import neighbors

        return neighbors(
            self,
            model,
            ids=ids,
            vectors=vectors,
            images=images,
            k=k,
            split=split,
            exclude_self=exclude_self,
            **options,
        )

    # -- writing ---------------------------------------------------------------------------
    def open_writer(
        self,
        model: str,
        *,
        dim: int,
        chunk_rows: int,
        identity: dict[str, Any],
        attrs: dict[str, Any],
        overwrite: bool = False,
    ) -> EmbeddingWriter:
        """Create, resume or reuse the embeddings of ``model``, holding the model's write lock.

        ``identity`` (spec, weights, precision) decides whether a stored model is this one. The
        returned writer's ``attrs["complete"]`` tells the caller whether there is work left.

        Raises:
            ModelMismatchError: A model of that name with another identity or dim is stored.
            StoreLockedError: Another process is writing this model.
        """
        self.store._require_writable()
        key = L.model_key(model)
        emb = self._emb()
        exists = key in set(_group_keys(emb))
        g = emb[key] if exists else emb.create_group(key)
        lock = ModelLock(
            self.store.path / self.name / L.EMBEDDINGS / key,
            f"model {model!r} of dataset {self.name!r}",
        ).acquire()
        try:
            if exists and "values" in set(g.array_keys()):
                old = dict(g.attrs.asdict())
                if not overwrite:
                    _check_identity(self.name, model, old, identity, dim, int(g["values"].shape[1]))
                    return EmbeddingWriter(g, lock)
                # Replace in place: the group directory (and so the lock) stays.
                for arr in list(g.array_keys()):
                    del g[arr]
            g.attrs.put(
                {
                    "name": model,
                    **identity,
                    **attrs,
                    "complete": False,
                    "featlab_version": __version__,
                    "created": _now(),
                    # Changes on every (re)creation, even two within one second: what index
                    # fingerprints rely on to notice re-extracted embeddings.
                    "generation": time.time_ns(),
                }
            )
            g.create_array(
                "values",
                shape=(self.n, dim),
                dtype="float32",
                chunks=(chunk_rows, dim),
                dimension_names=("sample", "feature"),
                fill_value=0.0,
                compressors=None,
            )
            for flag in ("written", "bad"):
                g.create_array(
                    flag,
                    shape=(self.n,),
                    dtype="bool",
                    chunks=(chunk_rows,),
                    dimension_names=("sample",),
                    fill_value=False,
                )
            return EmbeddingWriter(g, lock)
        except BaseException:
            lock.release()
            raise


def _check_identity(
    dataset: str, model: str, old: dict[str, Any], new: dict[str, Any], dim: int, old_dim: int
) -> None:
    diffs = [k for k in IDENTITY_KEYS if _jsonable(old.get(k)) != _jsonable(new.get(k))]
    if dim != old_dim:
        diffs.append("dim")
    if not diffs:
        return
    lines = [
        f"  {k}: stored {_short(old.get(k, old_dim if k == 'dim' else None))} | "
        f"new {_short(new.get(k, dim if k == 'dim' else None))}"
        for k in diffs
    ]
    raise ModelMismatchError(
        f"dataset {dataset!r} already has embeddings named {model!r} from a different model:\n"
        + "\n".join(lines)
        + "\nPass --overwrite to replace them, or extract under another name (--name)."
    )


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str, sort_keys=True))


def _short(x: Any) -> str:
    s = json.dumps(x, default=str, sort_keys=True)
    return s if len(s) <= 300 else s[:297] + "..."


__all__ = ["DatasetGroup", "FeatureStore", "StoreError", "open_store"]
