"""DINO in-domain pretraining from ImageNet weights, with the medical-imaging settings.

Matsoukas et al. (papers/pretrained-vits-medical-knn-finetune.txt, section 3, "Training
procedure") start from ImageNet weights and run DINO (Caron et al. 2021) on the target data with
its default settings except three: base learning rate 1e-4, weight decay 1e-5 rising to 1e-4 on a
cosine, and a teacher EMA of 0.99. DINO's defaults fill in the rest (main_dino.py): AdamW with the
learning rate scaled by B/256, a 10-epoch linear warm-up then cosine decay to 1e-6, no weight
decay on biases and norms, the teacher momentum raised from its base to 1 on a cosine, multi-crop
(2 global + 8 local crops), a 65536-d weight-normalised head with its last layer frozen for the
first epoch, teacher temperature 0.04, student 0.1, centre momentum 0.9, per-parameter gradient
clipping at 3.0 and stochastic depth 0.1 in the student.

The heads, loss, momentum update and schedules are lightly's (``DINOProjectionHead``,
``DINOLoss``, ``update_momentum``, ``cosine_schedule``/``cosine_warmup_schedule``). One choice of
featlab's: runs shorter than 20 epochs warm up over their first half instead of 10 epochs (so the
learning rate still decays); ``describe()`` records the warm-up used.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from torch import nn

from featlab.errors import InvalidArgumentError
from featlab.pretrain._amp import float32
from featlab.train.conv_guard import guard_single_pixel_convs
from featlab.train.layout import batch_to, input_layout, to_train_layout
from featlab.train.precision import autocast, grad_scaler

BASE_LR = 1e-4  # Matsoukas et al., change (1); per 256 images (DINO's linear scaling rule)
WEIGHT_DECAY = 1e-5  # change (2): 1e-5 rising to 1e-4 on a cosine
WEIGHT_DECAY_END = 1e-4
MOMENTUM = 0.99  # change (3): teacher EMA
MIN_LR = 1e-6
WARMUP_EPOCHS = 10
OUT_DIM = 65536
N_GLOBAL = 2


def param_groups(modules: Sequence[nn.Module]) -> list[dict[str, Any]]:
    """DINO's AdamW groups: weights decayed; biases and 1-d parameters (norms) not."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_gradients(modules: Sequence[nn.Module], clip: float) -> None:
    """Clip each parameter's gradient norm to ``clip`` on its own (DINO's ``clip_gradients``)."""
    for module in modules:
        for p in module.parameters():
            if p.grad is not None:
                torch.nn.utils.clip_grad_norm_(p, clip)


def dino_head(dim: int, out_dim: int, hidden_dim: int, bottleneck_dim: int) -> nn.Module:
    """lightly's DINO head (3-layer MLP, L2 norm, weight-normalised last layer, frozen epoch 1)."""
    with warnings.catch_warnings():
        # lightly builds the last layer with torch's older weight_norm API, which warns.
        warnings.simplefilter("ignore", FutureWarning)
        return DINOProjectionHead(
            dim, hidden_dim, bottleneck_dim, out_dim, batch_norm=False, freeze_last_layer=1
        )


class DINOTrainer:
    """Student and EMA teacher trained on multi-crop views (DINO), one batch at a time.

    Args:
        student: Headless backbone ``(B, 3, H, W) -> (B, D)`` (a timm model with
            ``num_classes=0``); ViTs must accept the local crops' size (``dynamic_img_size``).
        teacher: The same architecture without stochastic depth; its weights are replaced by
            the student's. ``None`` deep-copies the student.
        steps_per_epoch: Batches per epoch.
        epochs: Total epochs.
        batch_size: Images per batch (scales the learning rate).
        lr: Base learning rate per 256 images.
        min_lr: Final learning rate.
        weight_decay: Initial weight decay.
        weight_decay_end: Final weight decay.
        momentum: Base teacher EMA, raised to 1 on a cosine.
        warmup_epochs: Linear learning-rate warm-up.
        out_dim: Head output size ``K``.
        hidden_dim: Head hidden size.
        bottleneck_dim: Head bottleneck size.
        teacher_temp: Teacher softmax temperature.
        student_temp: Student softmax temperature.
        clip_grad: Per-parameter gradient norm limit (0 disables).
        device: Where to train.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        steps_per_epoch: int,
        epochs: int,
        batch_size: int,
        lr: float = BASE_LR,
        min_lr: float = MIN_LR,
        weight_decay: float = WEIGHT_DECAY,
        weight_decay_end: float = WEIGHT_DECAY_END,
        momentum: float = MOMENTUM,
        warmup_epochs: int = WARMUP_EPOCHS,
        out_dim: int = OUT_DIM,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        clip_grad: float = 3.0,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise InvalidArgumentError(f"momentum is an EMA decay in [0, 1]; got {momentum}")
        dim = int(student.num_features)
        self.device, self.precision = device, precision
        self.student = to_train_layout(student.to(device))  # CNNs channels-last
        self.teacher = to_train_layout(
            (teacher if teacher is not None else copy.deepcopy(student)).to(device)
        )
        self.layout = input_layout(self.student)
        for net in (self.student, self.teacher):  # a CPU bf16 kernel bug (train.conv_guard)
            guard_single_pixel_convs(net)
        self.teacher.load_state_dict(self.student.state_dict())
        self.student_head = dino_head(dim, out_dim, hidden_dim, bottleneck_dim).to(device)
        self.teacher_head = dino_head(dim, out_dim, hidden_dim, bottleneck_dim).to(device)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(out_dim, teacher_temp=teacher_temp, student_temp=student_temp)
        self.criterion.to(device)
        self.teacher_temp, self.clip_grad = teacher_temp, clip_grad
        self.total_steps = steps_per_epoch * epochs
        warmup = min(warmup_epochs, epochs // 2)
        self.warmup_steps = warmup * steps_per_epoch
        self.peak_lr = lr * batch_size / 256
        self.min_lr, self.momentum = min_lr, momentum
        self.wd = (weight_decay, weight_decay_end)
        self.settings = {
            "base_lr": lr,
            "peak_lr": self.peak_lr,
            "min_lr": min_lr,
            "weight_decay": [weight_decay, weight_decay_end],
            "momentum": momentum,
            "warmup_epochs": warmup,
            "out_dim": out_dim,
            "teacher_temp": teacher_temp,
            "student_temp": student_temp,
            "clip_grad": clip_grad,
        }
        groups = param_groups([self.student, self.student_head])
        self.optimizer = torch.optim.AdamW(groups, lr=self.peak_lr)
        self.scaler = grad_scaler(device, precision)

    def _schedules(self, step: int) -> tuple[float, float, float]:
        total = max(self.total_steps, 1)
        lr = cosine_warmup_schedule(
            step, total, self.peak_lr, self.min_lr, min(self.warmup_steps, total), 0.0
        )
        wd = cosine_schedule(step, total, self.wd[0], self.wd[1])
        return lr, wd, cosine_schedule(step, total, self.momentum, 1.0)

    def losses(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        """DINO's cross-entropy: teacher on the global crops, student on every crop."""
        if len(views) < N_GLOBAL:
            raise InvalidArgumentError(f"DINO needs 2 global crops (+ local); got {len(views)}")
        views = [batch_to(v, self.device, self.layout) for v in views]
        globals_, locals_ = torch.cat(views[:N_GLOBAL]), views[N_GLOBAL:]
        with torch.no_grad():
            teacher_out = self.teacher_head(self.teacher(globals_)).float().chunk(N_GLOBAL)
        student_out = list(self.student_head(self.student(globals_)).float().chunk(N_GLOBAL))
        if locals_:
            local_out = self.student_head(self.student(torch.cat(locals_))).float()
            student_out += list(local_out.chunk(len(locals_)))
        with float32(self.device):
            return self.criterion(list(teacher_out), student_out, teacher_temp=self.teacher_temp)

    def train_step(
        self, views: Sequence[torch.Tensor], *, epoch: int, step: int
    ) -> dict[str, float]:
        """One step over crops ``[global_0, global_1, local_0, ...]``, each ``(B, 3, h, w)``."""
        self.student.train()
        self.student_head.train()
        self.teacher.train()  # DINO's teacher normalises with batch statistics (CNNs)
        lr, wd, momentum = self._schedules(step)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = lr
            if i == 0:  # only the decayed group follows the weight-decay schedule
                group["weight_decay"] = wd
        with autocast(self.device, self.precision):
            loss = self.losses(views)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad:
            self.scaler.unscale_(self.optimizer)
            clip_gradients([self.student, self.student_head], self.clip_grad)
        self.student_head.cancel_last_layer_gradients(epoch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        update_momentum(self.student, self.teacher, m=momentum)
        update_momentum(self.student_head, self.teacher_head, m=momentum)
        return {"loss": float(loss.detach()), "lr": lr, "weight_decay": wd, "momentum": momentum}

    def end_epoch(self, epoch: int, batches: Iterable[Any]) -> None:
        """Nothing to do at an epoch's end (the trainer protocol's hook)."""

    def backbones(self) -> dict[str, nn.Module]:
        """The teacher backbone, which DINO evaluates and releases."""
        return {"backbone": self.teacher}

    def describe(self) -> dict[str, Any]:
        return {**self.settings, "saved_weights": "teacher backbone"}

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in _DINO_PARTS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in _DINO_PARTS:
            getattr(self, name).load_state_dict(state[name])


_DINO_PARTS = (
    "student",
    "student_head",
    "teacher",
    "teacher_head",
    "criterion",
    "optimizer",
    "scaler",
)
