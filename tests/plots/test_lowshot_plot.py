"""Low-shot curves: written as PNG/SVG, x at the real training-set sizes, y = fold means."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from plot_helpers import check_png, check_svg, multiclass_runs

from featlab.errors import InvalidArgumentError
from featlab.plots.lowshot import plot_lowshot


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return multiclass_runs(tmp_path_factory)[1]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_written_at_expected_size_and_not_blank(runs, tmp_path, suffix):
    out = tmp_path / f"sub/curves{suffix}"
    plot_lowshot(runs, out=out)
    check = check_png if suffix == ".png" else check_svg
    check(out, (7.0, 4.5))


def test_lines_sit_at_real_training_sizes_with_fold_mean_and_std(runs):
    fig = plot_lowshot(runs)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.lines] == [
        "good · knn k=5", "good · knn k=20", "weak · knn k=5", "weak · knn k=20"
    ]  # fmt: skip
    bands = ax.collections
    for line, band, (run, variant) in zip(
        ax.lines, bands, [(r, v) for r in runs for v in ("k=5", "k=20")], strict=True
    ):
        # Independent reference: the folds' training rows and per-fold metrics of the run.
        sizes = ["9", "30", "all"]
        x = [np.mean([len(run.train_rows[f"{s}/{f}"]) for f in range(3)]) for s in sizes]
        vals = [
            [f.metrics["accuracy"] for f in run.folds if f.variant == variant and f.size == s]
            for s in sizes
        ]
        np.testing.assert_allclose(line.get_xdata(), x)
        np.testing.assert_allclose(line.get_ydata(), [np.mean(v) for v in vals])
        lo = [np.mean(v) - np.std(v, ddof=1) for v in vals]
        hi = [np.mean(v) + np.std(v, ddof=1) for v in vals]
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(min(lo))
        assert ys.max() == pytest.approx(max(hi))
    assert x[0] == 9
    assert x[-1] > 30
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["9", "30", f"all\n({x[-1]:,.0f})"]
    assert ax.get_ylabel() == "accuracy"
    assert "toy" in ax.get_title()
    assert "3 folds" in ax.get_title()


def test_variant_and_metric_selection(runs):
    fig = plot_lowshot(runs, variant="k=20", metric="macro_f1")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["good · knn k=20", "weak · knn k=20"]
    want = [s.means["macro_f1"] for s in runs[1].summary if s.variant == "k=20"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), want)
    assert ax.get_ylabel() == "macro F1"


def test_refuses_mixed_datasets_metrics_and_unknown_variants(runs, tmp_path):
    other = dataclasses.replace(runs[1], dataset="elsewhere")
    with pytest.raises(InvalidArgumentError, match=r"one dataset.*\['elsewhere', 'toy'\]"):
        plot_lowshot([runs[0], other])
    mixed = dataclasses.replace(runs[1], metric="macro_f1")
    with pytest.raises(InvalidArgumentError, match="different headline metrics"):
        plot_lowshot([runs[0], mixed])
    plot_lowshot([runs[0], mixed], metric="accuracy")  # a metric both computed is fine
    with pytest.raises(InvalidArgumentError, match="does not apply"):
        plot_lowshot(runs, metric="quadratic_kappa")
    with pytest.raises(InvalidArgumentError, match=r"no variant 'k=7'.*k=20"):
        plot_lowshot(runs, variant="k=7")
    with pytest.raises(InvalidArgumentError, match=r"\.png or \.svg"):
        plot_lowshot(runs, out=tmp_path / "curves.jpg")
    with pytest.raises(InvalidArgumentError, match="no runs"):
        plot_lowshot([])
