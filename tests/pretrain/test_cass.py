"""CASS: the loss of equation 1, one step, no collapse, the per-iteration cosine and SWA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featlab.errors import InvalidArgumentError
from featlab.pretrain.arms import headless_state_dict
from featlab.pretrain.cass import CASSTrainer, cass_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cass_loss_is_two_minus_two_cosine() -> None:
    rng = np.random.default_rng(0)
    r, t = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    cos = (r * t).sum(1) / (np.linalg.norm(r, axis=1) * np.linalg.norm(t, axis=1))
    got = cass_loss(torch.tensor(r), torch.tensor(t))
    assert float(got) == pytest.approx(float(np.mean(2 - 2 * cos)), rel=1e-6)
    same = torch.tensor(r)
    assert float(cass_loss(same, 3 * same)) == pytest.approx(0.0, abs=1e-6)
    assert float(cass_loss(same, -same)) == pytest.approx(4.0, abs=1e-6)


def test_cass_loss_refuses_mismatched_arms() -> None:
    with pytest.raises(InvalidArgumentError, match="same number of output logits"):
        cass_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def _arms(classes: int = 16) -> tuple[torch.nn.Module, torch.nn.Module]:
    import timm

    torch.manual_seed(0)
    cnn = timm.create_model("test_resnet", num_classes=classes)
    vit = timm.create_model("test_vit", num_classes=classes, img_size=32)
    return cnn, vit


def _batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_one_step_lowers_the_loss_on_a_fixed_batch() -> None:
    cnn, vit = _arms()
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=4, epochs=1)
    x = _batch()

    def loss() -> float:
        with torch.no_grad():  # train mode, like the step: batch statistics, same function
            return float(cass_loss(cnn(x), vit(x)))

    before = loss()
    trainer.train_step(x, epoch=0, step=0)
    assert loss() < before


def test_arms_do_not_collapse_to_a_constant() -> None:
    cnn, vit = _arms()
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=12, epochs=1, swa_start=1.0)
    losses = [trainer.train_step(_batch(seed=s), epoch=0, step=s)["loss"] for s in range(12)]
    assert losses[-1] < losses[0]
    probe = _batch(32, seed=99)
    cnn.eval()
    vit.eval()
    with torch.no_grad():
        for arm in (cnn, vit):
            out = F.normalize(arm.forward_head(arm.forward_features(probe), pre_logits=True))
            spread = out.std(dim=0).sum()  # 0 for a constant output
            pairwise = out @ out.T
            assert float(spread) > 0.1
            assert float(pairwise[~torch.eye(32, dtype=torch.bool)].min()) < 0.99


def test_learning_rate_follows_the_per_iteration_cosine() -> None:
    cnn, vit = _arms()
    default = CASSTrainer(*_arms(), steps_per_epoch=1, epochs=1)
    assert (default.settings["lr"], default.settings["t_max"]) == (1e-3, 16)  # section 3.1
    assert default.settings["min_lr"] == 1e-6
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=40, epochs=1, t_max=4, swa_start=1.0)
    x = _batch(2)
    lrs = [trainer.train_step(x, epoch=0, step=s)["lr"] for s in range(9)]
    for t, lr in enumerate(lrs):  # eta_min + (lr - eta_min) (1 + cos(pi t / T_max)) / 2
        assert lr == pytest.approx(1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * t / 4)) / 2)
    assert lrs[4] == pytest.approx(1e-6)  # stepped per iteration: a full cycle in 2 T_max
    assert lrs[8] == pytest.approx(1e-3)


def test_swa_averages_the_cycle_minima_and_is_what_gets_saved() -> None:
    cnn, vit = _arms()
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=13, epochs=1, t_max=4, swa_start=0.0)
    snapshots = []
    for s in range(13):
        trainer.train_step(_batch(4, seed=s), epoch=0, step=s)
        if s in (4, 12):  # the steps run at the schedule's minimum (t = T_max, 3 T_max)
            snapshots.append({k: v.clone() for k, v in vit.state_dict().items()})
    assert int(trainer.swa_vit.n_averaged) == 2
    saved = headless_state_dict(trainer.backbones()["vit"])
    for key, value in saved.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (snapshots[0][key] + snapshots[1][key]) / 2)
    assert "head.weight" not in saved
    assert trainer.describe()["saved_weights"] == "swa"


def test_before_swa_starts_the_trained_arms_are_saved() -> None:
    cnn, vit = _arms()
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=4, epochs=4, swa_start=0.75)
    trainer.train_step(_batch(4), epoch=0, step=0)
    assert trainer.backbones() == {"cnn": cnn, "vit": vit}
    assert trainer.describe()["saved_weights"].startswith("trained")


def test_update_bn_gives_the_averaged_cnn_its_own_statistics() -> None:
    cnn, vit = _arms()
    trainer = CASSTrainer(cnn, vit, steps_per_epoch=6, epochs=1, t_max=2, swa_start=0.0)
    batches = [_batch(8, seed=s) for s in range(6)]
    for s, x in enumerate(batches):
        trainer.train_step(x, epoch=0, step=s)
    trainer.end_epoch(0, batches)
    averaged = trainer.swa_cnn.module
    bn = next(m for m in averaged.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # Reference: the BN input over all batches, through the averaged weights.
    feats = []
    hook = bn.register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    averaged.eval()
    with torch.no_grad():
        for x in batches:
            averaged(x)
    hook.remove()
    mean = torch.cat(feats).mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-4, atol=1e-5)
