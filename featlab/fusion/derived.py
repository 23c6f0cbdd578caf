"""A fitted DVME written back into the store as a model of its own (its fused 512-d vector).

The entry behaves like any extracted model (kNN, t-SNE, neighbours run on it unchanged) and
carries its provenance in ``attrs["derived"]``: the method, the source models and their
identities, the splits it was fitted on (train trains, val chooses the epoch), the seed and the
settings. Because its features were trained with the labels of those splits, the evaluation
protocol refuses to score it on them (:func:`featlab.eval.protocol.refuse_fit_split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval.protocol import ProbeConfig, _identity, read_side_by_side, usable_rows
from featlab.fusion.evaluate import check_fusable, dvme_name
from featlab.store import _layout as L

if TYPE_CHECKING:
    from featlab.fusion.dvme import DVMEClassifier
    from featlab.store import DatasetGroup

WRITE_ROWS = 4096  # rows transformed and written at a time


def fuse_into_store(
    ds: DatasetGroup,
    models: Sequence[str],
    *,
    name: str | None = None,
    config: ProbeConfig | None = None,
    fit_split: str = "train",
    overwrite: bool = False,
    estimator: DVMEClassifier | None = None,
) -> str:
    """Fit DVME on ``fit_split`` of ``ds`` and store its fused vectors of every sample.

    Args:
        ds: A dataset of a store opened with ``mode="a"``.
        models: At least two complete models of ``ds``.
        name: The new model's name (default ``fused-dvme(a+b+...)``; not ``dvme(...)``, the
            name of DVME's protocol runs).
        config: ``seed``, ``attention``, ``token_dim``, ``standardize``, ``device`` and
            ``metric`` (the validation score that chooses the epoch) are used.
        fit_split: The split trained on; ``val`` (if the dataset has one and it is not the fit
            split) chooses the epoch, else a seeded 10 % of ``fit_split`` does.
        overwrite: Refit and replace a stored model of that name (else storing is refused).
        estimator: A configured, unfitted :class:`DVMEClassifier` to use instead of the
            defaults (tests use a small one); its ``dims`` are set here.

    Returns:
        The stored model's name.

    Raises:
        InvalidArgumentError: Fewer than two models, ``fit_split`` has no usable labelled
            sample, or a model of that name is stored and ``overwrite`` is False.
    """
    from sklearn.base import clone

    from featlab.eval.protocol import dataset_metric
    from featlab.fusion import dvme

    config = config or ProbeConfig(method="dvme")
    models = check_fusable(ds, models)
    name = name or f"fused-{dvme_name(models, config)}"
    if name in ds.all_models() and not overwrite:
        raise InvalidArgumentError(
            f"{ds.name!r} already has a model named {name!r}; pass overwrite=True (--overwrite) "
            "to refit and replace it, or choose another name"
        )
    usable = usable_rows(ds, models)
    labels = ds.labels
    known = (labels >= 0).any(axis=1) if labels.ndim == 2 else labels >= 0  # -1 = unknown
    fit = np.flatnonzero(usable & known & (ds.splits == fit_split))
    if not len(fit):
        raise InvalidArgumentError(
            f"split {fit_split!r} of {ds.name!r} has no labelled sample usable by all of "
            f"{models}; splits present: {sorted(set(ds.splits.tolist()))}"
        )
    classes = None if labels.ndim == 2 else np.unique(labels[fit])
    val = np.flatnonzero(usable & known & (ds.splits == "val")) if fit_split != "val" else fit[:0]
    if classes is not None:  # val samples of classes never trained on cannot be scored
        val = val[np.isin(labels[val], classes)]
    est = clone(estimator) if estimator is not None else dvme.DVMEClassifier(
        proj_dim=dvme.PROJ_DIM, heads=dvme.HEADS, attention=config.attention,
        token_dim=config.token_dim, seed=config.seed, device=config.device,
        standardize=config.standardize,
    )
    est.set_params(dims=tuple(ds.dim(m) for m in models), scoring=_scoring(ds, config, classes))
    read = partial(read_side_by_side, ds, models)
    eval_set = (read(val), labels[val]) if len(val) else None
    est.fit(read(fit), labels[fit], eval_set=eval_set)
    inherited = [ds.model_attrs(m).get("derived") or {} for m in models]
    trained = sorted({fit_split}.union(*(d.get("trained_splits", ()) for d in inherited)))
    fitted = sorted({fit_split, *(["val"] if len(val) else [])}.union(
        *(d.get("fit_splits", ()) for d in inherited)))
    provenance = {
        "method": "dvme", "sources": list(models),
        "source_identities": {m: _identity(ds, m) for m in models},
        # Labels seen, by this fit or any derived source's (a fused model of fused models
        # inherits them): the protocol refuses to score or low-shot-train on these splits.
        "fit_splits": fitted, "trained_splits": trained,
        "n_fit": len(fit), "n_val": len(val),
        "val_metric": config.metric or dataset_metric(ds),
        "best_epoch": int(est.best_epoch_),
        "params": {k: v for k, v in est.get_params().items() if k not in ("scoring", "dims")},
    }
    _write(ds, name, est, read, usable, provenance)
    return name


def _scoring(ds: DatasetGroup, config: ProbeConfig, classes: np.ndarray | None):
    """The validation score choosing the epoch: the run's headline metric, as the probes use."""
    from featlab.eval.metrics import resolve_metric, score_metric
    from featlab.eval.protocol import _full_columns, dataset_metric

    metric = resolve_metric(config.metric or dataset_metric(ds), ds.task)

    def score(y: np.ndarray, proba: np.ndarray) -> float:
        return score_metric(metric, y, _full_columns(proba, classes, len(ds.classes)), ds.task)

    return score


def _write(ds, name: str, est, read, usable: np.ndarray, provenance: dict[str, Any]) -> None:
    identity = {
        "spec": {"derived": "dvme", "sources": provenance["sources"], **provenance["params"]},
        "weights": {"source_identities": provenance["source_identities"],
                    "fit_splits": provenance["fit_splits"]},
        "precision": "fp32",
    }
    dim = int(est.proj_dim)
    with ds.open_writer(name, dim=dim, chunk_rows=L.chunk_rows_for(dim, WRITE_ROWS),
                        identity=identity, attrs={"derived": provenance},
                        overwrite=True) as writer:  # refused above unless asked
        chunk = writer.chunk_rows
        for lo in range(0, ds.n, chunk):
            rows = np.arange(lo, min(lo + chunk, ds.n))
            ok = usable[rows]
            values = np.zeros((len(rows), dim), dtype=np.float32)
            if ok.any():
                values[ok] = est.transform(read(rows[ok]))
            # Rows some source could not embed stay zero and are marked bad, as extraction does.
            writer.write(rows, values, bad=~ok)
        writer.update_attrs(complete=True)
