"""Linear probe trained with the DVME paper's protocol (DESIGN section 6 (a)).

``papers/ssl-transferability-dvme.txt``, Appendix B.1: "minimum and maximum number of epochs 30
and 50; early stopping with the patience of 10 epochs; initial learning rate 0.001 reduced with a
factor of 0.1 by the ReduceLROnPlateau scheduler when the validation score does not improve for 5
epochs; batch size 64". One ``nn.Linear`` on frozen embeddings, Adam, cross-entropy (single-label)
or binary cross-entropy per label with unknown entries masked out (multi-label).

Speed on CPU: the features stay one tensor on the device and batches are gathered by index (no
DataLoader); validation runs in large blocks under ``torch.inference_mode``. The cross-entropy is
written with elementwise ops: ``F.cross_entropy``'s log-softmax kernels open an OpenMP parallel
region even for a 64 x K batch, and on a busy 2-core machine each such region waits for a
scheduler tick (measured 3.4 ms per step, against 0.9 ms with elementwise ops).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featlab.errors import InvalidArgumentError
from featlab.eval._probe_common import (
    FitData,
    LinearProbeBase,
    Scoring,
    check_fraction,
    check_seed,
    prepare_fit,
)
from featlab.eval._torch_protocol import Schedule, schedule_of, train_with_protocol


def _resolve_device(name: Any) -> Any:
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgumentError(
            f"device must be a torch device such as 'cpu' or 'cuda:0'; got {name!r}"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"device={name!r} but CUDA is not available; use device='cpu'")
    return device


class LinearProbe(LinearProbeBase):
    """A linear layer trained on embeddings with the DVME protocol (defaults = the paper).

    Each epoch: one pass over the shuffled training data in batches of ``batch_size`` (Adam),
    then the validation score; ``ReduceLROnPlateau`` (mode max, torch's semantics: the rate drops
    by ``plateau_factor`` at the end of the ``plateau_patience + 1``-th epoch without
    improvement) follows it; the weights of the best-scoring epoch are kept and restored at the
    end. Training stops after ``patience`` epochs without improvement, but never before
    ``min_epochs``, and at ``max_epochs`` at the latest. "Improvement" means a strictly higher
    score, for early stopping and the scheduler alike (torch's default relative threshold of
    1e-4 misbehaves for negative scores such as the default minus log-loss).

    Validation data are only used to choose the epoch: ``eval_set`` when given to ``fit``, else
    a seeded holdout of ``validation_fraction`` of the training data (stratified by class for
    single-label ``y``), which is then not trained on. There is no refit on train + val.

    Args:
        lr: Adam's initial learning rate.
        batch_size: Samples per step (the last batch of an epoch may be smaller).
        min_epochs: Epochs always trained.
        max_epochs: Epochs at most.
        patience: Epochs without improvement before stopping.
        plateau_patience: ReduceLROnPlateau's patience.
        plateau_factor: ReduceLROnPlateau's factor.
        weight_decay: Adam's L2 weight decay (the paper uses none).
        standardize: Standardise features with the training part's mean and std (``mean_``,
            ``scale_``); the paper does not.
        scoring: ``scoring(y_val, proba) -> float``, higher is better (``y_val`` as given,
            ``proba`` as ``predict_proba`` returns it); None = minus the mean log-loss (masked
            binary cross-entropy for multi-label).
        validation_fraction: Share of the training data held out when no ``eval_set`` is given.
        device: Torch device to train on (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        seed: Seeds the holdout, the initial weights and the batch order (a private
            ``torch.Generator``; the global RNGs are not touched). Fits are repeatable on CPU.

    Attributes:
        classes_: ``(C,)`` class labels, or ``arange(L)`` for multi-label.
        coef_: ``(C, d)`` (one row per class, binary included, as in the paper's
            ``nn.Linear(d, num_classes)``) or ``(L, d)``; float32, the best epoch's.
        intercept_: ``(C,)`` or ``(L,)`` float32.
        best_epoch_: 1-based epoch whose weights were kept.
        best_score_: Its validation score.
        n_epochs_: Epochs trained.
        history_: One dict per epoch: ``epoch``, ``train_loss`` (mean over the epoch's known
            targets), ``val_score``, ``lr`` (the rate used during that epoch).
        mean_, scale_: ``(d,)`` float32 standardisation, or None when ``standardize=False``.
        multilabel_: Whether ``y`` was multi-label.
        n_features_in_: ``d``.
    """

    def __init__(
        self,
        *,
        lr: float = 1e-3,
        batch_size: int = 64,
        min_epochs: int = 30,
        max_epochs: int = 50,
        patience: int = 10,
        plateau_patience: int = 5,
        plateau_factor: float = 0.1,
        weight_decay: float = 0.0,
        standardize: bool = False,
        scoring: Scoring | None = None,
        validation_fraction: float = 0.1,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
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

    def fit(self, X: Any, y: Any, *, eval_set: tuple[Any, Any] | None = None) -> LinearProbe:
        """Train with the DVME schedule and keep the best validation epoch.

        Args:
            X: ``(n, d)`` float32 embeddings (other float dtypes are converted).
            y: ``(n,)`` class labels, or ``(n, L)`` multi-label in ``{1, 0, -1 = unknown}``.
            eval_set: ``(X_val, y_val)`` used only for choosing the epoch (and the schedule);
                None = hold out ``validation_fraction`` of ``X``.

        Returns:
            self.

        Raises:
            InvalidArgumentError: For malformed inputs or parameters, a single-class training
                set, an unavailable device, or a non-finite validation score.
        """
        schedule = schedule_of(self)  # checks the schedule parameters
        device = _resolve_device(self.device)
        data = prepare_fit(
            self,
            X,
            y,
            eval_set,
            standardize_features=bool(self.standardize),
            validation_fraction=check_fraction(self.validation_fraction),
            seed=check_seed(self.seed),
            scoring=self.scoring,
        )
        coef, intercept = self._train(data, device, schedule)
        self._set_fitted(data, coef, intercept)
        return self

    def _train(
        self, data: FitData, device: Any, schedule: Schedule
    ) -> tuple[np.ndarray, np.ndarray]:
        import torch

        d = data.x_train.shape[1]
        k = len(data.targets.classes)
        gen = torch.Generator().manual_seed(int(self.seed))
        # skip_init builds the layer without drawing from the global RNG; then nn.Linear's own
        # default init, U(-1/sqrt(d), 1/sqrt(d)) for weight and bias, from our generator.
        model = torch.nn.utils.skip_init(torch.nn.Linear, d, k, device=device)
        bound = 1.0 / np.sqrt(d)
        with torch.no_grad():
            model.weight.copy_(torch.rand(k, d, generator=gen) * (2 * bound) - bound)
            model.bias.copy_(torch.rand(k, generator=gen) * (2 * bound) - bound)
        fit = train_with_protocol(model, data, schedule, device=device, generator=gen)
        self.best_epoch_ = fit.best_epoch
        self.best_score_ = fit.best_score
        self.n_epochs_ = len(fit.history)
        self.history_ = fit.history
        return model.weight.detach().cpu().numpy(), model.bias.detach().cpu().numpy()

