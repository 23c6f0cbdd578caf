"""Model identity, overwrite and the one-writer lock, through DatasetGroup.open_writer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from featlab.datasets import SampleTable
from featlab.errors import ModelMismatchError, StoreLockedError
from featlab.store import open_store

N, D = 8, 3
ID_A = {"spec": {"arch": "vit", "img_size": 32}, "weights": {"seed": 0}, "precision": "fp32"}


def table() -> SampleTable:
    return SampleTable(
        name="toy",
        ids=[f"s{i}" for i in range(N)],
        labels=np.arange(N) % 2,
        splits=["train"] * 4 + ["test"] * 4,
        sources=[str(i) for i in range(N)],
        classes=("a", "b"),
        task="binary",
    )


@pytest.fixture
def ds(tmp_path: Path):
    return open_store(tmp_path / "s.zarr", mode="a").add_dataset(table())


def open_w(ds, identity=ID_A, *, dim=D, overwrite=False, model="m"):
    return ds.open_writer(
        model, dim=dim, chunk_rows=4, identity=identity, attrs={"note": "x"}, overwrite=overwrite
    )


def fill(ds, values, identity=ID_A):
    with open_w(ds, identity) as w:
        w.write(np.arange(4), values[:4])
        w.write(np.arange(4, 8), values[4:])
        w.update_attrs(complete=True)


def test_same_identity_reuses_stored_values(ds) -> None:
    v = np.arange(N * D, dtype=np.float32).reshape(N, D)
    fill(ds, v)
    with open_w(ds, dict(ID_A)) as w:  # equal identity, different dict object
        assert w.attrs["complete"] is True
        assert w.written().all()
        np.testing.assert_array_equal(w.values[:], v)
    np.testing.assert_array_equal(ds.embeddings("m"), v)
    assert ds.models == ("m",)


def test_identity_equality_ignores_key_order(ds) -> None:
    fill(ds, np.ones((N, D), np.float32))
    reordered = {
        "precision": "fp32",
        "weights": {"seed": 0},
        "spec": {"img_size": 32, "arch": "vit"},
    }
    with open_w(ds, reordered) as w:
        assert w.attrs["complete"] is True


@pytest.mark.parametrize(
    ("change", "key", "stored", "new"),
    [
        ({"spec": {"arch": "vit", "img_size": 48}}, "spec", '"img_size": 32', '"img_size": 48'),
        ({"weights": {"seed": 1}}, "weights", '"seed": 0', '"seed": 1'),
        ({"precision": "bf16"}, "precision", '"fp32"', '"bf16"'),
    ],
)
def test_different_identity_is_an_error_naming_both(ds, change, key, stored, new) -> None:
    v = np.ones((N, D), np.float32)
    fill(ds, v)
    with pytest.raises(ModelMismatchError) as info:
        open_w(ds, {**ID_A, **change})
    msg = str(info.value)
    assert "already has embeddings named 'm'" in msg
    line = next(s for s in msg.splitlines() if s.strip().startswith(f"{key}:"))
    assert stored in line.split("|")[0]
    assert new in line.split("|")[1]
    assert "--overwrite" in msg
    # the refused writer released its lock and changed nothing
    with open_w(ds) as w:
        np.testing.assert_array_equal(w.values[:], v)
    assert ds.model_attrs("m")["spec"] == ID_A["spec"]


def test_different_dim_is_an_error(ds) -> None:
    fill(ds, np.ones((N, D), np.float32))
    with pytest.raises(ModelMismatchError, match=r"dim: stored 3 \| new 5"):
        open_w(ds, dim=5)


def test_overwrite_replaces(ds) -> None:
    fill(ds, np.ones((N, D), np.float32))
    new_id = {**ID_A, "weights": {"seed": 1}}
    with open_w(ds, new_id, dim=5, overwrite=True) as w:
        assert w.attrs["complete"] is False
        assert not w.written().any()
        assert w.dim == 5
        np.testing.assert_array_equal(w.values[:], 0.0)
        w.write(np.arange(4), np.full((4, 5), 2.0, np.float32))
    assert ds.models == ()
    assert ds.all_models() == ("m",)
    assert ds.model_attrs("m")["weights"] == {"seed": 1}
    assert ds.dim("m") == 5
    np.testing.assert_array_equal(ds.xy("m", "train")[0], np.full((4, 5), 2.0))
    assert ds.n_written("m") == 4


def test_model_group_without_arrays_is_not_a_model(ds) -> None:
    """A writer killed between creating the group and its arrays leaves an empty group."""
    from featlab.errors import UnknownModelError

    ds._emb().create_group("m")
    reopened = open_store(ds.store.path)["toy"]
    assert reopened.all_models() == ()
    assert open_store(ds.store.path).info() == []
    with pytest.raises(UnknownModelError, match="no embeddings of model 'm'"):
        reopened.embeddings("m")
    v = np.arange(N * D, dtype=np.float32).reshape(N, D)
    fill(ds, v)  # the next writer creates the arrays in the same group
    np.testing.assert_array_equal(open_store(ds.store.path)["toy"].embeddings("m"), v)


def test_second_writer_is_refused_while_first_holds_lock(ds) -> None:
    w1 = open_w(ds)
    try:
        with pytest.raises(StoreLockedError, match=r"model 'm' of dataset 'toy' is being written"):
            open_w(ds)
        # another model of the same dataset is not blocked
        open_w(ds, model="other").close()
    finally:
        w1.close()
    open_w(ds).close()  # released: a new writer gets in
    with open_w(ds):
        pass
    with open_w(ds):  # the context manager released it
        pass


def test_lock_held_by_another_process(ds, tmp_path: Path) -> None:
    open_w(ds).close()  # create the model group
    script = textwrap.dedent(
        f"""
        import sys
        from featlab.store import open_store
        ds = open_store({str(ds.store.path)!r}, mode="a")["toy"]
        w = ds.open_writer("m", dim={D}, chunk_rows=4, identity={ID_A!r}, attrs={{}})
        print("locked", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match="another process"):
            open_w(ds)
    finally:
        proc.kill()  # a killed writer's lock is released by the OS
        proc.wait(timeout=30)
    open_w(ds).close()
