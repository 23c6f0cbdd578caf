"""Confusion matrices: annotated counts equal scikit-learn's, percentages per true class."""

from __future__ import annotations

import numpy as np
import pytest
from plot_helpers import check_png, check_svg, multiclass_runs, multilabel_runs
from sklearn.metrics import confusion_matrix

from featlab.errors import InvalidArgumentError
from featlab.plots.confusion import plot_confusion, run_predictions

NAMES = ["normal", "benign", "malignant", "other"]


@pytest.fixture
def labels():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))  # "other" never predicted
    return y, pred


def cell_texts(fig) -> dict[tuple[int, int], str]:
    ax = fig.axes[0]
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
            for t in ax.texts}  # fmt: skip


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_written_at_expected_size_and_not_blank(labels, tmp_path, suffix):
    out = tmp_path / f"cm{suffix}"
    plot_confusion(*labels, NAMES, out=out)
    (check_png if suffix == ".png" else check_svg)(out, (5.2, 4.0))  # 4 classes: 4 in + colorbar


def test_counts_and_row_percentages_match_sklearn(labels):
    y, pred = labels
    ref = confusion_matrix(y, pred, labels=range(4))
    texts = cell_texts(plot_confusion(y, pred, NAMES))
    assert len(texts) == 16
    for (i, j), text in texts.items():
        count, percent = text.split("\n")
        assert int(count) == ref[i, j]
        assert percent == f"{100 * ref[i, j] / ref[i].sum():.1f}%"
    counts_only = cell_texts(plot_confusion(y, pred, NAMES, normalize=None))
    assert {k: int(v) for k, v in counts_only.items()} == {
        (i, j): ref[i, j] for i in range(4) for j in range(4)
    }


def test_run_predictions_are_the_argmax_of_the_stored_scores(tmp_path_factory):
    _, runs = multiclass_runs(tmp_path_factory)
    y, pred = run_predictions(runs[1], fold=1, size="30", variant="k=20")
    np.testing.assert_array_equal(y, runs[1].test_labels)
    np.testing.assert_array_equal(pred, runs[1].test_scores["k=20|30/1"].argmax(axis=1))
    # Its accuracy is the accuracy the run recorded for that fold.
    (fold,) = [f for f in runs[1].folds if (f.variant, f.size, f.fold) == ("k=20", "30", 1)]
    assert np.mean(y == pred) == pytest.approx(fold.metrics["accuracy"])


def test_refuses_multilabel_runs_and_bad_labels(tmp_path_factory, labels):
    _, (run,) = multilabel_runs(tmp_path_factory)
    with pytest.raises(InvalidArgumentError, match=r"multilabel.*ROC"):
        run_predictions(run)
    y, pred = labels
    with pytest.raises(InvalidArgumentError, match=r"y_true must hold integer labels in 0\.\.2"):
        plot_confusion(y, pred, NAMES[:3])
    with pytest.raises(InvalidArgumentError, match="equal length"):
        plot_confusion(y[:5], pred, NAMES)
    with pytest.raises(InvalidArgumentError, match="normalize"):
        plot_confusion(y, pred, NAMES, normalize="all")
