"""``featlab datasets``, ``featlab download`` and extract's dataset options, through CliRunner.

Datasets registered here are test-only (removed by the ``registry`` fixture); downloads come
from a loopback server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from featlab.cli.main import cli
from featlab.datasets import read_image_folder, register_dataset
from featlab.datasets.registry import DatasetInfo, DownloadFile
from featlab.errors import DatasetError

FAST = ["--model", "timm:test_vit", "--random-init", "--img-size", "32", "--workers", "0"]


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def info(name: str, **fields) -> DatasetInfo:
    base = {
        "name": name,
        "task": "binary",
        "classes": ("neg", "pos"),
        "folder": name,
        "expected": ("labels.csv", "images/"),
        "reader": lambda root, **o: read_image_folder(root, name=name),
        "present": lambda root, **o: (Path(root) / "labels.csv").is_file(),
        "url": "https://example.org/" + name,
        "access": "needs a login at example.org",
        "split_sizes": {"train": 8, "val": 2, "test": 2},
    }
    return DatasetInfo(**{**base, **fields})


# -- help --------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["datasets", "download"])
def test_help(command: str) -> None:
    r = invoke(command, "--help")
    assert r.exit_code == 0, r.output
    assert f"Usage: cli {command}" in r.output


def test_help_documents_download_exit_codes_and_extract_options() -> None:
    assert "3 DATASET needs a manual download" in invoke("download", "--help").output
    out = invoke("extract", "--help").output
    assert "--data-root" in out
    assert "--uncertain [ignore|ones|zeros]" in out


# -- featlab datasets --------------------------------------------------------------------------
@pytest.fixture
def listed(registry, data_dir: Path) -> Path:
    register_dataset(info("tfound", metric="balanced_accuracy"))
    register_dataset(
        info(
            "tsized",
            task="multiclass",
            classes=("a", "b", "c"),
            folder="medmnist",
            sizes=(28, 64),
            present=lambda root, size: (Path(root) / f"tsized_{size}.npz").is_file(),
            downloads={28: (DownloadFile("http://127.0.0.1:9/t.npz", "t.npz", md5="0" * 32),)},
            options={"uncertain": ("ignore", "ones")},
        )
    )
    (data_dir / "tfound").mkdir(parents=True)
    (data_dir / "tfound" / "labels.csv").write_text("x")
    # Only a non-default size is there: the listing checks the default (28), so "no".
    (data_dir / "medmnist").mkdir()
    (data_dir / "medmnist" / "tsized_64.npz").write_text("x")
    return data_dir


def test_datasets_table(listed: Path) -> None:
    r = invoke("datasets")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"datasets dir: {listed} (set $FEATLAB_DATA to change it)"
    found = next(line for line in lines if line.startswith("tfound "))
    assert found.split()[:8] == [
        "tfound", "binary", "2", "train=8", "val=2", "test=2", "balanced_accuracy", "manual",
    ]  # fmt: skip
    assert found.endswith(f"yes  {listed / 'tfound'}")
    sized_at = next(i for i, line in enumerate(lines) if line.startswith("tsized@28 "))
    assert lines[sized_at].split()[1:4] == ["multiclass", "3", "train=8"]
    assert " accuracy " in lines[sized_at]
    assert " download " in lines[sized_at]
    assert lines[sized_at].endswith(f"no   (looked in {listed / 'medmnist'})")
    assert lines[sized_at + 1].strip() == "sizes 28, 64; options uncertain=ignore|ones"
    digits = next(line for line in lines if line.startswith("digits "))
    assert digits.split()[-5:] == ["built-in", "yes", "(no", "files", "needed)"]
    assert "  folder:PATH  class sub-folders, optionally under train/val/test" in lines
    assert "  csv:PATH     a CSV manifest with columns path,label[,split]" in lines


def test_datasets_json(listed: Path) -> None:
    r = invoke("datasets", "--json")
    assert r.exit_code == 0, r.output
    payload = json.loads(r.output)
    assert payload["datasets_dir"] == str(listed)
    rows = {row["name"]: row for row in payload["datasets"]}
    assert rows["tfound"] == {
        "name": "tfound",
        "task": "binary",
        "n_classes": 2,
        "split_sizes": {"train": 8, "val": 2, "test": 2},
        "metric": "balanced_accuracy",
        "sizes": [],
        "options": {},
        "downloadable": False,
        "builtin": False,
        "found": True,
        "path": str(listed / "tfound"),
        "problem": None,
        "url": "https://example.org/tfound",
        "access": "needs a login at example.org",
    }
    assert (rows["tsized"]["found"], rows["tsized"]["downloadable"]) == (False, True)
    assert rows["tsized"]["sizes"] == [28, 64]
    assert rows["digits"]["builtin"] is True
    assert set(payload["forms"]) == {"folder:PATH", "csv:PATH"}


def test_datasets_reports_a_failing_presence_check(registry, data_dir: Path) -> None:
    def broken(root, **o):
        raise DatasetError("labels.csv is unreadable")

    register_dataset(info("tbroken", present=broken))
    r = invoke("datasets")
    assert r.exit_code == 0, r.output
    assert "problem: labels.csv is unreadable" in r.output


# -- featlab download --------------------------------------------------------------------------
@pytest.fixture
def web(tmp_path: Path):
    """A plain loopback file server over ``tmp_path / 'web'``; yields (folder, base URL)."""
    root = tmp_path / "web"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def served(registry, web) -> tuple[Path, tuple[DownloadFile, ...]]:
    """``tdl``: two files on the loopback server; ``tbad``: one with a wrong published md5."""
    root, base = web
    data = {"labels.csv": b"id,label\n1,0\n", "images.bin": bytes(range(256)) * 8}
    for name, blob in data.items():
        (root / name).write_bytes(blob)
    files = tuple(
        DownloadFile(f"{base}/{n}", n, md5=hashlib.md5(b).hexdigest(), size=len(b))
        for n, b in data.items()
    )
    register_dataset(info("tdl", downloads={0: files}))
    bad = DownloadFile(f"{base}/labels.csv", "labels.csv", md5="0" * 32)
    register_dataset(info("tbad", downloads={0: (bad,)}))
    return root, files


def test_download_then_rerun_skips(served, data_dir: Path) -> None:
    r = invoke("download", "tdl")
    assert r.exit_code == 0, r.output
    target = data_dir / "tdl"
    assert r.output.splitlines() == [
        f"tdl: 2 file(s) -> {target}",
        "  labels.csv: downloaded 13 B, verified (md5, size)",
        "  images.bin: downloaded 2.0 KiB, verified (md5, size)",
        f"tdl: done; files in {target}",
    ]
    assert (target / "labels.csv").read_bytes() == (served[0] / "labels.csv").read_bytes()
    again = invoke("download", "tdl")
    assert again.exit_code == 0, again.output
    assert "  labels.csv: already present, verified (md5, size)" in again.output
    assert "  images.bin: already present, verified (md5, size)" in again.output


def test_download_to_data_root(served, data_dir: Path, tmp_path: Path) -> None:
    r = invoke("download", "tdl", "--data-root", tmp_path / "mine")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["images.bin", "labels.csv"]
    assert not (data_dir / "tdl").exists()


def test_download_checksum_mismatch_is_a_clean_error(served, data_dir: Path) -> None:
    r = invoke("download", "tbad")
    assert r.exit_code == 1, r.output
    error = r.output.strip().splitlines()[-1]
    assert error.startswith("Error: checksum mismatch for labels.csv")
    assert f"expected md5 {'0' * 32}" in error
    assert "Traceback" not in r.output
    assert (data_dir / "tbad" / "labels.csv.corrupt").exists()
    assert not (data_dir / "tbad" / "labels.csv").exists()


def test_download_manual_dataset_prints_steps(registry, data_dir: Path) -> None:
    register_dataset(info("tmanual"))
    r = invoke("download", "tmanual")
    assert r.exit_code == 3, r.output
    assert "tmanual cannot be downloaded by featlab: needs a login at example.org" in r.output
    assert "get it from https://example.org/tmanual" in r.output
    assert f"in {data_dir / 'tmanual'}" in r.output
    assert "labels.csv" in r.output
    (data_dir / "tmanual").mkdir(parents=True)
    (data_dir / "tmanual" / "labels.csv").write_text("x")
    present = invoke("download", "tmanual")
    assert present.exit_code == 0, present.output
    assert "found in" in present.output


def test_download_unknown_and_non_registered(registry) -> None:
    r = invoke("download", "digitz")
    assert r.exit_code == 1
    assert "Error: unknown dataset 'digitz'. Did you mean ['digits']?" in r.output
    r = invoke("download", "folder:/tmp/x")
    assert r.exit_code == 2
    assert "download takes a registered dataset name" in r.output


# -- featlab extract: --data-root and --uncertain ----------------------------------------------
def test_extract_with_data_root(registry, tmp_path: Path, png_tree_writer) -> None:
    images = png_tree_writer(tmp_path / "imgs")
    (images / "labels.csv").write_text("x")
    register_dataset(info("tfolder", classes=("a", "b", "c"), task="multiclass"))
    store = tmp_path / "s.zarr"
    r = invoke("extract", *FAST, "tfolder", "--data-root", images, "--store", store)
    assert r.exit_code == 0, r.output
    assert "timm:test_vit | tfolder: extracted 12 images" in r.output
    from featlab.store import open_store

    assert open_store(store, mode="r")["tfolder"].n == 12


def test_extract_data_root_missing_files(registry, tmp_path: Path) -> None:
    register_dataset(info("tfolder"))
    r = invoke("extract", *FAST, "tfolder", "--data-root", tmp_path, "--store", tmp_path / "s")
    assert r.exit_code == 1
    assert "Error: dataset 'tfolder': files not found" in r.output
    assert f"looked in: {tmp_path}" in r.output


def test_extract_passes_uncertain_to_a_dataset_that_takes_it(registry, tmp_path: Path) -> None:
    def reader(root, **options):
        raise DatasetError(f"reader got {options}")

    register_dataset(
        info("txray", reader=reader, present=lambda root, **o: True,
             options={"uncertain": ("ignore", "ones", "zeros")})
    )  # fmt: skip
    r = invoke("extract", *FAST, "txray", "--uncertain", "ones", "--store", tmp_path / "s")
    assert r.exit_code == 1
    assert "Error: reader got {'uncertain': 'ones'}" in r.output


def test_extract_rejects_uncertain_for_other_datasets(registry, tmp_path: Path) -> None:
    register_dataset(info("txray2", options={"uncertain": ("ignore", "ones", "zeros")}))
    r = invoke("extract", *FAST, "digits", "--uncertain", "ones", "--store", tmp_path / "s")
    assert r.exit_code == 2
    assert "--uncertain applies to " in r.output
    assert "txray2" in r.output
    assert "'digits' has no such option" in r.output
    r = invoke("extract", *FAST, f"folder:{tmp_path}", "--uncertain", "zeros")
    assert r.exit_code == 2
    assert "folder:PATH takes none of --data-root, --uncertain, --findings" in r.output
    r = invoke("extract", *FAST, "digits", "--findings", "all")
    assert r.exit_code == 2
    assert "--findings applies to " in r.output
    r = invoke("extract", *FAST, "digits", "--uncertain", "maybe")
    assert r.exit_code == 2
    assert "'maybe' is not one of 'ignore', 'ones', 'zeros'" in r.output
