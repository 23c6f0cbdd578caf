"""``featlab pretrain``: build the networks from timm names, load the images, run the loop.

The method cores (``featlab.pretrain.cass``, ``.bolt``, ``.dino``) take modules and tensors;
this job turns names into them: timm architectures through the model zoo's specs, initial
weights (``imagenet``: timm's published weights by the same route ``build_backbone`` takes;
``random``: seeded; a path: a checkpoint loaded strictly), the dataset (labels ignored) and the
method's views. The run folder's manifest lists every saved arm with the spec it was trained
with, so ``featlab extract --model cass-resnet50@runs/NAME`` finds it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featlab.datasets import SampleTable, load_dataset
from featlab.errors import InvalidArgumentError, WeightsError
from featlab.extractors.backbone import _classifier_prefixes, _create, timm_pretrained_model
from featlab.extractors.converters import load_converted
from featlab.extractors.device import Runtime, resolve_runtime
from featlab.extractors.engine import default_workers, select_rows
from featlab.extractors.runs import is_run_reference, resolve_run_model
from featlab.extractors.spec import TIMM_PREFIX, ModelSpec, resolve_spec, spec_from_timm
from featlab.extractors.weights import load_backbone_state, sha256_file
from featlab.extractors.zoo import IN_MEAN, IN_STD, ZOO
from featlab.pretrain.arms import ArmRecord
from featlab.pretrain.loop import PretrainSummary, run_pretraining, steps_per_epoch
from featlab.train.data import TrainImages
from featlab.train.run_dir import MANIFEST, prepare_run_dir, read_manifest

METHODS = ("cass", "bolt", "dino")
INITS = ("imagenet", "random")
CASS_LOGITS = 1000  # the authors' arms compare their 1000 ImageNet logits (model-zoo.md 2.5)
DINO_DROP_PATH = 0.1  # DINO's student stochastic depth

# Per method: default architectures, input size, batch size and epochs, from the papers
# (CASS section 4 and C.5: R50 + ViT-B/16 at 384, batch 16, 100 epochs; BOLT: ViT-B/16 at 224;
# Matsoukas et al.: DINO on DeiT-S, 300 epochs, batch 256). BOLT's paper gives neither epochs
# nor batch size: featlab uses CASS's budget of 100 epochs, with batch 64.
DEFAULTS: dict[str, dict[str, Any]] = {
    "cass": {
        "cnn": "resnet50",
        "vit": "vit_base_patch16_384",
        "img_size": 384,
        "batch": 16,
        "epochs": 100,
    },
    "bolt": {"arch": "vit_base_patch16_224", "img_size": 224, "batch": 64, "epochs": 100},
    "dino": {"arch": "deit_small_patch16_224", "img_size": 224, "batch": 256, "epochs": 300},
}
# The zoo names featlab pretrain produces, by (method, role); used when the arm's architecture
# is the zoo entry's, otherwise the arm is named timm:<arch>.
ZOO_NAMES = {
    ("cass", "cnn"): "cass-resnet50",
    ("cass", "vit"): "cass-vitb16",
    ("bolt", "backbone"): "bolt-vitb16",
}


@dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain` did.

    ``status`` is ``trained`` (a new run), ``resumed`` (continued a run folder) or ``complete``
    (the folder already held the finished run; nothing trained). ``models`` are the manifest's
    entries (name, role, architecture, file, sha256, spec).
    """

    method: str
    dataset: str
    run_dir: str
    status: str
    epochs: int
    start_epoch: int
    epochs_done: int
    n_images: int
    seconds: float
    images_per_s: float
    device: str
    precision: str
    kernels: str
    losses: dict[str, float] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- names and specs -----------------------------------------------------------------------------


def _arch(name: str) -> str:
    return name.removeprefix(TIMM_PREFIX)


def arm_name(method: str, role: str, arch: str) -> str:
    """The name extraction knows the arm by: the zoo name for the default architecture."""
    zoo = ZOO_NAMES.get((method, role))
    return zoo if zoo is not None and ZOO[zoo].architecture == arch else f"{TIMM_PREFIX}{arch}"


def arm_spec(method: str, name: str, arch: str, img_size: int) -> ModelSpec:
    """The spec an arm is trained with and extracted by (its preprocessing = training's)."""
    if name.startswith(TIMM_PREFIX):
        spec = spec_from_timm(arch, pretrained=False, img_size=img_size)
    else:
        spec = replace(resolve_spec(name, pretrained=False, img_size=img_size), converter=None)
    if method == "cass":  # one plain bilinear resize, ImageNet mean/std (appendix C.5.2)
        return replace(
            spec,
            mean=IN_MEAN,
            std=IN_STD,
            interpolation="bilinear",
            crop_pct=1.0,
            crop_mode="squash",
        )
    if method == "bolt":  # trained on plain resizes of the whole image
        return replace(spec, crop_pct=1.0, crop_mode="squash")
    return spec  # DINO: trained on crops, evaluated with the architecture's centre crop


# -- models and their initial weights ----------------------------------------------------------


def _create_with(spec: ModelSpec, *, extra: dict[str, Any], **kw: Any) -> nn.Module:
    """``_create`` with training-only kwargs (``dynamic_img_size``...) the model may not take."""
    try:
        return _create(spec, **kw, **extra)
    except TypeError as err:
        unknown = [k for k in extra if k in str(err)]
        if not unknown:
            raise
        return _create_with(spec, extra={k: v for k, v in extra.items() if k not in unknown}, **kw)


def _file_model(
    spec: ModelSpec, path: Path, extra: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    model = _create_with(spec, extra=extra, pretrained=False, num_classes=0)
    state = load_converted(path, None)
    dropped = load_backbone_state(
        model, state, source=str(path), classifier_prefixes=_classifier_prefixes(model)
    )
    info = {"source": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}
    return model, {**info, "classifier": {k: state[k] for k in dropped}}


def _load_head(model: nn.Module, classifier: dict[str, torch.Tensor]) -> bool:
    """Load a checkpoint's classifier into the model's new head when the shapes match."""
    head = model.get_classifier()
    own = head.state_dict()
    for prefix in {k.rsplit(".", 1)[0] + "." for k in classifier}:
        sub = {k[len(prefix) :]: v for k, v in classifier.items() if k.startswith(prefix)}
        if sub.keys() == own.keys() and all(sub[k].shape == own[k].shape for k in own):
            head.load_state_dict(sub)
            return True
    return False


def build_model(
    spec: ModelSpec,
    init: str,
    *,
    seed: int,
    num_classes: int = 0,
    extra: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A trainable timm model of ``spec`` with ``init`` weights and a ``num_classes`` head.

    Args:
        spec: The arm's spec (architecture, kwargs such as ``img_size``).
        init: ``imagenet`` (timm's published weights), ``random`` (seeded) or a checkpoint path
            (every backbone key must load).
        seed: Seed of random init and of any new head.
        num_classes: 0 for a headless backbone; else a logits head of that size (ImageNet's own
            head when ``init`` provides one of that size).
        extra: Training-only ``timm.create_model`` kwargs (dropped when the model has no such
            argument, e.g. ``dynamic_img_size`` for a CNN).

    Returns:
        The model (train mode, CPU) and where its weights came from.

    Raises:
        WeightsError: Weights not available offline, or a checkpoint that does not fit.
    """
    extra = dict(extra or {})
    torch.manual_seed(seed)  # random init and new heads are reproducible
    if init == "random":
        model = _create_with(spec, extra=extra, pretrained=False, num_classes=num_classes)
        return model, {"source": "random-init", "seed": seed}
    if init == "imagenet":
        try:
            model, info = timm_pretrained_model(spec, partial(_create_with, extra=extra))
        except WeightsError as err:  # extraction's advice names --weights; pretraining's is --init
            raise WeightsError(
                f"{err} (featlab pretrain: give the file with --init PATH, or --init random)"
            ) from err
        if model.num_classes != num_classes:
            model.reset_classifier(num_classes)
            info["head"] = "new" if num_classes else "removed"
        return model.train(), info
    model, info = _file_model(spec, Path(init).expanduser(), extra)
    classifier = info.pop("classifier")
    if num_classes:
        model.reset_classifier(num_classes)
        info["head"] = "from file" if _load_head(model, classifier) else "new"
    return model.train(), info


def _init_path(init: str) -> str:
    """A checkpoint path, or ``NAME@RUN_DIR`` (a featlab run's checkpoint) resolved to its file."""
    return str(resolve_run_model(init).weights) if is_run_reference(init) else init


def _inits(method: str, init: str) -> dict[str, str]:
    """``init`` per role: one value for BOLT/DINO; CASS takes ``CNN_PATH,VIT_PATH`` for files."""
    if init in INITS:
        return {"cnn": init, "vit": init, "backbone": init}
    paths = [p.strip() for p in init.split(",")] if method == "cass" else [init]
    paths = [_init_path(p) for p in paths]
    if method == "cass" and len(paths) != 2:
        raise InvalidArgumentError(
            f"CASS trains two arms: give --init imagenet, random or CNN_PATH,VIT_PATH; got {init!r}"
        )
    missing = [p for p in paths if not Path(p).expanduser().is_file()]
    if missing:
        raise InvalidArgumentError(
            f"--init is imagenet, random or a checkpoint file; {missing} do(es) not exist"
        )
    if method == "cass":
        return {"cnn": paths[0], "vit": paths[1]}
    return {"backbone": paths[0]}


# -- the job -------------------------------------------------------------------------------------


# Pretraining sees no test image unless asked to: probes and finetunes score on test, and a
# backbone that self-supervised on those images would be evaluated transductively.
DEFAULT_SPLITS = ("train", "val", "unlabeled")


def _rows(table: SampleTable, splits: tuple[str, ...], limit: int | None) -> np.ndarray:
    if table.images is None:
        raise InvalidArgumentError(f"dataset {table.name!r} has no images to pretrain on")
    rows = np.flatnonzero(select_rows(np.asarray(table.splits), splits, limit))
    if not len(rows):
        present = sorted({s or "unlabeled" for s in np.unique(np.asarray(table.splits))})
        raise InvalidArgumentError(
            f"dataset {table.name!r} has no images in the splits {list(splits)} (it has "
            f"{present}); choose them with --split"
        )
    return rows


def _default_out(method: str, dataset: str) -> Path:
    return Path("runs") / f"{method}-{re.sub(r'[^A-Za-z0-9._-]+', '-', dataset)}"


def _settings(method: str, **given: Any) -> dict[str, Any]:
    d = DEFAULTS[method]
    if method == "cass":
        if given["arch"] is not None:
            raise InvalidArgumentError("CASS takes --cnn and --vit, not --arch")
        archs = {"cnn": _arch(given["cnn"] or d["cnn"]), "vit": _arch(given["vit"] or d["vit"])}
    else:
        if given["cnn"] is not None or given["vit"] is not None:
            raise InvalidArgumentError(f"{method.upper()} takes --arch, not --cnn/--vit")
        archs = {"backbone": _arch(given["arch"] or d["arch"])}
    return {
        "archs": archs,
        "img_size": given["img_size"] or d["img_size"],
        "batch_size": given["batch_size"] or d["batch"],
        "epochs": given["epochs"] or d["epochs"],
    }


def _trainer(
    method: str,
    models: dict[str, nn.Module],
    *,
    steps: int,
    s: dict[str, Any],
    runtime: Runtime,
    lr: float | None,
    seed: int,
    difficulty: bool,
) -> Any:
    common = {
        "steps_per_epoch": steps,
        "epochs": s["epochs"],
        "device": runtime.device,
        "precision": runtime.precision,
    }
    lr_kw = {} if lr is None else {"lr": lr}
    if method == "cass":
        from featlab.pretrain.cass import CASSTrainer

        return CASSTrainer(models["cnn"], models["vit"], **common, **lr_kw)
    if method == "bolt":
        from featlab.pretrain.bolt import BOLTTrainer

        return BOLTTrainer(
            models["backbone"],
            batch_size=s["batch_size"],
            seed=seed,
            difficulty=difficulty,
            **common,
            **lr_kw,
        )
    from featlab.pretrain.dino import DINOTrainer

    return DINOTrainer(
        models["backbone"], models["teacher"], batch_size=s["batch_size"], **common, **lr_kw
    )


def _transform(method: str, spec: ModelSpec, model: nn.Module, img_size: int) -> Any:
    from featlab.pretrain import transforms

    if method == "cass":
        return transforms.cass_transform(img_size, spec.mean, spec.std, spec.interpolation)
    if method == "bolt":
        return transforms.plain_transform(img_size, spec.mean, spec.std, spec.interpolation)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", (1,))[0]
    return transforms.dino_transform(img_size, spec.mean, spec.std, patch=int(patch))


def _models(
    method: str, specs: dict[str, ModelSpec], inits: dict[str, str], seed: int
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    models, sources = {}, {}
    for i, (role, spec) in enumerate(specs.items()):
        head = CASS_LOGITS if method == "cass" else 0
        extra = (
            {"dynamic_img_size": True, "drop_path_rate": DINO_DROP_PATH} if method == "dino" else {}
        )
        models[role], sources[role] = build_model(
            spec, inits[role], seed=seed + i, num_classes=head, extra=extra
        )
    if method == "dino":  # the teacher: same network without stochastic depth
        models["teacher"], _ = build_model(
            specs["backbone"], "random", seed=seed, extra={"dynamic_img_size": True}
        )
    return models, sources


def pretrain(
    method: str,
    dataset: str | SampleTable,
    *,
    cnn: str | None = None,
    vit: str | None = None,
    arch: str | None = None,
    img_size: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    init: str = "imagenet",
    out: str | os.PathLike[str] | None = None,
    splits: tuple[str, ...] | None = None,
    limit: int | None = None,
    lr: float | None = None,
    difficulty: bool = True,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    workers: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> PretrainResult:
    """Self-supervise backbones on a dataset's images (labels ignored); resumable.

    Args:
        method: ``cass``, ``bolt`` or ``dino``.
        dataset: A name ``load_dataset`` accepts (``digits``, ``folder:PATH``...) or a table.
        cnn: CASS's CNN arm, a timm architecture (default ``resnet50``).
        vit: CASS's Transformer arm (default ``vit_base_patch16_384``).
        arch: BOLT's / DINO's timm architecture (default ``vit_base_patch16_224`` /
            ``deit_small_patch16_224``).
        img_size: Square training (and extraction) input size (default 384 / 224 / 224).
        epochs: Epochs (default 100 / 100 / 300).
        batch_size: Images per step (default 16 / 64 / 256).
        init: ``imagenet``, ``random`` or a checkpoint, a file or ``NAME@RUN_DIR`` (CASS: two,
            ``CNN,VIT``).
        out: Run folder (default ``runs/<method>-<dataset>``); rerunning resumes it.
        splits: Splits to train on (``train``, ``val``, ``test``, ``unlabeled``); default
            :data:`DEFAULT_SPLITS`, every split but ``test``.
        limit: Only the first ``limit`` selected images.
        lr: Override the method's learning rate (CASS: Adam's; BOLT, DINO: per 256 images).
        difficulty: BOLT only: False drops the difficulty-ranking loss (the paper's ablation).
        seed: Seed of initialisation, batch order, augmentations and perturbations.
        device: ``auto``, ``cpu`` or ``cuda[:i]``.
        precision: ``auto`` (bf16 where fast), ``fp32``, ``bf16`` or ``fp16`` (CUDA).
        workers: Image-decoding processes (default one per spare core).
        on_epoch: Called with each epoch's run-log record.

    Returns:
        What was trained and where the arms are.

    Raises:
        InvalidArgumentError: Unknown method, options of another method, or a bad ``init``.
        WeightsError: ``imagenet`` weights not available offline, or a checkpoint that does not
            fit the architecture.
        TrainingError: ``out`` holds another run, or training diverged.
    """
    if method not in METHODS:
        raise InvalidArgumentError(f"method must be one of {METHODS}; got {method!r}")
    if method != "bolt" and not difficulty:
        raise InvalidArgumentError("the difficulty-loss switch applies to BOLT only")
    s = _settings(
        method, cnn=cnn, vit=vit, arch=arch, img_size=img_size, batch_size=batch_size, epochs=epochs
    )
    inits = _inits(method, init)
    runtime = resolve_runtime(device, precision)
    table = load_dataset(dataset) if isinstance(dataset, str) else dataset
    splits = tuple(splits) if splits else DEFAULT_SPLITS
    rows = _rows(table, splits, limit)
    steps = steps_per_epoch(len(rows), s["batch_size"])
    names = {role: arm_name(method, role, a) for role, a in s["archs"].items()}
    specs = {
        role: arm_spec(method, names[role], a, s["img_size"]) for role, a in s["archs"].items()
    }
    config = {
        "dataset": table.name,
        "splits": list(splits),
        "limit": limit,
        "n_images": len(rows),
        **{f"arch_{r}": a for r, a in s["archs"].items()},
        "img_size": s["img_size"],
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "init": {r: _init_record(i) for r, i in inits.items() if r in specs},
        "lr": lr,
        "seed": seed,
        "precision": runtime.precision,
        **({"difficulty": difficulty} if method == "bolt" else {}),
    }
    out_dir = Path(out or _default_out(method, table.name))
    if (out_dir / MANIFEST).is_file():
        # An existing run: other settings are refused here (nothing is created), and a finished
        # one is answered from its manifest without building a network or reading last.pt.
        prepare_run_dir(out_dir, kind="pretrain", method=method, config=config)
        done = _finished(out_dir, s["epochs"])
        if done is not None:
            return _result(method, table.name, done, s["epochs"], len(rows), runtime)
    # The networks first: missing weights fail before the run folder is made or claimed.
    models, sources = _models(method, specs, inits, seed)
    run_dir = prepare_run_dir(out_dir, kind="pretrain", method=method, config=config)
    trainer = _trainer(
        method, models, steps=steps, s=s, runtime=runtime, lr=lr, seed=seed, difficulty=difficulty
    )
    first = next(iter(specs))
    images = TrainImages(
        table.images,
        rows,
        _transform(method, specs[first], models[first], s["img_size"]),
        seed=seed,
    )
    arms = [
        ArmRecord(names[r], r, specs[r].architecture, f"{r}.pt", specs[r].to_dict()) for r in specs
    ]
    info = {
        "dataset": table.name,
        "init_sources": sources,
        "runtime": {
            "device": runtime.device,
            "precision": runtime.precision,
            "kernels": runtime.kernels,
        },
    }
    summary = run_pretraining(
        trainer,
        images,
        run_dir=run_dir,
        arms=arms,
        epochs=s["epochs"],
        batch_size=s["batch_size"],
        seed=seed,
        workers=default_workers() if workers is None else workers,
        info=info,
        on_epoch=on_epoch,
    )
    return _result(method, table.name, summary, s["epochs"], len(rows), runtime)


def _finished(run_dir: Path, epochs: int) -> PretrainSummary | None:
    """The summary of a complete run whose saved arms are intact (sha256 as the manifest
    records), else None: a run that still has epochs to train, or whose arm files are missing
    or changed, goes through the loop, which rewrites the arms from ``last.pt``."""
    manifest = read_manifest(run_dir)
    models = manifest.get("models", [])
    if manifest.get("status") != "complete" or int(manifest.get("epochs_done", 0)) < epochs:
        return None
    for m in models:
        path = run_dir / m["file"]
        if not path.is_file() or sha256_file(path) != m["sha256"]:
            return None
    timing = manifest.get("timing", {})
    return PretrainSummary(
        run_dir=run_dir,
        status="complete",
        start_epoch=epochs,
        epochs_done=int(manifest["epochs_done"]),
        seconds=float(timing.get("seconds", 0.0)),
        images_per_s=float(timing.get("images_per_s", 0.0)),
        models=models,
    )


def _init_record(init: str) -> str | dict[str, str]:
    if init in INITS:
        return init
    return {"path": str(Path(init).expanduser().resolve()), "sha256": sha256_file(init)}


def _result(
    method: str, dataset: str, summary: PretrainSummary, epochs: int, n: int, runtime: Runtime
) -> PretrainResult:
    if summary.start_epoch >= epochs:
        status = "complete"
    else:
        status = "resumed" if summary.start_epoch else "trained"
    return PretrainResult(
        method=method,
        dataset=dataset,
        run_dir=str(summary.run_dir),
        status=status,
        epochs=epochs,
        start_epoch=summary.start_epoch,
        epochs_done=summary.epochs_done,
        n_images=n,
        seconds=summary.seconds,
        images_per_s=summary.images_per_s,
        device=runtime.device,
        precision=runtime.precision,
        kernels=runtime.kernels,
        losses=summary.losses,
        models=summary.models,
    )
