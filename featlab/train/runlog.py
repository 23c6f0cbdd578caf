"""The run log: one JSON object per line beside the checkpoints (epoch, loss, metric, time)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class RunLog:
    """Append-only JSON-lines log; each record gets the wall-clock ``time`` it was written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}, sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()


def read_runlog(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of a run log; a half-written last line (killed mid-write) is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
