"""DVME: attention fusion of several frozen embeddings (``papers/ssl-transferability-dvme.txt``).

Section 5.6 and Figure 1: each model's embedding is projected to 512, the projections are
concatenated and fed to a self-attention module "the same as in the Vision Transformer ...
except that the attention is learned across different components of the meta-embedding";
Appendix C/E: then LayerNorm, a projection to 512 with ReLU, dropout 0.2 and a linear classifier,
trained on frozen embeddings like the linear probe (Appendix B.1).

Tokens. The text and Figure 1 describe one token per model (``token_dim = proj_dim``): a timm
ViT ``Block`` (pre-norm attention + MLP, 8 heads of 64 — the paper does not give the head
count) attends across the M model tokens, and the M x M attention is what Appendix F reads.
The appendix listing instead reshapes the concatenation to ``(batch, M * 512, 1)``: 1-d tokens,
one per feature; ``token_dim=1`` reproduces it with timm's ``Attention(dim=1, num_heads=1)``
as the listing's ``attn`` (a ``Block`` would be degenerate there: its LayerNorm over a single
feature outputs a constant). Its attention is reported per model pair as the mean attention a
feature of model i pays to all features of model j (rows still sum to 1).

``attention=False`` is Appendix C's ablation as featlab reads it: the same network with the
attention module removed (the concatenated projections go straight to the LayerNorm, projection
and classifier), so the comparison isolates attention. Section 6.2's wording ("the
meta-embedding is directly connected to the linear classifier") could also mean without the
LayerNorm and projection.

Size: with a token per model the ViT block adds ~3.1 M parameters (6.8 M for three models of
2048/2048/1536-d); the listing's 1-d tokens give 3.7 M, the count of Appendix G (Table G1),
which suggests the authors ran the listing. ``token_dim=1`` is the closer reproduction of their
numbers; the default follows the paper's text and Figure 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from featlab.errors import InvalidArgumentError
from featlab.eval._probe_common import (
    PREDICT_BLOCK,
    Scoring,
    check_features,
    check_float,
    check_fraction,
    check_int,
    check_seed,
    prepare_fit,
    standardize,
)
from featlab.eval._torch_protocol import predict_proba_blocks, schedule_of, train_with_protocol

PROJ_DIM = 512  # Section 5.6: "project each embedding into a fixed size of 512"
DROPOUT = 0.2  # Appendix C / listing
HEADS = 8


def _dvme_net(dims: Sequence[int], n_out: int, *, proj_dim: int, attention: bool,
              token_dim: int, heads: int, dropout: float):
    import torch
    from timm.models.vision_transformer import Attention, Block

    class DVMENet(torch.nn.Module):
        """``x (B, sum(dims))`` -> logits ``(B, n_out)``; ``embed`` gives the fused vector."""

        def __init__(self) -> None:
            super().__init__()
            self.dims = list(dims)
            self.token_dim = token_dim
            self.heads = torch.nn.ModuleList(torch.nn.Linear(d, proj_dim) for d in dims)
            width = proj_dim * len(dims)
            if not attention:
                self.attn = None
            elif token_dim == 1:
                self.attn = Attention(1, num_heads=1, qkv_bias=True)
            else:
                self.attn = Block(proj_dim, num_heads=heads, qkv_bias=True)
            self.norm = torch.nn.LayerNorm(width)
            self.proj = torch.nn.Linear(width, proj_dim)
            self.dropout = torch.nn.Dropout(dropout)
            self.classifier = torch.nn.Linear(proj_dim, n_out)

        def tokens(self, x: torch.Tensor) -> torch.Tensor:
            parts = torch.split(x, self.dims, dim=1)
            meta = torch.cat([h(p) for h, p in zip(self.heads, parts, strict=True)], dim=1)
            return meta.view(len(x), -1, self.token_dim)

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            t = self.tokens(x)
            if self.attn is not None:
                t = self.attn(t)
            return self.proj(self.norm(t.reshape(len(x), -1))).relu()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.dropout(self.embed(x)))

        def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
            """``(B, N, N)`` attention over tokens, averaged over heads."""
            attn = self.attn if self.token_dim == 1 else self.attn.attn
            t = self.tokens(x)
            if self.token_dim != 1:
                t = self.attn.norm1(t)
            b, n, _ = t.shape
            qkv = attn.qkv(t).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
            return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)

    return DVMENet()


class DVMEClassifier(ClassifierMixin, BaseEstimator):
    """DVME trained on concatenated frozen embeddings with the linear-probe protocol.

    ``X`` is the column-wise concatenation of the M models' embeddings, ``dims`` their widths.

    Args:
        dims: Width of each model's block of columns, in order (at least 2 models).
        proj_dim: Projection width per model and of the fused vector (512 in the paper).
        attention: False = Appendix C's ablation (no self-attention).
        token_dim: ``None`` = ``proj_dim`` (one token per model); 1 = the listing's 1-d tokens.
        heads: Attention heads of the ViT block (``token_dim = proj_dim``).
        dropout: Before the classifier (0.2).
        lr, batch_size, min_epochs, max_epochs, patience, plateau_patience, plateau_factor,
        weight_decay: The schedule (defaults = the linear probe's, Appendix B.1).
        standardize: Standardise features with the training part's mean/std (featlab's probe
            default; the paper does not).
        scoring, validation_fraction, device, seed: As the linear probe's
            (:class:`featlab.eval.linear_probe.LinearProbe`); ``seed`` also seeds the initial
            weights and dropout.

    Attributes:
        net_: The trained torch module (best validation epoch), in eval mode, on ``device``.
        classes_, multilabel_, mean_, scale_, n_features_in_, best_epoch_, best_score_,
        n_epochs_, history_: As the linear probe's.
    """

    def __init__(
        self,
        dims: Sequence[int] = (),
        *,
        proj_dim: int = PROJ_DIM,
        attention: bool = True,
        token_dim: int | None = None,
        heads: int = HEADS,
        dropout: float = DROPOUT,
        lr: float = 1e-3,
        batch_size: int = 64,
        min_epochs: int = 30,
        max_epochs: int = 50,
        patience: int = 10,
        plateau_patience: int = 5,
        plateau_factor: float = 0.1,
        weight_decay: float = 0.0,
        standardize: bool = True,
        scoring: Scoring | None = None,
        validation_fraction: float = 0.1,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self.dims = dims
        self.proj_dim = proj_dim
        self.attention = attention
        self.token_dim = token_dim
        self.heads = heads
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.patience = patience
        self.plateau_patience = plateau_patience
        self.plateau_factor = plateau_factor
        self.weight_decay = weight_decay
        self.standardize = standardize
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.device = device
        self.seed = seed

    def _check_params(self, n_features: int) -> tuple[list[int], int]:
        check_int("proj_dim", self.proj_dim, 1)
        check_int("heads", self.heads, 1)
        check_float("dropout", self.dropout, 0.0, 1.0)
        dims = [int(d) for d in self.dims]
        if len(dims) < 2 or min(dims) < 1:
            raise InvalidArgumentError(
                f"DVME fuses at least 2 models: dims must list each model's width; got {dims}"
            )
        if sum(dims) != n_features:
            raise InvalidArgumentError(
                f"dims {dims} add up to {sum(dims)} but X has {n_features} columns; X must be "
                "the models' embeddings side by side"
            )
        token_dim = self.proj_dim if self.token_dim is None else int(self.token_dim)
        if token_dim not in (1, self.proj_dim):
            raise InvalidArgumentError(
                f"token_dim must be None/{self.proj_dim} (a token per model) or 1 (the "
                f"appendix listing); got {self.token_dim!r}"
            )
        if token_dim != 1 and self.proj_dim % self.heads:
            raise InvalidArgumentError(f"proj_dim {self.proj_dim} is not divisible by heads "
                                       f"{self.heads}")
        return dims, token_dim

    def fit(self, X: Any, y: Any, *, eval_set: tuple[Any, Any] | None = None) -> DVMEClassifier:
        """Train with the linear-probe schedule, keeping the best validation epoch.

        Args:
            X: ``(n, sum(dims))`` concatenated embeddings.
            y: ``(n,)`` class labels, or ``(n, L)`` multi-label in ``{1, 0, -1 = unknown}``.
            eval_set: ``(X_val, y_val)`` for choosing the epoch; None = a seeded holdout.

        Raises:
            InvalidArgumentError: Malformed inputs or parameters (see ``LinearProbe.fit``).
        """
        import torch

        from featlab.eval.linear_probe import _resolve_device

        device = _resolve_device(self.device)
        schedule = schedule_of(self)  # checks the schedule parameters
        data = prepare_fit(
            self, X, y, eval_set, standardize_features=bool(self.standardize),
            validation_fraction=check_fraction(self.validation_fraction),
            seed=check_seed(self.seed), scoring=self.scoring,
        )
        dims, token_dim = self._check_params(data.x_train.shape[1])
        targets = data.targets
        n_out = len(targets.classes)
        gen = torch.Generator().manual_seed(int(self.seed))
        with torch.random.fork_rng(devices=[]):  # seeded init, the caller's RNG untouched
            torch.manual_seed(int(self.seed))
            net = _dvme_net(dims, n_out, proj_dim=self.proj_dim, attention=self.attention,
                            token_dim=token_dim, heads=self.heads, dropout=self.dropout)
        net = net.to(device)
        fit = train_with_protocol(net, data, schedule, device=device, generator=gen)
        self.net_ = net
        self.classes_ = targets.classes
        self.multilabel_ = targets.multilabel
        self._y_dtype = targets.dtype
        self.mean_, self.scale_ = data.mean, data.scale
        self.best_epoch_, self.best_score_ = fit.best_epoch, fit.best_score
        self.n_epochs_, self.history_ = len(fit.history), fit.history
        return self


    def _blocks(self, X: Any):
        import torch

        check_is_fitted(self, "net_")
        X = check_features(self, X, reset=False)
        device = next(self.net_.parameters()).device
        for lo in range(0, len(X), PREDICT_BLOCK):
            block = standardize(X[lo : lo + PREDICT_BLOCK], self.mean_, self.scale_, inplace=False)
            yield torch.from_numpy(np.ascontiguousarray(block)).to(device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, C)`` class probabilities (rows sum to 1) or ``(n, L)`` multi-label, float64."""
        parts = [predict_proba_blocks(self.net_, b, self.multilabel_) for b in self._blocks(X)]
        return np.concatenate(parts) if parts else np.empty((0, len(self.classes_)))

    def predict(self, X: Any) -> np.ndarray:
        """Argmax class (single-label) or per-label ``proba >= 0.5`` (multi-label)."""
        p = self.predict_proba(X)
        if self.multilabel_:
            return (p >= 0.5).astype(self._y_dtype)
        return self.classes_[p.argmax(axis=1)]

    def transform(self, X: Any) -> np.ndarray:
        """The fused representation ``(n, proj_dim)`` float32 (after the ReLU, before dropout)."""
        import torch

        with torch.inference_mode():
            parts = [self.net_.embed(b).float().cpu().numpy() for b in self._blocks(X)]
        return np.concatenate(parts) if parts else np.empty((0, self.proj_dim), np.float32)

    def mean_attention(
        self, X: Any, *, max_rows: int = 4096, seed: int = 0
    ) -> tuple[np.ndarray, int] | None:
        """``((M, M), rows)``: attention between models averaged over the samples of ``X``.

        Row i: how much model i's token(s) attend to each model (rows sum to 1; Appendix F
        averages over the test set). At most ``max_rows`` samples, a seeded random subset when
        ``X`` has more (1-d tokens: at most 512, each costs an (M*512)^2 matrix); the number
        used is returned with it. None without attention.
        """
        import torch

        check_is_fitted(self, "net_")
        if self.net_.attn is None:
            return None
        m = len(self.net_.dims)
        X = np.asarray(X)
        literal = self.net_.token_dim == 1
        limit = min(max_rows, 512) if literal else max_rows
        if len(X) > limit:
            X = X[np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))]
        total, count = np.zeros((m, m)), 0
        per_block = 8 if literal else PREDICT_BLOCK
        with torch.inference_mode():
            for b in self._blocks(X):
                for lo in range(0, len(b), per_block):
                    w = self.net_.attention_weights(b[lo : lo + per_block])
                    # Token -> model: sum over the attended model's tokens, mean over the
                    # attending model's tokens (a token per model: the matrix itself).
                    w = w.reshape(len(w), m, -1, m, w.shape[-1] // m).sum(-1).mean(2)
                    total += w.double().sum(0).cpu().numpy()
                    count += len(w)
        return total / max(count, 1), count
