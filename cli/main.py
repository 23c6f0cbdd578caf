"""The ``featlab`` command: a thin shell over the library, one call per command.

Subcommands are imported only when run, so ``featlab --help`` loads neither torch nor faiss.
Every :class:`featlab.errors.FeatlabError` becomes a one-line message and exit code 1.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from featlab._version import __version__

# name -> (module, attribute, one-line help shown by `featlab --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "datasets": (
        "featlab.cli.datasets_cmd",
        "datasets_cmd",
        "List registered datasets: task, classes, splits, metric, where found on disk.",
    ),
    "download": (
        "featlab.cli.download_cmd",
        "download_cmd",
        "Download an openly available dataset (PCam, MedMNIST), verified and resumable.",
    ),
    "extract": (
        "featlab.cli.extract_cmd",
        "extract_cmd",
        "Extract embeddings of one or more models over a dataset into the store.",
    ),
    "models": (
        "featlab.cli.models_cmd",
        "models_cmd",
        "List the model zoo: architectures, dims per view, weight sources, local presence.",
    ),
    "info": (
        "featlab.cli.info_cmd",
        "info_cmd",
        "List the store's datasets and models: dims, completeness, size on disk.",
    ),
    "probe": (
        "featlab.cli.probe_cmd",
        "probe_cmd",
        "Evaluate stored embeddings (k-NN, linear, logreg, DVME) on low-shot folds; saves results.",
    ),
    "results": (
        "featlab.cli.results_cmd",
        "results_cmd",
        "List saved evaluation runs, or re-print one.",
    ),
    "compare": (
        "featlab.cli.compare_cmd",
        "compare_cmd",
        "Paired test between two saved runs on the same test samples and folds.",
    ),
    "neighbors": (
        "featlab.cli.neighbors_cmd",
        "neighbors_cmd",
        "Nearest stored samples of a sample id or an image, by a model's embeddings.",
    ),
    "fuse": (
        "featlab.cli.fuse_cmd",
        "fuse_cmd",
        "Fit DVME over several models and store its fused embeddings as a derived model.",
    ),
    "tsne": (
        "featlab.cli.tsne_cmd",
        "tsne_cmd",
        "t-SNE of stored embeddings, one panel per model coloured by class (cached in the store).",
    ),
    "plot": (
        "featlab.cli.plot_cmd",
        "plot_cmd",
        "Plot saved results: low-shot curves, ROC curves, confusion matrices.",
    ),
    "finetune": (
        "featlab.cli.finetune_cmd",
        "finetune_cmd",
        "Finetune a backbone (all or its last blocks) on low-shot folds; the checkpoint extracts.",
    ),
    "pretrain": (
        "featlab.cli.pretrain_cmd",
        "pretrain_cmd",
        "Self-supervise backbones (CASS, BOLT, DINO) on your own images; checkpoints extract.",
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from featlab.errors import FeatlabError

        try:
            return super().invoke(ctx)
        except FeatlabError as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(err)) from err


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="featlab")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """featlab: extract backbone embeddings once into a zarr store, evaluate them cheaply."""
    ctx.obj = {"debug": debug}
