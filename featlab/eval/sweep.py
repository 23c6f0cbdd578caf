"""Evaluate many models of many datasets on shared low-shot folds, saving every run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from featlab.errors import FeatlabError
from featlab.eval.protocol import ProbeConfig, ProbeRun, plan_for, run_probe

if TYPE_CHECKING:
    from featlab.store import FeatureStore


@dataclass
class SweepResult:
    """Runs evaluated (saved when asked) and the dataset/model pairs skipped, with reasons."""

    runs: list[ProbeRun] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # dataset, model, reason


def evaluate_store(
    store: FeatureStore,
    config: ProbeConfig,
    *,
    datasets: Sequence[str] = (),
    models: Sequence[str] = (),
    save: bool = True,
    on_run: Callable[[ProbeRun], None] | None = None,
) -> SweepResult:
    """Run ``config`` for every (named) dataset x complete model of ``store``.

    The low-shot plan is drawn once per dataset and shared by all its models, so their runs are
    paired. A pair that cannot be evaluated (e.g. no test split, a metric that does not apply)
    is skipped with its reason, unless its dataset was named, which raises. Models named
    without datasets are evaluated wherever they were extracted.

    Args:
        store: An open store (mode ``"a"`` when ``save``).
        config: The evaluation.
        datasets, models: Restrict to these names (default: everything complete).
        save: Save each run under ``<dataset>/results/``.
        on_run: Called after each run (e.g. to print progress).

    Raises:
        FeatlabError: A pair of a named dataset cannot be evaluated.
        UnknownModelError: No dataset holds any of the named models.
    """
    from featlab.eval.results import save_run

    out = SweepResult()
    for name in datasets or store.datasets:
        ds = store[name]
        chosen = list(models) if models else list(ds.models)
        if models and not datasets:
            chosen = [m for m in chosen if m in ds.all_models()]  # only where it was extracted
        if not chosen:
            continue
        # Only a dataset named with --dataset must evaluate; others are skipped with the reason.
        strict = bool(datasets)
        try:
            plan = plan_for(ds, config)
        except FeatlabError as err:
            if strict:
                raise
            out.skipped.extend((name, m, str(err)) for m in chosen)
            continue
        if config.method == "dvme":
            if not models:  # fusing fused models is allowed, but only when asked for
                chosen = [m for m in chosen if not ds.model_attrs(m).get("derived")]
            try:
                _fuse_dataset(ds, chosen, config, plan, save, out, on_run)
            except FeatlabError as err:
                if strict:
                    raise
                out.skipped.append((name, "+".join(chosen), str(err)))
            continue
        for model in chosen:
            try:
                run = run_probe(ds, model, config, plan=plan)
            except FeatlabError as err:
                if strict:
                    raise
                out.skipped.append((name, model, str(err)))
                continue
            if save:
                save_run(ds, run)
            out.runs.append(run)
            if on_run:
                on_run(run)
    if models and not out.runs and not out.skipped:
        from featlab.errors import UnknownModelError

        raise UnknownModelError(
            f"no dataset in {store.path} has embeddings of {list(models)}; `featlab info` lists "
            "what is stored"
        )
    return out


def _fuse_dataset(ds, models, config, plan, save, out: SweepResult, on_run) -> None:
    """DVME over ``models`` of ``ds``, after the linear probe of each on the same plan and the
    same rows (the samples every model embedded) — the baselines of the DVME paper's Table 4;
    the best of them per size goes with the DVME run."""
    from dataclasses import replace

    from featlab.eval.protocol import _identity, evaluate_rows, refuse_fit_split, usable_rows
    from featlab.eval.results import save_run
    from featlab.fusion.evaluate import best_single, check_fusable, run_dvme

    models = check_fusable(ds, models)
    linear = replace(config, method="linear", attention=True, token_dim=None)
    shared = usable_rows(ds, models)
    baselines = []
    for model in models:
        refuse_fit_split(ds, model, plan, "linear")
        baselines.append(evaluate_rows(ds, model, [model], shared, linear, plan=plan,
                                       identity=_identity(ds, model)))
    fused = run_dvme(ds, models, config, plan=plan)
    runs = [*baselines, fused]
    if save:
        for run in baselines:
            save_run(ds, run)
    fused.plan["best_single"] = best_single(baselines)  # after saving: with the run ids
    if save:
        save_run(ds, fused)
    for run in runs:
        out.runs.append(run)
        if on_run:
            on_run(run)
