"""``featlab tsne`` end to end on a tiny store: panels written, coordinates cached, clean errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featlab
from featlab.cli.main import cli
from featlab.plots._figure import DPI
from featlab.plots.tsne import figure_size

FAST = ("--n-iter", 50, "--perplexity", 10, "--n-jobs", 1)


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_two_models_then_cached(synthetic_store, tmp_path):
    path = synthetic_store(n=300)
    out = tmp_path / "figs" / "tsne.png"
    r = invoke("tsne", "--model", "good,noise", "toy", "--out", out, "--store", path, *FAST)
    assert r.exit_code == 0, r.output
    n_test = int((featlab.open_store(path)["toy"].splits == "test").sum())
    lines = r.output.strip().splitlines()
    assert lines[0].startswith(f"good: {n_test} points, opentsne, ")
    assert lines[0].endswith(" s")
    assert lines[1].startswith(f"noise: {n_test} points, opentsne, ")
    assert lines[-1] == f"wrote {out}"
    img = Image.open(out)
    w, h = figure_size(2, ["c0", "c1", "c2"])
    assert img.size == (round(w * DPI), round(h * DPI))
    assert np.asarray(img.convert("L"), dtype=float).std() > 10  # not blank

    again = invoke("tsne", "-m", "good", "-m", "noise", "toy", "--out", out, "--store", path,
                   *FAST)  # fmt: skip
    assert again.exit_code == 0, again.output
    assert again.output.splitlines()[:2] == [
        f"good: {n_test} points, opentsne, cached",
        f"noise: {n_test} points, opentsne, cached",
    ]


def test_split_all_max_points_and_fallback_note(synthetic_store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # as if openTSNE were not installed
    path = synthetic_store(n=300)
    out = tmp_path / "t.svg"
    r = invoke("tsne", "-m", "good", "toy", "--split", "all", "--max-points", 120,
               "--seed", 3, "--out", out, "--store", path, *FAST)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.startswith("note: openTSNE is not installed")
    assert "good: 120 points, sklearn, " in r.output
    assert out.read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("-m", "nope", "toy"), "no embeddings of model 'nope'"),
        (("-m", "good", "toy", "--out", "t.jpg"), r"must end in \.png or \.svg"),
        (("-m", "good", "toy", "--split", "holdout"), "no split 'holdout'"),
        (("-m", "good", "toy", "--perplexity", 30, "--max-points", 50), "at most 16"),
    ],
)
def test_clean_errors(synthetic_store, tmp_path, args, match):
    import re

    path = synthetic_store(n=300)
    r = invoke("tsne", *args, "--store", path, "--n-iter", 50)
    assert r.exit_code == 1, r.output
    assert re.search(match, r.output), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "t.jpg").exists()
