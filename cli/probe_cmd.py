"""``featlab probe``: evaluate stored embeddings on low-shot folds; save and print the runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from featlab.cli._common import store_option


def split_names(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--model a,b --model c`` -> ``("a", "b", "c")`` (order kept, duplicates dropped)."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(dict.fromkeys(names))


def parse_ks(value: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise click.BadParameter(f"expected positive whole numbers like 20,200; got {value!r}")
    return ks


@click.command("probe")
@click.option(
    "--method",
    type=click.Choice(["knn", "linear", "logreg", "dvme"]),
    default="knn",
    show_default=True,
    help="knn: cosine FAISS, DINO's weighted vote; linear: the DVME paper's torch probe; "
    "logreg: logistic regression, C chosen on val; dvme: attention fusion of the --model list "
    "(run beside each model's linear probe on the same folds).",
)
@click.option("--model", "models", multiple=True, help="Models, comma-separated or repeated "
              "[default: every complete model].")
@click.option("--dataset", "datasets", multiple=True, help="Datasets, comma-separated or "
              "repeated [default: all in the store].")
@click.option("--shots", default=None, help="Class-balanced training sizes, e.g. 50,500,all.")
@click.option("--fractions", default=None, help="Stratified label fractions, e.g. 0.01,0.1,1.")
@click.option("--folds", type=click.IntRange(min=1), default=5, show_default=True,
              help="Seeded draws per training size.")
@click.option("-k", "--k", "ks", default="20,200", show_default=True,
              help="kNN neighbours, comma-separated.")
@click.option("--vote", type=click.Choice(["weighted", "majority"]), default="weighted",
              show_default=True, help="kNN vote: exp(cos/T) weights (DINO) or one per neighbour.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=0.07,
              show_default=True, help="kNN weighted-vote temperature.")
@click.option("--index", type=click.Choice(["flat", "ivf"]), default="flat", show_default=True,
              help="kNN search: exact, or IVF (approximate; recall@k is reported).")
@click.option("--metric", default=None, help="Headline metric [default: the dataset's: AUC for "
              "binary, kappa for ordinal, mean AUC for multi-label, accuracy otherwise].")
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test-set resamples for a 95% confidence interval (0 = none).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the folds, probes and bootstrap.")
@click.option("--device", default="cpu", show_default=True, help="Device of the linear probe.")
@click.option("--no-standardize", is_flag=True, help="Probes: do not standardise features with "
              "the training subset's mean/std (the DVME paper's probe literally).")
@click.option("--no-attention", is_flag=True, help="DVME without self-attention (the paper's "
              "Appendix C ablation).")
@click.option("--token-dim", type=click.Choice(["512", "1"]), default="512", show_default=True,
              help="DVME tokens: one 512-d token per model (the paper's text), or 1-d tokens "
              "(its appendix listing).")
@click.option("--no-save", is_flag=True, help="Do not save the runs in the store.")
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per run.")
@click.option("--csv", "as_csv", is_flag=True, help="Print every fold's metrics as CSV.")
def probe_cmd(
    method: str,
    models: tuple[str, ...],
    datasets: tuple[str, ...],
    shots: str | None,
    fractions: str | None,
    folds: int,
    ks: str,
    vote: str,
    temperature: float,
    index: str,
    metric: str | None,
    bootstrap: int,
    seed: int,
    device: str,
    no_standardize: bool,
    no_attention: bool,
    token_dim: str,
    no_save: bool,
    store_path: Path | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Evaluate every complete dataset x model in the store (or the ones named).

    Trains on class-balanced subsets of 'train' (--shots) or stratified fractions
    (--fractions), --folds seeded draws each, selects on 'val' (held out of train when the
    dataset has none) and scores 'test'. The draws are shared by every model and method, so
    runs compare pairwise (`featlab compare`). Runs are saved in the store (`featlab results`).
    """
    from featlab.eval.lowshot import parse_sizes
    from featlab.eval.protocol import ProbeConfig
    from featlab.eval.results import format_csv, format_table, json_safe, summary_table
    from featlab.eval.sweep import evaluate_store
    from featlab.store import open_store

    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    config = ProbeConfig(
        method=method, sizes=parse_sizes(shots, fractions), folds=folds, seed=seed,
        ks=parse_ks(ks), temperature=temperature, vote=vote, index=index, metric=metric,
        bootstrap=bootstrap, device=device, standardize=not no_standardize,
        attention=not no_attention, token_dim=1 if token_dim == "1" else None,
    )
    store = open_store(store_path, mode="r" if no_save else "a")
    result = evaluate_store(
        store, config, datasets=split_names(datasets), models=split_names(models),
        save=not no_save,
    )
    for ds_name, model, reason in result.skipped:
        click.echo(f"skipped {ds_name} | {model}: {reason}", err=True)
    if not result.runs:
        raise click.ClickException(
            f"nothing to evaluate in {store.path}: no complete model could be probed; "
            "run featlab extract first"
        )
    records = [r.to_dict() for r in result.runs]
    if as_json:
        for rec in records:
            click.echo(json.dumps(json_safe(rec)))
    elif as_csv:
        click.echo(format_csv(records), nl=False)
    else:
        click.echo(format_table(summary_table(records)))
        for run in result.runs:
            if "best_single" in run.plan:
                click.echo(_versus_best_single(run))
        sys.stdout.flush()  # the note below goes to stderr: keep it after the table
        if not no_save:
            click.echo(f"saved {len(records)} run(s) in {store.path}; `featlab results` lists "
                       "them", err=True)


def _versus_best_single(run) -> str:
    """``dvme(a+b) vs the best single model (linear probe), per size: ...``."""
    best = run.plan["best_single"]
    parts = []
    for row in run.summary:
        b = best.get(row.size)
        if b:
            parts.append(f"{row.size}: {row.mean:.4f} vs {b['mean']:.4f} ({b['model']}, "
                         f"{row.mean - b['mean']:+.4f})")
    return f"{run.model} {run.metric} vs the best single model's linear probe: " + "; ".join(parts)
