"""Focal loss and class weights against hand computation and torch's cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featlab.errors import InvalidArgumentError
from featlab.train.losses import FocalLoss, inverse_frequency, make_loss


def test_inverse_frequency_mean_one_over_present_classes():
    w = inverse_frequency(np.array([0, 0, 0, 1]), 3)
    # 1/3 and 1/1 normalised to mean 1; class 2 absent -> 0.
    np.testing.assert_allclose(w.numpy(), [0.5, 1.5, 0.0])


def test_focal_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    p = torch.softmax(logits, 1)[:, 0]
    expected = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert torch.allclose(FocalLoss(2.0)(logits, target), expected)


def test_focal_with_gamma_zero_is_weighted_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    alpha = torch.tensor([0.5, 1.0, 1.5])
    ours = FocalLoss(0.0, alpha)(logits, target)
    ref = (F.cross_entropy(logits, target, reduction="none") * alpha[target]).mean()
    assert torch.allclose(ours, ref)


def test_focal_down_weights_easy_samples():
    easy = FocalLoss(2.0)(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    ce = F.cross_entropy(torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert easy < ce * 0.01


def test_multilabel_ignores_unknown_entries():
    logits = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    known = torch.tensor([[1, 0], [0, 1]])
    with_unknown = torch.tensor([[1, -1], [-1, 1]])
    loss = make_loss("ce", "multilabel", known.numpy(), 2)
    ref = F.binary_cross_entropy_with_logits(logits[[0, 1], [0, 1]], torch.tensor([1.0, 1.0]))
    assert torch.allclose(loss(logits, with_unknown), ref)


def test_balanced_cross_entropy_uses_inverse_frequency():
    loss = make_loss("ce", "multiclass", np.array([0, 0, 0, 1]), 2, class_weights="balanced")
    np.testing.assert_allclose(loss.weight.numpy(), [0.5, 1.5])


def test_unknown_options_are_refused():
    with pytest.raises(InvalidArgumentError, match="loss must be"):
        make_loss("mse", "binary", np.array([0, 1]), 2)
    with pytest.raises(InvalidArgumentError, match="class weights"):
        make_loss("ce", "binary", np.array([0, 1]), 2, class_weights="inverse")
