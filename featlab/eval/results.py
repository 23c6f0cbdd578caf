"""Save, list, load and print evaluation runs (``featlab probe``, ``featlab results``)."""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.eval.lowshot import TrainingSize
from featlab.eval.protocol import FoldResult, ProbeConfig, ProbeRun, SummaryRow
from featlab.store import _results as R
from featlab.store._layout import model_key

if TYPE_CHECKING:
    from featlab.store import DatasetGroup, FeatureStore


def new_run_id(model: str, method: str) -> str:
    """``20261122-031500.123456-knn-timm~resnet18-3fa2c1``: sortable by time (microseconds,
    so runs saved within one second — a sweep's — keep their order), unique per store."""
    now = datetime.now(UTC)
    tag = hashlib.sha256(f"{time.time_ns()}{model}{method}".encode()).hexdigest()[:6]
    return f"{now:%Y%m%d-%H%M%S.%f}-{method}-{model_key(model)}-{tag}"


def save_run(ds: DatasetGroup, run: ProbeRun) -> str:
    """Save ``run`` under ``<dataset>/results/<run-id>``; returns (and sets) its id.

    Raises:
        StoreReadOnlyError: The store was opened read-only.
    """
    run.run_id = run.run_id or new_run_id(run.model, run.config.method)
    train_keys = list(run.train_rows)
    score_keys = list(run.test_scores)
    lengths = [len(run.train_rows[k]) for k in train_keys]
    arrays = {
        "test_rows": run.test_rows.astype(np.int64),
        "test_labels": np.asarray(run.test_labels),
        "val_rows": run.val_rows.astype(np.int64),
        "train_rows": np.concatenate([run.train_rows[k] for k in train_keys]).astype(np.int64)
        if train_keys
        else np.zeros(0, np.int64),
        "train_offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "test_scores": np.stack([run.test_scores[k] for k in score_keys]).astype(np.float32),
    }
    record = run.to_dict()
    record["arrays"] = {"train_keys": train_keys, "score_keys": score_keys}
    R.write_run(ds, run.run_id, record, arrays)
    return run.run_id


def load_run(store: FeatureStore, run_id: str) -> ProbeRun:
    """A saved run, with its indices and test scores.

    Raises:
        UnknownRunError: No run of that id in the store.
    """
    ds = R.find_run(store, run_id)
    rec = R.read_record(ds, run_id)
    arr = R.read_arrays(ds, run_id)
    offsets = arr["train_offsets"]
    train_keys = rec["arrays"]["train_keys"]
    train_rows = {
        k: arr["train_rows"][offsets[i] : offsets[i + 1]] for i, k in enumerate(train_keys)
    }
    scores = dict(zip(rec["arrays"]["score_keys"], arr["test_scores"], strict=True))
    return ProbeRun(
        dataset=rec["dataset"],
        model=rec["model"],
        task=rec["task"],
        config=config_from_dict(rec["config"]),
        metric=rec["metric"],
        plan=rec["plan"],
        folds=[FoldResult(**f) for f in rec.get("folds", [])],
        summary=[SummaryRow(**s) for s in rec["summary"]],
        test_rows=arr["test_rows"],
        test_labels=arr["test_labels"],
        train_rows=train_rows,
        val_rows=arr["val_rows"],
        test_scores=scores,
        created=rec["created"],
        elapsed_s=rec["elapsed_s"],
        run_id=run_id,
        model_identity=rec.get("model_identity", {}),
        featlab_version=rec["featlab_version"],
    )


def config_from_dict(d: dict[str, Any]) -> ProbeConfig:
    """Rebuild a :class:`ProbeConfig` from its ``to_dict()`` form."""
    known = {f.name for f in fields(ProbeConfig)}
    kwargs = {k: v for k, v in d.items() if k in known}
    kwargs["sizes"] = tuple(TrainingSize(x["kind"], x["value"]) for x in d["size_specs"])
    if "ks" in kwargs:
        kwargs["ks"] = tuple(kwargs["ks"])
    return ProbeConfig(**kwargs)


def list_runs(
    store: FeatureStore,
    *,
    dataset: str | None = None,
    model: str | None = None,
    method: str | None = None,
) -> list[dict[str, Any]]:
    """Records of every saved run (oldest first), optionally filtered."""
    out = []
    for name in [dataset] if dataset else store.datasets:
        ds = store[name]
        for run_id in R.run_ids(ds):
            rec = R.read_record(ds, run_id)
            if model and rec["model"] != model:
                continue
            if method and rec["method"] != method:
                continue
            out.append(rec)
    return out


def latest_run(
    store: FeatureStore, dataset: str, model: str, method: str | None = None
) -> ProbeRun:
    """The most recent saved run of ``model`` on ``dataset`` (and ``method``).

    Raises:
        UnknownRunError: None is saved.
    """
    from featlab.errors import UnknownRunError

    runs = list_runs(store, dataset=dataset, model=model, method=method)
    if not runs:
        what = f"{method} " if method else ""
        raise UnknownRunError(
            f"no saved {what}run of {model!r} on {dataset!r}; run `featlab probe --model "
            f"{model} --dataset {dataset}` first"
        )
    return load_run(store, runs[-1]["run_id"])


def latest_runs(
    store: FeatureStore,
    dataset: str,
    *,
    models: Sequence[str] = (),
    method: str | None = None,
) -> list[ProbeRun]:
    """The most recent saved run of each (model, method) of ``dataset`` (filtered by
    ``models`` / ``method``), in the order their latest runs were saved.

    Raises:
        UnknownRunError: None matches.
    """
    from featlab.errors import UnknownRunError

    latest: dict[tuple[str, str], str] = {}
    for rec in list_runs(store, dataset=dataset, method=method):  # oldest first
        if not models or rec["model"] in models:
            latest.pop((rec["model"], rec["method"]), None)
            latest[(rec["model"], rec["method"])] = rec["run_id"]
    if not latest:
        which = f" of {list(models)}" if models else ""
        raise UnknownRunError(
            f"no saved {method + ' ' if method else ''}runs{which} on {dataset!r} in "
            f"{store.path}; `featlab probe` evaluates and saves them"
        )
    return [load_run(store, run_id) for run_id in latest.values()]


# -- printing ---------------------------------------------------------------------------------


def json_safe(x: Any) -> Any:
    """``x`` with NaN/inf floats as ``None`` (JSON has no NaN; an undefined metric is null)."""
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x



def summary_table(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows ``{dataset, model, method, metric, <size>: "mean ± std", ...}`` for printing.

    One row per run and variant (e.g. ``knn k=20``), one column per training size.
    """
    rows: list[dict[str, str]] = []
    for rec in records:
        by_variant: dict[str, dict[str, str]] = {}
        for s in rec["summary"]:
            row = by_variant.setdefault(
                s["variant"],
                {
                    "dataset": rec["dataset"],
                    "model": rec["model"],
                    "method": _method_label(rec["method"], s["variant"]),
                    "metric": s["metric"],
                },
            )
            row[s["size"]] = SummaryRow(**s).cell()
        rows.extend(by_variant.values())
    return rows


def _method_label(method: str, variant: str) -> str:
    return method if variant == method else f"{method} {variant}"


def format_table(rows: list[dict[str, str]]) -> str:
    """A plain-text table with aligned columns (sizes in first-seen order)."""
    if not rows:
        return ""
    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_csv(records: list[dict[str, Any]]) -> str:
    """Long-format CSV: one line per run x variant x size x fold x metric."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_id", "dataset", "model", "method", "variant", "size", "fold", "n_train",
                "metric", "value"])
    for rec in records:
        for f in rec.get("folds", []):
            for metric, value in f["metrics"].items():
                w.writerow([rec["run_id"], rec["dataset"], rec["model"], rec["method"],
                            f["variant"], f["size"], f["fold"], f["n_train"], metric,
                            f"{value:.6g}"])
    return buf.getvalue()
