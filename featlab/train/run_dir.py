"""Run folders: checkpoints, the run log and the manifest that makes checkpoints extractable.

``<run>/featlab-run.json`` records what ran (kind, method, dataset, config) and, under
``models``, every checkpoint that is a backbone: its name, role, timm architecture, file,
sha256 and the spec it was trained with. ``featlab extract --model NAME@<run>`` reads it.
A folder is resumed only by the same kind, method and config; anything else is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from featlab.errors import TrainingError

MANIFEST = "featlab-run.json"


def read_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run folder.

    Raises:
        TrainingError: No manifest (not a featlab run folder) or an unreadable one.
    """
    p = Path(run_dir) / MANIFEST
    if not p.is_file():
        raise TrainingError(
            f"{str(Path(run_dir))!r} is not a featlab run folder (no {MANIFEST}); give the folder "
            "`featlab finetune --out` or `featlab pretrain --out` wrote"
        )
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingError(f"cannot read {str(p)!r}: {err}") from err


def write_manifest(run_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Write the manifest atomically (temporary file + rename)."""
    p = Path(run_dir) / MANIFEST
    tmp = p.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def prepare_run_dir(
    path: str | os.PathLike[str],
    *,
    kind: str,
    method: str,
    config: dict[str, Any],
    resume: bool = True,
) -> Path:
    """Create a run folder, or reopen one holding the same run to resume it.

    Args:
        path: The folder (``runs/NAME``).
        kind: ``finetune`` or ``pretrain``.
        method: The recipe or SSL method.
        config: Every setting that changes the result (JSON-serialisable); a resumed run must
            have the same.
        resume: Reopen a folder of the same run (False: refuse any existing run).

    Returns:
        The folder; :func:`read_manifest` gives its manifest (``epochs_done`` says how far an
        existing run got).

    Raises:
        TrainingError: The folder holds another run (the differences are named), or a run and
            ``resume`` is False, or it is a non-empty folder that is not a run.
    """
    run_dir = Path(path)
    config = json.loads(json.dumps(config))  # compare as it will be stored (tuples -> lists)
    if (run_dir / MANIFEST).is_file():
        old = read_manifest(run_dir)
        if not resume:
            raise TrainingError(
                f"{str(run_dir)!r} already holds a {old.get('kind')} run; choose another --out"
            )
        was = {"kind": old.get("kind"), "method": old.get("method"), **old.get("config", {})}
        now = {"kind": kind, "method": method, **config}
        diff = _differences(was, now)
        if diff:
            raise TrainingError(
                f"{str(run_dir)!r} holds another run, so it cannot be resumed with these "
                f"settings ({'; '.join(diff)}). Use the same settings to resume, or another --out"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise TrainingError(
            f"{str(run_dir)!r} exists, is not empty and is not a featlab run folder; "
            "choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": 1,
        "kind": kind,
        "method": method,
        "config": config,
        "status": "running",
        "epochs_done": 0,
        "models": [],
    }
    write_manifest(run_dir, manifest)
    return run_dir
