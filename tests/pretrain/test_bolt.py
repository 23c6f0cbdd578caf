"""BOLT's token perturbation, difficulty label, EMA and one training step (tiny test_vit)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featlab.errors import InvalidArgumentError
from featlab.pretrain.bolt import (
    BOLTTrainer,
    TokenPerturbation,
    difficulty_label,
    ema_update,
    inverse_permute,
    permute_tokens,
    random_permutations,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _perm(b: int, n: int, seed: int = 0) -> torch.Tensor:
    return random_permutations(b, n, torch.Generator().manual_seed(seed))


def test_permutations_are_permutations_and_seeded() -> None:
    p = _perm(5, 9)
    assert p.shape == (5, 9)
    assert p.dtype == torch.int64
    assert (p.sort(dim=1).values == torch.arange(9)).all()
    assert torch.equal(p, _perm(5, 9))
    assert not torch.equal(p, _perm(5, 9, seed=1))


def test_permute_matches_indexing_and_inverse_restores_order() -> None:
    z = torch.randn(3, 9, 4)
    p = _perm(3, 9)
    permuted = permute_tokens(z, p)
    for b in range(3):
        for i in range(9):
            assert torch.equal(permuted[b, i], z[b, p[b, i]])
    assert not torch.equal(permuted, z)
    assert torch.equal(inverse_permute(permuted, p), z)


def test_windows_tile_with_stride_and_wrap_when_longer() -> None:
    assert TokenPerturbation(4, stride=3).windows(9).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert TokenPerturbation(4, stride=3, window=4).windows(9).tolist() == [
        [0, 1, 2, 3],
        [3, 4, 5, 6],
        [6, 7, 8, 0],
    ]
    with pytest.raises(InvalidArgumentError, match="multiple of S = 3"):
        TokenPerturbation(4, stride=3).windows(8)


@pytest.mark.parametrize("window", [3, 5])
def test_perturbation_shapes_and_equation_3(window: int) -> None:
    torch.manual_seed(0)
    b, n, d, s = 2, 9, 4, 3  # a 3x3 patch grid: S = W / P = 3, K = 3 long tokens
    module = TokenPerturbation(d, stride=s, window=window)
    assert module.fuse.weight.shape == (s * d, window * d)  # E_fuse in R^{MD x SD}
    z, p = torch.randn(b, n, d), _perm(b, n)
    out = module(z, p)
    assert out.shape == (b, n, d)
    # Reference, written out: permute, concatenate M tokens from k*S (mod N), fuse, split.
    for bi in range(b):
        zp = z[bi, p[bi]]
        for k in range(n // s):
            long = torch.cat([zp[(k * s + j) % n] for j in range(window)])
            fused = module.fuse(long)
            for j in range(s):
                torch.testing.assert_close(out[bi, k * s + j], fused[j * d : (j + 1) * d])


def test_identity_fusion_only_permutes() -> None:
    module = TokenPerturbation(4, stride=3)
    with torch.no_grad():
        module.fuse.weight.copy_(torch.eye(12))
        module.fuse.bias.zero_()
    z, p = torch.randn(2, 9, 4), _perm(2, 9)
    out = module(z, p)
    torch.testing.assert_close(out, permute_tokens(z, p))
    torch.testing.assert_close(inverse_permute(out, p), z)


def test_difficulty_label_follows_mse_ordering() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 9, 4, generator=g)
    pa, pb = _perm(4, 9, 1), _perm(4, 9, 2)
    small, large = 0.1, 1.0
    # Sample 0 and 2: view a (online) is further from z_o; samples 1 and 3: view b is.
    scale_a = torch.tensor([large, small, large, small]).view(4, 1, 1)
    scale_b = torch.tensor([small, large, small, large]).view(4, 1, 1)
    view_a = permute_tokens(z + scale_a * torch.randn(4, 9, 4, generator=g), pa)
    view_b = permute_tokens(z + scale_b * torch.randn(4, 9, 4, generator=g), pb)
    label = difficulty_label(z, view_a, pa, view_b, pb)
    mse_a = ((inverse_permute(view_a, pa) - z) ** 2).mean(dim=(1, 2))
    mse_b = ((inverse_permute(view_b, pb) - z) ** 2).mean(dim=(1, 2))
    assert label.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert label.tolist() == (mse_a > mse_b).float().tolist()
    assert difficulty_label(z, view_b, pb, view_a, pa).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_ema_update_formula() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    theta = [p.detach().clone() for p in online.parameters()]
    xi = [p.detach().clone() for p in target.parameters()]
    ema_update(online, target, tau=0.9)
    for t, x, new in zip(theta, xi, target.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), 0.9 * x + 0.1 * t)
    for t, p in zip(theta, online.parameters(), strict=True):
        assert torch.equal(p.detach(), t)  # the online branch is not touched


def _tiny_vit() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=0, img_size=32)


def _trainer(**kw: object) -> BOLTTrainer:
    args = {
        "steps_per_epoch": 10,
        "epochs": 1,
        "batch_size": 256,
        "seed": 0,
        "lr": 1e-4,
        "proj_hidden": 32,
        "proj_dim": 16,
    }
    return BOLTTrainer(_tiny_vit(), **{**args, **kw})  # type: ignore[arg-type]


def test_one_step_lowers_the_loss_on_a_fixed_batch() -> None:
    trainer = _trainer()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def loss() -> float:
        with torch.no_grad():
            return float(trainer.losses(x, torch.Generator().manual_seed(7))["loss"])

    before = loss()
    trainer.train_step(x, epoch=0, step=0)
    after = loss()
    assert after < before


def test_no_difficulty_drops_the_difficulty_loss() -> None:
    trainer = _trainer(difficulty=False)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = trainer.train_step(x, epoch=0, step=0)
    assert out["loss"] == pytest.approx(out["loss_bolt"])
    with_diff = _trainer().train_step(x, epoch=0, step=0)
    assert with_diff["loss"] == pytest.approx(with_diff["loss_bolt"] + 0.1 * with_diff["loss_diff"])


def test_target_follows_the_online_branch_by_ema() -> None:
    trainer = _trainer()
    xi = [p.detach().clone() for p in trainer.target_vit.parameters()]
    out = trainer.train_step(torch.randn(8, 3, 32, 32), epoch=0, step=0)
    tau = out["tau"]
    for old, theta, new in zip(
        xi, trainer.vit.parameters(), trainer.target_vit.parameters(), strict=True
    ):
        torch.testing.assert_close(new.detach(), tau * old + (1 - tau) * theta.detach())


def test_bolt_needs_a_vit() -> None:
    import timm

    with pytest.raises(InvalidArgumentError, match="timm VisionTransformer"):
        BOLTTrainer(
            timm.create_model("test_resnet", num_classes=0),
            steps_per_epoch=1,
            epochs=1,
            batch_size=8,
            seed=0,
        )
