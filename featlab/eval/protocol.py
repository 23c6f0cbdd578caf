"""The evaluation protocol: one model of one dataset, every training size x fold, scored on test.

``run_probe`` reads the model's embeddings from the store, trains the method (kNN, the DVME
paper's linear probe, or logistic regression) on each low-shot draw of the plan, scores the test
split with every metric that applies to the task, and returns a :class:`ProbeRun` holding the
per-fold metrics, their mean +- std per training size, the test scores of every fold and the
indices used — everything :mod:`featlab.eval.results` saves and ``featlab compare`` pairs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab._version import __version__
from featlab.errors import InvalidArgumentError
from featlab.eval.knn import DEFAULT_KS, DEFAULT_TEMPERATURE, VOTES, block_rows_for
from featlab.eval.lowshot import ALL, LowShotPlan, TrainingSize, plan_lowshot

if TYPE_CHECKING:
    from featlab.store import DatasetGroup

METHODS = ("knn", "linear", "logreg", "dvme")
# Saved results also come from `featlab finetune` (featlab.train.results), one fold per run.
RESULT_METHODS = (*METHODS, "finetune")
STOCHASTIC = ("linear", "dvme")  # the others give the same result for the same rows
INDEXES = ("flat", "ivf")


@dataclass(frozen=True)
class ProbeConfig:
    """How to evaluate: method, training sizes, folds, seed and the method's knobs.

    ``metric`` is the headline metric of tables (default: the dataset's); every metric that
    applies to the task is computed regardless. ``bootstrap`` > 0 adds a percentile confidence
    interval of the fold-mean metric from that many test-set resamples.
    """

    method: str = "knn"
    sizes: tuple[TrainingSize, ...] = (ALL,)
    folds: int = 5
    seed: int = 0
    ks: tuple[int, ...] = DEFAULT_KS
    temperature: float = DEFAULT_TEMPERATURE
    vote: str = "weighted"
    index: str = "flat"
    nprobe: int = 16
    metric: str | None = None
    bootstrap: int = 0
    device: str = "cpu"
    # Probes standardise features with the training subset's mean/std. The DVME paper's probe
    # does not; its ResNet/ViT features have O(1) scale, but features of small scale (e.g.
    # std 1e-3, seen from random-init CNNs) need weights ~1e3 that Adam at lr 1e-3 cannot reach
    # in 50 epochs, leaving the probe at chance. ``standardize=False`` is the paper literally.
    standardize: bool = True
    # DVME (featlab.fusion.dvme): Appendix C's ablation, and the listing's 1-d tokens.
    attention: bool = True
    token_dim: int | None = None

    def __post_init__(self) -> None:
        if self.method not in RESULT_METHODS:
            raise InvalidArgumentError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.vote not in VOTES:
            raise InvalidArgumentError(f"vote must be one of {VOTES}; got {self.vote!r}")
        if self.index not in INDEXES:
            raise InvalidArgumentError(f"index must be one of {INDEXES}; got {self.index!r}")
        if not self.ks or min(self.ks) < 1:
            raise InvalidArgumentError(f"k values must be >= 1; got {self.ks}")
        if self.token_dim == 512:  # a token per model: the default, recorded as None
            object.__setattr__(self, "token_dim", None)
        if self.token_dim not in (None, 1):
            raise InvalidArgumentError(
                f"token_dim must be None (a 512-d token per model) or 1 (the DVME listing's "
                f"1-d tokens); got {self.token_dim!r}"
            )
        if self.folds < 1 or self.bootstrap < 0:
            raise InvalidArgumentError("folds must be >= 1 and bootstrap >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [s.label for s in self.sizes]
        d["size_specs"] = [{"kind": s.kind, "value": s.value} for s in self.sizes]  # exact
        d["ks"] = list(self.ks)
        if self.method != "knn":
            for key in ("ks", "temperature", "vote", "index", "nprobe"):
                d.pop(key)
        if self.method in ("knn", "finetune"):
            d.pop("standardize")
        if self.method != "dvme":
            d.pop("attention")
            d.pop("token_dim")
        return d


@dataclass(frozen=True)
class FoldResult:
    """Metrics of one variant (e.g. ``k=20``) trained on one size x fold."""

    variant: str
    size: str
    fold: int
    n_train: int
    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryRow:
    """Mean and std over folds of the headline metric (and every other metric)."""

    variant: str
    size: str
    metric: str
    mean: float
    std: float
    n_folds: int
    n_train: float
    means: dict[str, float]
    stds: dict[str, float]
    ci: dict[str, Any] | None = None

    def cell(self) -> str:
        """``0.8123 ± 0.0100`` (and ``[low, high]`` with a bootstrap CI)."""
        text = f"{self.mean:.4f} ± {self.std:.4f}"
        if self.ci:
            text += f" [{self.ci['low']:.4f}, {self.ci['high']:.4f}]"
        return text


@dataclass
class ProbeRun:
    """One evaluation run of one model on one dataset, with everything needed to re-read it."""

    dataset: str
    model: str
    task: str
    config: ProbeConfig
    metric: str
    plan: dict[str, Any]
    folds: list[FoldResult]
    summary: list[SummaryRow]
    test_rows: np.ndarray  # (m,) dataset rows scored (usable test rows of the model)
    test_labels: np.ndarray  # (m,) or (m, L) labels of test_rows
    train_rows: dict[str, np.ndarray]  # "size/fold" -> dataset rows trained on
    val_rows: np.ndarray
    test_scores: dict[str, np.ndarray]  # "variant|size/fold" -> (m, C) float32
    created: str = ""
    elapsed_s: float = 0.0
    run_id: str = ""
    model_identity: dict[str, Any] = field(default_factory=dict)
    featlab_version: str = __version__

    def summary_for(self, variant: str | None = None) -> list[SummaryRow]:
        return [r for r in self.summary if variant is None or r.variant == variant]

    def to_dict(self, *, per_fold: bool = True) -> dict[str, Any]:
        """JSON-ready record: config, plan, summary and (by default) every fold's metrics."""
        d: dict[str, Any] = {
            "run_id": self.run_id,
            "dataset": self.dataset,
            "model": self.model,
            "task": self.task,
            "method": self.config.method,
            "metric": self.metric,
            "config": self.config.to_dict(),
            "plan": self.plan,
            "summary": [asdict(r) for r in self.summary],
            "created": self.created,
            "elapsed_s": round(self.elapsed_s, 3),
            "featlab_version": self.featlab_version,
            "model_identity": self.model_identity,
        }
        if per_fold:
            d["folds"] = [asdict(f) for f in self.folds]
        return d


def dataset_metric(ds: DatasetGroup) -> str:
    """The dataset's headline metric: recorded with it, else the task's default."""
    from featlab.eval.metrics import default_metric

    return str(ds.spec.get("metric") or default_metric(ds.task))


def _require_probe_method(config: ProbeConfig) -> None:
    """Refuse configs whose method is a saved-result method only (``finetune``): the protocol
    trains probes on stored embeddings, and would otherwise fall through to logreg."""
    if config.method not in METHODS:
        raise InvalidArgumentError(
            f"probe method must be one of {METHODS}; got {config.method!r}. Finetune results "
            "come from `featlab finetune` (featlab.extractors.finetune_job.finetune_model)"
        )


def plan_for(ds: DatasetGroup, config: ProbeConfig) -> LowShotPlan:
    """The low-shot plan of ``ds`` for ``config`` (identical for every model and method)."""
    return plan_lowshot(ds.labels, ds.splits, config.sizes, folds=config.folds, seed=config.seed)


def run_probe(
    ds: DatasetGroup,
    model: str,
    config: ProbeConfig | None = None,
    *,
    plan: LowShotPlan | None = None,
) -> ProbeRun:
    """Evaluate ``model``'s stored embeddings of ``ds`` under ``config``.

    Args:
        ds: A dataset of an open store.
        model: A complete model of ``ds``.
        config: Method, sizes, folds, seed, ...; default: weighted kNN, k = 20 and 200, all.
        plan: A precomputed :func:`plan_for` (reuse it across models to save the draw).

    Returns:
        A :class:`ProbeRun` (not yet saved; see :func:`featlab.eval.results.save_run`).

    Raises:
        IncompleteEmbeddingError: The model is not complete for the splits used.
        InvalidArgumentError: The method is not a probe (``finetune``), the metric does not
            apply, or a split is missing.
    """
    config = config or ProbeConfig()
    _require_probe_method(config)
    if config.method == "dvme":
        raise InvalidArgumentError(
            "DVME fuses several models: call featlab.fusion.run_dvme(ds, [model_a, model_b, "
            "...], config), or `featlab probe --method dvme --model a,b`"
        )
    usable = usable_rows(ds, [model])
    plan = plan or plan_for(ds, config)
    refuse_fit_split(ds, model, plan, config.method)
    return evaluate_rows(ds, model, [model], usable, config, plan=plan,
                         identity=_identity(ds, model))


def usable_rows(ds: DatasetGroup, models: Sequence[str]) -> np.ndarray:
    """``(n,)`` bool: rows written and not bad in every model (the samples all of them see).

    Raises:
        IncompleteEmbeddingError: A model is not complete.
    """
    usable = np.ones(ds.n, dtype=bool)
    for m in models:
        mask = np.zeros(ds.n, dtype=bool)
        mask[ds.rows(m)] = True
        usable &= mask
    return usable


def read_side_by_side(ds: DatasetGroup, models: Sequence[str], rows: np.ndarray) -> np.ndarray:
    """``(len(rows), sum of dims)`` float32: the models' embeddings of ``rows``, concatenated."""
    if len(models) == 1:
        return ds.values_at(models[0], rows)
    return np.hstack([ds.values_at(m, rows) for m in models])


def evaluate_rows(
    ds: DatasetGroup,
    name: str,
    models: list[str],
    usable: np.ndarray,
    config: ProbeConfig,
    *,
    plan: LowShotPlan | None = None,
    identity: dict[str, Any] | None = None,
) -> ProbeRun:
    """The protocol on the ``usable`` rows of ``models``' embeddings (side by side when several);
    the run is named ``name``. :func:`run_probe` and DVME's ``run_dvme`` call it.

    Raises:
        InvalidArgumentError: ``config.method`` is not one of :data:`METHODS`.
    """
    from featlab.eval.metrics import resolve_metric

    _require_probe_method(config)
    started = time.perf_counter()
    task = ds.task
    metric = resolve_metric(config.metric or dataset_metric(ds), task)
    plan = plan or plan_for(ds, config)
    test = plan.test[usable[plan.test]]
    val = plan.val[usable[plan.val]]
    data = _ModelData(ds, models, test, val)
    folds: list[FoldResult] = []
    scores: dict[str, np.ndarray] = {}
    train_rows: dict[str, np.ndarray] = {}
    done: dict[bytes, tuple[str, dict[str, np.ndarray], dict[str, Any]]] = {}
    for fold in plan.folds:
        train = fold.train[usable[fold.train]]
        train_rows[fold.key] = train
        deterministic = config.method not in STOCHASTIC
        key = train.tobytes()
        if deterministic and key in done:
            source, by_variant, info = done[key]
            info = {**info, "same_rows_as": source}
        else:
            by_variant, info = _fit_and_score(config, data, train, fold.fold, metric, task)
            if deterministic:
                done[key] = (fold.key, by_variant, info)
        for variant, s in by_variant.items():
            scores[f"{variant}|{fold.key}"] = s
            folds.append(
                FoldResult(
                    variant, fold.size.label, fold.fold, len(train),
                    all_task_metrics(data.y_test, s, task), dict(info),
                )
            )
    run = ProbeRun(
        dataset=ds.name, model=name, task=task, config=config, metric=metric,
        plan={**plan.describe(), "n_test_scored": len(test), "n_val_used": len(val)},
        folds=folds, summary=[], test_rows=test, test_labels=data.y_test,
        train_rows=train_rows, val_rows=val,
        test_scores=scores,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        model_identity=identity or {},
    )
    run.summary = summarize(run)
    run.elapsed_s = time.perf_counter() - started
    return run


def refuse_fit_split(
    ds: DatasetGroup, model: str, plan: LowShotPlan, method: str = "knn"
) -> None:
    """Refuse evaluations a derived model (e.g. a fitted DVME fusion) would inflate.

    Its features were trained with the labels of its ``fit_splits`` (its own and its sources'),
    so scoring rows of those splits, or calling a training subset of them "low-shot" (the
    features have seen every label of the split), would overstate how good it is.

    Raises:
        InvalidArgumentError: The test rows of ``plan`` belong to a fit split; or the plan's
            training sizes are not all ``all`` while training rows come from a fit split; or
            its val rows were held out of a split the model was trained on.
    """
    derived = ds.model_attrs(model).get("derived") or {}
    fitted = set(derived.get("fit_splits") or ())
    if not fitted:
        return
    where = (f"{model!r} was fitted on the {sorted(fitted)} split(s) of {ds.name!r} (its "
             f"provenance: {derived.get('method')}, sources {derived.get('sources')})")
    splits = ds.splits
    scored = fitted & set(np.unique(splits[plan.test]).tolist())
    if scored:
        raise InvalidArgumentError(
            f"{where}, which includes the {sorted(scored)} split scored here: its scores would "
            "be inflated. Fit the fused model on train (`featlab fuse`'s default) and evaluate "
            "on test."
        )
    trained_on = set(np.unique(splits[np.concatenate([f.train for f in plan.folds])]).tolist())
    if trained_on & fitted and any(f.size.kind != "all" for f in plan.folds):
        raise InvalidArgumentError(
            f"{where}: its features have seen every label of those splits, so a low-shot "
            f"evaluation ({', '.join(sorted({f.size.label for f in plan.folds}))}) would claim "
            "fewer labels than it used. Evaluate it with all training samples (--shots all), "
            "or fuse on fewer labels."
        )
    if method == "knn":  # kNN selects nothing on val
        return
    selection = set(np.unique(splits[plan.val]).tolist()) if len(plan.val) else set()
    trained = set(derived.get("trained_splits") or ())
    if selection & trained:
        raise InvalidArgumentError(
            f"{where}: the dataset has no val split, so the probe would pick its epoch on rows "
            f"held out of {sorted(selection & trained)}, which the model was trained on. Give "
            "the dataset a val split, or evaluate with kNN."
        )


class _ModelData:
    """The models' test and val matrices (side by side), read once; train rows per fold."""

    def __init__(
        self, ds: DatasetGroup, models: list[str], test: np.ndarray, val: np.ndarray
    ) -> None:
        self.ds, self.models = ds, list(models)
        self.labels = ds.labels
        self.n_classes = len(ds.classes)
        self.dims = [ds.dim(m) for m in self.models]
        self.x_test = self._read(test)
        self.y_test = self.labels[test]
        self.val = val
        self.y_val = self.labels[val]
        self.dim = sum(self.dims)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        return read_side_by_side(self.ds, self.models, rows)

    @cached_property
    def x_val(self) -> np.ndarray | None:
        """Val embeddings, read on first use (kNN never needs them)."""
        return self._read(self.val) if len(self.val) else None

    def train_blocks(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Training embeddings in the kNN search's blocks (``block_rows_for``), read one by one."""
        step = block_rows_for(self.dim)
        for lo in range(0, len(rows), step):
            yield self._read(rows[lo : lo + step])

    def train_matrix(self, rows: np.ndarray) -> np.ndarray:
        return self._read(rows)


def _fit_and_score(
    config: ProbeConfig, data: _ModelData, train: np.ndarray, fold: int, metric: str, task: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if config.method == "knn":
        return _knn(config, data, train)
    return _linear(config, data, train, fold, metric, task)


def _knn(
    config: ProbeConfig, data: _ModelData, train: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from featlab.eval.knn import (
        build_ivf_index,
        ivf_search,
        knn_scores_for_ks,
        knn_search,
        recall_at_k,
        votes_for_ks,
    )

    y = data.labels[train]
    k_max = min(max(config.ks), len(train))
    info: dict[str, Any] = {"k_used": {f"k={k}": min(k, len(train)) for k in config.ks}}
    vote = {"temperature": config.temperature, "vote": config.vote, "n_classes": data.n_classes}
    if config.index == "ivf":
        x = data.train_matrix(train)
        index = build_ivf_index(x, seed=config.seed)
        sims, idx = ivf_search(index, data.x_test, k_max, nprobe=config.nprobe)
        # Recall of the approximate search against exact search on a seeded query sample.
        probe = np.random.default_rng(config.seed).choice(
            len(data.x_test), size=min(1000, len(data.x_test)), replace=False
        )
        _, exact = knn_search(data.x_test[probe], x, k_max)
        info.update(index="ivf", nlist=int(index.nlist), nprobe=config.nprobe,
                    recall_at_k=recall_at_k(exact, idx[probe]))
        by_k = votes_for_ks(sims, idx, y, config.ks, **vote)
    else:
        by_k = knn_scores_for_ks(data.train_blocks(train), y, data.x_test, config.ks, **vote)
    return {_knn_variant(k, config.vote): scores for k, scores in by_k.items()}, info


def _knn_variant(k: int, vote: str) -> str:
    return f"k={k}" if vote == "weighted" else f"k={k} majority"


def _linear(
    config: ProbeConfig, data: _ModelData, train: np.ndarray, fold: int, metric: str, task: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from featlab.eval.metrics import score_metric

    x, y = data.train_matrix(train), data.labels[train]
    n_classes = data.n_classes
    # The probe's columns are the classes of the draw (sorted), also while it is being fitted.
    classes = None if y.ndim == 2 else np.unique(y)

    def scoring(y_true: np.ndarray, proba: np.ndarray) -> float:
        return score_metric(metric, y_true, _full_columns(proba, classes, n_classes), task)

    probe = _make_probe(config, fold, scoring, data.dims)
    eval_set, dropped = _val_for(data, y)
    probe.fit(x, y, eval_set=eval_set)
    if classes is not None and not np.array_equal(probe.classes_, classes):
        raise InvalidArgumentError(f"probe classes {probe.classes_} differ from {classes}")
    scores = _full_columns(probe.predict_proba(data.x_test), classes, n_classes)
    info: dict[str, Any] = {"n_val_dropped": dropped} if dropped else {}
    for attr in ("C_", "best_epoch_", "n_epochs_", "best_score_"):
        value = getattr(probe, attr, None)
        if value is not None:
            info[attr.rstrip("_")] = value.item() if hasattr(value, "item") else value
    if config.method == "dvme":
        # Appendix F: the attention between model tokens, averaged over test samples.
        attention = probe.mean_attention(data.x_test, seed=config.seed)
        if attention is not None:
            info["attention"] = np.round(attention[0], 6).tolist()
            info["attention_rows"] = attention[1]
        info["attention_models"] = data.models
    return {config.method: scores.astype(np.float32)}, info


def _val_for(
    data: _ModelData, y_train: np.ndarray
) -> tuple[tuple[np.ndarray, np.ndarray] | None, int]:
    """``(eval_set, n dropped)``: val rows of classes absent from a tiny draw are left out.

    A draw of fewer shots than classes (or a class emptied by bad images) cannot predict the
    missing classes; selection then scores the classes it was trained on. The count is
    recorded with the fold.
    """
    if data.x_val is None:
        return None, 0
    if data.y_val.ndim == 2:
        return (data.x_val, data.y_val), 0
    keep = np.isin(data.y_val, np.unique(y_train))
    if keep.all():
        return (data.x_val, data.y_val), 0
    if not keep.any():
        return None, len(keep)
    return (data.x_val[keep], data.y_val[keep]), int((~keep).sum())


def _make_probe(config: ProbeConfig, fold: int, scoring, dims: list[int]):
    # Each fold's probe is seeded from the run's seed and the fold, so a fold is reproducible
    # on its own and the five folds differ in initialisation and shuffling too.
    seed = int(np.random.SeedSequence([config.seed, fold]).generate_state(1)[0])
    if config.method == "dvme":
        from featlab.fusion import dvme

        return dvme.DVMEClassifier(
            dims, proj_dim=dvme.PROJ_DIM, heads=dvme.HEADS, attention=config.attention,
            token_dim=config.token_dim, scoring=scoring, seed=seed, device=config.device,
            standardize=config.standardize,
        )
    if config.method == "linear":
        from featlab.eval.linear_probe import LinearProbe

        return LinearProbe(
            scoring=scoring, seed=seed, device=config.device, standardize=config.standardize
        )
    if config.method == "logreg":
        from featlab.eval.logreg import LogisticProbe

        return LogisticProbe(scoring=scoring, seed=seed, standardize=config.standardize)
    # Named, not a fall-through: any other method (knn, finetune) has no trained probe.
    raise InvalidArgumentError(
        f"no trained probe for method {config.method!r}; the trained probes are linear, logreg "
        "and dvme"
    )


def _full_columns(proba: np.ndarray, classes: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Single-label probabilities over all ``n_classes`` (a class absent in training gets 0)."""
    if classes is None or proba.shape[1] == n_classes:
        return proba
    out = np.zeros((len(proba), n_classes), dtype=proba.dtype)
    out[:, np.asarray(classes, dtype=np.int64)] = proba
    return out


def all_task_metrics(y: np.ndarray, scores: np.ndarray, task: str) -> dict[str, float]:
    from featlab.eval.metrics import compute_metrics, metrics_for_task

    out = {}
    for name in metrics_for_task(task):
        try:
            out[name] = float(compute_metrics(y, scores, task, [name])[name])
        except InvalidArgumentError:  # e.g. AUC on a test set holding one class only
            out[name] = float("nan")
    return out


def summarize(run: ProbeRun) -> list[SummaryRow]:
    """Mean and std over folds per variant x size (in the order run), with bootstrap CIs."""
    from featlab.eval.stats import bootstrap_ci

    rows: list[SummaryRow] = []
    groups: dict[tuple[str, str], list[FoldResult]] = {}
    for f in run.folds:
        groups.setdefault((f.variant, f.size), []).append(f)
    for (variant, size), fs in groups.items():
        names = list(fs[0].metrics)
        values = {m: np.array([f.metrics[m] for f in fs], dtype=np.float64) for m in names}
        # Sample std (ddof=1) across folds, as papers' "mean ± std over 5 folds" report it.
        ddof = 1 if len(fs) > 1 else 0
        means = {m: float(np.mean(v)) for m, v in values.items()}
        stds = {m: float(np.std(v, ddof=ddof)) for m, v in values.items()}
        ci = None
        if run.config.bootstrap:
            fold_scores = [run.test_scores[f"{variant}|{size}/{f.fold}"] for f in fs]
            ci = bootstrap_ci(
                run.test_labels, fold_scores, run.metric, run.task,
                n_boot=run.config.bootstrap, seed=run.config.seed,
            ).to_dict()
        rows.append(
            SummaryRow(
                variant, size, run.metric, means[run.metric], stds[run.metric], len(fs),
                float(np.mean([f.n_train for f in fs])), means, stds, ci,
            )
        )
    return rows


def _identity(ds: DatasetGroup, model: str) -> dict[str, Any]:
    """What identifies the embeddings evaluated (so a re-extraction is not confused with them)."""
    attrs = ds.model_attrs(model)
    weights = attrs.get("weights") or {}
    return {
        "created": attrs.get("created"),
        "weights_sha256": weights.get("sha256") if isinstance(weights, dict) else None,
        "precision": attrs.get("precision"),
        "dim": ds.dim(model),
    }
