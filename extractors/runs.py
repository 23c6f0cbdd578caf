"""Checkpoints of featlab runs as models: ``NAME@RUN_DIR`` (``timm:resnet18@runs/ft-digits``).

``featlab finetune`` and ``featlab pretrain`` write ``featlab-run.json`` into their run folder,
listing every backbone checkpoint with its name, role, architecture, file, sha256 and the spec
it was trained with (input size, mean/std). ``NAME`` picks one: a listed name
(``cass-resnet50``), a role (``cnn``, ``vit``, ``backbone``, ``finetuned``) or, when only one
checkpoint has that architecture, any model name of it (``timm:resnet50``). The checkpoint
extracts with the spec it was trained with, and the store records the run it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from featlab.errors import InvalidArgumentError, UnknownModelError, WeightsError
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.weights import sha256_file
from featlab.train.run_dir import MANIFEST, read_manifest


@dataclass(frozen=True)
class RunModel:
    """A run's checkpoint resolved to an extractable model."""

    name: str  # the name embeddings are stored under: the reference as typed
    spec: ModelSpec
    weights: Path
    provenance: dict[str, Any]


def is_run_reference(name: str) -> bool:
    """``NAME@RUN_DIR``: a model inside a featlab run folder."""
    return "@" in name


def _base(arch: str) -> str:
    return arch.split(".", 1)[0]


def _pick(model: str, entries: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
    for key in ("name", "role"):
        hits = [e for e in entries if e.get(key) == model]
        if len(hits) == 1:
            return hits[0]
    try:
        arch = _base(resolve_spec(model, pretrained=False).architecture)
    except UnknownModelError:
        arch = None
    hits = [e for e in entries if arch is not None and _base(e["architecture"]) == arch]
    if len(hits) == 1:
        return hits[0]
    listed = ", ".join(f"{e['name']} (role {e['role']}, {e['architecture']})" for e in entries)
    raise UnknownModelError(
        f"run {str(run_dir)!r} has no checkpoint matching {model!r}; it has: "
        f"{listed or 'none yet (no epoch finished)'}. Use one of these names or roles, "
        f"e.g. {(entries[0]['name'] if entries else 'cnn')}@{run_dir}"
    )


def resolve_run_model(reference: str) -> RunModel:
    """Resolve ``NAME@RUN_DIR`` to a spec, a weights file and the run's provenance.

    Raises:
        TrainingError: ``RUN_DIR`` is not a featlab run folder.
        UnknownModelError: No checkpoint of the run matches ``NAME``.
        WeightsError: The checkpoint file is missing, or changed since the run wrote it.
    """
    model, _, run = reference.partition("@")
    run_dir = Path(run.rstrip("/")).expanduser()
    manifest = read_manifest(run_dir)
    entry = _pick(model, list(manifest.get("models", [])), run_dir)
    weights = run_dir / entry["file"]
    if not weights.is_file():
        raise WeightsError(
            f"{MANIFEST} of {str(run_dir)!r} lists {entry['file']!r}, which is not there; "
            "was the run folder moved partly?"
        )
    sha = sha256_file(weights)
    if entry.get("sha256") and sha != entry["sha256"]:
        raise WeightsError(
            f"{str(weights)!r} has sha256 {sha}, but the run recorded {entry['sha256']}: the "
            "file changed after the run wrote it (a run still training rewrites it every "
            "epoch: extract after it finishes)"
        )
    name = f"{model}@{run_dir.as_posix()}"
    spec = replace(
        ModelSpec.from_dict(entry["spec"]), name=name, pretrained=False, converter=None,
        weights_url=None, local_only=False,
    )
    provenance = {
        "run_dir": str(run_dir.resolve()),
        "kind": manifest.get("kind"),
        "method": manifest.get("method"),
        "dataset": manifest.get("dataset"),
        "status": manifest.get("status"),
        "epochs_done": manifest.get("epochs_done"),
        "checkpoint": {k: entry.get(k) for k in ("name", "role", "architecture", "file")},
        "sha256": sha,
        "result": manifest.get("result", {}).get("run_id"),
    }
    return RunModel(name, spec, weights, provenance)


def _listed(path: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any] | None] | None:
    """(resolved path, manifest, the manifest's entry of the file or None) for a file in a
    featlab run folder; None for any other file."""
    p = Path(path).expanduser().resolve()
    if not (p.parent / MANIFEST).is_file():
        return None
    manifest = read_manifest(p.parent)
    entry = next((e for e in manifest.get("models", []) if e.get("file") == p.name), None)
    return p, manifest, entry


def run_spec_of_weights(
    path: str | Path, requested: ModelSpec, *, img_size: int | None = None
) -> ModelSpec | None:
    """The spec a ``--weights`` checkpoint of a run was trained with, named as ``requested``.

    A checkpoint a featlab run lists (``best.pt`` of a finetune, an arm of a pretrain) is a
    flat timm state dict saved with the spec of the run: its input size, mean/std and pool.
    Extracting it with the zoo spec instead would read it with the zoo's converter (MoCo v3,
    SimCLR, ... layouts it is not in) and preprocess it differently. So, as ``NAME@RUN_DIR``
    does, the manifest's spec is used, with ``converter=None``.

    Args:
        path: The ``--weights`` file.
        requested: The spec of the model name given with it (its name is kept).
        img_size: The ``--img-size`` given, if any; it must be the run's input size.

    Returns:
        The run's spec, or None when the file is not a checkpoint listed in a run manifest.

    Raises:
        WeightsError: The checkpoint's architecture is not ``requested``'s.
        InvalidArgumentError: ``img_size`` differs from the size the checkpoint was trained at.
    """
    listed = _listed(path)
    if listed is None or listed[2] is None:
        return None
    p, _, entry = listed
    trained = ModelSpec.from_dict(entry["spec"])
    if _base(trained.architecture) != _base(requested.architecture):
        raise WeightsError(
            f"{str(p)!r} is the {entry['architecture']} checkpoint {entry.get('name')!r} of run "
            f"{str(p.parent)!r}, not a {requested.architecture} ({requested.name}); give the "
            f"matching model, or name it {entry.get('role') or entry.get('name')}@{p.parent}"
        )
    if img_size is not None and (img_size, img_size) != tuple(trained.input_size[1:]):
        raise InvalidArgumentError(
            f"{str(p)!r} was trained at {trained.input_size[1]}x{trained.input_size[2]} px (run "
            f"{str(p.parent)!r}); drop --img-size {img_size}, the run's size is used"
        )
    return replace(trained, name=requested.name, pretrained=False, converter=None,
                   weights_url=None, local_only=False)


def run_of_weights(path: str | Path) -> dict[str, Any] | None:
    """The provenance of a ``--weights`` file that lies in a featlab run folder, else None."""
    listed = _listed(path)
    if listed is None:
        return None
    p, manifest, entry = listed
    return {
        "run_dir": str(p.parent),
        "kind": manifest.get("kind"),
        "method": manifest.get("method"),
        "dataset": manifest.get("dataset"),
        "status": manifest.get("status"),
        "checkpoint": entry and {k: entry.get(k) for k in ("name", "role", "architecture")},
        "result": manifest.get("result", {}).get("run_id"),
    }
