"""Progress: a live bar with images/s and ETA on a terminal, silence otherwise (logs, CI)."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Wraps tqdm on a TTY; a no-op when stderr is not a terminal or ``enabled`` is False."""

    def __init__(self, total: int, desc: str, *, enabled: bool | None = None) -> None:
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar: Any = None
        if enabled and total > 0:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit="img",
                unit_scale=False,
                dynamic_ncols=True,
                smoothing=0.1,
                file=sys.stderr,
            )

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
