"""A finetune's test result as a saved evaluation run, beside the probes of the same folds.

The run is a :class:`~featlab.eval.protocol.ProbeRun` with method ``finetune`` and one fold
(the one trained), so ``featlab results`` lists it, ``featlab plot`` draws it and its training
rows are visibly the low-shot draw the probes of the same seed, size and fold used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.eval.lowshot import Fold, LowShotPlan
from featlab.eval.protocol import (
    FoldResult,
    ProbeConfig,
    ProbeRun,
    all_task_metrics,
    summarize,
)

if TYPE_CHECKING:
    from featlab.store import DatasetGroup
    from featlab.train.finetune import FinetuneResult


def finetune_run(
    ds: DatasetGroup,
    model: str,
    plan: LowShotPlan,
    fold: Fold,
    result: FinetuneResult,
    *,
    recipe: str,
    info: dict[str, Any],
    identity: dict[str, Any],
    device: str = "cpu",
) -> ProbeRun:
    """The :class:`ProbeRun` of one finetune (scores of ``best.pt`` on ``plan.test``).

    Args:
        ds: The dataset group the plan indexes.
        model: The model finetuned (the name it was loaded as).
        plan: The low-shot plan the training rows came from.
        fold: The draw trained on.
        result: What :func:`featlab.train.finetune.finetune` returned.
        recipe: The recipe name (the run's variant).
        info: Settings and run facts recorded with the fold (recipe config, run folder, ...).
        identity: What identifies the starting weights.
    """
    config = ProbeConfig(
        method="finetune", sizes=(fold.size,), folds=1, seed=plan.seed,
        metric=result.metric, device=device,
    )
    y_test = ds.labels[plan.test]
    fold_result = FoldResult(
        recipe, fold.size.label, fold.fold, len(fold.train),
        all_task_metrics(y_test, result.test_scores, ds.task), info,
    )
    run = ProbeRun(
        dataset=ds.name, model=model, task=ds.task, config=config, metric=result.metric,
        plan={**plan.describe(), "n_test_scored": len(plan.test), "n_val_used": len(plan.val)},
        folds=[fold_result], summary=[], test_rows=plan.test, test_labels=y_test,
        train_rows={fold.key: fold.train}, val_rows=plan.val,
        test_scores={f"{recipe}|{fold.key}": result.test_scores.astype(np.float32)},
        created=datetime.now(UTC).isoformat(timespec="seconds"), elapsed_s=result.seconds,
        model_identity=identity,
    )
    run.summary = summarize(run)
    return run

