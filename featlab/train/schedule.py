"""Learning-rate schedules of the finetuning recipes, stepped per iteration, resumable.

lr(step) = base lr x warm-up factor x schedule factor, where the warm-up rises linearly over
``warmup_steps`` iterations (Matsoukas et al.: 1,000) and the schedule is

- ``plateau``: x ``factor`` each time the val metric has not improved for ``patience`` epochs,
  clamped at ``min_lr`` (Matsoukas: /10 down to 1e-6; DVME B.1: x0.1 after 5 flat epochs);
- ``cosine``: cosine annealing from the base lr to ``min_lr`` over all iterations (CASS 4.3);
- ``linear``: linear decay to 0 (the Hugging Face Trainer default the BEiT recipe ran with);
- ``constant``.

The whole state is a handful of numbers, saved with every checkpoint.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from featlab.errors import InvalidArgumentError

SCHEDULES = ("plateau", "cosine", "linear", "constant")
# Relative tolerance of "the lr is at the floor": lr x 0.1 x 0.1 is not exactly the floor in
# floating point (1e-4 * 0.1 * 0.1 = 1.0000000000000002e-06 > 1e-6).
FLOOR_RTOL = 1e-9


class LRSchedule:
    """Sets the optimizer's lr every iteration; :meth:`epoch_end` feeds the plateau rule.

    Args:
        optimizer: Every param group gets the same lr.
        base_lr: The lr after warm-up (> 0).
        kind: One of :data:`SCHEDULES`.
        total_steps: Iterations of the whole run (cosine and linear decay over them).
        warmup_steps: Linear warm-up iterations (0: none).
        min_lr: Cosine end point; the plateau schedule's floor (0: no floor).
        patience: Plateau: flat epochs before a reduction.
        factor: Plateau: the lr multiplier of a reduction.

    Raises:
        InvalidArgumentError: Unknown ``kind``, ``base_lr <= 0`` or ``min_lr < 0``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        kind: str,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
        patience: int = 5,
        factor: float = 0.1,
    ) -> None:
        if kind not in SCHEDULES:
            raise InvalidArgumentError(f"schedule must be one of {SCHEDULES}; got {kind!r}")
        if not base_lr > 0 or min_lr < 0:
            raise InvalidArgumentError(
                f"the base lr must be > 0 and min_lr >= 0; got base_lr={base_lr}, min_lr={min_lr}"
            )
        self.optimizer, self.base_lr, self.kind = optimizer, float(base_lr), kind
        self.total_steps, self.warmup_steps = max(1, int(total_steps)), int(warmup_steps)
        self.min_lr, self.patience, self.factor = float(min_lr), int(patience), float(factor)
        self.step_count, self.scale, self.best, self.flat = 0, 1.0, -math.inf, 0
        self._apply()

    def lr(self) -> float:
        warm = min(1.0, (self.step_count + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        t = min(self.step_count / self.total_steps, 1.0)
        if self.kind == "cosine":
            lr = self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.kind == "linear":
            lr = self.base_lr * (1 - t)
        elif self.kind == "plateau":
            lr = max(self.base_lr * self.scale, min(self.min_lr, self.base_lr))
        else:
            lr = self.base_lr
        return lr * warm

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def step(self) -> None:
        """After an optimizer step: advance one iteration."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, metric: float) -> None:
        """The epoch's val metric (higher is better); reduces the lr on a plateau."""
        if metric > self.best:
            self.best, self.flat = metric, 0
            return
        self.flat += 1
        if self.kind == "plateau" and self.flat >= self.patience:
            # Clamped, so the last reduction lands on the floor exactly instead of one factor
            # below it (Matsoukas: "until it reached its final value of 1e-6").
            self.scale = max(self.scale * self.factor, self._floor_scale())
            self.flat = 0
            self._apply()

    def _floor_scale(self) -> float:
        """The smallest scale: ``min_lr / base_lr``, or 1 when the base lr is below the floor."""
        return min(1.0, self.min_lr / self.base_lr)

    def at_floor(self) -> bool:
        """The plateau schedule has reached ``min_lr`` (nothing left to reduce)."""
        return self.kind == "plateau" and self.scale <= self._floor_scale() * (1 + FLOOR_RTOL)

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "scale": self.scale, "best": self.best,
                "flat": self.flat}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count, self.scale = int(state["step_count"]), float(state["scale"])
        self.best, self.flat = float(state["best"]), int(state["flat"])
        self._apply()
