"""k-nearest-neighbour classification of embeddings (FAISS, exact cosine).

Protocol (DESIGN section 6): L2-normalised embeddings, exact inner-product search, and DINO's
temperature-weighted vote: each of the k neighbours votes for its class with weight
exp(cos / T), T = 0.07 (Caron et al. 2021, section 4.1 / eval_knn.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from featlab.errors import InvalidArgumentError

if TYPE_CHECKING:
    from featlab.store import DatasetGroup

SEARCH_BLOCK = 4096  # queries per FAISS call: bounded memory for (block, k) results


@dataclass(frozen=True)
class KNNPrediction:
    """``scores (m, C)`` float32 class scores (rows sum to 1) and ``labels (m,)`` argmax."""

    scores: np.ndarray
    labels: np.ndarray


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as C-contiguous float32 (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.finfo(np.float32).tiny)


def knn_search(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN with FAISS: ``(sims, indices)``, each ``(m, k)``, best first.

    Raises:
        ValueError: If the dimensions differ or ``k`` is not in ``1..len(base)``.
    """
    import faiss

    if queries.shape[1] != base.shape[1]:
        raise InvalidArgumentError(
            f"queries have {queries.shape[1]} features, base {base.shape[1]}"
        )
    if not 1 <= k <= len(base):
        raise InvalidArgumentError(f"k must be in 1..{len(base)} (the base size); got {k}")
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(l2_normalize(base))
    q = l2_normalize(queries)
    sims = np.empty((len(q), k), dtype=np.float32)
    idx = np.empty((len(q), k), dtype=np.int64)
    for lo in range(0, len(q), SEARCH_BLOCK):
        sims[lo : lo + SEARCH_BLOCK], idx[lo : lo + SEARCH_BLOCK] = index.search(
            q[lo : lo + SEARCH_BLOCK], k
        )
    return sims, idx


def knn_classify(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
) -> KNNPrediction:
    """Classify ``test_x`` by a temperature-weighted vote of its k nearest training samples.

    Args:
        train_x: ``(n, d)`` embeddings.
        train_y: ``(n,)`` int labels in ``0..C-1``.
        test_x: ``(m, d)`` embeddings.
        k: Neighbours per query.
        temperature: Vote weight is ``exp(cos / temperature)``.
        n_classes: ``C``; default ``train_y.max() + 1``.

    Returns:
        :class:`KNNPrediction` with normalised class scores and predicted labels.
    """
    if temperature <= 0:
        raise InvalidArgumentError(f"temperature must be > 0; got {temperature}")
    train_y = np.asarray(train_y, dtype=np.int64)
    c = int(n_classes if n_classes is not None else train_y.max() + 1)
    sims, idx = knn_search(test_x, train_x, k)
    # Subtracting the row max before exp is exact after normalisation and cannot overflow.
    w = np.exp((sims - sims[:, :1]) / temperature)
    scores = np.zeros((len(sims), c), dtype=np.float64)
    np.add.at(scores, (np.arange(len(sims))[:, None], train_y[idx]), w)
    scores /= scores.sum(axis=1, keepdims=True)
    return KNNPrediction(scores.astype(np.float32), scores.argmax(axis=1))


@dataclass(frozen=True)
class KNNResult:
    """Accuracy of k-NN from ``train_split`` to ``test_split`` for one dataset and model."""

    dataset: str
    model: str
    k: int
    temperature: float
    train_split: str
    test_split: str
    n_train: int
    n_test: int
    accuracy: float
    balanced_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_knn(
    ds: DatasetGroup,
    model: str,
    *,
    k: int = 20,
    temperature: float = 0.07,
    train_split: str = "train",
    test_split: str = "test",
) -> KNNResult:
    """k-NN accuracy of ``model``'s stored embeddings (single-label datasets).

    Raises:
        ValueError: For multi-label datasets (the k-NN evaluation for them comes with the
            evaluation suite) or a missing split.
    """
    from sklearn.metrics import balanced_accuracy_score

    if ds.task == "multilabel":
        raise InvalidArgumentError(
            f"{ds.name!r} is multi-label; this k-NN evaluation is single-label"
        )
    x_tr, y_tr = ds.xy(model, train_split)
    x_te, y_te = ds.xy(model, test_split)
    keep_tr, keep_te = y_tr >= 0, y_te >= 0  # unknown labels neither vote nor count
    pred = knn_classify(
        x_tr[keep_tr],
        y_tr[keep_tr],
        x_te[keep_te],
        k=k,
        temperature=temperature,
        n_classes=len(ds.classes),
    )
    y = y_te[keep_te]
    return KNNResult(
        dataset=ds.name,
        model=model,
        k=k,
        temperature=temperature,
        train_split=train_split,
        test_split=test_split,
        n_train=int(keep_tr.sum()),
        n_test=int(keep_te.sum()),
        accuracy=float((pred.labels == y).mean()),
        balanced_accuracy=float(balanced_accuracy_score(y, pred.labels)),
    )
