"""ROC curves: curves and legend AUCs equal scikit-learn's, per task; selection and errors."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from plot_helpers import binary_runs, check_png, check_svg, multiclass_runs, multilabel_runs
from sklearn.metrics import roc_auc_score, roc_curve

from featlab.errors import InvalidArgumentError
from featlab.plots.roc import plot_roc, run_scores

AUC_IN_LEGEND = re.compile(r"^(.*) \(AUC (\d\.\d{3})\)$")


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    return binary_runs(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    return multiclass_runs(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    return multilabel_runs(tmp_path_factory)[1]


def legend(ax) -> dict[str, float]:
    out = {}
    for text in ax.get_legend().get_texts():
        m = AUC_IN_LEGEND.match(text.get_text())
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_written_at_expected_size_and_not_blank(binary, tmp_path, suffix):
    out = tmp_path / f"roc{suffix}"
    plot_roc(binary, out=out)
    (check_png if suffix == ".png" else check_svg)(out, (6.0, 5.0))


def test_binary_one_curve_per_run_with_sklearn_auc(binary):
    ax = plot_roc(binary, size="10", fold=1, variant="k=20").axes[0]
    aucs = legend(ax)
    assert list(aucs) == ["good · knn k=20", "weak · knn k=20"]
    for run, line in zip(binary, ax.lines, strict=False):
        y, s = run.test_labels, run.test_scores["k=20|10/1"][:, 1]
        assert aucs[line.get_label().split(" (")[0]] == round(roc_auc_score(y, s), 3)
        fpr, tpr, _ = roc_curve(y, s)
        np.testing.assert_allclose(line.get_xdata(), fpr)
        np.testing.assert_allclose(line.get_ydata(), tpr)
    assert aucs["good · knn k=20"] > aucs["weak · knn k=20"]
    assert "size 10, fold 1" in ax.get_title()
    assert "differ" not in ax.get_title()


def test_multiclass_one_run_draws_every_class(multiclass):
    run = multiclass[0]
    ax = plot_roc([run], class_names=["c0", "c1", "c2"]).axes[0]
    aucs = legend(ax)
    assert list(aucs) == ["c0", "c1", "c2"]
    y, s = run.test_labels, run.test_scores["k=5|all/0"]  # defaults: first variant, all, fold 0
    for k in range(3):
        assert aucs[f"c{k}"] == round(roc_auc_score(y == k, s[:, k]), 3)


def test_multiclass_several_runs_draw_macro_average(multiclass):
    ax = plot_roc(multiclass, size="9", fold=2).axes[0]
    aucs = legend(ax)
    assert list(aucs) == ["good · knn k=5, macro", "weak · knn k=5, macro"]
    for run in multiclass:
        y, s = run.test_labels, run.test_scores["k=5|9/2"]
        onehot = np.eye(3)[y]
        want = roc_auc_score(onehot, s, average="macro")  # one-vs-rest macro AUC
        assert aucs[f"{run.model} · knn k=5, macro"] == round(want, 3)
        # The legend's AUC is the metric featlab reported for that fold.
        (fold,) = [f for f in run.folds if f.variant == "k=5" and f.size == "9" and f.fold == 2]
        assert fold.metrics["auc"] == pytest.approx(want)


def test_multilabel_masks_unknown_entries(multilabel):
    (run,) = multilabel
    assert (run.test_labels == -1).any()
    aucs = legend(plot_roc(multilabel, class_names=list("abcd")).axes[0])
    s = run.test_scores["k=5|all/0"]
    for j, name in enumerate("abcd"):
        known = run.test_labels[:, j] >= 0
        assert aucs[name] == round(roc_auc_score(run.test_labels[known, j], s[known, j]), 3)


def test_title_warns_when_test_sets_differ(binary):
    fewer = dataclasses.replace(binary[1], test_rows=binary[1].test_rows + 1)
    ax = plot_roc([binary[0], fewer]).axes[0]
    assert ax.get_title().endswith("(test sets differ)")


def test_errors_name_what_the_run_has(binary):
    with pytest.raises(InvalidArgumentError, match=r"no training size '50'.*\['10', 'all'\]"):
        run_scores(binary[0], size="50")
    with pytest.raises(InvalidArgumentError, match=r"no variant 'linear'"):
        plot_roc(binary, variant="linear")
    with pytest.raises(InvalidArgumentError, match=r"no fold 4 .*folds: \[0, 1\]"):
        plot_roc(binary, fold=4)
    with pytest.raises(InvalidArgumentError, match="one dataset"):
        plot_roc([binary[0], dataclasses.replace(binary[1], dataset="other")])
