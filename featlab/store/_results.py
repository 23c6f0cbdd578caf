"""Saved evaluation runs in the store: ``<dataset>/results/<run-id>`` (DESIGN section 3).

A run is a zarr group whose attrs hold the JSON record (config, plan, per-fold metrics, summary,
seed, version) and whose arrays hold what the record cannot: the dataset rows trained on, the
val and test rows, and the test scores of every fold (what paired comparisons resample).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.errors import UnknownRunError
from featlab.store import _layout as L

if TYPE_CHECKING:
    import zarr

    from featlab.store._store import DatasetGroup, FeatureStore


def _results_group(ds: DatasetGroup, *, create: bool) -> zarr.Group | None:
    g = ds._g
    if L.RESULTS in set(g.group_keys()):
        return g[L.RESULTS]
    if not create:
        return None
    return g.create_group(L.RESULTS)


def write_run(
    ds: DatasetGroup, run_id: str, record: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    """Write one run: ``record`` (JSON-serialisable) as attrs, ``arrays`` as zarr arrays.

    Raises:
        StoreReadOnlyError: The store is open read-only.
        StoreExistsError: A run with ``run_id`` exists already.
    """
    from featlab.errors import StoreExistsError

    ds.store._require_writable()
    results = _results_group(ds, create=True)
    if run_id in set(results.group_keys()):
        raise StoreExistsError(f"a run {run_id!r} is already saved in {ds.name!r}")
    # Arrays first, attrs last: a run killed half-way has no record and is not listed.
    g = results.create_group(run_id)
    for name, value in arrays.items():
        a = g.create_array(name, shape=value.shape, dtype=value.dtype, fill_value=0)
        a[...] = value
    g.attrs.update({"record": json.loads(json.dumps(record, default=_jsonable))})


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def run_ids(ds: DatasetGroup) -> list[str]:
    """Ids of the complete runs saved for ``ds``, oldest first (ids start with the time)."""
    results = _results_group(ds, create=False)
    if results is None:
        return []
    return sorted(k for k in results.group_keys() if "record" in results[k].attrs)


def read_record(ds: DatasetGroup, run_id: str) -> dict[str, Any]:
    """The JSON record of a saved run.

    Raises:
        UnknownRunError: No such run in ``ds``.
    """
    return dict(_run_group(ds, run_id).attrs["record"])


def read_arrays(ds: DatasetGroup, run_id: str) -> dict[str, np.ndarray]:
    """Every array of a saved run, read into memory."""
    g = _run_group(ds, run_id)
    return {name: np.asarray(g[name][...]) for name in g.array_keys()}


def _run_group(ds: DatasetGroup, run_id: str) -> zarr.Group:
    results = _results_group(ds, create=False)
    if results is None or run_id not in set(results.group_keys()):
        raise UnknownRunError(
            f"no saved run {run_id!r} in dataset {ds.name!r}; `featlab results` lists them"
        )
    g = results[run_id]
    if "record" not in g.attrs:
        raise UnknownRunError(f"run {run_id!r} of {ds.name!r} was never finished writing")
    return g


def find_run(store: FeatureStore, run_id: str) -> DatasetGroup:
    """The dataset holding ``run_id`` (ids are unique across a store).

    Raises:
        UnknownRunError: No dataset has it; the message lists a few that exist.
    """
    seen: list[str] = []
    for name in store.datasets:
        ds = store[name]
        ids = run_ids(ds)
        if run_id in ids:
            return ds
        seen.extend(ids)
    hint = f" Saved runs include {seen[-3:]}." if seen else " No run is saved yet."
    raise UnknownRunError(f"no saved run {run_id!r} in {store.path}.{hint} See `featlab results`")
