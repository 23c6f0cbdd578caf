"""The featlab CLI end to end with click's CliRunner: help, extract, info, probe, clean errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featlab._version import __version__
from featlab.cli.main import COMMANDS, cli
from featlab.errors import StoreNotFoundError
from featlab.store import open_store

MODEL = "timm:test_vit"
DATASET = "folder-imgs"
FAST = ["--random-init", "--img-size", "32", "--workers", "0"]


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def assert_clean_error(result, *needles: str, code: int = 1) -> str:
    """Exit ``code``, one ``Error:`` line naming ``needles``, no traceback."""
    out = result.output
    assert result.exit_code == code, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("Error: "), out
    for needle in needles:
        assert needle in lines[0], (needle, out)
    return lines[0]


@pytest.fixture(scope="module")
def images(tmp_path_factory, png_tree_writer) -> Path:
    return png_tree_writer(
        tmp_path_factory.mktemp("data") / "imgs", splits=("train", "val", "test")
    )


@pytest.fixture(scope="module")
def cli_store(images, tmp_path_factory) -> tuple[Path, str]:
    """(store, output) of ``featlab extract`` run once; tests must not modify it."""
    store = tmp_path_factory.mktemp("cli") / "s.zarr"
    r = invoke("extract", "--model", MODEL, *FAST, f"folder:{images}", "--store", store)
    assert r.exit_code == 0, r.output
    return store, r.output


@pytest.fixture
def store_copy(cli_store, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(cli_store[0], dst)
    return dst


# -- help -------------------------------------------------------------------------------------
def test_group_help_lists_every_command() -> None:
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    for name, (_, _, summary) in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(summary[:30])}", r.output, re.M), r.output
    assert invoke("-h").output == r.output


STORE_COMMANDS = {"extract", "info", "probe", "results", "compare", "neighbors"}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help(command: str) -> None:
    r = invoke(command, "--help")
    assert r.exit_code == 0, r.output
    assert f"Usage: cli {command}" in r.output or f"{command} [OPTIONS]" in r.output
    if command in STORE_COMMANDS:
        assert "--store" in r.output


def test_commands_table_is_importable() -> None:
    import importlib

    for name, (module, attr, _) in COMMANDS.items():
        cmd = getattr(importlib.import_module(module), attr)
        assert cmd.name == name


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0
    assert __version__ in r.output


def test_unknown_command() -> None:
    r = invoke("frobnicate")
    assert r.exit_code == 2
    assert "No such command 'frobnicate'" in r.output


# -- extract / info / probe -------------------------------------------------------------------
def test_extract_writes_the_store(cli_store) -> None:
    store, out = cli_store
    assert f"{MODEL} | {DATASET}: extracted 36 images, 64-d" in out
    assert out.rstrip().endswith("[complete]")
    assert str(store) in out
    ds = open_store(store)[DATASET]
    assert ds.models == (MODEL,)
    assert ds.embeddings(MODEL).shape == (36, 64)


def test_extract_again_is_reused(store_copy: Path, images: Path) -> None:
    values = open_store(store_copy)[DATASET].embeddings(MODEL)
    r = invoke("extract", "--model", MODEL, *FAST, f"folder:{images}", "--store", store_copy)
    assert r.exit_code == 0, r.output
    assert "already complete" in r.output
    assert "reused" in r.output
    assert "extracted" not in r.output
    np.testing.assert_array_equal(open_store(store_copy)[DATASET].embeddings(MODEL), values)


def test_info(cli_store) -> None:
    store, _ = cli_store
    r = invoke("info", "--store", store)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"store {store} (")
    assert f"{DATASET}: 36 samples (test 12, train 12, val 12), multiclass, 3 classes" in r.output
    row = next(line for line in r.output.splitlines() if line.strip().startswith(MODEL))
    fields = row.split()
    assert fields[:4] == [MODEL, "64", "36/36", "complete"]


def test_info_from_env_and_partial_model(store_copy: Path, images: Path) -> None:
    r = invoke(
        "extract",
        "--model",
        MODEL,
        *FAST,
        "--name",
        "part",
        "--split",
        "train",
        "--limit",
        "5",
        f"folder:{images}",
        "--store",
        store_copy,
    )
    assert r.exit_code == 0, r.output
    assert "part | folder-imgs: extracted 5 images" in r.output
    assert r.output.rstrip().endswith("[partial]")
    r = invoke("info", env={"FEATLAB_STORE": str(store_copy)})
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines() if "/36" in line}
    assert rows["part"][1:4] == ["64", "5/36", "partial"]
    assert rows[MODEL][1:4] == ["64", "36/36", "complete"]
    # probe evaluates complete models only
    r = invoke("probe", "--store", store_copy, "-k", "3", "--folds", "1", "--json")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["model"] for line in r.output.splitlines()] == [MODEL]


def test_info_empty_store(tmp_path: Path) -> None:
    open_store(tmp_path / "e.zarr", mode="a")
    r = invoke("info", "--store", tmp_path / "e.zarr")
    assert r.exit_code == 0, r.output
    assert len(r.output.strip().splitlines()) == 1


def _reference_knn_accuracy(store: Path, k: int, t: float = 0.07) -> float:
    """Cosine k-NN with DINO's weighted vote, in plain numpy (independent of FAISS)."""
    ds = open_store(store)[DATASET]
    xtr, ytr = ds.xy(MODEL, "train")
    xte, yte = ds.xy(MODEL, "test")
    xtr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    xte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = xte.astype(np.float64) @ xtr.astype(np.float64).T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(xte), len(ds.classes)))
    for i, row in enumerate(top):
        for j in row:
            votes[i, ytr[j]] += np.exp(sims[i, j] / t)
    return float((votes.argmax(axis=1) == yte).mean())


def test_probe_table_and_json(store_copy) -> None:
    r = invoke("probe", "--store", store_copy, "-k", "3", "--folds", "1")
    assert r.exit_code == 0, r.output
    header, row, saved = r.output.strip().splitlines()
    assert header.split() == ["dataset", "model", "method", "metric", "all"]
    assert row.split()[:5] == [DATASET, MODEL, "knn", "k=3", "accuracy"]
    assert saved.startswith("saved 1 run(s)")

    r = invoke("probe", "--store", store_copy, "-k", "3", "--folds", "1", "--json", "--no-save")
    assert r.exit_code == 0, r.output
    (line,) = r.output.strip().splitlines()
    got = json.loads(line)
    assert (got["dataset"], got["model"], got["method"]) == (DATASET, MODEL, "knn")
    assert (got["plan"]["n_pool"], got["plan"]["n_test_scored"]) == (12, 12)
    (fold,) = got["folds"]
    assert set(fold["metrics"]) == {"accuracy", "balanced_accuracy", "auc", "macro_f1"}
    assert fold["metrics"]["accuracy"] == pytest.approx(
        _reference_knn_accuracy(store_copy, 3), abs=1e-12
    )
    (summary,) = got["summary"]
    assert summary["mean"] == fold["metrics"]["accuracy"]
    # the table printed the same number
    assert float(row.split()[5]) == pytest.approx(summary["mean"], abs=5e-5)


def test_probe_filters(cli_store) -> None:
    store, _ = cli_store
    r = invoke(
        "probe", "--store", store, "--dataset", DATASET, "--model", MODEL, "-k", "5",
        "--folds", "1", "--json", "--no-save",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["config"]["ks"] == [5]
    # a metric that does not apply: the pair is skipped with the reason, and with nothing left
    # to report the command fails cleanly
    r = invoke("probe", "--store", store, "--metric", "quadratic_kappa", "--no-save")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"skipped {DATASET} | {MODEL}: metric 'quadratic_kappa' does not apply" in r.output
    assert "Error: nothing to evaluate" in r.output


def test_probe_without_models(tmp_path: Path) -> None:
    open_store(tmp_path / "e.zarr", mode="a")
    assert_clean_error(invoke("probe", "--store", tmp_path / "e.zarr"), "no complete model")


# -- errors -----------------------------------------------------------------------------------
def test_unknown_timm_model(tmp_path: Path, images: Path) -> None:
    r = invoke(
        "extract",
        "--model",
        "timm:not_a_real_model_xyz",
        *FAST,
        f"folder:{images}",
        "--store",
        tmp_path / "s.zarr",
    )
    assert_clean_error(r, "unknown model 'timm:not_a_real_model_xyz'")


def test_missing_weights_file(tmp_path: Path, images: Path) -> None:
    missing = tmp_path / "nope.pth"
    r = invoke(
        "extract",
        "--model",
        MODEL,
        "--weights",
        missing,
        "--img-size",
        "32",
        "--workers",
        "0",
        f"folder:{images}",
        "--store",
        tmp_path / "s.zarr",
    )
    assert_clean_error(r, str(missing), "does not exist")


def test_info_wrong_store(tmp_path: Path) -> None:
    missing = tmp_path / "wrong.zarr"
    assert_clean_error(invoke("info", "--store", missing), "no featlab store at", str(missing))
    assert not missing.exists()


def test_unknown_dataset_spec(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    r = invoke("extract", "--model", MODEL, *FAST, "bogus-set", "--store", store)
    assert_clean_error(r, "unknown dataset 'bogus-set'", "folder:PATH")
    assert not store.exists()  # nothing written for a command that cannot run


def test_missing_image_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    r = invoke("extract", "--model", MODEL, *FAST, f"folder:{missing}", "--store", tmp_path / "s")
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    assert r.output.startswith("Error: ")
    assert str(missing) in r.output


def test_store_path_is_a_file(tmp_path: Path, images: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    r = invoke("extract", "--model", MODEL, *FAST, f"folder:{images}", "--store", f)
    assert_clean_error(r, str(f), "is a file")
    assert f.read_text() == "x"


def test_newer_store_format(store_copy: Path) -> None:
    import zarr

    zarr.open_group(str(store_copy), mode="r+").attrs["featlab_format"] = 2
    assert_clean_error(invoke("info", "--store", store_copy), "format 2", "pip install -U")
    assert_clean_error(invoke("probe", "--store", store_copy), "format 2")


def test_debug_shows_the_real_exception(tmp_path: Path) -> None:
    r = invoke("--debug", "info", "--store", tmp_path / "wrong.zarr")
    assert r.exit_code == 1
    assert isinstance(r.exception, StoreNotFoundError)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", MODEL, "--model", "timm:test_resnet", "--name", "x"], "--name applies to one"),
        (["--model", MODEL, "--weights", "w.pth", "--random-init"], "exclude each other"),
        (["--model", MODEL, "--batch-size", "0"], "--batch-size"),
        (["--model", MODEL, "--precision", "fp64"], "--precision"),
    ],
)
def test_usage_errors(tmp_path: Path, args, message) -> None:
    r = invoke("extract", *args, "digits", "--store", tmp_path / "s.zarr")
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "s.zarr").exists()
