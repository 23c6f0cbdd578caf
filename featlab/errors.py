"""featlab's exception hierarchy.

Each error subclasses :class:`FeatlabError` and the matching built-in (zarr style), so callers can
catch either. The CLI turns any ``FeatlabError`` into a one-line message and exit code 1.
"""

from __future__ import annotations


class FeatlabError(Exception):
    """Base class of every error featlab raises on purpose."""


class StoreError(FeatlabError):
    """The feature store is missing, malformed, or used the wrong way."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No featlab store at the given path."""


class StoreExistsError(StoreError, FileExistsError):
    """Refused to overwrite something already in the store."""


class StoreFormatError(StoreError, ValueError):
    """The store was written by a newer (or unknown) featlab format."""


class StoreReadOnlyError(StoreError, PermissionError):
    """A write was attempted on a store opened read-only, or the path is not writable."""


class StoreLockedError(StoreError, BlockingIOError):
    """Another process is writing the same model right now."""


class ModelMismatchError(StoreError, ValueError):
    """A model of the same name, but with a different spec or weights, is already stored."""


class UnknownModelError(FeatlabError, KeyError):
    """A model name that neither the store nor the model zoo knows."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class UnknownDatasetError(FeatlabError, KeyError):
    """A dataset name that neither the store nor the registry knows."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetError(FeatlabError, ValueError):
    """A dataset on disk is missing, malformed, or inconsistent."""


class BadImageError(FeatlabError, OSError):
    """An image could not be read or decoded."""


class WeightsError(FeatlabError, ValueError):
    """A weights file is missing, unreadable, or does not fit the architecture."""


class ExtractionError(FeatlabError, RuntimeError):
    """Extraction produced something unusable (e.g. NaN embeddings) or cannot continue."""


class IncompleteEmbeddingError(StoreError, LookupError):
    """Embeddings were requested for samples that have not been extracted yet."""


class InvalidArgumentError(FeatlabError, ValueError):
    """An argument value is outside what the function accepts (the message says the range)."""


class DownloadError(DatasetError):
    """A dataset download failed: a network error (partial kept to resume) or a bad checksum."""


class UnknownRunError(FeatlabError, KeyError):
    """No saved evaluation run has that id (or matches the selection)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class TrainingError(FeatlabError, RuntimeError):
    """A training run cannot start or continue: a run folder of another run, an unreadable or
    mismatched checkpoint, a diverged loss."""
