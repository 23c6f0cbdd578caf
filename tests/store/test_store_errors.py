"""The store refuses to clobber, names what is wrong, and never half-writes on refusal."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from featlab.datasets import SampleTable
from featlab.errors import (
    FeatlabError,
    InvalidArgumentError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from featlab.store import open_store


def make_table(name="toy", ids=None, labels=None, splits=None) -> SampleTable:
    ids = [f"s{i}" for i in range(6)] if ids is None else ids
    n = len(ids)
    return SampleTable(
        name=name,
        ids=ids,
        labels=np.arange(n) % 2 if labels is None else labels,
        splits=(["train", "test"] * n)[:n] if splits is None else splits,
        sources=[f"/d/{i}" for i in ids],
        classes=("neg", "pos"),
        task="binary",
    )


def _identity():
    return {"spec": {"a": 1}, "weights": {"seed": 0}, "precision": "fp32"}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "s.zarr"


def test_readding_same_table_reuses_it(store_path: Path) -> None:
    st = open_store(store_path, mode="a")
    st.add_dataset(make_table())
    ds = st["toy"]
    with ds.open_writer("m", dim=2, chunk_rows=6, identity=_identity(), attrs={}) as w:
        w.write(np.arange(6), np.ones((6, 2), np.float32))
        w.update_attrs(complete=True)
    # again, from a fresh handle, with an equal but separately built table
    again = open_store(store_path, mode="a").add_dataset(make_table())
    assert again.n == 6
    assert again.models == ("m",)  # the embeddings survived
    np.testing.assert_array_equal(again.embeddings("m"), np.ones((6, 2)))
    assert open_store(store_path).datasets == ("toy",)


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"ids": [f"t{i}" for i in range(6)]}, "ids"),
        ({"ids": [f"s{i}" for i in range(7)]}, "ids"),
        ({"labels": [1, 1, 0, 1, 0, 1]}, "labels"),
        ({"splits": ["train"] * 6}, "splits"),
    ],
)
def test_different_table_same_name_is_refused(store_path: Path, kwargs, what) -> None:
    st = open_store(store_path, mode="a")
    st.add_dataset(make_table())
    with pytest.raises(StoreExistsError, match=rf"dataset 'toy' whose {what} differ"):
        st.add_dataset(make_table(**kwargs))
    # nothing changed on disk
    ds = open_store(store_path)["toy"]
    np.testing.assert_array_equal(ds.ids, [f"s{i}" for i in range(6)])
    np.testing.assert_array_equal(ds.labels, np.arange(6) % 2)


def test_ids_that_are_prefixes_of_stored_ids_are_different(store_path: Path) -> None:
    """Stored ids must not be truncated to the new ids' width before comparing."""
    st = open_store(store_path, mode="a")
    st.add_dataset(make_table(ids=["a10", "a20"], labels=[0, 1], splits=["train", "test"]))
    with pytest.raises(StoreExistsError, match="ids differ"):
        st.add_dataset(make_table(ids=["a1", "a2"], labels=[0, 1], splits=["train", "test"]))


def test_non_store_directory_is_not_written(tmp_path: Path) -> None:
    target = tmp_path / "mydata"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(StoreExistsError, match=r"mydata'.*not empty.*not a featlab store"):
        open_store(target, mode="a")
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "keep me"
    with pytest.raises(StoreNotFoundError, match="exists but is not a zarr store"):
        open_store(target, mode="r")


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("data")
    with pytest.raises(StoreExistsError, match=r"afile' is a file, but is not a featlab store"):
        open_store(f, mode="a")
    with pytest.raises(StoreExistsError, match=r"afile' is a file, not a directory"):
        open_store(f / "sub" / "s.zarr", mode="a")
    with pytest.raises(StoreNotFoundError, match="not a zarr store"):
        open_store(f, mode="r")
    assert f.read_text() == "data"


def test_empty_directory_becomes_a_store(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    open_store(target, mode="a")
    assert open_store(target).datasets == ()


def test_nested_missing_parents_are_created(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "s.zarr"
    open_store(target, mode="a").add_dataset(make_table())
    assert open_store(target).datasets == ("toy",)


def test_newer_format_is_refused(store_path: Path) -> None:
    open_store(store_path, mode="a").add_dataset(make_table())
    zarr.open_group(str(store_path), mode="r+").attrs["featlab_format"] = 2
    for mode in ("r", "a"):
        with pytest.raises(StoreFormatError, match=r"store format 2 .*reads format 1 at most"):
            open_store(store_path, mode=mode)
    assert issubclass(StoreFormatError, ValueError)


def test_zarr_group_without_format_attr_is_refused(store_path: Path) -> None:
    zarr.open_group(str(store_path), mode="w", zarr_format=3).attrs["other"] = 1
    with pytest.raises(StoreFormatError, match=r"not a featlab store.*'featlab_format'"):
        open_store(store_path)


def test_missing_store_read_only(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "s.zarr"
    with pytest.raises(StoreNotFoundError, match=re.escape(str(missing))) as info:
        open_store(missing, mode="r")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, FeatlabError)
    assert not missing.exists()  # reading never creates


def test_default_path_from_env_and_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEATLAB_STORE", raising=False)
    assert open_store(mode="a").path == Path("featlab.zarr")
    assert (tmp_path / "featlab.zarr" / "zarr.json").is_file()
    env = tmp_path / "env.zarr"
    monkeypatch.setenv("FEATLAB_STORE", str(env))
    with pytest.raises(StoreNotFoundError, match=r"env\.zarr"):
        open_store()
    open_store(mode="a")
    assert (env / "zarr.json").is_file()


def test_bad_mode() -> None:
    with pytest.raises(InvalidArgumentError, match="mode must be 'r' or 'a'; got 'w'"):
        open_store("x.zarr", mode="w")  # type: ignore[arg-type]


def test_unwritable_parent_chmod(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running with privileges that bypass file permissions (root)")
        with pytest.raises(StoreReadOnlyError, match=r"ro'.* is not writable") as info:
            open_store(parent / "s.zarr", mode="a")
        assert isinstance(info.value, PermissionError)
        assert not (parent / "s.zarr").exists()
    finally:
        parent.chmod(0o755)


def test_unwritable_parent_reported(tmp_path: Path, monkeypatch) -> None:
    """Same check without relying on permissions (which root bypasses)."""
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == parent and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    target = parent / "sub" / "s.zarr"
    with pytest.raises(StoreReadOnlyError, match=re.escape(repr(str(parent)))):
        open_store(target, mode="a")
    assert not (parent / "sub").exists()
    # an existing store inside an unwritable directory cannot be opened for writing either
    monkeypatch.setattr(os, "access", real_access)
    open_store(parent / "s.zarr", mode="a")
    monkeypatch.setattr(
        os, "access", lambda p, m, *a, **k: not (Path(p) == parent / "s.zarr" and m & os.W_OK)
    )
    with pytest.raises(StoreReadOnlyError, match="is not writable"):
        open_store(parent / "s.zarr", mode="a")
    assert open_store(parent / "s.zarr", mode="r").datasets == ()


def test_writes_on_read_only_store_are_refused(store_path: Path) -> None:
    open_store(store_path, mode="a").add_dataset(make_table())
    st = open_store(store_path, mode="r")
    with pytest.raises(
        StoreReadOnlyError, match=r"open read-only; use open_store\(path, mode='a'\)"
    ):
        st.add_dataset(make_table("other"))
    with pytest.raises(StoreReadOnlyError, match="read-only"):
        st["toy"].open_writer("m", dim=2, chunk_rows=2, identity=_identity(), attrs={})
    reopened = open_store(store_path)
    assert reopened.datasets == ("toy",)
    assert reopened["toy"].all_models() == ()
