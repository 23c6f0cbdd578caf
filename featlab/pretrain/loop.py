"""The resumable epoch loop every pretraining method shares.

Each epoch: seeded batches (``featlab.train.data``), one ``trainer.train_step`` per batch, the
trainer's end-of-epoch hook, then a checkpoint in this order: every arm's headless backbone as a
flat state dict (``save_weights``), the full training state to ``last.pt`` (``save_state``), the
run manifest (status, epochs done, sha256s, wall time, images/s) and a run-log line. All writes
are atomic, so a kill at any moment leaves the previous epoch's checkpoint or the new one; a rerun
with the same settings continues from ``last.pt`` and, because augmentations and batch order are
seeded per (seed, epoch) and the RNG state is saved, computes what an uninterrupted run computes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from featlab.errors import InvalidArgumentError, TrainingError
from featlab.pretrain.arms import ArmRecord, headless_state_dict
from featlab.train.checkpoint import (
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    save_weights,
)
from featlab.train.data import TrainImages, epoch_loader
from featlab.train.run_dir import read_manifest, write_manifest
from featlab.train.runlog import RunLog

STATE_FILE = "last.pt"
RUNLOG_FILE = "runlog.jsonl"


class Trainer(Protocol):
    """What a method core (CASS, BOLT, DINO) offers the loop."""

    def train_step(self, batch: Any, *, epoch: int, step: int) -> dict[str, float]: ...

    def end_epoch(self, epoch: int, batches: Iterable[Any]) -> None: ...

    def backbones(self) -> dict[str, nn.Module]: ...

    def describe(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PretrainSummary:
    """What :func:`run_pretraining` did.

    Attributes:
        run_dir: The run folder.
        status: ``complete``.
        start_epoch: Epochs already done when this call started (0 for a fresh run).
        epochs_done: Epochs done now.
        seconds: Training wall time over all epochs, this call and earlier ones.
        images_per_s: Training images per second over all epochs.
        losses: Mean of each logged quantity over the last epoch trained (empty if none ran).
        models: The manifest's ``models`` entries.
    """

    run_dir: Path
    status: str
    start_epoch: int
    epochs_done: int
    seconds: float
    images_per_s: float
    losses: dict[str, float] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped, as SSL methods do).

    Raises:
        InvalidArgumentError: Fewer images than one batch.
    """
    if batch_size < 1 or n_images < batch_size:
        raise InvalidArgumentError(
            f"pretraining needs at least one full batch: {n_images} images, batch size "
            f"{batch_size}; lower --batch-size or train on more images"
        )
    return n_images // batch_size


def _mean(records: list[dict[str, float]]) -> dict[str, float]:
    keys = records[0].keys() if records else ()
    return {k: float(sum(r[k] for r in records) / len(records)) for k in keys}


def _check_finite(out: dict[str, float], epoch: int, step: int) -> None:
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise TrainingError(
            f"training diverged at epoch {epoch + 1}, step {step}: {bad}. The last good "
            "checkpoint is kept; lower --lr, or use --precision fp32, and rerun with another --out"
        )


def _resume(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    try:
        trainer.load_state_dict(state["trainer"])
        restore_rng(state["rng"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise TrainingError(
            f"{str(path)!r} does not fit this run's networks ({type(err).__name__}: "
            f"{str(err)[:300]}); delete it to start the run over, or use another --out"
        ) from err


def _write_checkpoint(
    trainer: Trainer,
    run_dir: Path,
    arms: Sequence[ArmRecord],
    *,
    epoch_done: int,
    epochs: int,
    timing: dict[str, Any],
    info: dict[str, Any],
) -> list[dict[str, Any]]:
    backbones, described = trainer.backbones(), trainer.describe()
    models = []
    for arm in arms:
        sha = save_weights(run_dir / arm.file, headless_state_dict(backbones[arm.role]))
        models.append({**arm.to_dict(), "sha256": sha, "weights": described["saved_weights"]})
    save_state(
        run_dir / STATE_FILE,
        {
            "epoch": epoch_done,
            "trainer": trainer.state_dict(),
            "rng": capture_rng(),
            "timing": timing,
        },
    )
    manifest = read_manifest(run_dir)
    manifest.update(info)
    manifest.update(
        {
            "status": "complete" if epoch_done >= epochs else "running",
            "epochs_done": epoch_done,
            "models": models,
            "timing": timing,
            "method_settings": described,
        }
    )
    write_manifest(run_dir, manifest)
    return models


def run_pretraining(
    trainer: Trainer,
    images: TrainImages,
    *,
    run_dir: str | Path,
    arms: Sequence[ArmRecord],
    epochs: int,
    batch_size: int,
    seed: int,
    workers: int = 0,
    info: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> PretrainSummary:
    """Train ``trainer`` for ``epochs`` epochs, checkpointing each; resume from ``last.pt``.

    Args:
        trainer: A method core (:class:`featlab.pretrain.cass.CASSTrainer`, ...), built for
            ``steps_per_epoch(len(images), batch_size)`` steps per epoch.
        images: The training images with the method's transform.
        run_dir: A folder made by ``featlab.train.run_dir.prepare_run_dir`` (same config).
        arms: The backbones to save each epoch (their ``role`` keys ``trainer.backbones()``).
        epochs: Total epochs.
        batch_size: Images per step.
        seed: Seed of batch order and augmentations (and the training RNG of a fresh run).
        workers: Image-decoding worker processes.
        info: Extra manifest fields (dataset, runtime...).
        on_epoch: Called with the run-log record after each epoch's checkpoint is written.

    Returns:
        The summary; the run folder holds the weights, ``last.pt``, the manifest and the log.

    Raises:
        TrainingError: A non-finite loss, or an unreadable ``last.pt``.
        InvalidArgumentError: Fewer images than one batch, or ``epochs < 1``.
    """
    if epochs < 1:
        raise InvalidArgumentError(f"epochs must be >= 1; got {epochs}")
    run_dir = Path(run_dir)
    n_steps = steps_per_epoch(len(images), batch_size)
    info = dict(info or {})
    timing: dict[str, Any] = {"seconds": 0.0, "images": 0, "images_per_s": 0.0, "epoch_seconds": []}
    start = 0
    if (run_dir / STATE_FILE).is_file():
        state = load_state(run_dir / STATE_FILE)
        _resume(trainer, state, run_dir / STATE_FILE)
        start, timing = int(state["epoch"]), dict(state["timing"])
    else:
        torch.manual_seed(seed)
    log, last, models = RunLog(run_dir / RUNLOG_FILE), {}, []
    for epoch in range(start, epochs):
        loader = epoch_loader(
            images, batch_size=batch_size, seed=seed, epoch=epoch, drop_last=True, workers=workers
        )
        t0, records = time.perf_counter(), []
        for i, batch in enumerate(loader):
            step = epoch * n_steps + i
            out = trainer.train_step(batch, epoch=epoch, step=step)
            _check_finite(out, epoch, step)
            records.append(out)
        trainer.end_epoch(epoch, loader)
        seconds = time.perf_counter() - t0
        timing["seconds"] = float(timing["seconds"]) + seconds
        timing["images"] = int(timing["images"]) + n_steps * batch_size
        timing["images_per_s"] = timing["images"] / max(timing["seconds"], 1e-9)
        timing["epoch_seconds"] = [*timing["epoch_seconds"], round(seconds, 3)]
        models = _write_checkpoint(
            trainer, run_dir, arms, epoch_done=epoch + 1, epochs=epochs, timing=timing, info=info
        )
        last = _mean(records)
        record = {
            "epoch": epoch + 1,
            "epochs": epochs,
            **last,
            "seconds": round(seconds, 3),
            "images_per_s": n_steps * batch_size / max(seconds, 1e-9),
        }
        log.write(record)
        if on_epoch is not None:
            on_epoch(record)
    if start >= epochs:  # killed after the last state was saved: finish its manifest
        models = _write_checkpoint(
            trainer, run_dir, arms, epoch_done=start, epochs=epochs, timing=timing, info=info
        )
    return PretrainSummary(
        run_dir=run_dir,
        status="complete",
        start_epoch=start,
        epochs_done=max(start, epochs),
        seconds=float(timing["seconds"]),
        images_per_s=float(timing["images_per_s"]),
        losses=last,
        models=models,
    )
