"""Learning-rate schedules: warm-up, plateau, cosine, linear; state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from featlab.errors import InvalidArgumentError
from featlab.train.schedule import LRSchedule


def _opt():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_linear_warmup_then_base():
    opt = _opt()
    s = LRSchedule(opt, base_lr=1e-3, kind="constant", total_steps=100, warmup_steps=4)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(5):
        s.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_plateau_divides_by_ten_after_patience_down_to_the_floor():
    opt = _opt()
    s = LRSchedule(opt, base_lr=1e-4, kind="plateau", total_steps=10, patience=2, factor=0.1,
                   min_lr=1e-6)
    s.epoch_end(0.5)
    s.epoch_end(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    s.epoch_end(0.4)  # second flat epoch: reduce
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    for _ in range(10):
        s.epoch_end(0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    assert s.at_floor()


def test_cosine_and_linear_end_points():
    opt = _opt()
    s = LRSchedule(opt, base_lr=3e-4, kind="cosine", total_steps=10, min_lr=1e-6)
    for _ in range(5):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6 + (3e-4 - 1e-6) * 0.5)
    for _ in range(5):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    lin = LRSchedule(_opt(), base_lr=1.0, kind="linear", total_steps=4)
    lin.step()
    assert lin.lr() == pytest.approx(0.75)
    assert math.isclose(LRSchedule(_opt(), base_lr=2.0, kind="cosine", total_steps=4).lr(), 2.0)


def test_state_round_trip():
    a = LRSchedule(_opt(), base_lr=1e-3, kind="plateau", total_steps=10, patience=1)
    a.step()
    a.epoch_end(1.0)
    a.epoch_end(0.0)
    b = LRSchedule(_opt(), base_lr=1e-3, kind="plateau", total_steps=10, patience=1)
    b.load_state_dict(a.state_dict())
    assert b.lr() == a.lr()
    assert b.state_dict() == a.state_dict()


def test_unknown_kind():
    with pytest.raises(InvalidArgumentError, match="schedule must be"):
        LRSchedule(_opt(), base_lr=1.0, kind="step", total_steps=1)


def test_matsoukas_plateau_lands_on_its_floor_and_stays():
    """1e-4 / 10 / 10 is 1.0000000000000002e-06 in floating point: the second reduction must
    count as the floor (else early stopping waits a third plateau), and further reductions
    must not go below it."""
    from featlab.train.recipes import recipe_config

    config = recipe_config("matsoukas")
    opt = _opt()
    s = LRSchedule(opt, base_lr=config.lr, kind=config.schedule, total_steps=10,
                   min_lr=config.min_lr, patience=config.plateau_patience,
                   factor=config.plateau_factor)
    s.epoch_end(1.0)
    for _ in range(2 * config.plateau_patience):  # two plateaus: 1e-4 -> 1e-5 -> 1e-6
        assert not s.at_floor()
        s.epoch_end(0.0)
    assert s.at_floor()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    for _ in range(3 * config.plateau_patience):
        s.epoch_end(0.0)
    assert s.scale == pytest.approx(config.min_lr / config.lr)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)


def test_a_base_lr_below_the_floor_is_never_raised():
    opt = _opt()
    s = LRSchedule(opt, base_lr=1e-7, kind="plateau", total_steps=10, min_lr=1e-6, patience=1)
    s.epoch_end(1.0)
    s.epoch_end(0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-7)
    assert s.at_floor()
    with pytest.raises(InvalidArgumentError, match="base lr must be > 0"):
        LRSchedule(opt, base_lr=0.0, kind="plateau", total_steps=10)
