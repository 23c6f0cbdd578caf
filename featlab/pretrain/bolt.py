"""BOLT: bootstrap own latent of a Transformer, with token perturbation and difficulty ranking.

Li et al., "BOLT" (papers/bolt-token-perturbation-ssl-vit.txt), section 2. An online branch
(ViT ``f_theta``, projector ``g_theta``, predictor ``q_theta``) learns to predict a target branch
(``f_xi``, ``g_xi``) whose weights are an exponential moving average of the online ones
(equation 1). Instead of two augmented images, the two views are two **token perturbations** of
the same patch embeddings ``z_o`` (equation 2): permute the tokens, concatenate ``M`` adjacent
ones with a sliding window of stride ``S = W / P`` into ``K = N / S`` long tokens, fuse each with
a linear layer ``E_fuse`` of shape ``MD x SD`` (equation 3) and split it back into ``S`` tokens of
size ``D``. The loss is BYOL's symmetric normalised MSE (equation 4) plus ``alpha = 0.1`` times a
difficulty-ranking BCE (equations 5-7): a linear layer on ``Cat(y_theta, y_xi)`` predicts whether
the online branch got the view whose inverse-permuted tokens are further from ``z_o``.

Protocol choices the paper leaves open:

- One perturbation module, applied to the online patch embeddings, makes both views; the target
  branch receives its view with a stop-gradient, so both branches see "the same patch embedding
  tokens with a different perturbation" and ``y_self`` compares against one ``z_o``.
- ``M`` defaults to ``S`` (windows tile the sequence); a larger ``M`` makes overlapping windows
  that wrap around the end of the permuted sequence. Note ``E_fuse`` has ``M*S*D**2`` weights.
- The difficulty loss is averaged over both orderings of the symmetric pair (online sees view a
  and target view b, then the reverse, with the label flipped).
- The paper gives no optimiser: AdamW with MoCo v3's ViT recipe (Chen et al. 2021, the token
  based baseline BOLT compares with): lr 1.5e-4 x B/256, weight decay 0.1, linear warm-up over
  the first 40/300 of the steps, cosine decay; BYOL's EMA schedule (tau from 0.996 to 1, cosine)
  and BYOL's heads (4096 hidden, 256 out; Grill et al. 2020).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule, cosine_warmup_schedule
from torch import nn

from featlab.errors import InvalidArgumentError
from featlab.pretrain._amp import float32
from featlab.train.conv_guard import guard_single_pixel_convs
from featlab.train.data import item_seed
from featlab.train.precision import autocast, grad_scaler

ALPHA = 0.1  # equation 7
BASE_LR = 1.5e-4  # MoCo v3 ViT, per 256 images
WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 40 / 300
TAU = 0.996  # BYOL's base EMA decay
PERM_STREAM = 0xFFFFFFFE  # keeps the permutation seeds apart from the per-image ones


# -- token perturbation module (section 2.1, Fig. 2) ------------------------------------------


def random_permutations(
    batch: int, n: int, generator: torch.Generator, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """One random permutation of ``range(n)`` per sample: ``(batch, n)`` int64."""
    keys = torch.rand(batch, n, generator=generator)
    return keys.argsort(dim=1).to(device)


def permute_tokens(tokens: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``Perm(z)``: ``out[b, i] = tokens[b, perm[b, i]]``; tokens ``(B, N, D)``, perm ``(B, N)``."""
    return tokens.gather(1, perm.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def inverse_permute(tokens: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``Perm^-1(z)``: token ``i`` goes back to position ``perm[b, i]`` (undoes ``Perm``)."""
    return permute_tokens(tokens, perm.argsort(dim=1))


class TokenPerturbation(nn.Module):
    """Permutation, fusion of ``M`` adjacent tokens (stride ``S``) and split (equation 3).

    Args:
        dim: Token size ``D``.
        stride: ``S = W / P``, the number of patches per image row.
        window: ``M``, tokens concatenated per long token (default ``S``).

    Raises:
        InvalidArgumentError: ``stride`` or ``window`` below 1.
    """

    def __init__(self, dim: int, stride: int, window: int | None = None) -> None:
        super().__init__()
        window = stride if window is None else window
        if stride < 1 or window < 1:
            raise InvalidArgumentError(f"stride and window must be >= 1; got {stride}, {window}")
        self.dim, self.stride, self.window = dim, stride, window
        self.fuse = nn.Linear(window * dim, stride * dim)  # E_fuse in R^{MD x SD}

    def windows(self, n: int) -> torch.Tensor:
        """``(K, M)`` positions of each long token's tokens: ``(k*S + j) mod N``, ``K = N / S``.

        Raises:
            InvalidArgumentError: ``n`` is not a multiple of the stride, or smaller than ``M``.
        """
        if n % self.stride or n < self.window:
            raise InvalidArgumentError(
                f"token perturbation needs N = {n} tokens to be a multiple of S = {self.stride} "
                f"and at least M = {self.window}; use an input size whose patch grid has "
                f"{self.stride} columns"
            )
        starts = torch.arange(0, n, self.stride).unsqueeze(1)
        return (starts + torch.arange(self.window).unsqueeze(0)) % n

    def forward(self, tokens: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Perturb ``(B, N, D)`` tokens with per-sample permutations ``(B, N)`` -> ``(B, N, D)``."""
        b, n, d = tokens.shape
        permuted = permute_tokens(tokens, perm)
        idx = self.windows(n).to(tokens.device)
        long_tokens = permuted[:, idx].reshape(b, n // self.stride, self.window * d)
        return self.fuse(long_tokens).reshape(b, n, d)  # split: each long token -> S tokens


def token_mse(original: torch.Tensor, perturbed: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Per-sample ``MSE(Perm^-1(z_t) - z_o)``: ``(B,)``."""
    return (inverse_permute(perturbed, perm) - original).float().pow(2).mean(dim=(1, 2))


def difficulty_label(
    original: torch.Tensor,
    view_a: torch.Tensor,
    perm_a: torch.Tensor,
    view_b: torch.Tensor,
    perm_b: torch.Tensor,
) -> torch.Tensor:
    """``y_self`` of equation 5: 1 where view a is further from ``z_o`` than view b, else 0.

    Args:
        original: ``(B, N, D)`` tokens ``z_o``.
        view_a: ``(B, N, D)`` perturbed tokens the online branch sees, made with ``perm_a``.
        perm_a: ``(B, N)``.
        view_b: ``(B, N, D)`` perturbed tokens the target branch sees, made with ``perm_b``.
        perm_b: ``(B, N)``.

    Returns:
        ``(B,)`` float32 labels (equal distances, which the paper leaves undefined, give 0).
    """
    with torch.no_grad():
        far = token_mse(original, view_a, perm_a) > token_mse(original, view_b, perm_b)
    return far.float()


class DifficultyHead(nn.Module):
    """``p = FC(Cat(y_theta, y_xi))`` (equation 6), returned as a logit ``(B,)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * dim, 1)

    def forward(self, y_online: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([y_online, y_target], dim=1)).squeeze(1)


# -- a timm ViT, entered at its patch tokens ---------------------------------------------------


def _check_vit(vit: nn.Module) -> None:
    needed = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm")
    missing = [a for a in needed if not hasattr(vit, a)]
    if missing:
        raise InvalidArgumentError(
            f"BOLT perturbs a ViT's patch tokens and needs a timm VisionTransformer; "
            f"{type(vit).__name__} has no {', '.join(missing)}. Choose a timm ViT for --arch"
        )


def patch_tokens(vit: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``z_o`` (equation 2): ``(B, N, D)`` patch embeddings and the patch grid ``(rows, cols)``."""
    x = vit.patch_embed(images)
    if x.ndim == 4:  # dynamic_img_size ViTs keep the grid: (B, rows, cols, D)
        grid = (int(x.shape[1]), int(x.shape[2]))
        return x.flatten(1, 2), grid
    rows, cols = vit.patch_embed.grid_size
    return x, (int(rows), int(cols))


def encode_tokens(vit: nn.Module, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The ViT's representation ``y`` of ``(B, N, D)`` tokens: positions, blocks, norm, pool."""
    x = tokens
    if getattr(vit, "dynamic_img_size", False):
        x = x.reshape(x.shape[0], grid[0], grid[1], x.shape[-1])
    x = vit._pos_embed(x)
    x = vit.norm_pre(vit.patch_drop(x))
    x = vit.norm(vit.blocks(x))
    return vit.forward_head(x, pre_logits=True)


# -- the trainer -------------------------------------------------------------------------------


class BOLTTrainer:
    """Online/target ViTs trained on token-perturbed views (BOLT section 2), one batch at a time.

    Args:
        vit: A headless timm VisionTransformer (``num_classes=0``), the online ``f_theta``.
        steps_per_epoch: Batches per epoch.
        epochs: Total epochs.
        batch_size: Images per batch (scales the learning rate).
        seed: Seed of the token permutations (one generator per step, from ``(seed, step)``).
        lr: Base learning rate per 256 images.
        weight_decay: AdamW weight decay.
        tau: Base EMA decay, raised to 1 on a cosine.
        window: ``M`` (default ``S``).
        alpha: Weight of the difficulty loss (equation 7).
        difficulty: False drops ``L_diff`` (the paper's "w/o L_diff" ablation).
        proj_hidden: Hidden size of projector and predictor.
        proj_dim: Output size of projector and predictor.
        device: Where to train.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast.
    """

    def __init__(
        self,
        vit: nn.Module,
        *,
        steps_per_epoch: int,
        epochs: int,
        batch_size: int,
        seed: int,
        lr: float = BASE_LR,
        weight_decay: float = WEIGHT_DECAY,
        tau: float = TAU,
        window: int | None = None,
        alpha: float = ALPHA,
        difficulty: bool = True,
        proj_hidden: int = 4096,
        proj_dim: int = 256,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        _check_vit(vit)
        if not 0.0 <= tau <= 1.0:
            raise InvalidArgumentError(f"tau is an EMA decay in [0, 1]; got {tau}")
        dim = int(vit.num_features)
        with torch.no_grad():
            _, (_, cols) = patch_tokens(vit, torch.zeros(1, 3, *_input_hw(vit)))
        self.device, self.precision, self.seed = device, precision, int(seed)
        self.vit = vit.to(device)
        guard_single_pixel_convs(self.vit)  # a CPU bf16 kernel bug (featlab.train.conv_guard)
        self.projector = BYOLProjectionHead(dim, proj_hidden, proj_dim).to(device)
        self.predictor = BYOLPredictionHead(proj_dim, proj_hidden, proj_dim).to(device)
        self.perturb = TokenPerturbation(dim, stride=cols, window=window).to(device)
        self.difficulty_head = DifficultyHead(dim).to(device)
        self.target_vit = copy.deepcopy(self.vit)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_vit)
        deactivate_requires_grad(self.target_projector)
        self.alpha, self.use_difficulty = alpha, difficulty
        self.total_steps = steps_per_epoch * epochs
        self.peak_lr = lr * batch_size / 256  # linear scaling rule
        self.tau = tau
        self.settings = {
            "base_lr": lr,
            "peak_lr": self.peak_lr,
            "weight_decay": weight_decay,
            "tau": tau,
            "window": self.perturb.window,
            "stride": self.perturb.stride,
            "alpha": alpha,
            "difficulty": difficulty,
            "proj_hidden": proj_hidden,
            "proj_dim": proj_dim,
        }
        online = [self.vit, self.projector, self.predictor, self.perturb, self.difficulty_head]
        params = [p for m in online for p in m.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=self.peak_lr, weight_decay=weight_decay)
        self.scaler = grad_scaler(device, precision)
        self.similarity = NegativeCosineSimilarity()

    def _lr(self, step: int) -> float:
        warmup = round(WARMUP_FRACTION * self.total_steps)
        return cosine_warmup_schedule(
            step, max(self.total_steps, 1), self.peak_lr, 0.0, warmup, 0.0
        )

    def _byol(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        # ||p/|p| - z/|z|||^2 = 2 - 2 cos (equation 4), mean over the batch.
        return 2 + 2 * self.similarity(p.float(), z.float())

    def losses(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``L_BOLT``, ``L_diff`` and their sum for a batch ``(B, 3, H, W)``."""
        x = images.to(self.device, non_blocking=True)
        tokens, grid = patch_tokens(self.vit, x)
        b, n, _ = tokens.shape
        perm_a = random_permutations(b, n, generator, tokens.device)
        perm_b = random_permutations(b, n, generator, tokens.device)
        view_a, view_b = self.perturb(tokens, perm_a), self.perturb(tokens, perm_b)
        y_a, y_b = encode_tokens(self.vit, torch.cat([view_a, view_b]), grid).chunk(2)
        p_a, p_b = self.predictor(self.projector(y_a)), self.predictor(self.projector(y_b))
        with torch.no_grad():
            yt = encode_tokens(self.target_vit, torch.cat([view_a, view_b]).detach(), grid)
            yt_a, yt_b = yt.chunk(2)
            zt_a, zt_b = self.target_projector(yt_a), self.target_projector(yt_b)
        label = difficulty_label(tokens.detach(), view_a.detach(), perm_a, view_b, perm_b)
        logits_ab = self.difficulty_head(y_a, yt_b)
        logits_ba = self.difficulty_head(y_b, yt_a)
        with float32(self.device):
            l_bolt = self._byol(p_a, zt_b) + self._byol(p_b, zt_a)  # L_theta + its symmetric
            l_diff = 0.5 * (
                F.binary_cross_entropy_with_logits(logits_ab.float(), label)
                + F.binary_cross_entropy_with_logits(logits_ba.float(), 1.0 - label)
            )
            total = l_bolt + self.alpha * l_diff if self.use_difficulty else l_bolt
        return {"loss": total, "loss_bolt": l_bolt, "loss_diff": l_diff}

    def train_step(self, images: torch.Tensor, *, epoch: int, step: int) -> dict[str, float]:
        """One step: both losses, AdamW update, then the EMA update of the target (eq. 1)."""
        for m in (self.vit, self.projector, self.predictor, self.target_projector):
            m.train()  # BYOL's target projector normalises with batch statistics too
        self.target_vit.eval()  # no stochastic depth or dropout in the regression target
        lr = self._lr(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(item_seed(self.seed, step, PERM_STREAM))
        with autocast(self.device, self.precision):
            out = self.losses(images, generator)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        tau = cosine_schedule(step, max(self.total_steps, 1), self.tau, 1.0)
        ema_update(self.vit, self.target_vit, tau)
        ema_update(self.projector, self.target_projector, tau)
        return {**{k: float(v.detach()) for k, v in out.items()}, "lr": lr, "tau": tau}

    def end_epoch(self, epoch: int, batches: Iterable[Any]) -> None:
        """Nothing to do at an epoch's end (the trainer protocol's hook)."""

    def backbones(self) -> dict[str, nn.Module]:
        """The online ViT ``f_theta``, what BYOL-style methods keep."""
        return {"backbone": self.vit}

    def describe(self) -> dict[str, Any]:
        return {**self.settings, "saved_weights": "online ViT f_theta"}

    def state_dict(self) -> dict[str, Any]:
        return {
            name: getattr(self, name).state_dict()
            for name in (*_BOLT_MODULES, "optimizer", "scaler")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in (*_BOLT_MODULES, "optimizer", "scaler"):
            getattr(self, name).load_state_dict(state[name])


_BOLT_MODULES = (
    "vit",
    "projector",
    "predictor",
    "perturb",
    "difficulty_head",
    "target_vit",
    "target_projector",
)


def ema_update(online: nn.Module, target: nn.Module, tau: float) -> None:
    """``xi <- tau * xi + (1 - tau) * theta`` for every parameter (BOLT equation 1)."""
    update_momentum(online, target, m=tau)


def _input_hw(vit: nn.Module) -> tuple[int, int]:
    size = vit.patch_embed.img_size
    return (int(size[0]), int(size[1])) if size is not None else (224, 224)
