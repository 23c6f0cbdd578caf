"""``featlab finetune`` end to end on a folder dataset, then its checkpoint extracted by name."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from featlab.cli.main import cli
from featlab.store import open_store


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_finetune_then_extract_the_checkpoint(split_image_folder, tmp_path):
    store, run = tmp_path / "st.zarr", tmp_path / "runs" / "ft"
    dataset = f"folder:{split_image_folder}"
    command = ("finetune", "--model", "timm:test_resnet", "--random-init", "--img-size", 32,
               "--epochs", 2, "--batch-size", 6, "--precision", "fp32", "--out", run,
               "--store", store, dataset)  # 12 training images: 2 batches of 6
    res = invoke(*command)
    assert res.exit_code == 0, res.output
    assert "epoch   2  loss" in res.output
    assert "val loss" in res.output
    assert "test accuracy" in res.output
    assert f"featlab extract --model 'timm:test_resnet@{run.as_posix()}'" in res.output
    again = invoke(*command)
    assert again.exit_code == 0, again.output
    assert "already complete; nothing trained" in again.output
    res = invoke("extract", "--model", f"timm:test_resnet@{run}", "--precision", "fp32",
                 "--store", store, dataset)
    assert res.exit_code == 0, res.output
    ds = open_store(store)[next(iter(open_store(store).datasets))]
    assert f"timm:test_resnet@{run.as_posix()}" in ds.models
    listed = invoke("results", "--json", "--store", store)
    records = [json.loads(line) for line in listed.output.splitlines()]
    assert [r["method"] for r in records] == ["finetune"]


def test_finetune_errors_are_clean_messages(split_image_folder, tmp_path):
    res = invoke("finetune", "--model", "timm:test_resnet", "--random-init", "--shots", "5,10",
                 "--store", tmp_path / "st.zarr", f"folder:{split_image_folder}")
    assert res.exit_code != 0
    assert "one --shots or --fraction" in res.output
    assert "Traceback" not in res.output
    res = invoke("finetune", "--model", "timm:test_resnet", "--random-init", "--fraction", "2",
                 "--store", tmp_path / "st.zarr", f"folder:{split_image_folder}")
    assert res.exit_code != 0
    assert "--fraction takes fractions in (0, 1]" in res.output
    res = invoke("extract", "--model", "cnn@" + str(tmp_path), "--store", tmp_path / "st.zarr",
                 f"folder:{split_image_folder}")
    assert res.exit_code != 0
    assert "not a featlab run folder" in res.output
