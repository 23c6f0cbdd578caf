"""CASS: cross-architecture self-supervision of a CNN and a ViT on the same view.

Singh et al., "CASS" (papers/cass-cross-architecture-ssl.txt), section 3.1 and Algorithm 1: each
image is augmented **once**; the CNN ``R`` and the Transformer ``T`` both see that view, and the
loss pulls their L2-normalised output logits together (equation 1). Collapse is avoided by the
two architectures themselves: no EMA, no predictor, no parameter sharing. Both arms are trained
with Adam (lr 1e-3) under a cosine schedule of at most 16 iterations down to 1e-6, with
stochastic weight averaging (SWA, Izmailov et al. 2018).

Protocol choices the paper leaves open (recorded in the trainer's ``describe()``):

- The cosine schedule runs over iterations with ``T_max = 16``, stepped after every batch, as the
  authors' notebook does (``CosineAnnealingLR(T_max=16, eta_min=1e-6)``, ``scheduler.step()`` per
  batch); the learning rate therefore cycles between 1e-3 and 1e-6 every 32 iterations.
- One Adam over both arms equals the notebook's two Adams with identical settings (Adam's update
  is per parameter), so one optimizer and one schedule are kept.
- SWA averages the weights at every minimum of that cycle (the cyclical-learning-rate form of
  SWA in Izmailov et al. 2018) from ``swa_start`` (a fraction of the epochs; the paper
  does not say when SWA starts). The CNN's BatchNorm statistics are recomputed for the averaged
  weights (``update_bn``) at the end of each epoch, so every checkpoint is usable as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from featlab.errors import InvalidArgumentError
from featlab.pretrain._amp import float32
from featlab.train.conv_guard import guard_single_pixel_convs
from featlab.train.layout import batch_to, input_layout, to_train_layout
from featlab.train.precision import autocast, grad_scaler

LR = 1e-3
T_MAX = 16
MIN_LR = 1e-6
SWA_START = 0.75


def cass_loss(r: torch.Tensor, t: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """CASS loss (equation 1): ``2 - 2 <F(R), F(T)>`` with ``F`` the L2 normalisation.

    Args:
        r: ``(B, C)`` outputs of the CNN arm.
        t: ``(B, C)`` outputs of the Transformer arm (same ``C``).
        eps: Lower bound of the norm, as in ``F(x) = x / max(||x||_2, eps)``.

    Returns:
        Scalar, the batch mean; 0 when the arms agree in direction, 4 when opposite.

    Raises:
        InvalidArgumentError: The two outputs differ in shape.
    """
    if r.shape != t.shape:
        raise InvalidArgumentError(
            f"CASS compares the two arms' outputs, which must have one shape; got CNN "
            f"{tuple(r.shape)} and ViT {tuple(t.shape)}. Give both arms the same number of "
            "output logits (num_classes)"
        )
    r = F.normalize(r.float(), dim=-1, eps=eps)
    t = F.normalize(t.float(), dim=-1, eps=eps)
    return (2 - 2 * (r * t).sum(dim=-1)).mean()


class CASSTrainer:
    """Trains a CNN and a ViT against each other (Algorithm 1), one batch at a time.

    Args:
        cnn: CNN arm with its logits head: ``(B, 3, H, W) -> (B, C)`` (a timm model).
        vit: Transformer arm with a logits head of the same ``C``.
        steps_per_epoch: Batches per epoch (for the SWA start).
        epochs: Total epochs of the run.
        lr: Adam learning rate, the schedule's maximum.
        t_max: Cosine half-period in iterations.
        min_lr: The schedule's minimum.
        swa_start: Fraction of the epochs after which SWA averaging starts (0..1).
        device: Where the arms train (they are moved there).
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast for the forward pass.

    Raises:
        InvalidArgumentError: A setting outside its range.
    """

    def __init__(
        self,
        cnn: nn.Module,
        vit: nn.Module,
        *,
        steps_per_epoch: int,
        epochs: int,
        lr: float = LR,
        t_max: int = T_MAX,
        min_lr: float = MIN_LR,
        swa_start: float = SWA_START,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        if not 0.0 <= swa_start <= 1.0:
            raise InvalidArgumentError(f"swa_start is a fraction of the epochs; got {swa_start}")
        if t_max < 1 or lr <= 0 or steps_per_epoch < 1 or epochs < 1:
            raise InvalidArgumentError(
                f"need t_max >= 1, lr > 0, steps_per_epoch >= 1 and epochs >= 1; got "
                f"t_max={t_max}, lr={lr}, steps_per_epoch={steps_per_epoch}, epochs={epochs}"
            )
        self.cnn, self.vit = to_train_layout(cnn.to(device)), vit.to(device)
        for arm in (self.cnn, self.vit):  # a CPU bf16 kernel bug (featlab.train.conv_guard)
            guard_single_pixel_convs(arm)
        self.cnn_layout = input_layout(self.cnn)  # channels-last: the CNN's convs are faster
        self.device, self.precision = device, precision
        self.t_max = t_max
        self.settings = {"lr": lr, "t_max": t_max, "min_lr": min_lr, "swa_start": swa_start}
        params = [*cnn.parameters(), *vit.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=t_max, eta_min=min_lr
        )
        self.scaler = grad_scaler(device, precision)
        self.swa_start_step = round(swa_start * epochs) * steps_per_epoch
        self.swa_cnn = AveragedModel(copy.deepcopy(cnn))
        self.swa_vit = AveragedModel(copy.deepcopy(vit))

    def train_step(self, images: torch.Tensor, *, epoch: int, step: int) -> dict[str, float]:
        """One optimisation step on a batch of views (Algorithm 1, steps 1-4).

        Args:
            images: ``(B, 3, H, W)`` float, normalised; both arms see the same view.
            epoch: Current epoch (unused; part of the trainer protocol).
            step: Global 0-based step index (decides the SWA updates).

        Returns:
            ``{"loss": value, "lr": learning rate used}``.
        """
        self.cnn.train()
        self.vit.train()
        x = images.to(self.device, non_blocking=True)
        lr = self.optimizer.param_groups[0]["lr"]
        with autocast(self.device, self.precision):
            r, t = self.cnn(batch_to(x, self.device, self.cnn_layout)), self.vit(x)
        with float32(self.device):
            loss = cass_loss(r, t)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if step >= self.swa_start_step and step % (2 * self.t_max) == self.t_max:
            # This step ran at the cycle's minimum learning rate (CosineAnnealingLR at
            # last_epoch = t_max): the point cyclical SWA averages.
            self.swa_cnn.update_parameters(self.cnn)
            self.swa_vit.update_parameters(self.vit)
        return {"loss": float(loss.detach()), "lr": float(lr)}

    @property
    def swa_active(self) -> bool:
        return int(self.swa_cnn.n_averaged) > 0

    def end_epoch(self, epoch: int, batches: Iterable[Any]) -> None:
        """Recompute BatchNorm statistics of the averaged arms over ``batches`` (once SWA runs).

        Averaged weights need their own BN statistics (one extra pass over the data, as
        Izmailov et al. 2018 prescribe); arms without BatchNorm are left untouched by ``update_bn``.
        """
        if not self.swa_active:
            return
        with autocast(self.device, self.precision):
            update_bn(batches, self.swa_cnn, device=torch.device(self.device))
            update_bn(batches, self.swa_vit, device=torch.device(self.device))

    def backbones(self) -> dict[str, nn.Module]:
        """The arms to save: SWA-averaged once averaging has started, else the trained ones."""
        if self.swa_active:
            return {"cnn": self.swa_cnn.module, "vit": self.swa_vit.module}
        return {"cnn": self.cnn, "vit": self.vit}

    def describe(self) -> dict[str, Any]:
        """Provenance for the manifest: settings and which weights are saved."""
        return {
            **self.settings,
            "schedule": "CosineAnnealingLR per iteration (authors' notebook)",
            "saved_weights": "swa" if self.swa_active else "trained (SWA not started)",
            "swa_averaged": int(self.swa_cnn.n_averaged),
            "swa_start_step": self.swa_start_step,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "cnn": self.cnn.state_dict(),
            "vit": self.vit.state_dict(),
            "swa_cnn": self.swa_cnn.state_dict(),
            "swa_vit": self.swa_vit.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cnn.load_state_dict(state["cnn"])
        self.vit.load_state_dict(state["vit"])
        self.swa_cnn.load_state_dict(state["swa_cnn"])
        self.swa_vit.load_state_dict(state["swa_vit"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
