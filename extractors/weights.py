"""Loading weights loudly: every backbone key must load, or the error names the keys.

timm's own loader turns ``strict`` off whenever the classifier size differs, which lets an
unrelated checkpoint load silently with most of the network left at random init
(reference/model-zoo.md, section 3.2). featlab compares keys and shapes itself instead.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featlab.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

STRIP_PREFIXES = ("module.", "_orig_mod.")
WRAPPER_KEYS = ("state_dict", "model", "module")
_SHOW = 8


def sha256_file(path: str | os.PathLike[str], block: int = 2**22) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat ``{key: tensor}`` dict.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (no arbitrary code runs). A checkpoint that wraps its
    weights under ``state_dict``, ``model`` or ``module`` is unwrapped, and ``module.`` /
    ``_orig_mod.`` prefixes (DataParallel, torch.compile) are stripped.

    Raises:
        WeightsError: Missing file, unreadable file, or no tensor dict inside.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; check the --weights path")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"cannot read weights {str(p)!r} ({type(err).__name__}: {str(err)[:300]}); featlab "
            "loads with torch.load(weights_only=True), so pickled whole modules are refused"
        ) from err
    sd = _unwrap(obj, p)
    for prefix in STRIP_PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return inner
    top = sorted(obj)[:20] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(
        f"{path}: no state dict of tensors found (top level: {top}); expected a plain state "
        f"dict or one under {WRAPPER_KEYS}"
    )


def _sample(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_backbone_state(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    classifier_prefixes: tuple[str, ...] = (),
) -> list[str]:
    """Load ``state`` into a headless ``model`` strictly; classifier keys may be left over.

    Args:
        model: The backbone (built with ``num_classes=0``).
        state: Flat state dict.
        source: Where the weights came from, for error messages.
        classifier_prefixes: Key prefixes of the classification head (``fc.``, ``head.``); such
            keys are dropped (an embedding does not use them) and returned.

    Returns:
        The dropped classifier keys.

    Raises:
        WeightsError: Any backbone key is missing, unexpected or of the wrong shape.
    """
    own = model.state_dict()
    dropped = [k for k in state if k not in own and k.startswith(classifier_prefixes)]
    state = {k: v for k, v in state.items() if k not in dropped}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone key(s) missing from the file: {_sample(missing)}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} key(s) in the file that the model does not have: "
            f"{_sample(unexpected)}"
        )
    if shapes:
        detail = [
            f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in shapes[:_SHOW]
        ]
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(detail)}")
    if problems:
        raise WeightsError(
            f"weights {source} do not fit {type(model).__name__}:\n  "
            + "\n  ".join(problems)
            + "\nCheck that --weights matches the architecture of --model."
        )
    model.load_state_dict(state, strict=True)
    return dropped
