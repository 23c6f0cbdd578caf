"""The featlab store (zarr v3): datasets, samples and embeddings with provenance."""

from featlab.store._layout import FORMAT_VERSION, default_store_path, model_key
from featlab.store._store import DatasetGroup, FeatureStore, open_store
from featlab.store._writer import EmbeddingWriter

__all__ = [
    "FORMAT_VERSION",
    "DatasetGroup",
    "EmbeddingWriter",
    "FeatureStore",
    "default_store_path",
    "model_key",
    "open_store",
]
