"""The model zoo: named supervised and self-supervised backbones, as data.

Names are ``<method>-<arch>`` as users type them (DESIGN section 4). Each spec carries the timm
architecture, where the weights come from (a timm tag, an official URL, or local files only), the
checkpoint layout, and the preprocessing each model was evaluated with. Facts and URLs follow
``reference/model-zoo.md`` (section 1, master table; section 2 per family).
"""

from __future__ import annotations

from featlab.extractors.spec import ModelSpec

IN_MEAN = (0.485, 0.456, 0.406)
IN_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
FBAIPUBLIC = "https://dl.fbaipublicfiles.com"

ZOO: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a named spec; a taken name is an error, never a silent replacement."""
    if spec.name in ZOO:
        raise ValueError(f"model {spec.name!r} is already registered")
    ZOO[spec.name] = spec
    return spec


def _timm(name: str, arch: str, **kw: object) -> ModelSpec:
    """Weights through a timm tag (Hugging Face cache, HF_HUB_OFFLINE honoured)."""
    return register_model(ModelSpec(name=name, architecture=arch, **kw))  # type: ignore[arg-type]


def _url(name: str, arch: str, url: str, converter: str, **kw: object) -> ModelSpec:
    """Weights from an official URL into the torch hub cache, read with ``converter``.

    These repositories evaluate with torchvision's default (bilinear) Resize unless noted.
    """
    kw.setdefault("interpolation", "bilinear")
    return _timm(name, arch, weights_url=url, converter=converter, **kw)


def _local(name: str, arch: str, converter: str | None, **kw: object) -> ModelSpec:
    """No published weights: ``featlab pretrain`` or ``--weights`` provides them."""
    return _timm(name, arch, local_only=True, converter=converter, **kw)


# -- supervised ImageNet (model-zoo.md 2.1) ---------------------------------------------------
# torchvision V1: Resize 256 + CenterCrop 224, bilinear; V2 (torchvision DEFAULT): resize 232.
_timm("supervised-resnet50", "resnet50.tv_in1k", interpolation="bilinear")
_timm("supervised-resnet50-v2", "resnet50.tv2_in1k", interpolation="bilinear", crop_pct=0.965)
# DeiT eval: Resize(224 / 0.875, bicubic) + CenterCrop (facebookresearch/deit datasets.py).
_timm("supervised-deits16", "deit_small_patch16_224.fb_in1k")
_timm("supervised-deitb16", "deit_base_patch16_224.fb_in1k")
_timm(
    "supervised-vitb16",
    "vit_base_patch16_224.augreg2_in21k_ft_in1k",
    mean=HALF,
    std=HALF,
    crop_pct=0.9,
)
_timm("supervised-swint", "swin_tiny_patch4_window7_224.ms_in1k", crop_pct=0.9)
# BEiT: 0.5 mean/std; its embedding is the mean of patch tokens -> fc_norm (model-zoo.md 2.6).
_timm(
    "beit-large16",
    "beit_large_patch16_224.in22k_ft_in22k_in1k",
    mean=HALF,
    std=HALF,
    crop_pct=0.9,
    pool="model",
)

# -- DINO (2.2): eval Resize 256 bicubic + CenterCrop 224, IN-default; k-NN on the final CLS --
for _name, _arch in (
    ("dino-vits16", "vit_small_patch16_224.dino"),
    ("dino-vits8", "vit_small_patch8_224.dino"),
    ("dino-vitb16", "vit_base_patch16_224.dino"),
    ("dino-vitb8", "vit_base_patch8_224.dino"),
):
    _timm(_name, _arch, converter="dino")  # --weights may be an official DINO file
_url(
    "dino-resnet50",
    "resnet50",
    f"{FBAIPUBLIC}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
    "dino",
    interpolation="bicubic",
)

# -- SwAV (2.3): note the std (0.228, 0.224, 0.225), as in its pretraining and linear eval ----
_url(
    "swav-resnet50",
    "resnet50",
    f"{FBAIPUBLIC}/deepcluster/swav_800ep_pretrain.pth.tar",
    "swav",
    std=(0.228, 0.224, 0.225),
)

# -- MoCo v3 (2.8): ViT-S has 12 heads (timm's default is 6; 6 loads silently but is wrong) ---
_url(
    "mocov3-vits16",
    "vit_small_patch16_224",
    f"{FBAIPUBLIC}/moco-v3/vit-s-300ep/vit-s-300ep.pth.tar",
    "mocov3",
    model_kwargs={"num_heads": 12},
)
_url(
    "mocov3-resnet50", "resnet50", f"{FBAIPUBLIC}/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar", "mocov3"
)

# -- published only in other frameworks: converted files, given with --weights (2.4, 2.8) ----
# SimCLR was trained without mean/std normalisation: RGB in [0, 1].
_local("simclr-resnet50", "resnet50", "simclr_v1", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
_local(
    "simclrv2-resnet50",
    "resnet50",
    "simclr_v2",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    interpolation="bilinear",
)
_local("byol-resnet50", "resnet50", "byol")

# -- trained by featlab pretrain (BOLT, CASS); CASS used a plain 384x384 resize (2.5) ---------
_local("bolt-vitb16", "vit_base_patch16_224", None)
_local(
    "cass-resnet50", "resnet50", "cass", input_size=(3, 384, 384), crop_pct=1.0, crop_mode="squash"
)
_local(
    "cass-vitb16",
    "vit_base_patch16_384",
    "cass",
    input_size=(3, 384, 384),
    crop_pct=1.0,
    crop_mode="squash",
)
