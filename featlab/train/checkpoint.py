"""Training state on disk: atomic saves, safe loads, and the RNG state that makes a resume exact.

A training run writes its whole state (model, optimizer, scheduler, epoch, RNG) after every
epoch. Files are written to a temporary name and renamed, so a kill leaves either the previous
state or the new one, never half a file. States are read with ``torch.load(weights_only=True)``:
they hold tensors, numbers, strings, lists and dicts only (no numpy arrays, no pickled objects).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featlab.errors import TrainingError


def capture_rng() -> dict[str, Any]:
    """The python, numpy, torch CPU (and CUDA) generator states, as weights-only-loadable data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": _listify(random.getstate()),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states :func:`capture_rng` recorded."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, tuple) else x


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a training state atomically (temporary file, fsync, rename)."""
    _atomic_save(state, Path(path))


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_state`.

    Raises:
        TrainingError: The file is missing or not a weights-only training state.
    """
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise TrainingError(f"training state {str(p)!r} does not exist") from err
    except Exception as err:
        raise TrainingError(
            f"cannot read training state {str(p)!r} ({type(err).__name__}: {str(err)[:300]}); "
            "delete it to start the run over"
        ) from err
    if not isinstance(state, dict):
        raise TrainingError(f"{str(p)!r} holds a {type(state).__name__}, not a training state")
    return state


def save_weights(path: str | os.PathLike[str], weights: nn.Module | dict[str, torch.Tensor]) -> str:
    """Write a flat ``{key: tensor}`` state dict (CPU, contiguous, fp32 as trained) atomically.

    The file loads with ``torch.load(weights_only=True)`` and with ``featlab extract --weights``.

    Returns:
        The file's sha256 (hex), as the store records it for extracted embeddings.
    """
    sd = weights.state_dict() if isinstance(weights, nn.Module) else weights
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    p = Path(path)
    _atomic_save(flat, p)
    return sha256_of(p)


def sha256_of(path: str | os.PathLike[str], block: int = 2**22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
