"""The finetuning loop: a classifier (backbone + head) on a low-shot subset, resumable.

Every epoch: train with autocast (bf16 on AMX CPUs / CUDA, fp32 weights), score val with the
dataset's metric (and the val loss), keep the best checkpoint (``best.pt``, a flat timm state
dict that ``featlab extract --weights`` loads), write the whole state (``last.pt``: weights,
optimizer, schedule, scaler, epoch, best, history, RNG), then a run-log line.

Crash safety. An epoch's files are written in this order, each write atomic:

1. a new best to ``best.pt.next``;
2. ``last.pt``, which records the new best's epoch and sha256;
3. ``best.pt.next`` renamed to ``best.pt``;
4. the run-log line.

A kill before 2 leaves the previous ``last.pt``: the resume deletes ``best.pt.next`` and trains
that epoch again. A kill between 2 and 3 leaves a ``best.pt.next`` whose sha256 ``last.pt``
recorded: the resume finishes the rename. Run-log lines of epochs ``last.pt`` has not recorded
are dropped on resume and lines it recorded but the log misses are written back, so the log
holds each epoch once. Scoring checks that ``best.pt`` is the file ``last.pt`` recorded.

Resume is exact: each epoch's order and augmentations are seeded by (seed, epoch), and the RNG
state (dropout, stochastic depth) is restored from ``last.pt``. So a resumed run reproduces an
uninterrupted one bit for bit on the same hardware, software and thread count (other kernels
or thread counts reorder float sums and the runs drift apart).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featlab.errors import InvalidArgumentError, TrainingError
from featlab.eval.metrics import higher_is_better, score_metric
from featlab.train.checkpoint import (
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    save_weights,
    sha256_of,
)
from featlab.train.conv_guard import guard_single_pixel_convs
from featlab.train.data import TrainImages, epoch_loader
from featlab.train.freeze import apply_unfreeze
from featlab.train.layout import batch_to, input_layout, to_train_layout
from featlab.train.losses import make_loss
from featlab.train.precision import autocast, grad_scaler
from featlab.train.recipes import FinetuneConfig
from featlab.train.runlog import RunLog, read_runlog
from featlab.train.schedule import LRSchedule

BEST, LAST, LOG = "best.pt", "last.pt", "log.jsonl"
PENDING_BEST = "best.pt.next"  # a new best, until last.pt has recorded it
# Parameters of these layers get no weight decay (with biases), as the Hugging Face Trainer
# does for LayerNorm (BEiT recipe); featlab extends it to every normalisation layer.
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.LocalResponseNorm)


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
    """The mutable state of a run between epochs (saved in ``last.pt``)."""

    epoch: int = 0  # next epoch to train
    best_val: float = -math.inf  # the val metric of the best epoch
    best_epoch: int = -1
    best_sha256: str = ""
    best_score: float = -math.inf  # the monitored value of the best epoch, higher is better
    flat: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer param groups: trainable weights decayed, biases and norm parameters not.

    Returns:
        One or two groups (``{"params": [...], "weight_decay": wd}``); empty groups are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()  # a parameter shared by two modules goes into one group only
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, _NORMS) or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _optimizer(config: FinetuneConfig, model: nn.Module) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(weight_decay_groups(model, config.weight_decay), lr=config.lr)


def drops_trailing_one(n_train: int, batch_size: int) -> bool:
    """A trailing batch of a single sample is dropped: BatchNorm cannot train on one sample."""
    return n_train > batch_size and n_train % batch_size == 1


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps of one epoch (the trailing batch of one is not a step)."""
    if drops_trailing_one(n_train, batch_size):
        return n_train // batch_size
    return max(1, math.ceil(n_train / batch_size))


def _logits(
    model: nn.Module, data: TrainImages, *, batch_size: int, device: str, precision: str,
    workers: int,
) -> torch.Tensor:
    """``(n, C)`` float32 CPU logits of ``data`` in order (eval mode, no gradients)."""
    model.eval()
    out = []
    loader = epoch_loader(data, batch_size=batch_size, seed=0, epoch=0, shuffle=False,
                          workers=workers)
    layout = input_layout(model)
    with torch.inference_mode():
        for x, _ in loader:
            with autocast(device, precision):
                out.append(model(batch_to(x, device, layout)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def _probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    p = torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, dim=1)
    return p.numpy().astype(np.float32)


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
    logits = _logits(model, data, batch_size=batch_size, device=device, precision=precision,
                     workers=workers)
    return _probabilities(logits, task) if len(logits) else np.zeros((0, 0), np.float32)


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

    A trailing training batch of one sample is dropped each epoch (BatchNorm cannot train on
    it); the order is reshuffled per epoch, so a different sample sits out each time.

    Args:
        model: Backbone + fresh head, fp32, on the CPU (moved to ``device`` here).
        train, val, test: Images with targets (val/test with the eval transform);
            ``(n,)`` int class targets, or ``(n, L)`` 0/1/-1 for multilabel.
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        metric: The val/test metric (a name of :mod:`featlab.eval.metrics`).
        config: The recipe's settings (:func:`featlab.train.recipes.recipe_config`);
            ``config.monitor`` picks what the best checkpoint, early stopping and the plateau
            schedule follow (the val metric or the val loss).
        run_dir: Folder for ``best.pt``, ``last.pt`` and ``log.jsonl``; a ``last.pt`` there is
            resumed (see the module docstring for what a kill leaves and how it resumes).
        callback: Called with every epoch's record (and ``{"event": "step", ...}`` after each
            step); progress printing hooks in here.

    Returns:
        The :class:`FinetuneResult`; ``test_scores`` are ``best.pt``'s test probabilities.

    Raises:
        InvalidArgumentError: Fewer than 2 training samples.
        TrainingError: A non-finite loss, an unreadable ``last.pt``, or a ``best.pt`` that is
            not the file ``last.pt`` recorded.
    """
    if len(train) < 2:
        raise InvalidArgumentError(
            f"finetuning needs at least 2 training samples; got {len(train)}. Use more --shots "
            "or a larger --fraction"
        )
    run_dir = Path(run_dir)
    started = time.perf_counter()
    freeze = apply_unfreeze(model, config.unfreeze)
    model.to(device)
    to_train_layout(model)  # CNNs channels-last: faster convolutions
    guard_single_pixel_convs(model)  # a CPU bf16 kernel bug (featlab.train.conv_guard)
    optimizer = _optimizer(config, model)
    schedule = LRSchedule(
        optimizer, base_lr=config.lr, kind=config.schedule,
        total_steps=steps_per_epoch(len(train), config.batch_size) * config.max_epochs,
        warmup_steps=config.warmup_steps, min_lr=config.min_lr,
        patience=config.plateau_patience, factor=config.plateau_factor,
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
    _settle_pending_best(run_dir, state)
    _reconcile_log(run_dir / LOG, state)
    sign = 1.0 if higher_is_better(metric) else -1.0
    log = RunLog(run_dir / LOG)
    y_val = val.targets.numpy()
    y_val_loss = val.targets.float() if task == "multilabel" else val.targets.long()
    eval_batch = max(config.batch_size, 64)
    while not state.stopped and state.epoch < config.max_epochs:
        t0 = time.perf_counter()
        freeze.set_train_mode(model)
        loss, lr_used, n_seen = _train_epoch(
            model, train, config, state.epoch, optimizer, schedule, scaler, loss_fn, device,
            precision, workers, callback, multilabel=task == "multilabel",
        )
        train_seconds = time.perf_counter() - t0
        logits = _logits(model, val, batch_size=eval_batch, device=device, precision=precision,
                         workers=workers)
        value = score_metric(metric, y_val, _probabilities(logits, task), task)
        with torch.no_grad():
            val_loss = float(loss_fn(logits.to(device), y_val_loss.to(device)))
        score = -val_loss if config.monitor == "loss" else sign * value
        improved = state.best_epoch < 0 or score > state.best_score
        if improved:
            state.best_val, state.best_score = value, score
            state.best_epoch, state.flat = state.epoch, 0
            state.best_sha256 = save_weights(run_dir / PENDING_BEST, model)
        else:
            state.flat += 1
        schedule.epoch_end(score)
        record = {
            "event": "epoch", "epoch": state.epoch, "train_loss": loss, f"val_{metric}": value,
            "val_loss": val_loss, "lr": lr_used,
            "seconds": round(time.perf_counter() - t0, 3),
            "train_seconds": round(train_seconds, 3),
            "images_per_s": round(n_seen / max(train_seconds, 1e-9), 2),
            "best_epoch": state.best_epoch,
        }
        state.history.append(record)
        state.epoch += 1
        state.stopped = _should_stop(config, state, schedule)
        save_state(run_dir / LAST, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
            "run": vars(state), "rng": capture_rng(),
        })
        if improved:
            _promote_best(run_dir)
        log.write(record)
        if callback:
            callback(record)
    return _score_best(model, test, task, metric, config, run_dir, device, precision, workers,
                       state, freeze, started, resumed_at)


def _promote_best(run_dir: Path) -> None:
    """Step 3: the best ``last.pt`` has recorded becomes ``best.pt``."""
    os.replace(run_dir / PENDING_BEST, run_dir / BEST)


def _settle_pending_best(run_dir: Path, state: _Run) -> None:
    """Finish or undo the best-checkpoint write a kill interrupted (see the module docstring)."""
    for tmp in run_dir.glob(f".{PENDING_BEST}.*.tmp"):  # killed inside the atomic write
        tmp.unlink()
    pending = run_dir / PENDING_BEST
    if not pending.exists():
        return
    if state.best_sha256 and sha256_of(pending) == state.best_sha256:
        _promote_best(run_dir)  # last.pt recorded this best: finish the rename
    else:
        pending.unlink()  # its epoch is not in last.pt: it is trained again


def _reconcile_log(path: Path, state: _Run) -> None:
    """Make the run log hold exactly the epochs ``state`` has recorded, each once.

    Epoch lines at or after ``state.epoch`` (epochs ``last.pt`` does not hold, e.g. from a
    ``last.pt`` deleted by hand) and repeated epochs are dropped; recorded epochs the log misses
    (a kill between ``last.pt`` and the log line) are written back from the history.
    """
    records = read_runlog(path)
    kept: list[dict[str, Any]] = []
    seen: set[int] = set()
    for r in records:
        if r.get("event") == "epoch":
            epoch = int(r.get("epoch", -1))
            if epoch >= state.epoch or epoch in seen:
                continue
            seen.add(epoch)
        kept.append(r)
    now = round(time.time(), 3)
    missing = [{"time": now, **r} for r in state.history if r["epoch"] not in seen]
    if not missing and len(kept) == len(records) and _lines(path) == len(records):
        return
    # A kill loses at most the lines after the last one written, so the missing ones go last.
    lines = kept + sorted(missing, key=lambda r: r["epoch"])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    os.replace(tmp, path)


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    return len(path.read_text(encoding="utf-8").splitlines())


def _should_stop(config: FinetuneConfig, state: _Run, schedule: LRSchedule) -> bool:
    """Early stopping after ``patience`` flat epochs, once ``min_epochs`` are done. With the
    plateau schedule and a ``min_lr`` floor (Matsoukas), stopping waits for the floor."""
    if config.patience is None or state.epoch < config.min_epochs:
        return False
    if state.flat < config.patience:
        return False
    return not (config.schedule == "plateau" and config.min_lr > 0 and not schedule.at_floor())


def _train_epoch(model, train, config, epoch, optimizer, schedule, scaler, loss_fn, device,
                 precision, workers, callback, *, multilabel: bool) -> tuple[float, float, int]:
    """One epoch; returns (mean training loss, lr of the epoch's last step, images trained)."""
    loader = epoch_loader(train, batch_size=config.batch_size, seed=config.seed, epoch=epoch,
                          shuffle=True, workers=workers, pin_memory=device.startswith("cuda"),
                          drop_last=drops_trailing_one(len(train), config.batch_size))
    total, count, lr_used = 0.0, 0, optimizer.param_groups[0]["lr"]
    layout = input_layout(model)
    for step, (x, y) in enumerate(loader):
        x, y = batch_to(x, device, layout), y.to(device, non_blocking=True)
        y = y.float() if multilabel else y.long()
        lr_used = optimizer.param_groups[0]["lr"]
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
    return total / max(count, 1), lr_used, count


def _score_best(model, test, task, metric, config, run_dir, device, precision, workers, state,
                freeze, started, resumed_at) -> FinetuneResult:
    if state.best_epoch < 0:
        raise TrainingError(f"no epoch finished in {str(run_dir)!r}; nothing to score")
    path = run_dir / BEST
    if not path.is_file():
        raise TrainingError(
            f"{str(path)!r} is missing, but last.pt recorded a best checkpoint of epoch "
            f"{state.best_epoch + 1}; delete the run folder to train again"
        )
    sha = sha256_of(path)
    if sha != state.best_sha256:
        raise TrainingError(
            f"{str(path)!r} has sha256 {sha}, but last.pt recorded {state.best_sha256} (the "
            f"best of epoch {state.best_epoch + 1}): the file changed outside this run. Delete "
            "the run folder to train again"
        )
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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
