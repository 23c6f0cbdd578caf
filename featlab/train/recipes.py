"""Finetuning recipes of the papers featlab reproduces, as plain settings.

- ``truong`` (DVME paper, Appendix B.2 = B.1's linear protocol): Adam lr 1e-3, lr x0.1 after 5
  epochs without val improvement, early stop after 10, at least 30 and at most 50 epochs,
  batch 64; DINO ViTs at lr 1e-4 and batch 16 (B.2: "since it has a different architecture").
  Augmentation (section 5): resize to 256 x 256, random crop, flip.
- ``matsoukas`` (Matsoukas et al., section 3 "Training procedure"): Adam, lr 1e-4 from
  pretrained weights or 1e-3 from random init (AdamW for random-init ViTs, their footnote 4),
  1,000 warm-up iterations, lr /10 when val saturates until 1e-6, resize to 256 x 256 then
  flips + colour jitter + random resized crops, the best val checkpoint.
- ``beit`` (BEiT on MedMNIST, section 4.2): the top 5 blocks, pooler and head trained, lr 3e-4,
  5 epochs, batch 32, weight decay 0.01 (section 5.1, BreastMNIST), with the Hugging Face
  Trainer they used: AdamW, linear decay, no weight decay on biases and LayerNorm weights.
- ``cass`` (CASS, section 4.3 and appendix C.6): all layers, Adam with cosine annealing from
  3e-4, at most 50 epochs, early stopping with patience 5 on the *validation loss* (C.6.2),
  class-distribution-normalised focal loss, the pretraining augmentations (C.6.1 -> C.5.2).

Settings the papers leave open are featlab's choices and say so in a comment.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from featlab.errors import InvalidArgumentError
from featlab.train.freeze import parse_unfreeze
from featlab.train.losses import CLASS_WEIGHTS, LOSSES
from featlab.train.schedule import SCHEDULES

RECIPES = ("truong", "matsoukas", "beit", "cass")
DEFAULT_RECIPE = "truong"
AUGMENTS = ("none", "crop-flip", "resize-crop-flip", "matsoukas", "cass")
OPTIMIZERS = ("adam", "adamw")
# What early stopping, the plateau schedule and the kept checkpoint follow: the dataset's val
# metric, or the val loss (CASS C.6.2: "a five epoch patience on validation loss").
MONITORS = ("metric", "loss")


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a finetune; recorded with the run and its result.

    Raises:
        InvalidArgumentError: A setting outside its range (the message names the field).
    """

    recipe: str = DEFAULT_RECIPE
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    max_epochs: int = 50
    min_epochs: int = 30
    patience: int | None = 10  # epochs without val improvement before stopping; None = never
    monitor: str = "metric"
    schedule: str = "plateau"
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    min_lr: float = 0.0
    warmup_steps: int = 0
    loss: str = "ce"
    focal_gamma: float = 2.0
    class_weights: str | None = None
    unfreeze: str = "all"
    augment: str = "resize-crop-flip"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("recipe", self.recipe in RECIPES, f"one of {RECIPES}"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("monitor", self.monitor in MONITORS, f"one of {MONITORS}"),
            ("schedule", self.schedule in SCHEDULES, f"one of {SCHEDULES}"),
            ("loss", self.loss in LOSSES, f"one of {LOSSES}"),
            ("class_weights", self.class_weights in CLASS_WEIGHTS, "None or 'balanced'"),
            ("augment", self.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("min_lr", self.min_lr >= 0, ">= 0"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("max_epochs", self.max_epochs >= 1, ">= 1"),
            ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
            ("patience", self.patience is None or self.patience >= 1, "None or >= 1"),
            ("plateau_patience", self.plateau_patience >= 1, ">= 1"),
            ("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InvalidArgumentError(
                    f"finetune setting {name} must be {expected}; got {getattr(self, name)!r}"
                )
        parse_unfreeze(self.unfreeze)
        if self.min_epochs > self.max_epochs:  # a shorter --epochs caps the minimum too
            object.__setattr__(self, "min_epochs", self.max_epochs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe_config(
    recipe: str = DEFAULT_RECIPE,
    *,
    pretrained: bool = True,
    dino: bool = False,
    vit: bool = False,
    **overrides: Any,
) -> FinetuneConfig:
    """The settings of ``recipe``, with the user's overrides (None values are ignored).

    Args:
        recipe: ``truong``, ``matsoukas``, ``beit`` or ``cass``.
        pretrained: The backbone starts from trained weights (Matsoukas: lr 1e-4, else 1e-3).
        dino: The backbone is a DINO ViT (Truong B.2: lr 1e-4, batch 16).
        vit: The backbone is a transformer (Matsoukas footnote 4: AdamW from random init).
        overrides: Any :class:`FinetuneConfig` field (``lr``, ``max_epochs``, ...).

    Raises:
        InvalidArgumentError: Unknown recipe or override, or an invalid value.
    """
    if recipe not in RECIPES:
        raise InvalidArgumentError(f"recipe must be one of {RECIPES}; got {recipe!r}")
    if recipe == "truong":
        base = FinetuneConfig(
            recipe=recipe, lr=1e-4 if dino else 1e-3, batch_size=16 if dino else 64,
            # The plateau and early stopping follow the val score, as B.1 states (section 5
            # speaks of the val loss; B.1 is the detailed protocol B.2 points to).
            monitor="metric",
            # Section 5: "resized into 256x256, then cropped and applied further flipping or
            # rotation depending on the nature of modality". featlab: a horizontal flip only,
            # the flip that is safe for every modality (the paper picks per dataset), and
            # the crop for every image (the paper skips resize + crop for images < 224 px).
            augment="resize-crop-flip",
        )
    elif recipe == "matsoukas":
        base = FinetuneConfig(
            recipe=recipe,
            optimizer="adamw" if vit and not pretrained else "adam",
            lr=1e-4 if pretrained else 1e-3,
            warmup_steps=1000,
            min_lr=1e-6,
            # Not in the paper: batch size, epochs and the plateau patience. featlab: 64,
            # at most 100 epochs, /10 after 5 flat epochs, stop after 10 flat epochs at 1e-6.
            batch_size=64,
            max_epochs=100,
            min_epochs=0,
            patience=10,
            augment="matsoukas",
        )
    elif recipe == "beit":
        base = FinetuneConfig(
            recipe=recipe, optimizer="adamw", lr=3e-4, weight_decay=0.01, batch_size=32,
            max_epochs=5, min_epochs=5, patience=None, schedule="linear", unfreeze="last:5",
            # Section 5: the Hugging Face processor only resizes and normalises; featlab's
            # eval transform (the extraction preprocessing) is the closest.
            augment="none",
        )
    else:
        base = FinetuneConfig(
            recipe=recipe, lr=3e-4, max_epochs=50, min_epochs=0, patience=5, monitor="loss",
            schedule="cosine", loss="focal", augment="cass",
            # C.6.2 anneals to no stated minimum (C.5.3's pretraining anneals to 1e-6);
            # featlab: to 0 over the at most 50 epochs.
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(FinetuneConfig.__dataclass_fields__))
    if unknown:
        raise InvalidArgumentError(
            f"unknown finetune setting(s) {unknown}; known: "
            f"{sorted(FinetuneConfig.__dataclass_fields__)}"
        )
    return replace(base, **given)
