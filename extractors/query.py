"""Embedding new images exactly as a stored model's embeddings were made.

A stored model's attrs hold everything needed to rebuild its backbone: the spec (architecture,
kwargs, input size, resize/crop, mean/std, resolved pool, converter), the weights source and
sha256 (random init and its seed, timm's published file, an official URL's file, or a local
``--weights`` checkpoint at ``weights_path``), the precision and the embedding view. Rebuilding
goes through the same :func:`~featlab.extractors.backbone.build_backbone` the engine uses, and
images through the same steps as the engine's workers: decoding with featlab's image helpers
(16-bit, gray, RGBA... converted to RGB deliberately; large JPEGs in draft mode, as for files in
a dataset), timm's geometric eval transform to uint8, normalisation on the device. So an image
of the dataset embeds to (nearly) its stored vector: equal up to the kernels' rounding, which
depends on the batch composition in bf16.

Weights must be the same bytes: a checkpoint or cached file whose sha256 differs from the stored
one is an error naming both, never a silently different model.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from featlab.datasets.images import array_to_image, open_image_file, to_rgb
from featlab.errors import BadImageError, ExtractionError, InvalidArgumentError, WeightsError
from featlab.extractors.backbone import Backbone, build_backbone
from featlab.extractors.device import resolve_runtime
from featlab.extractors.loader import geometric_transform, resize_side
from featlab.extractors.spec import ModelSpec
from featlab.extractors.weights import sha256_file

if TYPE_CHECKING:
    from PIL import Image

    from featlab.store import DatasetGroup

DEFAULT_BATCH_SIZE = 32


def stored_view(attrs: dict[str, Any], spec: ModelSpec) -> str:
    """The view key (``default``, ``cls4``, ``avg``...) a stored entry was extracted with.

    The engine stores the model's default view with ``embedding`` equal to the resolved pool
    of the spec, and any other view under its own name (``extractors/engine.py`` ``_entries``).
    """
    embedding = attrs.get("embedding") or (attrs.get("view") or {}).get("name")
    if embedding is None or embedding == spec.pool:
        return "default"
    return str(embedding)


def stored_spec(ds: DatasetGroup, model: str) -> ModelSpec:
    """The :class:`ModelSpec` recorded with ``model``'s embeddings (pool resolved).

    Raises:
        WeightsError: The entry records no usable spec (not written by featlab's engine).
    """
    attrs = ds.model_attrs(model)
    try:
        return ModelSpec.from_dict(attrs["spec"])
    except (KeyError, TypeError) as err:
        raise WeightsError(
            f"{model!r} in {ds.name!r} has no usable stored spec ({type(err).__name__}: {err}), "
            "so its backbone cannot be rebuilt; query by ids or vectors instead"
        ) from err


def _runtime(device: str, precision: str | None, model: str) -> Any:
    """Device and the stored precision; fp16 (CUDA only) becomes fp32 on a CPU, with a warning."""
    precision = precision or "fp32"
    dev = device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "fp16" and not dev.startswith("cuda"):
        warnings.warn(
            f"{model!r} was extracted in fp16 on CUDA; this CPU embeds the query in fp32 "
            "instead (fp16 is CUDA-only), which can move embeddings by ~1e-3",
            RuntimeWarning,
            stacklevel=3,
        )
        precision = "fp32"
    return resolve_runtime(dev, precision)


def _weights_file(
    model: str, stored: dict[str, Any], recorded: str | None, override: str | None
) -> str:
    """The local checkpoint to load: ``override`` or the recorded path, with the stored sha256.

    Raises:
        WeightsError: The file is not there (names it and how to point to its new place), or
            its sha256 differs from the stored one (names both).
    """
    path = override if override is not None else recorded
    want = stored.get("sha256")
    if not path:
        raise WeightsError(
            f"{model!r} was extracted from a local checkpoint (sha256 {want}), but the store "
            "does not record its path; pass the file with weights=PATH (--weights PATH)"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        how = "the given" if override is not None else "the recorded"
        raise WeightsError(
            f"{model!r} was extracted from the checkpoint {str(p)!r} (sha256 {want}), and "
            f"{how} file is not there. Put it back, or pass its new location with "
            "weights=PATH (--weights PATH)"
        )
    got = sha256_file(p)
    if want and got != want:
        raise WeightsError(
            f"checkpoint {str(p)!r} has sha256 {got}, but {model!r} was extracted from a file "
            f"with sha256 {want}; embeddings of this file would not be comparable. Pass the "
            "original checkpoint with weights=PATH (--weights PATH)"
        )
    return str(p)


def load_stored_backbone(
    ds: DatasetGroup,
    model: str,
    *,
    device: str = "auto",
    weights: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
) -> tuple[Backbone, str]:
    """Rebuild the backbone that produced ``model``'s stored embeddings of ``ds``.

    Args:
        ds: The dataset in the store.
        model: Stored model (or view) name.
        device: ``auto``, ``cpu`` or ``cuda[:i]``; the precision is the stored one (fp16,
            CUDA-only, runs as fp32 on a CPU, with a warning).
        weights: New location of a local checkpoint whose recorded path moved; its sha256 must
            equal the stored one.
        trust_checkpoint: Allow unpickling a whole-module checkpoint (official CASS files).

    Returns:
        ``(backbone, view)``: ``backbone.embed_views(images, (view,))[view]`` gives the stored
        kind of embedding.

    Raises:
        UnknownModelError: ``model`` is not stored for ``ds``.
        WeightsError: The weights cannot be rebuilt: a checkpoint moved or changed (sha256
            named), published weights not cached and not downloadable, an unknown source.
    """
    attrs = ds.model_attrs(model)
    spec = stored_spec(ds, model)
    stored = dict(attrs.get("weights") or {})
    source = stored.get("source")
    runtime = _runtime(device, attrs.get("precision"), model)
    override = None if weights is None else str(weights)
    if source == "random-init":
        if override is not None:
            raise InvalidArgumentError(
                f"{model!r} was extracted with random weights (seed {stored.get('seed')}); "
                "there is no checkpoint to pass"
            )
        bb = build_backbone(
            replace(spec, pretrained=False), runtime, seed=int(stored.get("seed") or 0)
        )
    elif source == "file":
        path = _weights_file(model, stored, attrs.get("weights_path"), override)
        bb = build_backbone(spec, runtime, weights=path, trust_checkpoint=trust_checkpoint)
    elif source == "timm" or (source is not None and source == spec.weights_url):
        if override is not None:
            path = _weights_file(model, stored, None, override)
            bb = build_backbone(spec, runtime, weights=path, trust_checkpoint=trust_checkpoint)
        else:
            bb = build_backbone(replace(spec, pretrained=True), runtime)
            got = bb.weights.get("sha256")
            if stored.get("sha256") and got != stored["sha256"]:
                raise WeightsError(
                    f"the published weights of {spec.architecture} now on this machine "
                    f"({bb.weights.get('path')}) have sha256 {got}, but {model!r} was extracted "
                    f"with sha256 {stored['sha256']}; put the original file there, or pass it "
                    "with weights=PATH (--weights PATH)"
                )
    else:
        raise WeightsError(
            f"{model!r} records weights source {source!r}, which featlab cannot rebuild; "
            "query by ids or vectors instead"
        )
    view = stored_view(attrs, bb.spec)
    if view != "default":
        from featlab.extractors.views import check_views

        check_views(bb.model, (view,), model)
    dim = bb.view_dim(view)
    if dim != ds.dim(model):
        raise WeightsError(
            f"the rebuilt backbone of {model!r} gives {dim}-d {view!r} embeddings, but the store "
            f"holds {ds.dim(model)}-d ones; the stored provenance does not describe this model"
        )
    return bb, view


def _to_rgb(item: Any, draft: int) -> Image.Image:
    """One query image as 8-bit RGB, converted like the dataset readers convert theirs."""
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        # Same decoding as a file-backed dataset in the engine (draft JPEGs for this resize).
        return open_image_file(os.fspath(item), draft)
    if isinstance(item, Image.Image):
        try:
            item.load()
        except (OSError, ValueError) as err:
            raise BadImageError(f"cannot decode the given image ({err})") from err
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        return array_to_image(item)
    raise InvalidArgumentError(
        f"images must be file paths, PIL images or (H, W[, C]) arrays; got {type(item).__name__}"
    )


def prepare_images(items: list[Any], spec: ModelSpec) -> torch.Tensor:
    """``(m, 3, H, W)`` uint8: decoded, RGB, and through the spec's geometric eval transform."""
    transform = geometric_transform(spec)
    shape = (spec.input_size[1], spec.input_size[2], 3)
    out = np.zeros((len(items), *shape), dtype=np.uint8)
    draft = resize_side(spec)
    for i, item in enumerate(items):
        arr = np.asarray(transform(_to_rgb(item, draft)))
        if arr.shape != shape:
            raise BadImageError(
                f"query image {i}: the transform gave shape {arr.shape}, expected {shape}"
            )
        out[i] = arr
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def embed_images(
    ds: DatasetGroup,
    model: str,
    images: list[Any],
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    weights: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
    backbone: tuple[Backbone, str] | None = None,
) -> np.ndarray:
    """Embed images with the spec, weights, precision and view of a stored model.

    Args:
        ds: The dataset in the store.
        model: Stored model (or view) name.
        images: File paths, PIL images or ``(H, W[, C])`` uint8/uint16 arrays.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        batch_size: Images per forward pass.
        weights, trust_checkpoint: See :func:`load_stored_backbone`.
        backbone: A ``(backbone, view)`` from :func:`load_stored_backbone`, to reuse.

    Returns:
        ``(m, d)`` float32, in the order of ``images`` (not normalised).

    Raises:
        BadImageError: An image cannot be read (names the file).
        ExtractionError: Non-finite embeddings.
        WeightsError: See :func:`load_stored_backbone`.
    """
    if isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1; got {batch_size}")
    items = list(images)
    if not items:
        raise InvalidArgumentError("images is empty; give at least one")
    spec = backbone[0].spec if backbone is not None else stored_spec(ds, model)
    # Decode first: an unreadable image fails before any weights are read.
    pixels = prepare_images(items, spec)
    bb, view = backbone or load_stored_backbone(
        ds, model, device=device, weights=weights, trust_checkpoint=trust_checkpoint
    )
    out = np.empty((len(items), ds.dim(model)), dtype=np.float32)
    for lo in range(0, len(items), batch_size):
        batch = pixels[lo : lo + batch_size]
        out[lo : lo + len(batch)] = bb.embed_views(batch, (view,))[view].numpy()
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ExtractionError(
            f"{int(bad.sum())} query image embedding(s) contain NaN or inf (first: image "
            f"{int(np.flatnonzero(bad)[0])}); check the image and the weights"
        )
    return out


__all__ = [
    "embed_images",
    "load_stored_backbone",
    "prepare_images",
    "stored_spec",
    "stored_view",
]
