"""``featlab finetune``: a zoo/timm model (or a run's checkpoint) finetuned on a low-shot fold.

The job wires the pieces: the dataset's images, the store's low-shot plan (the same seeded draw
the probes use, so finetune and linear-probe results compare on identical rows), the model with
a fresh head on the embedding extraction stores, the recipe's settings and transforms, the
resumable loop of :mod:`featlab.train.finetune`, then the test result saved in the store and
the run manifest (so ``M@RUN_DIR`` extracts).

Store and manifest cannot be written in one step. The result's id is recorded in the manifest
before anything is trained or saved, the result is saved under it, and only then the manifest
says ``complete``. A rerun after a kill in between saves the same id (or finds it saved); a
rerun of a complete run checks that the store holds its result, and scores ``best.pt`` again
into the store when it does not (``status="rescored"``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featlab.datasets import SampleTable, load_dataset
from featlab.errors import InvalidArgumentError, StoreExistsError, StoreNotFoundError
from featlab.eval.lowshot import TrainingSize, parse_sizes, plan_lowshot
from featlab.eval.metrics import resolve_metric
from featlab.eval.protocol import ProbeRun, dataset_metric
from featlab.eval.results import new_run_id, save_run
from featlab.extractors.backbone import _set_pool, load_model
from featlab.extractors.device import resolve_runtime
from featlab.extractors.runs import (
    is_run_reference,
    resolve_run_model,
    run_of_weights,
    run_spec_of_weights,
)
from featlab.extractors.spec import ModelSpec, resolve_spec
from featlab.extractors.train_transforms import eval_transform, train_transform
from featlab.store import DatasetGroup, open_store
from featlab.store import _results as stored_results
from featlab.store._layout import model_key
from featlab.train.data import TrainImages
from featlab.train.finetune import BEST, LAST, FinetuneResult, finetune
from featlab.train.recipes import DEFAULT_RECIPE, FinetuneConfig, recipe_config
from featlab.train.results import finetune_run
from featlab.train.run_dir import MANIFEST, prepare_run_dir, read_manifest, write_manifest


@dataclass(frozen=True)
class FinetuneReport:
    """What ``featlab finetune`` did; ``extract_name`` is the model name of the checkpoint."""

    model: str
    dataset: str
    size: str
    fold: int
    n_train: int
    recipe: str
    status: str  # trained | resumed | rescored (complete; result saved again) | complete
    run_dir: str
    checkpoint: str
    extract_name: str
    result_id: str
    metric: str
    best_epoch: int
    epochs_run: int
    best_val: float
    test_metric: float
    test_metrics: dict[str, float]
    seconds: float
    device: str
    precision: str
    kernels: str
    n_trainable: int
    n_total: int
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_size(shots: str | None, fraction: str | None) -> TrainingSize:
    sizes = parse_sizes(None if shots is None else str(shots),
                        None if fraction is None else str(fraction),
                        options=("--shots", "--fraction"))
    if len(sizes) != 1:
        raise InvalidArgumentError(
            f"finetune trains one subset: give one --shots or --fraction value; got {len(sizes)}"
        )
    return sizes[0]


def _load(model: str, *, weights, random_init, img_size, seed, trust_checkpoint):
    """(spec, headless model, weights record, provenance of a run's checkpoint or None)."""
    if is_run_reference(model):
        if weights is not None or random_init or img_size is not None:
            raise InvalidArgumentError(
                f"{model!r} names a run's checkpoint; drop --weights, --random-init, --img-size"
            )
        resolved = resolve_run_model(model)
        net, info = load_model(resolved.spec, weights=str(resolved.weights), seed=seed)
        return resolved.spec, net, info, resolved.provenance
    spec = resolve_spec(model, pretrained=not random_init and weights is None, img_size=img_size)
    source_run = None
    if weights is not None:
        # A run's checkpoint given as a file: its run's spec, without the zoo's converter.
        spec = run_spec_of_weights(weights, spec, img_size=img_size) or spec
        source_run = run_of_weights(weights)
    net, info = load_model(spec, weights=None if weights is None else str(weights), seed=seed,
                           trust_checkpoint=trust_checkpoint)
    return spec, net, info, source_run


def _new_head(net: torch.nn.Module, n_out: int, seed: int) -> None:
    """A fresh ``n_out``-output head (seeded init) on the pooling ``_set_pool`` chose.

    ``reset_classifier`` without ``global_pool`` resets some models' pooling to their default
    (timm ResNets: avg), so the pooling is put back if the call changed it.
    """
    before = _pool_type(net)
    torch.manual_seed(seed)
    net.reset_classifier(n_out)
    if _pool_type(net) != before:
        torch.manual_seed(seed)
        net.reset_classifier(n_out, global_pool=before)


def _pool_type(net: torch.nn.Module) -> Any:
    pool = getattr(net, "global_pool", None)
    return getattr(pool, "pool_type", pool)


def _is_transformer(net: torch.nn.Module) -> bool:
    return hasattr(net, "blocks") and hasattr(net, "patch_embed")


def _is_dino(spec: ModelSpec, net: torch.nn.Module, source_run: dict[str, Any] | None) -> bool:
    """A DINO ViT, by name or by the run it comes from. Truong B.2 gives DINO lr 1e-4 and batch
    16 "since it has a different architecture" (their DINO is a ViT): a DINO ResNet keeps the
    ResNet settings."""
    if not _is_transformer(net):
        return False
    from_dino_run = bool(source_run) and source_run.get("method") == "dino"
    return from_dino_run or spec.name.startswith("dino-") or spec.architecture.endswith(".dino")


def _request(model: str, dataset: str, size: str, fold: int, seed: int, recipe: str,
             metric: str | None, precision: str, weights: Any, random_init: bool,
             img_size: int | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The command as given, in its JSON form: a rerun of it finds its complete run without
    loading the model."""
    request = {
        "model": model, "dataset": dataset, "size": size, "fold": fold, "seed": seed,
        "recipe": recipe, "metric": metric, "precision": precision,
        "weights": None if weights is None else str(Path(weights).expanduser().resolve()),
        "random_init": random_init, "img_size": img_size,
        "overrides": {k: v for k, v in sorted(overrides.items()) if v is not None},
    }
    return json.loads(json.dumps(request))


def _complete_report(manifest: dict[str, Any], ds: DatasetGroup | None) -> FinetuneReport | None:
    """The report of a complete run whose result ``ds`` holds; None while there is work left
    (the run is not complete, or this store does not hold its result)."""
    if manifest.get("status") != "complete" or ds is None:
        return None
    result_id = manifest.get("result_id") or manifest["report"]["result_id"]
    if result_id not in stored_results.run_ids(ds):
        return None
    return FinetuneReport(**{**manifest["report"], "status": "complete"})


def _stored_dataset(store: Any, name: str) -> DatasetGroup | None:
    """Dataset ``name`` of the store, read-only; None if the store or the dataset is missing."""
    try:
        st = open_store(store, mode="r")
    except StoreNotFoundError:
        return None
    return st[name] if name in st.datasets else None


def default_run_dir(model: str, dataset: str, size: str, fold: int, seed: int, recipe: str) -> Path:
    """``runs/finetune-<model>-<dataset>-<size>-fold<k>-seed<s>-<recipe>``: the same command
    names the same folder, so rerunning it after a kill resumes."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "~", f"{model_key(model)}-{dataset}")
    return Path("runs") / f"finetune-{slug}-{size}-fold{fold}-seed{seed}-{recipe}"


def finetune_model(
    model: str,
    dataset: str | SampleTable,
    store: str | os.PathLike[str] | None = None,
    *,
    recipe: str = DEFAULT_RECIPE,
    shots: int | str | None = None,
    fraction: float | str | None = None,
    fold: int = 0,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    metric: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    workers: int = 0,
    weights: str | os.PathLike[str] | None = None,
    trust_checkpoint: bool = False,
    random_init: bool = False,
    img_size: int | None = None,
    data_root: str | os.PathLike[str] | None = None,
    callback: Any = None,
    **overrides: Any,
) -> FinetuneReport:
    """Finetune ``model`` on fold ``fold`` of a low-shot size of ``dataset``.

    Args:
        model: A zoo name, ``timm:<arch>``, or a run's checkpoint ``NAME@RUN_DIR`` (e.g. a CASS
            arm from ``featlab pretrain``).
        dataset: A dataset name (``digits``, ``folder:PATH``, ...) or a :class:`SampleTable`.
        store: The store holding (or receiving) the dataset; the result is saved there.
        recipe: ``truong`` (default), ``matsoukas``, ``beit`` or ``cass``.
        shots, fraction: One training size (class-balanced count or stratified fraction);
            default all labelled training samples.
        fold: Which seeded draw of that size (the probes' fold ``fold``).
        seed: Seed of the draw, the head's init, the data order and augmentations.
        out: Run folder; default ``runs/finetune-...`` named by the settings (so the same
            command resumes).
        metric: Val/test metric; default the dataset's.
        weights: A checkpoint to start from; one a featlab run lists (``runs/X/best.pt``) is
            read with that run's spec, as ``NAME@RUN_DIR`` is.
        overrides: Recipe settings (``unfreeze``, ``max_epochs``, ``lr``, ``batch_size``,
            ``loss``, ``warmup_steps``, ``class_weights``, ...; None = the recipe's).

    Raises:
        InvalidArgumentError, TrainingError, WeightsError, DatasetError: As their names say.
    """
    table = load_dataset(dataset, data_root=data_root) if isinstance(dataset, str) else dataset
    if table.images is None:
        raise InvalidArgumentError(f"dataset {table.name!r} has no images to finetune on")
    size = _one_size(shots, fraction)
    if fold < 0:
        raise InvalidArgumentError(f"fold must be >= 0; got {fold}")
    run_dir = Path(out) if out else default_run_dir(model, table.name, size.label, fold, seed,
                                                    recipe)
    request = _request(model, table.name, size.label, fold, seed, recipe, metric, precision,
                       weights, random_init, img_size, overrides)
    # A rerun of a finished command is answered from the manifest, before the model is loaded
    # and before the store is written.
    if (run_dir / MANIFEST).is_file():
        earlier = read_manifest(run_dir)
        if earlier.get("config", {}).get("request") == request:
            done = _complete_report(earlier, _stored_dataset(store, table.name))
            if done is not None:
                return done
    st = open_store(store, mode="a")
    ds = st.add_dataset(table)
    plan = plan_lowshot(ds.labels, ds.splits, (size,), folds=fold + 1, seed=seed)
    draw = plan.folds[fold]
    metric = resolve_metric(metric or dataset_metric(ds), ds.task)
    runtime = resolve_runtime(device, precision)
    spec, net, info, source_run = _load(model, weights=weights, random_init=random_init,
                                        img_size=img_size, seed=seed,
                                        trust_checkpoint=trust_checkpoint)
    # The head sees the embedding extraction stores: the spec's pool, resolved (the CLS token,
    # or the model's own pooling), and recorded in the run's spec.
    spec = replace(spec, pool=_set_pool(net, spec))
    n_out = len(ds.classes)
    _new_head(net, n_out, seed)
    config = recipe_config(
        recipe, pretrained=info["source"] != "random-init", dino=_is_dino(spec, net, source_run),
        vit=_is_transformer(net), seed=seed, **overrides,
    )
    settings = {
        "model": model, "dataset": ds.name, "size": size.label, "fold": fold, "metric": metric,
        "plan": plan.fingerprint(), "init": {k: info.get(k) for k in ("source", "sha256", "seed")},
        "input_size": list(spec.input_size), "pool": spec.pool, "precision": runtime.precision,
        "request": request, **config.to_dict(),
    }
    run_dir = prepare_run_dir(run_dir, kind="finetune", method=recipe, config=settings)
    manifest = read_manifest(run_dir)
    done = _complete_report(manifest, ds)
    if done is not None:
        return done
    if manifest.get("status") == "complete":
        status = "rescored"
    else:
        status = "resumed" if (run_dir / LAST).exists() else "trained"
    # The result's id is fixed before anything is saved, so a rerun after a kill between the
    # store write and the manifest's "complete" saves the same result, not a second one.
    manifest.setdefault("result_id", new_run_id(model, "finetune"))
    write_manifest(run_dir, manifest)
    result = finetune(
        net, train=_images(table, draw.train, train_transform(spec, config.augment), seed, ds),
        val=_images(table, plan.val, eval_transform(spec), seed, ds),
        test=_images(table, plan.test, eval_transform(spec), seed, ds),
        task=ds.task, n_classes=n_out, metric=metric, config=config, run_dir=run_dir,
        device=runtime.device, precision=runtime.precision, workers=workers,
        callback=_counting_epochs(run_dir, manifest, callback),
    )
    run = finetune_run(
        ds, model, plan, draw, result, recipe=recipe, device=runtime.device,
        info={"run_dir": str(run_dir.resolve()), "best_epoch": result.best_epoch,
              "epochs_run": result.epochs_run, "best_val": result.best_val,
              "checkpoint_sha256": result.best_sha256, "recipe": config.to_dict(),
              "from_run": source_run},
        identity={"weights_sha256": info.get("sha256"), "source": info.get("source")},
    )
    result_id = _save_result(ds, run, run_dir, manifest)
    report = _report(model, ds.name, size.label, fold, len(draw.train), recipe, run_dir, result,
                     result_id, runtime, config, run.folds[0].metrics, status)
    _finish_manifest(run_dir, manifest, spec, model, n_out, result, report, ds.name)
    return report


def _counting_epochs(run_dir: Path, manifest: dict[str, Any], callback: Any) -> Any:
    """The progress callback, also writing ``epochs_done`` into the manifest every epoch."""

    def on_record(record: dict[str, Any]) -> None:
        if record.get("event") == "epoch":
            manifest["epochs_done"] = int(record["epoch"]) + 1
            write_manifest(run_dir, manifest)
        if callback:
            callback(record)

    return on_record


def _save_result(ds: DatasetGroup, run: ProbeRun, run_dir: Path,
                 manifest: dict[str, Any]) -> str:
    """Save ``run`` under the manifest's result id and return the id.

    A result already saved under it (a kill after the store write) is kept. A half-written one
    (a kill inside the store write; the store refuses to replace it) makes the result take a
    new id, recorded in the manifest before it is saved.
    """
    result_id = manifest["result_id"]
    if result_id in stored_results.run_ids(ds):
        return result_id
    run.run_id = result_id
    try:
        return save_run(ds, run)
    except StoreExistsError:
        manifest["result_id"] = run.run_id = new_run_id(run.model, "finetune")
        write_manifest(run_dir, manifest)
        return save_run(ds, run)


def _images(table: SampleTable, rows: np.ndarray, transform, seed: int, ds) -> TrainImages:
    return TrainImages(table.images, rows, transform, seed=seed, targets=ds.labels[rows])


def _report(model, dataset, size, fold, n_train, recipe, run_dir, result: FinetuneResult,
            result_id, runtime, config: FinetuneConfig, metrics, status) -> FinetuneReport:
    return FinetuneReport(
        model=model, dataset=dataset, size=size, fold=fold, n_train=n_train, recipe=recipe,
        status=status, run_dir=str(run_dir), checkpoint=str(run_dir / BEST),
        extract_name=f"{model.partition('@')[0]}@{run_dir.as_posix()}", result_id=result_id,
        metric=result.metric, best_epoch=result.best_epoch, epochs_run=result.epochs_run,
        best_val=result.best_val, test_metric=result.test_metric, test_metrics=metrics,
        seconds=round(result.seconds, 3), device=runtime.device, precision=runtime.precision,
        kernels=runtime.kernels, n_trainable=result.n_trainable, n_total=result.n_total,
        config=config.to_dict(),
    )


def _finish_manifest(run_dir: Path, manifest: dict[str, Any], spec: ModelSpec, model: str,
                     n_out: int, result: FinetuneResult, report: FinetuneReport,
                     dataset: str) -> None:
    # best.pt is a flat timm state dict: no converter, whatever the starting weights needed.
    trained = replace(spec, pretrained=False, converter=None, weights_url=None, local_only=False)
    manifest.update({
        "status": "complete",
        "dataset": dataset,
        "epochs_done": result.epochs_run,
        "models": [{
            "name": model.partition("@")[0], "role": "finetuned",
            "architecture": spec.architecture, "file": BEST, "sha256": result.best_sha256,
            "num_classes": n_out, "spec": trained.to_dict(),
        }],
        "result": {"run_id": report.result_id, "metric": result.metric,
                   "test": report.test_metric, "best_epoch": result.best_epoch},
        "report": report.to_dict(),
    })
    write_manifest(run_dir, manifest)
