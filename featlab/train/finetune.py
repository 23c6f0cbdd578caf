"""The finetuning loop: a classifier (backbone + head) on a low-shot subset, resumable.

Every epoch: train with autocast (bf16 on AMX CPUs / CUDA, fp32 weights), score val with the
dataset's metric, keep the best checkpoint (``best.pt``, a flat timm state dict that
``featlab extract --weights`` loads), write the whole state (``last.pt``: weights, optimizer,
schedule, scaler, epoch, best, history, RNG) and a run-log line. A run killed at any point
restarts from the last finished epoch and, because each epoch's order and augmentations are
seeded by (seed, epoch) and the RNG state is restored, trains exactly the epochs an uninterrupted
run trains. The best checkpoint is then scored on test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featlab.errors import TrainingError
from featlab.eval.metrics import higher_is_better, score_metric
from featlab.train.checkpoint import (
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    save_weights,
)
from featlab.train.data import TrainImages, epoch_loader
from featlab.train.freeze import apply_unfreeze
from featlab.train.losses import make_loss
from featlab.train.precision import autocast, grad_scaler
from featlab.train.recipes import FinetuneConfig
from featlab.train.runlog import RunLog
from featlab.train.schedule import LRSchedule

BEST, LAST, LOG = "best.pt", "last.pt", "log.jsonl"


@dataclass
class FinetuneResult:
    """What a finetune produced; ``test_scores`` ``(m, C)`` float32 come from ``best.pt``."""

    run_dir: Path
    best_epoch: int
    best_val: float
    metric: str
    epochs_run: int
    stopped_early: bool
    test_scores: np.ndarray
    test_metric: float
    best_sha256: str
    seconds: float
    resumed_at: int | None = None
    n_trainable: int = 0
    n_total: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Run:
    """The mutable state of a run between epochs."""

    epoch: int = 0  # next epoch to train
    best_val: float = -math.inf
    best_epoch: int = -1
    best_sha256: str = ""
    flat: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def _optimizer(config: FinetuneConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def predict(
    model: nn.Module,
    data: TrainImages,
    *,
    task: str,
    batch_size: int,
    device: str,
    precision: str,
    workers: int = 0,
) -> np.ndarray:
    """``(n, C)`` float32 class probabilities (softmax; sigmoid per label for multilabel)."""
    model.eval()
    out = []
    loader = epoch_loader(data, batch_size=batch_size, seed=0, epoch=0, shuffle=False,
                          workers=workers)
    with torch.inference_mode():
        for x, _ in loader:
            with autocast(device, precision):
                logits = model(x.to(device, non_blocking=True)).float()
            p = torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
            out.append(p.cpu().numpy().astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def finetune(
    model: nn.Module,
    *,
    train: TrainImages,
    val: TrainImages,
    test: TrainImages,
    task: str,
    n_classes: int,
    metric: str,
    config: FinetuneConfig,
    run_dir: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    workers: int = 0,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> FinetuneResult:
    """Finetune ``model`` (a timm classifier with ``n_classes`` outputs) and score the best.

    Args:
        model: Backbone + fresh head, fp32, on the CPU (moved to ``device`` here).
        train, val, test: Images with targets (val/test with the eval transform).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        metric: The val/test metric (a name of :mod:`featlab.eval.metrics`).
        config: The recipe's settings (:func:`featlab.train.recipes.recipe_config`).
        run_dir: Folder for ``best.pt``, ``last.pt`` and ``log.jsonl``; a ``last.pt`` there is
            resumed.
        callback: Called with every epoch's record (and ``{"event": "step", ...}`` after each
            step); progress printing hooks in here.

    Raises:
        TrainingError: A non-finite loss, or an unreadable ``last.pt``.
    """
    run_dir = Path(run_dir)
    started = time.perf_counter()
    freeze = apply_unfreeze(model, config.unfreeze)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(config, params)
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    schedule = LRSchedule(
        optimizer, base_lr=config.lr, kind=config.schedule,
        total_steps=steps_per_epoch * config.max_epochs, warmup_steps=config.warmup_steps,
        min_lr=config.min_lr, patience=config.plateau_patience, factor=config.plateau_factor,
    )
    scaler = grad_scaler(device, precision)
    loss_fn = make_loss(config.loss, task, train.targets.numpy(), n_classes,
                        class_weights=config.class_weights, gamma=config.focal_gamma).to(device)
    state, resumed_at = _Run(), None
    if (run_dir / LAST).exists():
        saved = load_state(run_dir / LAST)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state = _Run(**saved["run"])
        restore_rng(saved["rng"])
        resumed_at = state.epoch
    sign = 1.0 if higher_is_better(metric) else -1.0
    log = RunLog(run_dir / LOG)
    y_val = val.targets.numpy()
    while not state.stopped and state.epoch < config.max_epochs:
        t0 = time.perf_counter()
        freeze.set_train_mode(model)
        loss = _train_epoch(model, train, config, state.epoch, optimizer, schedule, scaler,
                            loss_fn, device, precision, workers, callback,
                            multilabel=task == "multilabel")
        proba = predict(model, val, task=task, batch_size=max(config.batch_size, 64),
                        device=device, precision=precision, workers=workers)
        value = score_metric(metric, y_val, proba, task)
        improved = sign * value > sign * state.best_val if state.best_epoch >= 0 else True
        if improved:
            state.best_val, state.best_epoch, state.flat = value, state.epoch, 0
            state.best_sha256 = save_weights(run_dir / BEST, model)
        else:
            state.flat += 1
        schedule.epoch_end(sign * value)
        seconds = time.perf_counter() - t0
        record = {
            "event": "epoch", "epoch": state.epoch, "train_loss": loss, f"val_{metric}": value,
            "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
            "images_per_s": round(len(train) / seconds, 2), "best_epoch": state.best_epoch,
        }
        state.history.append(record)
        state.epoch += 1
        state.stopped = _should_stop(config, state, schedule)
        log.write(record)
        save_state(run_dir / LAST, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "run": vars(state), "rng": capture_rng(),
        })
        if callback:
            callback(record)
    return _score_best(model, test, task, metric, config, run_dir, device, precision, workers,
                       state, freeze, started, resumed_at)


def _should_stop(config: FinetuneConfig, state: _Run, schedule: LRSchedule) -> bool:
    """Early stopping after ``patience`` flat epochs, once ``min_epochs`` are done. With the
    plateau schedule and a ``min_lr`` floor (Matsoukas), stopping waits for the floor."""
    if config.patience is None or state.epoch < config.min_epochs:
        return False
    if state.flat < config.patience:
        return False
    return not (config.schedule == "plateau" and config.min_lr > 0 and not schedule.at_floor())


def _train_epoch(model, train, config, epoch, optimizer, schedule, scaler, loss_fn, device,
                 precision, workers, callback, *, multilabel: bool) -> float:
    loader = epoch_loader(train, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
                          shuffle=True, workers=workers, pin_memory=device.startswith("cuda"))
    total, count = 0.0, 0
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        y = y.float() if multilabel else y.long()
        with autocast(device, precision):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} at epoch {epoch}, step {step}; lower "
                "--lr, or use --precision fp32"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        total += loss.item() * len(x)
        count += len(x)
        if callback:
            callback({"event": "step", "epoch": epoch, "step": step, "loss": loss.item()})
    return total / max(count, 1)


def _score_best(model, test, task, metric, config, run_dir, device, precision, workers, state,
                freeze, started, resumed_at) -> FinetuneResult:
    if state.best_epoch < 0:
        raise TrainingError(f"no epoch finished in {str(run_dir)!r}; nothing to score")
    best = torch.load(run_dir / BEST, map_location="cpu", weights_only=True)
    model.load_state_dict(best)
    scores = predict(model, test, task=task, batch_size=max(config.batch_size, 64),
                     device=device, precision=precision, workers=workers)
    return FinetuneResult(
        run_dir=run_dir, best_epoch=state.best_epoch, best_val=state.best_val, metric=metric,
        epochs_run=state.epoch, stopped_early=state.epoch < config.max_epochs,
        test_scores=scores, test_metric=score_metric(metric, test.targets.numpy(), scores, task),
        best_sha256=state.best_sha256, seconds=time.perf_counter() - started,
        resumed_at=resumed_at, n_trainable=freeze.n_trainable, n_total=freeze.n_total,
        history=list(state.history),
    )
