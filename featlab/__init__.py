"""featlab: an embedding store and feature-evaluation toolkit for medical imaging.

Heavy modules load on first use (PEP 562), so ``import featlab`` and ``featlab --help`` stay fast
and never import torch or faiss.
"""

from __future__ import annotations

import importlib
from typing import Any

from featlab._version import __version__

_LAZY = {
    "open_store": "featlab.store",
    "FeatureStore": "featlab.store",
    "DatasetGroup": "featlab.store",
    "SampleTable": "featlab.datasets",
    "load_dataset": "featlab.datasets",
    "read_image_folder": "featlab.datasets",
    "read_manifest": "featlab.datasets",
    "table_from_arrays": "featlab.datasets",
    "table_from_hdf5": "featlab.datasets",
    "knn_classify": "featlab.eval.knn",
    "ProbeConfig": "featlab.eval.protocol",
    "run_probe": "featlab.eval.protocol",
    "evaluate_store": "featlab.eval.sweep",
    "load_run": "featlab.eval.results",
    "compare_runs": "featlab.eval.compare",
    "compute_metrics": "featlab.eval.metrics",
    "NeighborResult": "featlab.eval.neighbors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
