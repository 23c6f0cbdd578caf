"""The extraction engine: a backbone over a dataset, into the store, resumable and exact.

Rows are grouped into batches that never straddle a store chunk: the selected rows of each chunk,
in order, cut into groups of ``batch_size``. Each batch is written (values, then the ``written``
mask) as soon as it is computed. A killed run therefore loses at most the batches in flight, and
a rerun of the same command recomputes exactly the batches an uninterrupted run computes, so the
final array is byte-identical.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featlab.datasets import SampleTable, load_dataset
from featlab.errors import BadImageError, ExtractionError, InvalidArgumentError
from featlab.extractors.backbone import Backbone, build_backbone
from featlab.extractors.device import resolve_runtime
from featlab.extractors.loader import BatchDataset, batch_loader
from featlab.extractors.progress import Progress
from featlab.extractors.runs import (
    is_run_reference,
    resolve_run_model,
    run_of_weights,
    run_spec_of_weights,
)
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.views import check_views, is_vit, split_view
from featlab.store import FeatureStore, open_store
from featlab.store._layout import chunk_rows_for

DEFAULT_BATCH_SIZE = 128
SPLIT_NAMES = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class ExtractionResult:
    """What one :func:`extract` call did.

    ``status`` is ``extracted`` (new), ``resumed`` (continued a partial run) or ``reused`` (the
    model was already complete with the same spec and weights; nothing computed).
    """

    dataset: str
    model: str
    status: str
    complete: bool
    n_samples: int
    n_selected: int
    n_computed: int
    dim: int
    seconds: float
    images_per_s: float
    device: str
    precision: str
    kernels: str
    write_seconds: float = 0.0
    bad: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_workers() -> int:
    """Decoding workers: one per spare core, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def plan_batches(
    selected: np.ndarray, written: np.ndarray, chunk_rows: int, batch_size: int
) -> list[np.ndarray]:
    """Batches of pending rows, each inside one chunk, fixed by ``selected`` alone.

    The grouping does not depend on ``written``; batches whose rows are all written are dropped.
    So a resumed run recomputes the same batches, with the same composition, as the first run.
    """
    batches = []
    for lo in range(0, len(selected), chunk_rows):
        rows = lo + np.flatnonzero(selected[lo : lo + chunk_rows])
        for b in range(0, len(rows), batch_size):
            group = rows[b : b + batch_size]
            if not written[group].all():
                batches.append(group)
    return batches


def select_rows(
    splits: np.ndarray, wanted: tuple[str, ...] | None, limit: int | None
) -> np.ndarray:
    """``(n,)`` bool: rows in the wanted splits (``unlabeled`` = split ""), first ``limit`` only."""
    mask = np.ones(len(splits), dtype=bool)
    if wanted:
        unknown = [s for s in wanted if s not in SPLIT_NAMES]
        if unknown:
            raise InvalidArgumentError(f"unknown split(s) {unknown}; choose from {SPLIT_NAMES}")
        names = ["" if s == "unlabeled" else s for s in wanted]
        mask = np.isin(splits, names)
    if limit is not None:
        if limit < 1:
            raise InvalidArgumentError(f"limit must be >= 1; got {limit}")
        mask[np.flatnonzero(mask)[limit:]] = False
    return mask


def extract(
    model: str | ModelSpec,
    dataset: str | SampleTable,
    store: str | os.PathLike[str] | FeatureStore | None = None,
    *,
    name: str | None = None,
    views: tuple[str, ...] | None = None,
    splits: tuple[str, ...] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    weights: str | os.PathLike[str] | None = None,
    converter: str | None = None,
    trust_checkpoint: bool = False,
    random_init: bool = False,
    img_size: int | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    seed: int = 0,
    progress: bool | None = None,
) -> ExtractionResult | list[ExtractionResult]:
    """Extract ``model``'s embeddings of ``dataset`` into ``store``.

    Args:
        model: ``timm:<arch>[:view]`` or a :class:`ModelSpec`.
        dataset: ``digits``, ``folder:PATH``, ``csv:PATH`` or a :class:`SampleTable`.
        store: Store path or open store; default ``$FEATLAB_STORE`` or ``./featlab.zarr``.
        name: Name to store the embeddings under; default the model name (one view only).
        views: Several views from one forward pass (``("default", "cls4")``); each is stored as
            its own entry, the default view under the plain model name and the others as
            ``<model>:<view>``. Default: the view in the model name, else the default view.
        splits: Only these splits (``train``, ``val``, ``test``, ``unlabeled``); default all.
        batch_size: Images per forward pass; a resumed run must use the stored one.
        workers: Decoding worker processes; default one per spare core.
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda[:i]``.
        precision: ``auto`` (bf16 where fast), ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
        weights: A local checkpoint for the architecture, loaded strictly. A checkpoint a
            featlab run folder lists (``runs/NAME/best.pt``) is read as ``NAME@RUN_DIR`` is:
            with the run's spec (input size, mean/std, pool) and no converter.
        converter: The layout of ``weights`` (``dino``, ``swav``, ``vissl``, ``mocov3``, ...;
            see :data:`featlab.extractors.converters.CONVERTERS`); default the spec's.
        trust_checkpoint: Allow unpickling a whole-module checkpoint (official CASS files);
            only for files you trust, since unpickling can run code.
        random_init: Seeded random weights instead of the published ones.
        img_size: Square input size overriding the model's default.
        limit: Extract only the first ``limit`` selected samples (the model stays incomplete).
        overwrite: Replace stored embeddings of the same name.
        skip_bad: Record unreadable images as bad (excluded from evaluation) instead of failing.
        seed: Seed of random initialisation.
        progress: Show a progress bar; default only on a terminal.

    Returns:
        An :class:`ExtractionResult` (a list of them, one per view, when several views were
        asked for); the embeddings are in the store.

    Raises:
        BadImageError: An image cannot be read (without ``skip_bad``); names file and sample id.
        ExtractionError: Non-finite embeddings (names the samples), or a resume with another
            batch size.
        ModelMismatchError: Same name, different spec/weights/precision stored.
        WeightsError, UnknownModelError, DatasetError, StoreError: As their names say.
    """
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be >= 1; got {batch_size}")
    table = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if table.images is None:
        raise ExtractionError(f"dataset {table.name!r} has no image source to read from")
    run: dict[str, Any] | None = None
    if isinstance(model, str) and is_run_reference(model):
        spec, suffix, weights, run = _run_model(model, weights, random_init, img_size)
    elif isinstance(model, str):
        base, suffix = split_view(model)
        spec = resolve_spec(base, pretrained=not random_init and weights is None, img_size=img_size)
        if weights is not None:
            # A run's checkpoint (best.pt of a finetune, ...) is a flat timm state dict trained
            # with the run's spec: read it without the zoo's converter, at the run's size.
            spec = run_spec_of_weights(weights, spec, img_size=img_size) or spec
    else:
        spec, suffix = model, None
    if weights is not None and run is None:
        run = run_of_weights(weights)
    if converter is not None:
        spec = replace(spec, converter=converter)
    requested = tuple(dict.fromkeys(views or (suffix or "default",)))
    if name and len(requested) > 1:
        raise InvalidArgumentError("name= applies to a single view; drop it or extract one view")
    runtime = resolve_runtime(device, precision)
    selected = select_rows(table.splits, splits, limit)
    # Everything that can fail on the user's input fails before the store is touched.
    backbone = build_backbone(
        spec,
        runtime,
        weights=None if weights is None else str(weights),
        seed=seed,
        trust_checkpoint=trust_checkpoint,
    )
    entries = _entries(backbone, spec.name, requested, name)
    st = store if isinstance(store, FeatureStore) else open_store(store, mode="a")
    ds = st.add_dataset(table)
    writers = {
        view: ds.open_writer(
            entry,
            dim=backbone.view_dim(view),
            chunk_rows=chunk_rows_for(backbone.view_dim(view), batch_size),
            identity=_identity(backbone, runtime.precision, view),
            attrs=_attrs(backbone, runtime, batch_size, seed, view, run),
            overwrite=overwrite,
        )
        for view, entry in entries.items()
    }
    try:
        results = _extract_views(
            backbone,
            table,
            writers,
            entries,
            selected,
            batch_size=batch_size,
            workers=workers,
            skip_bad=skip_bad,
            progress=progress,
        )
    finally:
        for w in writers.values():
            w.close()
    return results[0] if len(results) == 1 else results  # type: ignore[return-value]


def _run_model(
    reference: str, weights: Any, random_init: bool, img_size: int | None
) -> tuple[ModelSpec, str | None, Path, dict[str, Any]]:
    """``NAME[:view]@RUN_DIR``: the checkpoint's spec, view, weights file and provenance."""
    if weights is not None or random_init or img_size is not None:
        raise InvalidArgumentError(
            f"{reference!r} names a run's checkpoint, which brings its weights and input size; "
            "drop --weights, --random-init and --img-size"
        )
    head, _, run_dir = reference.partition("@")
    base, suffix = split_view(head)
    resolved = resolve_run_model(f"{base}@{run_dir}")
    return resolved.spec, suffix, resolved.weights, resolved.provenance


def _entries(
    backbone: Backbone, base: str, requested: tuple[str, ...], name: str | None
) -> dict[str, str]:
    """``{view: stored name}``; the model's default view is stored under the plain name."""
    default = backbone.spec.pool if is_vit(backbone.model) else "avg"
    check_views(backbone.model, tuple(v for v in requested if v != "default"), base)
    entries: dict[str, str] = {}
    for view in requested:
        key = "default" if view in ("default", default) else view
        entries[key] = name or (base if key == "default" else f"{base}:{view}")
    return entries


def _identity(backbone: Backbone, precision: str, view: str) -> dict[str, Any]:
    """What must match for a stored entry to be this one (spec, weights, precision, view)."""
    return {
        "spec": backbone.spec.to_dict(),
        "weights": {k: backbone.weights.get(k) for k in ("source", "sha256", "seed")},
        "precision": precision,
        "embedding": backbone.spec.pool if view == "default" else view,
    }


def _attrs(
    backbone: Backbone,
    runtime: Any,
    batch_size: int,
    seed: int,
    view: str,
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # ``run``: the featlab finetune/pretrain run the weights came from (provenance).
    return {
        **({"run": run} if run else {}),
        "view": {
            **backbone.view(),
            "name": backbone.spec.pool if view == "default" else view,
            "dim": backbone.view_dim(view),
        },
        "weights_path": backbone.weights.get("path"),
        "device": runtime.device,
        "kernels": runtime.kernels,
        "batch_size": batch_size,
        "seed": seed,
    }


def _extract_views(
    backbone: Backbone,
    table: SampleTable,
    writers: dict[str, Any],
    entries: dict[str, str],
    selected: np.ndarray,
    *,
    batch_size: int,
    workers: int | None,
    skip_bad: bool,
    progress: bool | None,
) -> list[ExtractionResult]:
    """Run the batches any view still needs, write every view, and report per view."""
    label = ", ".join(entries.values())
    for view, w in writers.items():
        stored_bs = int(w.attrs.get("batch_size", batch_size))
        if stored_bs != batch_size and not w.written()[selected].all():
            raise ExtractionError(
                f"{entries[view]!r} on {table.name!r} was started with batch size {stored_bs}; "
                f"resuming with {batch_size} would change the result. Rerun with --batch-size "
                f"{stored_bs}, or --overwrite to start over."
            )
    done = {v: w.written() for v, w in writers.items()}
    written_all = np.logical_and.reduce(list(done.values()))
    chunk_rows = min(w.chunk_rows for w in writers.values())
    batches = plan_batches(selected, written_all, chunk_rows, batch_size)
    t0 = time.perf_counter()
    bad, write_seconds = _run(
        backbone,
        table,
        writers,
        batches,
        workers=workers,
        skip_bad=skip_bad,
        desc=f"{label} | {table.name}",
        progress=progress,
    )
    seconds = time.perf_counter() - t0
    n_computed = int(sum(len(b) for b in batches))
    ips = n_computed / seconds if n_computed and seconds > 0 else 0.0
    results = []
    for view, w in writers.items():
        complete = bool(w.written().all())
        all_bad = {**w.attrs.get("bad_samples", {}), **bad}
        updates: dict[str, Any] = {
            "complete": complete,
            "bad_samples": all_bad,
            "n_bad": len(all_bad),
        }
        if n_computed:
            updates.update(
                images_per_s=round(ips, 2),
                write_seconds=round(write_seconds, 3),
                seconds=round(seconds, 3),
                device=backbone.runtime.device,
                kernels=backbone.runtime.kernels,
            )
        w.update_attrs(**updates)
        status = "reused" if not batches else ("resumed" if done[view].any() else "extracted")
        results.append(
            ExtractionResult(
                dataset=table.name,
                model=entries[view],
                status=status,
                complete=complete,
                n_samples=len(table),
                n_selected=int(selected.sum()),
                n_computed=n_computed,
                dim=backbone.view_dim(view),
                seconds=seconds,
                images_per_s=ips,
                device=backbone.runtime.device,
                precision=backbone.runtime.precision,
                kernels=backbone.runtime.kernels,
                write_seconds=write_seconds,
                bad=bad,
            )
        )
    return results


def _run(
    backbone: Backbone,
    table: SampleTable,
    writers: dict[str, Any],
    batches: list[np.ndarray],
    *,
    workers: int | None,
    skip_bad: bool,
    desc: str,
    progress: bool | None,
) -> tuple[dict[str, str], float]:
    """Compute and write ``batches``.

    Returns:
        ``{sample id: reason}`` of unreadable images, and the seconds spent writing the store.
    """
    if not batches:
        return {}, 0.0
    n_workers = default_workers() if workers is None else workers
    loader = batch_loader(
        BatchDataset(table.images, batches, backbone.spec),
        workers=min(n_workers, len(batches)),
        pin_memory=backbone.runtime.device.startswith("cuda"),
    )
    bar = Progress(int(sum(len(b) for b in batches)), desc, enabled=progress)
    bad: dict[str, str] = {}
    write_seconds = 0.0
    try:
        for batch in loader:
            bad_mask = np.zeros(len(batch.rows), dtype=bool)
            if batch.errors:
                if not skip_bad:
                    row, reason = next(iter(batch.errors.items()))
                    raise BadImageError(
                        f"sample {str(table.ids[row])!r} (row {row}) cannot be read: {reason}. "
                        "Fix or remove the file, or pass --skip-bad to record it as bad and go on."
                    )
                bad_mask = np.isin(batch.rows, list(batch.errors))
                bad.update({str(table.ids[r]): m for r, m in batch.errors.items()})
            outs = backbone.embed_views(batch.images, tuple(writers))
            finite = (
                np.logical_and.reduce([torch.isfinite(o).all(dim=1).numpy() for o in outs.values()])
                | bad_mask
            )
            if not finite.all():
                ids = [str(i) for i in table.ids[batch.rows[~finite]][:10]]
                raise ExtractionError(
                    f"{int((~finite).sum())} embedding(s) contain NaN or inf, e.g. samples {ids}; "
                    f"nothing was written for this batch. Try --precision fp32, and check the "
                    "weights and these images."
                )
            t_write = time.perf_counter()
            for view, writer in writers.items():
                values = outs[view].numpy()
                values[bad_mask] = 0.0
                writer.write(batch.rows, values, bad_mask)
            write_seconds += time.perf_counter() - t_write
            bar.update(len(batch.rows))
    finally:
        bar.close()
        del loader
    return bad, write_seconds
