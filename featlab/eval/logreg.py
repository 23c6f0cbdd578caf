"""L2 logistic regression on frozen embeddings, C chosen on validation data (DESIGN section 6 (b)).

:class:`LogisticProbe` fits scikit-learn's model (same meaning of ``C``:
``C * sum(log-loss) + 0.5 * ||w||^2``, intercept not penalised; binary logistic for two classes,
multinomial for more, one independent masked binary problem per label for multi-label ``y``),
for every ``C`` of a grid, and keeps the one whose validation score is best.

Why not call scikit-learn's ``LogisticRegression``: on PCam-sized stores (262,144 x 384) its
L-BFGS needs hundreds of iterations per ``C`` on the correlated features backbones produce, each a
full pass over the data. Here the same objective is minimised by L-BFGS in coordinates whitened
by the feature covariance (the objective's exact Hessian at ``w = 0``, from an eigendecomposition
computed once per fit), which takes a handful of iterations per ``C``; the ``C`` path is
warm-started from the most regularised end. All passes over the data are float32 BLAS calls on
the caller's array (no float64 copy of ``X``); parameters and reductions are float64. The solution
is scikit-learn's to within ``tol`` (tested against ``LogisticRegression``).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from featlab.errors import InvalidArgumentError
from featlab.eval._probe_common import (
    FitData,
    LinearProbeBase,
    Scoring,
    check_fraction,
    check_seed,
    prepare_fit,
    proba_from_logits,
)

# One value per decade. In scikit-learn's convention the penalty relative to the *mean* loss is
# 1 / (C n): with standardised features, C = 1e-4 is close to the all-zero model for low-shot
# subsets (n = 50..500) and still strong at n = 5,000, while C = 100 is practically
# unregularised above a few thousand samples. The decades cover both ends of the DVME paper's
# S/M/F sizes at 7 warm-started fits; the lower 7 decades of LogisticRegressionCV's default
# logspace(-4, 4) grid, whose top end only matters for unstandardised features.
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)

_PRECOND_ROWS = 16384  # rows of the strided sample whose covariance preconditions L-BFGS
_LBFGS_HISTORY = 10  # scipy's and scikit-learn's default
_MAX_LINE_SEARCH = 25
# L-BFGS gives up after this many iterations in which neither the gradient max-norm dropped by
# 10 % nor the objective by a relative 1e-8: a float32 objective has a rounding floor (gradient
# ~1e-6 for unit-scale features, objective ~1e-9 relative), below which iterations chase noise.
_STALL_ITERS = 20
_STALL_REL_DECREASE = 1e-8
# Below this many multiply-adds per pass over the data (~10 ms of BLAS), the fit runs with one
# BLAS thread. OpenBLAS threads busy-wait; on a 2-core machine shared with other jobs, waking a
# second thread for a small GEMV costs more than the GEMV (measured at 4,500 x 384: 0.11 s per
# 7-C fit with one thread, 0.45-1.1 s with two while another process used one core; on an idle
# machine two threads gained ~15 %). Larger problems keep the caller's thread setting.
_SINGLE_THREAD_WORK = 1 << 23


class _Objective:
    """Mean log-loss + L2 of one linear model, on float32 features.

    ``mode`` is ``"binary"`` (one sigmoid column, ``codes`` 0/1), ``"multinomial"`` (softmax over
    ``K`` columns, ``codes`` in ``0..K-1``) or ``"multilabel"`` (one sigmoid per column, ``codes``
    ``(n, L)`` in ``{-1, 0, 1}``). Each column's loss is averaged over its known samples, so the
    per-column penalty ``0.5 / (C n_j) ||w_j||^2`` gives scikit-learn's minimiser for ``C``.
    """

    def __init__(self, x: np.ndarray, codes: np.ndarray, mode: str, n_classes: int) -> None:
        self.x, self.mode = x, mode
        n = len(x)
        if mode == "multilabel":
            self.mask = (codes >= 0).astype(np.float32)
            self.y = (codes == 1).astype(np.float32)
            counts = self.mask.sum(axis=0, dtype=np.float64)
            self.k = codes.shape[1]
        else:
            self.mask = None
            self.codes = codes
            self.y = (codes == 1).astype(np.float32)[:, None] if mode == "binary" else None
            self.k = 1 if mode == "binary" else n_classes
            counts = np.full(self.k, float(n))
        self.counts = counts
        self.inv_n = (1.0 / counts).astype(np.float32)
        # Curvature of the loss at z = 0: sigmoid'(0) = 1/4; a K-way softmax has eigenvalues 1/K.
        self.curvature = 0.25 if mode != "multinomial" else 1.0 / n_classes

    def initial_intercept(self) -> np.ndarray:
        """The exact intercept optimum at ``w = 0``: the log-odds of the (known) labels."""
        if self.mode == "multinomial":
            freq = np.bincount(self.codes, minlength=self.k) / len(self.codes)
            b = np.log(np.maximum(freq, 1e-12))
            return b - b.mean()
        pos = (
            self.y.sum(axis=0, dtype=np.float64)
            if self.mask is None
            else ((self.y * self.mask).sum(axis=0, dtype=np.float64))
        )
        p = np.clip(pos / self.counts, 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    def __call__(
        self, w: np.ndarray, b: np.ndarray, lam: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(f, grad_w (d, k), grad_b (k,))`` at ``w (d, k)``, ``b (k,)`` (float64)."""
        z = self.x @ w.astype(np.float32)
        z += b.astype(np.float32)
        if self.mode == "multinomial":
            rows = np.arange(len(z))
            z -= z.max(axis=1, keepdims=True)  # log-sum-exp shift: exp() cannot overflow
            z_true = z[rows, self.codes].astype(np.float64)
            np.exp(z, out=z)
            s = z.sum(axis=1, dtype=np.float64)
            loss = np.sum(np.log(s) - z_true) / self.counts[0]
            z /= s.astype(np.float32)[:, None]
            z[rows, self.codes] -= 1.0
            r = z
        else:
            ll = np.logaddexp(np.float32(0), z)
            ll -= self.y * z
            r = expit(z)
            r -= self.y
            if self.mask is not None:
                ll *= self.mask
                r *= self.mask
            loss = float(ll.sum(axis=0, dtype=np.float64) @ self.inv_n)
        r *= self.inv_n
        gw = (self.x.T @ r).astype(np.float64)
        gb = r.sum(axis=0, dtype=np.float64)
        gw += lam * w
        f = float(loss) + 0.5 * float(np.sum(lam * w * w))
        return f, gw, gb


class _Preconditioner:
    """Whitening ``v = sqrt(c Lambda + lam) Q^T w`` (``Q Lambda Q^T`` = feature covariance).

    In ``(w, b' = b + mu . w)`` coordinates the objective's Hessian at ``w = 0`` is block diagonal:
    ``c * Cov + diag(lam)`` for ``w`` and ``c`` for ``b'``. Scaling by its square root makes
    L-BFGS start from a near-identity Hessian, whatever the feature correlations; the minimiser
    is unchanged (it is only a change of variables). The covariance comes from a strided sample
    of at most ``_PRECOND_ROWS`` rows: its accuracy only affects speed.
    """

    def __init__(self, x: np.ndarray, curvature: float, rows: np.ndarray | None = None) -> None:
        if rows is not None:  # multi-label: rows without any known label add no curvature
            x = x[rows]
        step = max(1, len(x) // _PRECOND_ROWS)
        sample = x[::step]
        self.mu = x.mean(axis=0, dtype=np.float64)
        centred = sample - self.mu.astype(np.float32)
        cov = (centred.T @ centred).astype(np.float64) / len(sample)
        evals, self.q = np.linalg.eigh(cov)
        self.evals = np.maximum(evals, 0.0)
        self.c = curvature

    def set_penalty(self, lam: np.ndarray) -> None:
        self.sw = np.sqrt(self.c * self.evals[:, None] + lam[None, :])  # (d, k)
        self.sb = np.sqrt(self.c)

    def to_v(self, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        vw = (self.q.T @ w) * self.sw
        vb = (b + self.mu @ w) * self.sb
        return np.concatenate([vw.ravel(), vb])

    def from_v(self, v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        d = len(self.mu)
        w = self.q @ (v[: d * k].reshape(d, k) / self.sw)
        b = v[d * k :] / self.sb - self.mu @ w
        return w, b

    def grad_to_v(self, gw: np.ndarray, gb: np.ndarray) -> np.ndarray:
        gvw = (self.q.T @ (gw - self.mu[:, None] * gb[None, :])) / self.sw
        return np.concatenate([gvw.ravel(), gb / self.sb])


def _lbfgs(
    fg: Callable[[np.ndarray], tuple[float, np.ndarray, float]],
    x0: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, int, str, float]:
    """Minimise a smooth convex function; stop when its reported gradient max-norm <= ``tol``.

    ``fg(x)`` returns ``(f, grad, gmax)`` where ``gmax`` is the stopping measure. The line search
    accepts the Armijo condition or, since ``f`` carries float32 rounding noise near the optimum,
    Hager and Zhang's approximate Wolfe conditions (which rely on the far more accurate slope).

    Returns:
        ``(x, iterations, status, gmax)``; ``status`` is ``"converged"``, ``"max_iter"``,
        ``"stalled"`` (no progress for ``_STALL_ITERS`` iterations) or ``"line search"`` (no
        acceptable step).
    """
    x = x0
    f, g, gmax = fg(x)
    s_hist: deque[np.ndarray] = deque(maxlen=_LBFGS_HISTORY)
    y_hist: deque[np.ndarray] = deque(maxlen=_LBFGS_HISTORY)
    it = 0
    best_gmax, best_f, since_best = gmax, f, 0
    while gmax > tol:
        if it >= max_iter:
            return x, it, "max_iter", gmax
        if since_best >= _STALL_ITERS:
            return x, it, "stalled", gmax
        # Two-loop recursion (Nocedal & Wright, Algorithm 7.4).
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = (s @ q) / (s @ y)
            q -= a * y
            alphas.append(a)
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        for (s, y), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += (a - (y @ q) / (s @ y)) * s
        d = -q
        slope = g @ d
        if slope >= 0:  # lost descent (rounding): restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            d, slope = -g, -(g @ g)
        t = 1.0  # in whitened coordinates the unit step is nearly a Newton step
        for _ in range(_MAX_LINE_SEARCH):
            x_new = x + t * d
            f_new, g_new, gmax_new = fg(x_new)
            slope_new = g_new @ d
            if not (np.isfinite(f_new) and np.isfinite(slope_new)):  # overflow: step far too long
                t *= 0.1
                continue
            armijo = f_new <= f + 1e-4 * t * slope
            approx_wolfe = f_new <= f + 1e-9 * abs(f) and 0.9 * slope <= slope_new <= -0.8 * slope
            if armijo or approx_wolfe:
                break
            # Minimiser of the cubic through (0, f, slope) and (t, f_new, slope_new) (N&W 3.59),
            # kept inside [0.1 t, 0.9 t].
            d1 = slope + slope_new - 3 * (f - f_new) / (0 - t)
            disc = d1 * d1 - slope * slope_new
            if disc >= 0 and slope_new - slope + 2 * np.sqrt(disc) != 0:
                d2 = np.sqrt(disc)
                t_new = t - t * (slope_new + d2 - d1) / (slope_new - slope + 2 * d2)
            else:
                t_new = 0.5 * t
            t = float(np.clip(t_new, 0.1 * t, 0.9 * t))
        else:
            return x, it, "line search", gmax
        s_vec, y_vec = x_new - x, g_new - g
        if s_vec @ y_vec > 1e-10 * np.sqrt((s_vec @ s_vec) * (y_vec @ y_vec)):
            s_hist.append(s_vec)
            y_hist.append(y_vec)
        x, f, g, gmax = x_new, f_new, g_new, gmax_new
        it += 1
        if gmax < 0.9 * best_gmax or f < best_f - _STALL_REL_DECREASE * abs(best_f):
            best_gmax, best_f, since_best = min(gmax, best_gmax), min(f, best_f), 0
        else:
            since_best += 1
    return x, it, "converged", gmax


def logistic_path(
    x: np.ndarray,
    codes: np.ndarray,
    Cs: Sequence[float],
    *,
    mode: str,
    n_classes: int,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> Iterator[tuple[float, np.ndarray, np.ndarray, int, str, float]]:
    """Fit L2 logistic regression for each ``C`` in increasing order, warm-started.

    Args:
        x: ``(n, d)`` float32 training features.
        codes: ``(n,)`` int class indices, or ``(n, L)`` int8 in ``{-1, 0, 1}`` (multi-label).
        Cs: Inverse regularisation strengths (scikit-learn's meaning), any order.
        mode: ``"binary"``, ``"multinomial"`` or ``"multilabel"``.
        n_classes: Number of classes (single-label).
        tol: Stop when every partial derivative of the mean-scaled objective
            ``mean(log-loss) + ||w||^2 / (2 C n)`` is at most ``tol`` in magnitude
            (scikit-learn's lbfgs ``gtol``).
        max_iter: L-BFGS iterations per ``C``.

    Yields:
        ``(C, coef (k, d) float64, intercept (k,) float64, iterations, status, gmax)`` per
        ``C``, smallest ``C`` first; ``k`` is 1 (binary), the number of classes or of labels;
        ``status`` as :func:`_lbfgs` returns it, ``gmax`` the final gradient max-norm.
    """
    obj = _Objective(x, codes, mode, n_classes)
    rows = None
    if mode == "multilabel":
        known_any = (codes >= 0).any(axis=1)
        rows = None if known_any.all() else np.flatnonzero(known_any)
    pre = _Preconditioner(x, obj.curvature, rows)
    d, k = x.shape[1], obj.k
    w, b = np.zeros((d, k)), obj.initial_intercept()
    for C in sorted(float(c) for c in Cs):
        lam = 1.0 / (C * obj.counts)
        pre.set_penalty(lam)

        def fg(v: np.ndarray, lam: np.ndarray = lam) -> tuple[float, np.ndarray, float]:
            w_, b_ = pre.from_v(v, k)
            f, gw, gb = obj(w_, b_, lam)
            gmax = max(float(np.abs(gw).max()), float(np.abs(gb).max()))
            return f, pre.grad_to_v(gw, gb), gmax

        v, n_iter, status, gmax = _lbfgs(fg, pre.to_v(w, b), tol, max_iter)
        w, b = pre.from_v(v, k)
        yield C, w.T.copy(), b.copy(), n_iter, status, gmax


def _check_cs(Cs: Any) -> list[float]:
    try:
        values = [float(c) for c in np.ravel(np.asarray(Cs, dtype=object))]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"Cs must be a sequence of positive numbers; got {Cs!r}"
        ) from exc
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise InvalidArgumentError(f"Cs must be a non-empty sequence of finite C > 0; got {Cs!r}")
    if len(set(values)) != len(values):
        raise InvalidArgumentError(f"Cs holds duplicates: {values}")
    return values


class LogisticProbe(LinearProbeBase):
    """L2 logistic regression with ``C`` chosen on validation data.

    Model selection uses only the validation data: ``eval_set`` when given to ``fit``, else a
    seeded holdout of ``validation_fraction`` of the training data (stratified by class for
    single-label ``y``, a plain shuffle for multi-label), which is then not trained on. The model
    of the best ``C`` is kept as fitted on the training part; there is no refit on train + val.
    Multi-label ``y`` shares one ``C`` across labels, chosen by the score over all labels.

    Args:
        Cs: Grid of inverse regularisation strengths, scikit-learn's meaning
            (``C * sum(log-loss) + 0.5 ||w||^2``); see ``DEFAULT_CS``.
        standardize: Standardise features with the training part's mean and std (``mean_``,
            ``scale_``); ``coef_`` then applies to standardised features.
        max_iter: L-BFGS iterations per ``C`` (a ``ConvergenceWarning`` says when reached).
        tol: Gradient tolerance of scikit-learn's lbfgs (max |gradient| of the mean-scaled
            objective).
        scoring: ``scoring(y_val, proba) -> float``, higher is better (``y_val`` as given,
            ``proba`` as ``predict_proba`` returns it); None = minus the mean log-loss
            (masked binary cross-entropy for multi-label).
        validation_fraction: Share of the training data held out when no ``eval_set`` is given.
        seed: Seed of that holdout (the solver itself is deterministic).

    Attributes:
        classes_: ``(C,)`` class labels, or ``arange(L)`` for multi-label.
        coef_: ``(1, d)`` binary, ``(C, d)`` multiclass, ``(L, d)`` multi-label; float32.
        intercept_: ``(k,)`` float32.
        C_: The selected ``C``.
        val_scores_: ``{C: validation score}`` for every ``C`` of the grid.
        n_iter_: L-BFGS iterations over the whole ``C`` path.
        mean_, scale_: ``(d,)`` float32 standardisation, or None when ``standardize=False``.
        multilabel_: Whether ``y`` was multi-label.
        n_features_in_: ``d``.
    """

    def __init__(
        self,
        Cs: Sequence[float] = DEFAULT_CS,
        *,
        standardize: bool = True,
        max_iter: int = 1000,
        tol: float = 1e-4,
        scoring: Scoring | None = None,
        validation_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.Cs = Cs
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.scoring = scoring
        self.validation_fraction = validation_fraction
        self.seed = seed

    def fit(self, X: Any, y: Any, *, eval_set: tuple[Any, Any] | None = None) -> LogisticProbe:
        """Fit one model per ``C`` on the training data and keep the best on validation data.

        Args:
            X: ``(n, d)`` float32 embeddings (other float dtypes are converted).
            y: ``(n,)`` class labels, or ``(n, L)`` multi-label in ``{1, 0, -1 = unknown}``.
            eval_set: ``(X_val, y_val)`` used only for choosing ``C``; None = hold out
                ``validation_fraction`` of ``X``.

        Returns:
            self.

        Raises:
            InvalidArgumentError: For malformed inputs or parameters, a single-class training
                set, or a non-finite validation score.
        """
        from threadpoolctl import threadpool_limits

        Cs = _check_cs(self.Cs)
        if (
            isinstance(self.max_iter, bool)
            or not isinstance(self.max_iter, int | np.integer)
            or (self.max_iter < 1)
        ):
            raise InvalidArgumentError(f"max_iter must be an int >= 1; got {self.max_iter!r}")
        if not (isinstance(self.tol, int | float) and self.tol > 0):
            raise InvalidArgumentError(f"tol must be a number > 0; got {self.tol!r}")
        data: FitData = prepare_fit(
            self,
            X,
            y,
            eval_set,
            standardize_features=bool(self.standardize),
            validation_fraction=check_fraction(self.validation_fraction),
            seed=check_seed(self.seed),
            scoring=self.scoring,
        )
        n_classes = len(data.targets.classes)
        if data.targets.multilabel:
            mode = "multilabel"
        else:
            mode = "binary" if n_classes == 2 else "multinomial"
        k = 1 if mode == "binary" else n_classes
        small = data.x_train.size * k < _SINGLE_THREAD_WORK
        with threadpool_limits(limits=1 if small else None, user_api="blas"):
            scores, best, total_iter = self._fit_path(data, Cs, mode, n_classes)
        self._set_fitted(data, best[2], best[3])
        self.C_ = best[0]
        self.val_scores_ = scores
        self.n_iter_ = total_iter
        return self

    def _fit_path(
        self, data: FitData, Cs: list[float], mode: str, n_classes: int
    ) -> tuple[dict[float, float], tuple[float, float, np.ndarray, np.ndarray], int]:
        """Fit every C, score it on the validation data; return scores, best, iterations."""
        from sklearn.exceptions import ConvergenceWarning

        multilabel = data.targets.multilabel
        scores: dict[float, float] = {}
        best: tuple[float, float, np.ndarray, np.ndarray] | None = None
        total_iter = 0
        for C, coef, intercept, n_iter, status, gmax in logistic_path(
            data.x_train,
            data.codes_train,
            Cs,
            mode=mode,
            n_classes=n_classes,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
        ):
            total_iter += n_iter
            if status != "converged":
                advice = (
                    f"within max_iter={self.max_iter} iterations; raise max_iter"
                    if status == "max_iter"
                    else "as the float32 gradient stopped improving; tol is likely below what "
                    "float32 features allow: raise tol"
                )
                warnings.warn(
                    f"LogisticProbe: L-BFGS stopped at max |gradient| {gmax:.2e} > "
                    f"tol={self.tol} for C={C:g} ({status}) {advice}",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            logits = data.x_val @ coef.T.astype(np.float32) + intercept.astype(np.float32)
            score = data.score(proba_from_logits(logits, multilabel=multilabel))
            scores[C] = score
            # Strictly better only: on ties the smaller C (stronger regularisation) stays.
            if best is None or score > best[1]:
                best = (C, score, coef, intercept)
        assert best is not None  # Cs is non-empty (checked in fit)
        return scores, best, total_iter
