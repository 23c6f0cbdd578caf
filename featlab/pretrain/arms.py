"""What a pretraining run saves of each network: the headless backbone, as a flat state dict.

Every method trains heads (CASS's logits layer, BYOL projectors and predictors, DINO heads) on
top of a timm backbone. Only the backbone is saved for extraction, with keys exactly as
``timm.create_model(arch, num_classes=0)`` has them, so it loads strictly with
``featlab extract --weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ArmRecord:
    """One saved backbone of a run, as the run manifest lists it.

    Attributes:
        name: The model name extraction uses (``cass-resnet50``, or ``timm:<arch>`` when the
            architecture is not the zoo default).
        role: ``cnn`` or ``vit`` (CASS), ``backbone`` (BOLT, DINO): the key of
            ``trainer.backbones()`` this arm is saved from.
        architecture: timm architecture name.
        file: File name inside the run folder (``cnn.pt``).
        spec: ``ModelSpec.to_dict()`` of the spec the arm was trained with.
    """

    name: str
    role: str
    architecture: str
    file: str
    spec: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "architecture": self.architecture,
            "file": self.file,
            "spec": self.spec,
        }


def headless_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state without its classifier: the keys of the same timm model with no head.

    The classifier is what timm's ``get_classifier()`` returns (``fc`` of a ResNet, ``head`` of a
    ViT); its tensors are recognised by identity, not by name, so any timm family works. A model
    built with ``num_classes=0`` (an ``Identity`` head) is returned whole.

    Returns:
        ``{key: tensor}`` detached, on the model's device (``save_weights`` moves it to the CPU).
    """
    state = model.state_dict(keep_vars=True)
    get = getattr(model, "get_classifier", None)
    classifier = get() if callable(get) else None
    if not isinstance(classifier, nn.Module):
        return {k: v.detach() for k, v in state.items()}
    head = {id(t) for t in classifier.state_dict(keep_vars=True).values()}
    return {k: v.detach() for k, v in state.items() if id(v) not in head}
