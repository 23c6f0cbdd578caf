"""DVME on the low-shot protocol: one run over several models, beside the best single model.

The paper (section 6.2, Table 4) reports DVME against "the self-supervised initialization ...
that leads to the best linear evaluation performance" on the same subsets; here the baseline is
the linear probe of each fused model on the same plan, and the best of them per training size
is recorded with the DVME run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval.protocol import (
    ProbeConfig,
    ProbeRun,
    _identity,
    evaluate_rows,
    plan_for,
    refuse_fit_split,
    usable_rows,
)

if TYPE_CHECKING:
    from featlab.eval.lowshot import LowShotPlan
    from featlab.store import DatasetGroup


def dvme_name(models: Sequence[str], config: ProbeConfig) -> str:
    """The run's model name: ``dvme(a+b+c)``; ``dvme-noattn`` / ``dvme-t1`` for the variants."""
    kind = "dvme" if config.attention else "dvme-noattn"
    if config.attention and config.token_dim == 1:
        kind = "dvme-t1"
    return f"{kind}({'+'.join(models)})"


def check_fusable(ds: DatasetGroup, models: Sequence[str]) -> list[str]:
    """``models`` de-duplicated; at least two.

    Raises:
        InvalidArgumentError: Fewer than two distinct models.
    """
    chosen = list(dict.fromkeys(models))
    if len(chosen) < 2:
        raise InvalidArgumentError(
            f"DVME fuses at least 2 models of {ds.name!r}; got {chosen}. Name them with "
            f"--model a,b (stored: {', '.join(ds.models) or 'none'})"
        )
    return chosen


def run_dvme(
    ds: DatasetGroup,
    models: Sequence[str],
    config: ProbeConfig,
    *,
    plan: LowShotPlan | None = None,
) -> ProbeRun:
    """DVME over ``models`` (aligned by sample row) on every training size x fold of the plan.

    Each fold's mean attention between the models (over the test samples) is in its
    ``info["attention"]`` (row i: what model i attends to; ``info["attention_models"]``).

    Raises:
        InvalidArgumentError: Fewer than two models; ``config.method`` is not ``"dvme"``.
        IncompleteEmbeddingError: A model is incomplete.
    """
    if config.method != "dvme":
        raise InvalidArgumentError(f"run_dvme needs method='dvme'; got {config.method!r}")
    models = check_fusable(ds, models)
    plan = plan or plan_for(ds, config)
    for m in models:
        refuse_fit_split(ds, m, plan, config.method)
    identity = {"sources": {m: _identity(ds, m) for m in models}}
    return evaluate_rows(ds, dvme_name(models, config), models, usable_rows(ds, models), config,
                         plan=plan, identity=identity)


def best_single(baselines: Sequence[ProbeRun]) -> dict[str, dict[str, Any]]:
    """Per training size, the baseline run with the highest mean headline metric."""
    best: dict[str, dict[str, Any]] = {}
    for run in baselines:
        for row in run.summary:
            better = row.size not in best or row.mean > best[row.size]["mean"]
            if np.isfinite(row.mean) and better:
                best[row.size] = {"model": run.model, "run_id": run.run_id, "mean": row.mean,
                                  "std": row.std, "metric": row.metric}
    return best
