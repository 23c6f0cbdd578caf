"""Which parameters a finetune trains: all of them, or the last N blocks and the head.

``last:N`` follows the BEiT-on-MedMNIST recipe (section 4.2: the classifier head, the pooler and
the top 5 transformer layers are trained, the rest stays frozen). "The head" is every module the
model registers after its block container (ViT: final norm, fc_norm, head; ResNet: fc;
EfficientNet: conv_head, bn2, classifier), so the post-block norm trains with it.
Frozen batch-norm layers are kept in eval mode: frozen means neither the weights nor the
running statistics change.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from featlab.errors import InvalidArgumentError


@dataclass(frozen=True)
class FreezePlan:
    """The result of :func:`apply_unfreeze`: trained parameter names and the frozen BN layers."""

    spec: str
    trainable: tuple[str, ...]
    n_trainable: int
    n_total: int
    frozen_norms: tuple[nn.Module, ...]

    def set_train_mode(self, model: nn.Module) -> None:
        """``model.train()``, with the frozen batch norms kept in eval mode."""
        model.train()
        for m in self.frozen_norms:
            m.eval()


def _flatten(container: nn.Module) -> list[nn.Module]:
    out: list[nn.Module] = []
    for child in container.children():
        # EfficientNet/MobileNet: blocks = stages of blocks; Swin/ConvNeXt stages hold .blocks.
        if isinstance(child, nn.Sequential):
            out.extend(child.children())
        elif isinstance(getattr(child, "blocks", None), nn.Sequential):
            out.extend(child.blocks.children())
        else:
            out.append(child)
    return out


def block_list(model: nn.Module) -> tuple[list[nn.Module], str]:
    """The model's blocks in forward order, and the name of the child that holds the last one.

    Raises:
        InvalidArgumentError: The architecture's blocks cannot be found (use ``all``).
    """
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # ResNet family
        return [b for i in range(1, 5) for b in getattr(model, f"layer{i}").children()], "layer4"
    for name in ("blocks", "stages", "layers"):
        container = getattr(model, name, None)
        if isinstance(container, nn.Module) and len(list(container.children())):
            return _flatten(container), name
    raise InvalidArgumentError(
        f"cannot find the blocks of {type(model).__name__} (no blocks/stages/layers/layer1-4); "
        "finetune it with --unfreeze all"
    )


def parse_unfreeze(spec: str) -> int | None:
    """``all`` -> None; ``last:N`` -> N (0 = the head only).

    Raises:
        InvalidArgumentError: Anything else.
    """
    if spec == "all":
        return None
    head, _, count = spec.partition(":")
    if head == "last" and count.isdigit():
        return int(count)
    raise InvalidArgumentError(f"--unfreeze must be 'all' or 'last:N' (e.g. last:5); got {spec!r}")


def apply_unfreeze(model: nn.Module, spec: str = "all") -> FreezePlan:
    """Set ``requires_grad`` per ``spec`` and return what is trained.

    Raises:
        InvalidArgumentError: Bad spec, N larger than the number of blocks, or blocks not found.
    """
    n_last = parse_unfreeze(spec)
    params = dict(model.named_parameters())
    if n_last is None:
        for p in params.values():
            p.requires_grad_(True)
        return FreezePlan(spec, tuple(params), _count(params, params), _count(params, params), ())
    blocks, container = block_list(model)
    if n_last > len(blocks):
        raise InvalidArgumentError(
            f"--unfreeze {spec}: {type(model).__name__} has {len(blocks)} blocks; use at most "
            f"last:{len(blocks)} or all"
        )
    trained_modules = list(blocks[len(blocks) - n_last :])
    names = [n for n, _ in model.named_children()]
    trained_modules += [getattr(model, n) for n in names[names.index(container) + 1 :]]
    trained_ids = {id(p) for m in trained_modules for p in m.parameters()}
    for p in params.values():
        p.requires_grad_(id(p) in trained_ids)
    trained_norm_ids = {id(x) for m in trained_modules for x in m.modules()}
    frozen_norms = tuple(
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in trained_norm_ids
    )
    trainable = tuple(n for n, p in params.items() if p.requires_grad)
    return FreezePlan(
        spec, trainable, _count(params, trainable), _count(params, params), frozen_norms
    )


def _count(params: dict[str, nn.Parameter], names) -> int:
    return int(sum(params[n].numel() for n in names))
