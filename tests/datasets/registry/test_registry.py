"""The dataset registry: names, sizes, options, data roots and the missing-dataset message.

Datasets registered here are test-only and removed again by the ``registry`` fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featlab.datasets import load_dataset, register_dataset
from featlab.datasets.registry import (
    DatasetInfo,
    dataset_root,
    datasets_dir,
    get_dataset_info,
    list_datasets,
    load_registered,
    missing_dataset_error,
    parse_name,
)
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError, FeatlabError, UnknownDatasetError


def tiny_table(name: str, **attrs) -> SampleTable:
    return SampleTable(
        name=name,
        ids=np.array(["a", "b"]),
        labels=np.array([0, 1], np.int32),
        splits=np.array(["train", "test"]),
        sources=np.array(["a.png", "b.png"]),
        classes=("neg", "pos"),
        task="binary",
        attrs=attrs,
    )


def make_info(name: str = "toyset", calls: list | None = None, **overrides) -> DatasetInfo:
    """A test dataset whose files are ``toy.txt``; the reader records (root, options)."""

    def reader(root: Path, **options) -> SampleTable:
        if calls is not None:
            calls.append((root, options))
        return tiny_table(name, **{k: str(v) for k, v in options.items()})

    fields = {
        "name": name,
        "task": "binary",
        "classes": ("neg", "pos"),
        "folder": "toy-folder",
        "expected": ("toy.txt", "images/"),
        "reader": reader,
        "present": lambda root, **options: (Path(root) / "toy.txt").is_file(),
        "url": "https://example.org/toyset",
        "access": "needs a login at example.org",
        "split_sizes": {"train": 1, "test": 1},
    }
    return DatasetInfo(**{**fields, **overrides})


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch) -> Path:
    """``$FEATLAB_DATA`` pointed at an empty folder."""
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


# -- parse_name --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("pcam", ("pcam", None)),
        ("pneumoniamnist@224", ("pneumoniamnist", 224)),
        ("bloodmnist@28", ("bloodmnist", 28)),
    ],
)
def test_parse_name(spec: str, expected: tuple) -> None:
    assert parse_name(spec) == expected


@pytest.mark.parametrize("spec", ["pathmnist@large", "pathmnist@", "pathmnist@-28"])
def test_parse_name_rejects_a_size_that_is_not_an_integer(spec: str) -> None:
    with pytest.raises(UnknownDatasetError, match="size after '@' must be an integer"):
        parse_name(spec)


# -- unknown names -----------------------------------------------------------------------------
def test_unknown_name_suggests_close_names_and_other_forms(registry) -> None:
    with pytest.raises(UnknownDatasetError, match=r"Did you mean \['digits'\]") as err:
        get_dataset_info("digitz")
    message = str(err.value)
    assert "unknown dataset 'digitz'" in message
    assert "folder:PATH or csv:PATH" in message
    assert "featlab datasets" in message
    assert isinstance(err.value, KeyError)
    assert isinstance(err.value, FeatlabError)


def test_unknown_name_without_close_match_lists_registered(registry) -> None:
    with pytest.raises(UnknownDatasetError, match=r"Registered: .*digits") as err:
        load_dataset("qqqqqqqq")
    assert "Did you mean" not in str(err.value)


def test_unknown_dataset_form(registry) -> None:
    with pytest.raises(UnknownDatasetError, match=r"unknown dataset form 'zip:x\.zip'"):
        load_dataset("zip:x.zip")


# -- registering -------------------------------------------------------------------------------
def test_register_refuses_duplicates_and_keeps_the_first(registry) -> None:
    first = register_dataset(make_info())
    with pytest.raises(ValueError, match="dataset 'toyset' is already registered"):
        register_dataset(make_info(url="https://elsewhere.example"))
    assert get_dataset_info("toyset") is first
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(make_info("digits"))


def test_list_datasets_sorted_with_builtins(registry) -> None:
    register_dataset(make_info("aaa-first"))
    names = [info.name for info in list_datasets()]
    assert names == sorted(names)
    assert {"digits", "aaa-first"} <= set(names)


def test_default_metric_follows_task_unless_set() -> None:
    assert make_info().default_metric == "auc"
    assert make_info(task="ordinal").default_metric == "quadratic_kappa"
    assert make_info(task="multilabel").default_metric == "mean_auc"
    assert make_info(metric="balanced_accuracy").default_metric == "balanced_accuracy"


# -- data roots --------------------------------------------------------------------------------
def test_datasets_dir_from_env(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path / "d"))
    assert datasets_dir() == tmp_path / "d"
    assert dataset_root(make_info()) == tmp_path / "d" / "toy-folder"


def test_datasets_dir_env_expands_user(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FEATLAB_DATA", "~/mydata")
    assert datasets_dir() == tmp_path / "mydata"


def test_datasets_dir_default(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FEATLAB_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert datasets_dir() == tmp_path / ".cache" / "featlab" / "datasets"
    assert dataset_root(make_info()) == tmp_path / ".cache/featlab/datasets/toy-folder"


def test_data_root_points_at_the_dataset_folder_itself(data_dir: Path, tmp_path: Path) -> None:
    assert dataset_root(make_info(), tmp_path / "x") == tmp_path / "x"
    assert dataset_root(make_info(), str(tmp_path)) == tmp_path


def test_load_registered_reads_from_env_dir_or_data_root(registry, data_dir, tmp_path) -> None:
    calls: list = []
    register_dataset(make_info(calls=calls))
    (data_dir / "toy-folder").mkdir(parents=True)
    (data_dir / "toy-folder" / "toy.txt").write_text("x")
    assert len(load_dataset("toyset")) == 2
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "toy.txt").write_text("x")
    load_dataset("toyset", data_root=other)
    assert calls == [(data_dir / "toy-folder", {}), (other, {})]


def test_folder_form_takes_no_data_root_or_options(tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError, match="takes no --data-root or reader options"):
        load_dataset(f"folder:{tmp_path}", data_root=tmp_path)
    with pytest.raises(UnknownDatasetError, match="takes no --data-root or reader options"):
        load_dataset(f"csv:{tmp_path}/m.csv", uncertain="ones")


# -- sizes -------------------------------------------------------------------------------------
@pytest.fixture
def sized(registry, tmp_path: Path) -> tuple[list, Path]:
    calls: list = []
    register_dataset(make_info("toymnist", calls=calls, sizes=(28, 64), folder="medmnist"))
    register_dataset(make_info("plainset", calls=calls))
    (tmp_path / "toy.txt").write_text("x")
    return calls, tmp_path


def test_sized_dataset_defaults_to_its_first_size(sized) -> None:
    calls, root = sized
    table = load_registered("toymnist", data_root=root)
    load_registered("toymnist@64", data_root=root)
    assert calls == [(root, {"size": 28}), (root, {"size": 64})]
    # the dataset's default metric is recorded with it (binary toy: AUC)
    assert table.attrs == {"size": "28", "metric": "auc"}


def test_size_not_offered(sized) -> None:
    _, root = sized
    with pytest.raises(UnknownDatasetError, match=r"'toymnist' comes in sizes \[28, 64\]; got @32"):
        load_registered("toymnist@32", data_root=root)


def test_size_on_a_dataset_without_sizes(sized) -> None:
    calls, root = sized
    with pytest.raises(UnknownDatasetError, match="'plainset' has no size variants; drop '@28'"):
        load_dataset("plainset@28", data_root=root)
    assert calls == []


# -- options -----------------------------------------------------------------------------------
@pytest.fixture
def optioned(registry, tmp_path: Path) -> tuple[list, Path]:
    calls: list = []
    info = make_info("toyxray", calls=calls, options={"uncertain": ("ignore", "ones", "zeros")})
    register_dataset(info)
    (tmp_path / "toy.txt").write_text("x")
    return calls, tmp_path


def test_valid_option_reaches_the_reader(optioned) -> None:
    calls, root = optioned
    load_dataset("toyxray", data_root=root, uncertain="ones")
    assert calls == [(root, {"uncertain": "ones"})]


def test_option_value_not_allowed(optioned) -> None:
    calls, root = optioned
    with pytest.raises(UnknownDatasetError, match=r"uncertain='maybe' is not one of \['ignore'"):
        load_dataset("toyxray", data_root=root, uncertain="maybe")
    assert calls == []


def test_unknown_option(optioned) -> None:
    _, root = optioned
    with pytest.raises(UnknownDatasetError, match="'toyxray' takes no option 'colour'"):
        load_dataset("toyxray", data_root=root, colour="red")


def test_option_on_a_dataset_without_options(registry, tmp_path: Path) -> None:
    register_dataset(make_info())
    with pytest.raises(UnknownDatasetError, match="'toyset' takes no option 'uncertain'"):
        load_dataset("toyset", data_root=tmp_path, uncertain="ones")


# -- missing datasets --------------------------------------------------------------------------
def test_missing_folder_error_says_what_where_and_how(registry, data_dir: Path) -> None:
    register_dataset(make_info())
    with pytest.raises(DatasetError, match="dataset 'toyset': files not found") as err:
        load_dataset("toyset")
    lines = str(err.value).splitlines()
    root = data_dir / "toy-folder"
    assert f"  looked in: {root}" in lines
    assert "  expected there: toy.txt, images/" in lines
    assert "  found: nothing (the folder does not exist)" in lines
    assert "  get it: https://example.org/toyset (needs a login at example.org)" in lines
    assert any(line.startswith(f"  put the files in {root}") for line in lines)
    assert "$FEATLAB_DATA" in lines[-1]
    assert "--data-root" in lines[-1]


def test_missing_error_lists_what_was_found(tmp_path: Path) -> None:
    root = tmp_path / "partial"
    (root / "images").mkdir(parents=True)
    (root / "readme.md").write_text("x")
    err = missing_dataset_error(make_info(), root, "toy.txt is missing")
    message = str(err)
    assert message.startswith("dataset 'toyset': toy.txt is missing")
    assert "  found: images/, readme.md" in message.splitlines()


def test_missing_error_empty_folder_and_custom_expected(tmp_path: Path) -> None:
    err = missing_dataset_error(make_info(), tmp_path, "no CSV", expected=("train.csv",))
    lines = str(err).splitlines()
    assert "  found: an empty folder" in lines
    assert "  expected there: train.csv" in lines


def test_missing_error_truncates_long_listings(tmp_path: Path) -> None:
    for i in range(18):
        (tmp_path / f"f{i:02d}.bin").write_text("x")
    lines = str(missing_dataset_error(make_info(), tmp_path, "bad")).splitlines()
    found = next(line for line in lines if line.startswith("  found: "))
    assert found == "  found: " + ", ".join(f"f{i:02d}.bin" for i in range(15)) + " ... (+3)"
