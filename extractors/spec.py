"""ModelSpec: everything needed to rebuild a backbone and its preprocessing, as plain data.

A spec is serialised into the store with every embedding, so the same spec always rebuilds the
same model and transform. Weights carry their preprocessing: size, resize/crop, interpolation and
mean/std come from timm's pretrained config (or an explicit override), never from a loop.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from featlab.errors import UnknownModelError

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelSpec:
    """A backbone as data.

    Attributes:
        name: The name embeddings are stored under (``timm:resnet50``).
        architecture: timm model name, optionally with a pretrained tag (``resnet50.a1_in1k``).
        pretrained: Load timm's published weights for ``architecture`` (False: random init,
            seeded, or the weights given separately with ``--weights``).
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
        input_size: ``(C, H, W)`` the model sees.
        interpolation: Resize interpolation (``bicubic``, ``bilinear``, ...).
        crop_pct: Resize to ``size / crop_pct`` then centre-crop ``size`` (timm's eval transform).
        crop_mode: ``center`` or ``squash`` (timm semantics).
        mean: Per-channel normalisation mean (0..1 scale).
        std: Per-channel normalisation std.
        pool: Embedding: ``cls`` (ViT CLS token after the final norm) or the CNN's global pool
            (``avg``); ``auto`` picks ``cls`` for models with a class token, else the model's own
            global pool, and is stored resolved.
        converter: How a checkpoint file of this model is laid out (a name in
            :data:`featlab.extractors.converters.CONVERTERS`, e.g. ``dino``); ``None`` for a plain
            timm/torchvision state dict.
        weights_url: The official weights file (fetched into the torch hub cache) when timm does
            not host them; ``None`` means timm's own tag (``pretrained``) or no published weights.
        local_only: No weights are published (BOLT, CASS, converted SimCLR/BYOL files): they come
            from ``featlab pretrain`` or ``--weights``.
    """

    name: str
    architecture: str
    pretrained: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pool: str = "auto"
    converter: str | None = None
    weights_url: str | None = None
    local_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"], d["mean"], d["std"] = (
            list(self.input_size),
            list(self.mean),
            list(self.std),
        )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            **{
                **d,
                "input_size": tuple(d["input_size"]),
                "mean": tuple(d["mean"]),
                "std": tuple(d["std"]),
                "model_kwargs": dict(d.get("model_kwargs", {})),
            }
        )


def spec_from_timm(name: str, *, pretrained: bool = True, img_size: int | None = None) -> ModelSpec:
    """Build the spec of ``timm:<architecture[.tag]>`` from timm's pretrained config.

    Args:
        name: ``timm:<arch>`` or a bare timm architecture name.
        pretrained: Use timm's published weights (else random init).
        img_size: Override the input resolution (square); ViTs are built for it.

    Raises:
        UnknownModelError: timm does not know the architecture (close names are suggested).
    """
    import timm

    arch = name.removeprefix(TIMM_PREFIX)
    base = arch.split(".", 1)[0]
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Close timm names: {close}." if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}: timm {timm.__version__} has no architecture {base!r}.{hint}"
            " List them with `python -c \"import timm; print(timm.list_models('*vit*'))\"`."
        )
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError as err:
        raise UnknownModelError(f"unknown model {name!r}: {err}") from err
    kwargs: dict[str, Any] = {}
    input_size = tuple(cfg.input_size) if cfg is not None else (3, 224, 224)
    if img_size is not None:
        input_size = (input_size[0], img_size, img_size)
        kwargs["img_size"] = img_size  # dropped for architectures that are size-agnostic
    return ModelSpec(
        name=f"{TIMM_PREFIX}{arch}",
        architecture=arch,
        pretrained=pretrained,
        model_kwargs=kwargs,
        input_size=input_size,  # type: ignore[arg-type]
        interpolation=cfg.interpolation if cfg is not None else "bicubic",
        crop_pct=float(cfg.crop_pct) if cfg is not None else 0.875,
        crop_mode=cfg.crop_mode if cfg is not None else "center",
        mean=tuple(cfg.mean) if cfg is not None else ModelSpec.mean,  # type: ignore[arg-type]
        std=tuple(cfg.std) if cfg is not None else ModelSpec.std,  # type: ignore[arg-type]
        pool="auto",
    )


def with_pool(spec: ModelSpec, pool: str) -> ModelSpec:
    return replace(spec, pool=pool)


def resolve_spec(name: str, *, pretrained: bool = True, img_size: int | None = None) -> ModelSpec:
    """Resolve a model name as users type it: a zoo name (``dino-vits8``) or ``timm:<name>``.

    Args:
        name: The model name, without a ``:view`` suffix.
        pretrained: Load the published weights (False: seeded random init).
        img_size: Square input size overriding the model's.

    Raises:
        UnknownModelError: For unknown names (close zoo names are suggested).
    """
    from featlab.extractors.zoo import ZOO

    if name.startswith(TIMM_PREFIX):
        return spec_from_timm(name, pretrained=pretrained, img_size=img_size)
    if name in ZOO:
        spec = replace(ZOO[name], pretrained=pretrained and ZOO[name].pretrained)
        if img_size is not None:
            spec = replace(
                spec,
                input_size=(spec.input_size[0], img_size, img_size),
                model_kwargs={**spec.model_kwargs, "img_size": img_size},
            )
        return spec
    close = difflib.get_close_matches(name, list(ZOO), n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Use a zoo name (`featlab models` lists them) or "
        "timm:<architecture>, e.g. timm:resnet50"
    )
