"""EmbeddingWriter: preallocated, index-addressed, resumable writes of one model's embeddings."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any

import numpy as np

from featlab.errors import StoreLockedError


class ModelLock:
    """An exclusive, non-blocking lock on one model of one store (local stores only).

    It is an ``flock`` on the model's group directory (a lock file would show up as a stray
    member of the zarr hierarchy), so the operating system releases it when the writing process
    dies, even by SIGKILL; a second writer is refused, not queued.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self) -> ModelLock:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.what} is being written by another process (lock {self.path}); wait for "
                "it to finish, or stop it, then run the same command again to resume"
            ) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class EmbeddingWriter:
    """Writes rows of ``values (n, d) float32`` by sample index and marks them in ``written``.

    Each :meth:`write` stores the values first and flips ``written`` only after them, so a process
    killed in between leaves those rows unwritten and a rerun recomputes them.
    """

    def __init__(self, group: Any, lock: ModelLock | None) -> None:
        self.group = group
        self.values = group["values"]
        self.written_arr = group["written"]
        self.bad_arr = group["bad"]
        self.lock = lock

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @property
    def chunk_rows(self) -> int:
        return int(self.values.chunks[0])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs.asdict())

    def written(self) -> np.ndarray:
        """``(n,)`` bool: rows already stored."""
        return np.asarray(self.written_arr[:], dtype=bool)

    def write(self, rows: np.ndarray, values: np.ndarray, bad: np.ndarray | None = None) -> None:
        """Store ``values[i]`` at sample row ``rows[i]``; ``bad`` rows are recorded as unreadable.

        Args:
            rows: ``(b,)`` sorted int row indices, all inside one chunk for a cheap write.
            values: ``(b, d)`` float32, finite.
            bad: ``(b,)`` bool; True for samples that could not be read (their values are 0).
        """
        rows = np.asarray(rows, dtype=np.int64)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        contiguous = hi - lo == len(rows)
        if contiguous:
            self.values[lo:hi] = values
        else:
            self.values.oindex[rows] = values
        if bad is not None and bad.any():
            self.bad_arr.oindex[rows[bad]] = True
        # The mask last: a kill before this line leaves the rows pending, never half-marked.
        if contiguous:
            self.written_arr[lo:hi] = True
        else:
            self.written_arr.oindex[rows] = True

    def update_attrs(self, **attrs: Any) -> None:
        self.group.attrs.update(attrs)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
