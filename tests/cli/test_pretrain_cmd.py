"""``featlab pretrain``: help, a tiny end-to-end run, resume by rerunning, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from featlab.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = [
    "--img-size",
    "32",
    "--batch-size",
    "16",
    "--init",
    "random",
    "--precision",
    "fp32",
    "--workers",
    "0",
    "--split",
    "test",
    "--limit",
    "32",
]


def test_help_lists_the_methods_and_options() -> None:
    out = CliRunner().invoke(cli, ["pretrain", "--help"])
    assert out.exit_code == 0
    for word in ("cass|bolt|dino", "--cnn", "--vit", "--arch", "--init", "--out", "--epochs"):
        assert word in out.output


def test_cass_run_writes_extractable_arms_and_reruns_as_complete(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "tiny"
    args = [
        "pretrain",
        "--method",
        "cass",
        "digits",
        "--cnn",
        "test_resnet",
        "--vit",
        "test_vit",
        "--epochs",
        "1",
        "--out",
        str(out),
        *TINY,
    ]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "epoch 1/1  loss" in first.output
    assert f"extract with --model timm:test_resnet@{out}" in first.output
    manifest = json.loads((out / "featlab-run.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["config"]["splits"] == ["test"]
    assert manifest["config"]["n_images"] == 32
    assert manifest["timing"]["images"] == 32
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "already complete" in second.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "cass", "--arch", "test_vit"], "--arch is for bolt and dino"),
        (["--method", "dino", "--cnn", "test_resnet"], "--cnn/--vit are for cass"),
        (["--method", "cass", "--no-difficulty"], "--no-difficulty applies to --method bolt"),
    ],
)
def test_options_of_another_method_are_usage_errors(args: list[str], message: str) -> None:
    out = CliRunner().invoke(cli, ["pretrain", "digits", *args])
    assert out.exit_code == 2
    assert message in out.output


def test_a_folder_of_another_run_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    out = CliRunner().invoke(
        cli,
        [
            "pretrain",
            "--method",
            "bolt",
            "digits",
            "--arch",
            "test_vit",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "r"),
            *TINY,
        ],
    )
    assert out.exit_code == 1
    assert "not a featlab run folder" in out.output
