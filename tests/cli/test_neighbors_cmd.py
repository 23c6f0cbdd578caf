"""``featlab neighbors`` end to end: the table, --json, --image, --split, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featlab
from featlab.cli.main import cli

MODEL = "timm:test_vit"
DATASET = "folder-imgs"


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """24 distinct PNGs (train/test x 2 classes x 6) extracted once with a random-init ViT."""
    root = tmp_path_factory.mktemp("nbcli") / "imgs"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(6):
                small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(small).resize((32, 32), Image.BILINEAR).save(
                    root / split / cls / f"{i}.png"
                )
    path = root.parent / "s.zarr"
    r = invoke(
        "extract", "--model", MODEL, "--random-init", "--img-size", 32, "--workers", 0,
        f"folder:{root}", "--store", path,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    return path


def table_rows(output: str) -> list[list[str]]:
    lines = output.strip().splitlines()
    assert lines[0].split() == ["query", "rank", "id", "score", "label", "split", "source"]
    return [line.split() for line in lines[1:]]


def test_table_by_id(store: Path) -> None:
    r = invoke("neighbors", "--model", MODEL, DATASET, "--id", "test/a/0.png",
               "--id", "train/b/2.png", "-k", 3, "--store", store)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = table_rows(r.output)
    ds = featlab.open_store(store)[DATASET]
    ref = ds.neighbors(MODEL, ids=["test/a/0.png", "train/b/2.png"], k=3)
    assert len(rows) == 6
    for row, rec in zip(rows, ref.to_records(), strict=True):
        assert row[0] == rec["query_id"]
        assert row[1] == str(rec["rank"])
        assert row[2] == rec["id"]
        assert row[3] == f"{rec['score']:.4f}"
        assert row[4] == rec["label"]
        assert row[5] == rec["split"]
        assert row[6] == rec["source"]
    assert "test/a/0.png" not in [row[2] for row in rows[:3]]  # the query itself is left out
    # The store was writable: the index is kept for the next query.
    assert (store / DATASET / "indexes" / "timm~test_vit" / "zarr.json").is_file()


def test_json_by_image_and_split(store: Path) -> None:
    ds = featlab.open_store(store)[DATASET]
    src = str(ds.sources[int(np.flatnonzero(ds.ids == "test/b/3.png")[0])])
    r = invoke("neighbors", "-m", MODEL, DATASET, "--image", src, "-k", 2, "--store", store,
               "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.output.strip().splitlines()]
    assert [x["rank"] for x in recs] == [1, 2]
    assert recs[0]["id"] == "test/b/3.png"
    assert recs[0]["score"] > 0.99
    assert recs[0]["query_id"] == src
    r = invoke("neighbors", "-m", MODEL, DATASET, "--id", "test/b/3.png", "--split", "train",
               "--include-self", "-k", 4, "--store", store, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in r.output.strip().splitlines()]
    assert {x["split"] for x in recs} == {"train"}
    ref = ds.neighbors(MODEL, ids="test/b/3.png", split="train", k=4, exclude_self=False)
    assert recs == ref.to_records()


def test_include_self(store: Path) -> None:
    r = invoke("neighbors", "-m", MODEL, DATASET, "--id", "train/a/1.png", "-k", 1,
               "--include-self", "--store", store)  # fmt: skip
    assert r.exit_code == 0, r.output
    [row] = table_rows(r.output)
    assert (row[2], row[3]) == ("train/a/1.png", "1.0000")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--id", "test/a/9.png"], ["'test/a/9.png' is not in dataset", "Did you mean"]),
        (["--id", "test/a/1.png", "-k", 30], ["k=30 but only 23 samples"]),
        (["--id", "test/a/1.png", "--split", "val"], ["has no split 'val'"]),
    ],
)
def test_clean_errors(store: Path, args: list[object], needles: list[str]) -> None:
    r = invoke("neighbors", "-m", MODEL, DATASET, *args, "--store", store)
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    [line] = r.output.strip().splitlines()
    assert line.startswith("Error: ")
    for needle in needles:
        assert needle in line


def test_usage_errors(store: Path, tmp_path: Path) -> None:
    r = invoke("neighbors", "-m", MODEL, DATASET, "--store", store)
    assert r.exit_code == 2
    assert "give --id or --image" in r.output
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    r = invoke("neighbors", "-m", MODEL, DATASET, "--id", "a", "--image", img, "--store", store)
    assert r.exit_code == 2
    assert "not both" in r.output
    r = invoke("neighbors", "-m", MODEL, "nope", "--id", "a", "--store", store)
    assert r.exit_code == 1
    assert "dataset 'nope' is not in the store" in r.output


def test_gallery(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "nn.png"
    r = CliRunner().invoke(
        cli,
        ["neighbors", "-m", MODEL, DATASET, "--id", "test/a/0.png", "--id", "train/b/2.png",
         "-k", "3", "--store", str(store), "--gallery", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(table_rows(r.stdout)) == 6  # the table is still printed, the note goes to stderr
    assert r.stderr.strip() == f"gallery written to {out}"
    with Image.open(out) as img:
        assert img.size == (round(1.7 * 4 * 150), round((1.7 * 1.05 * 2 + 0.5) * 150))
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.std() > 10
    assert len(np.unique(rgb.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1]))) > 20


def test_gallery_suffix_checked_before_searching(store: Path, tmp_path: Path) -> None:
    r = invoke("neighbors", "-m", MODEL, DATASET, "--id", "test/a/0.png", "--store", store,
               "--gallery", tmp_path / "nn.jpg")  # fmt: skip
    assert r.exit_code == 1
    [line] = r.output.strip().splitlines()
    assert "must end in .png or .svg" in line
