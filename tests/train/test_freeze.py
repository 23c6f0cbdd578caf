"""`--unfreeze last:N`: exactly the last N blocks, the post-block norms and the head train."""

from __future__ import annotations

import pytest
import timm

from featlab.errors import InvalidArgumentError
from featlab.train.freeze import apply_unfreeze, parse_unfreeze


def _names(model, prefixes):
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_vit_last_two_blocks_norm_and_head():
    model = timm.create_model("test_vit", num_classes=3)  # 6 blocks
    plan = apply_unfreeze(model, "last:2")
    expected = _names(model, ("blocks.4.", "blocks.5.", "norm.", "fc_norm.", "head."))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected == set(plan.trainable)
    assert "cls_token" not in trainable
    assert "pos_embed" not in trainable
    assert plan.n_trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_resnet_last_block_is_the_last_bottleneck_of_layer4():
    model = timm.create_model("test_resnet", num_classes=3)
    last = len(model.layer4) - 1
    plan = apply_unfreeze(model, "last:1")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == _names(model, (f"layer4.{last}.", "fc."))
    # Frozen batch norms stay in eval mode while training: their statistics do not move.
    plan.set_train_mode(model)
    frozen_bn = model.bn1
    assert not frozen_bn.training
    assert model.layer4[last].bn1.training


def test_all_and_head_only():
    model = timm.create_model("test_vit", num_classes=3)
    apply_unfreeze(model, "last:0")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == _names(
        model, ("norm.", "fc_norm.", "head.")
    )
    plan = apply_unfreeze(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    assert plan.n_trainable == plan.n_total


@pytest.mark.parametrize("bad", ["some", "last:", "last:-1", "first:2"])
def test_bad_specs_are_refused(bad):
    with pytest.raises(InvalidArgumentError, match="last:N"):
        parse_unfreeze(bad)


def test_more_blocks_than_the_model_has():
    with pytest.raises(InvalidArgumentError, match="has 6 blocks"):
        apply_unfreeze(timm.create_model("test_vit", num_classes=3), "last:7")
