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
