"""Finetuning losses: cross-entropy (optionally class-weighted) and the focal loss.

CASS (section 4.3) finetunes with a "class distribution normalised" focal loss (Lin et al.,
2017) against class imbalance, gamma = 2 (appendix C.6.2). C.6.2 describes the class weights as
"minimum-maximum normalized class distribution", which taken literally gives the rarest class
weight 0; featlab's choice is the inverse frequency instead: class c is weighted by
alpha_c = (1 / n_c) normalised to mean 1 over the classes present. Multi-label tasks use
per-label sigmoid losses (BCE, or focal per label with alpha from each label's positive rate).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featlab.errors import InvalidArgumentError

LOSSES = ("ce", "focal")
CLASS_WEIGHTS = (None, "balanced")


def inverse_frequency(targets: np.ndarray, n_classes: int) -> torch.Tensor:
    """``(C,)`` float32 weights ``(1 / n_c)`` normalised to mean 1 over classes present.

    Multi-label ``(n, L)`` targets: each label's weight from its positive count. A class absent
    from the training subset gets weight 0 (nothing to weight).
    """
    targets = np.asarray(targets)
    if targets.ndim == 2:
        counts = (targets == 1).sum(axis=0).astype(np.float64)
    else:
        counts = np.bincount(targets.astype(np.int64), minlength=n_classes).astype(np.float64)
    inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    present = inv > 0
    inv[present] /= inv[present].mean()
    return torch.tensor(inv, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss ``-alpha_y (1 - p_y)^gamma log p_y`` averaged over the batch.

    Args:
        gamma: Focusing parameter (0 gives weighted cross-entropy).
        alpha: ``(C,)`` class weights, or None.
        multilabel: Per-label sigmoid focal loss on ``(b, L)`` 0/1 targets.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: torch.Tensor | None = None, multilabel: bool = False
    ) -> None:
        super().__init__()
        self.gamma, self.multilabel = float(gamma), multilabel
        self.register_buffer("alpha", alpha if alpha is not None else torch.empty(0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            t = target.float()
            known = t >= 0  # -1 = label unknown for this sample: no loss
            logp = -F.binary_cross_entropy_with_logits(logits, t.clamp(min=0), reduction="none")
            loss = -((1 - logp.exp()) ** self.gamma) * logp
            if self.alpha.numel():
                loss = loss * torch.where(t > 0, self.alpha, torch.ones_like(self.alpha))
            return _known_mean(loss, known)
        logp = F.log_softmax(logits, dim=1).gather(1, target.long()[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.alpha.numel():
            loss = loss * self.alpha[target.long()]
        return loss.mean()


def make_loss(
    kind: str,
    task: str,
    train_targets: np.ndarray,
    n_classes: int,
    *,
    class_weights: str | None = None,
    gamma: float = 2.0,
) -> nn.Module:
    """The loss of a finetune.

    Args:
        kind: ``ce`` or ``focal`` (focal is always class-distribution normalised, as in CASS).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        train_targets: The training subset's targets (for the class weights).
        n_classes: Output size.
        class_weights: ``balanced`` weights cross-entropy by inverse class frequency.

    Raises:
        InvalidArgumentError: Unknown loss or class-weights option.
    """
    if kind not in LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOSSES}; got {kind!r}")
    if class_weights not in CLASS_WEIGHTS:
        raise InvalidArgumentError(
            f"class weights must be None or 'balanced'; got {class_weights!r}"
        )
    multilabel = task == "multilabel"
    if kind == "focal":
        return FocalLoss(gamma, inverse_frequency(train_targets, n_classes), multilabel)
    weight = inverse_frequency(train_targets, n_classes) if class_weights else None
    if multilabel:
        return _MultilabelBCE(weight)
    return nn.CrossEntropyLoss(weight=weight)


class _MultilabelBCE(nn.Module):
    """Per-label BCE; ``balanced`` up-weights each label's positives by its inverse rate."""

    def __init__(self, weight: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight if weight is not None else torch.empty(0))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.float()
        known = t >= 0  # -1 = label unknown for this sample: no loss
        loss = F.binary_cross_entropy_with_logits(logits.float(), t.clamp(min=0), reduction="none")
        if self.weight.numel():
            loss = loss * torch.where(t > 0, self.weight, torch.ones_like(self.weight))
        return _known_mean(loss, known)


def _known_mean(loss: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    return (loss * known).sum() / known.sum().clamp(min=1)
