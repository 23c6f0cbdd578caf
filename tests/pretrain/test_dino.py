"""DINO with the medical settings: schedules, parameter groups, one step, the teacher's EMA."""

from __future__ import annotations

import math

import pytest
import torch

from featlab.pretrain.dino import DINOTrainer, param_groups

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trainer(**kw: object) -> DINOTrainer:
    import timm

    torch.manual_seed(0)
    student = timm.create_model("test_vit", num_classes=0, img_size=32, dynamic_img_size=True)
    teacher = timm.create_model("test_vit", num_classes=0, img_size=32, dynamic_img_size=True)
    args = {
        "steps_per_epoch": 10,
        "epochs": 2,
        "batch_size": 128,
        "out_dim": 64,
        "hidden_dim": 32,
        "bottleneck_dim": 16,
    }
    return DINOTrainer(student, teacher, **{**args, **kw})  # type: ignore[arg-type]


def _views(seed: int = 0, n_local: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    big = [torch.randn(6, 3, 32, 32, generator=g) for _ in range(2)]
    return big + [torch.randn(6, 3, 16, 16, generator=g) for _ in range(n_local)]


def test_schedules_follow_the_medical_dino_settings() -> None:
    trainer = _trainer(warmup_epochs=0)  # 20 steps, lr scaled by 128 / 256
    total = 20
    lr0, wd0, m0 = trainer._schedules(0)
    assert lr0 == pytest.approx(1e-4 * 128 / 256)
    assert wd0 == pytest.approx(1e-5)
    assert m0 == pytest.approx(0.99)
    mid = 10  # cosine: halfway between start and end at step (total - 1) / 2 in lightly's form
    lr, wd, m = trainer._schedules(mid)
    frac = (1 + math.cos(math.pi * mid / (total - 1))) / 2
    assert lr == pytest.approx(1e-6 + (5e-5 - 1e-6) * frac)
    assert wd == pytest.approx(1e-4 - (1e-4 - 1e-5) * frac)
    assert m == pytest.approx(1.0 - (1.0 - 0.99) * frac)
    assert trainer._schedules(total - 1) == pytest.approx((1e-6, 1e-4, 1.0))


def test_warmup_is_linear_and_capped_for_short_runs() -> None:
    trainer = _trainer()  # 2 epochs: warm-up over the first one (half the run), not 10 epochs
    assert trainer.settings["warmup_epochs"] == 1
    lrs = [trainer._schedules(s)[0] for s in range(10)]
    peak = 1e-4 * 128 / 256
    assert lrs == pytest.approx([peak * (s + 1) / 10 for s in range(10)])


def test_biases_and_norms_are_not_decayed() -> None:
    linear, norm = torch.nn.Linear(3, 4), torch.nn.LayerNorm(4)
    decay, no_decay = param_groups([torch.nn.Sequential(linear, norm)])
    assert [p.shape for p in decay["params"]] == [linear.weight.shape]
    assert len(no_decay["params"]) == 3
    assert no_decay["weight_decay"] == 0.0


def test_one_step_lowers_the_loss_on_fixed_views() -> None:
    trainer = _trainer(warmup_epochs=0, lr=1e-2)
    views = _views()

    def loss() -> float:
        center = trainer.criterion.center.clone()  # the loss moves the centre: keep it fixed
        with torch.no_grad():
            value = float(trainer.losses(views))
        trainer.criterion.center.copy_(center)
        return value

    before = loss()
    # Epoch 1: the last layer of the head is no longer frozen (DINO freezes it in epoch 0).
    trainer.train_step(views, epoch=1, step=0)
    assert loss() < before


def test_last_layer_is_frozen_in_the_first_epoch() -> None:
    trainer = _trainer(warmup_epochs=0)
    v = trainer.student_head.last_layer.weight_v.detach().clone()
    trainer.train_step(_views(), epoch=0, step=0)
    assert torch.equal(trainer.student_head.last_layer.weight_v.detach(), v)
    trainer.train_step(_views(), epoch=1, step=1)
    assert not torch.equal(trainer.student_head.last_layer.weight_v.detach(), v)


def test_teacher_is_the_ema_of_the_student() -> None:
    trainer = _trainer(warmup_epochs=0)
    before = [p.detach().clone() for p in trainer.teacher.parameters()]
    out = trainer.train_step(_views(), epoch=1, step=3)
    m = out["momentum"]
    for old, student, new in zip(
        before, trainer.student.parameters(), trainer.teacher.parameters(), strict=True
    ):
        torch.testing.assert_close(new.detach(), m * old + (1 - m) * student.detach())
    assert trainer.backbones()["backbone"] is trainer.teacher
