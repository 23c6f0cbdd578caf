"""t-SNE of stored embeddings: an array core and a store-aware, cached wrapper.

Backends: openTSNE (Poličar et al. 2024; FFT-accelerated interpolation for large n,
multi-threaded) when it is importable, scikit-learn's Barnes-Hut ``TSNE`` otherwise. The
backend that ran is recorded in every result, and a fallback from the requested one carries a
note that the CLI prints: a different library is never chosen silently.

Settings shared by both backends, so that their coordinates are comparable:
- inputs are L2-normalised and compared with the euclidean distance. For unit vectors
  ``|a - b|^2 = 2 - 2 cos(a, b)``, so neighbours are ranked exactly as by the cosine similarity
  the kNN protocol uses (DESIGN section 6), while both libraries stay on their fast euclidean
  neighbour search (Annoy / exact BallTree);
- PCA initialisation, seeded (openTSNE's default; ``init="pca"`` in scikit-learn), which keeps
  the global layout stable across runs (Kobak & Berens 2019);
- 250 early-exaggeration iterations (exaggeration 12), then ``n_iter`` more (500 by default:
  openTSNE's defaults; scikit-learn's ``max_iter`` is set to ``250 + n_iter``, where its own
  default would run 1000 in all). Learning rates are each library's "auto" rule (n / 12 in the
  exaggeration phase, as Belkina et al. 2019 recommend).
- openTSNE's gradient method is its own "auto" choice: Barnes-Hut below 10,000 points, FFT
  interpolation from 10,000 up; FFT's fixed grid cost makes it ~25x slower than Barnes-Hut at a
  few hundred points (measured: 200 points, 750 iterations, 21 s vs 0.9 s).

Determinism: the same seed gives bit-identical coordinates with either backend, whatever the
number of threads (openTSNE's neighbour search is kept on one thread for that, see
``_run_opentsne``; checked with 1 and 2 threads at 300 x 32, 2,500 x 32 (Annoy neighbours) and
10,000 x 384 (FFT gradient) by ``benchmarks/tsne.py``; the tests check it at small n).
scikit-learn's PCA of a small input is exact, so there the seed may change nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from featlab._vectors import l2_normalize
from featlab.errors import InvalidArgumentError

if TYPE_CHECKING:
    from featlab.store._store import DatasetGroup

Backend = Literal["auto", "opentsne", "sklearn"]
BACKENDS = ("auto", "opentsne", "sklearn")
EARLY_EXAGGERATION_ITER = 250  # both libraries' default; scikit-learn's is fixed at 250
DEFAULT_N_ITER = 500  # after early exaggeration (openTSNE's default)
DEFAULT_MAX_POINTS = 10_000
NO_FINDING = "no finding"  # multi-label rows without a positive label


@dataclass(frozen=True)
class TSNEResult:
    """Two-dimensional t-SNE coordinates and how they were made.

    Attributes:
        coords: ``(m, 2)`` float32, row ``i`` is input row ``i`` (or dataset row ``rows[i]``).
        backend: ``"opentsne"`` or ``"sklearn"``: the library that ran.
        seed: Seed of the PCA initialisation, neighbour search and subsample.
        perplexity: As used.
        n_iter: Iterations after the 250 of early exaggeration.
        seconds: Wall time of the computation (of the original run when ``cached``).
        fallback: Why ``backend`` is not the one requested (``backend="auto"`` without
            openTSNE), else ``None``.
        rows: ``(m,)`` int64 dataset rows embedded (store wrapper only).
        labels: ``(m,)`` int labels, or ``(m, L)`` multi-label, of ``rows`` (store wrapper only).
        cached: The coordinates were read from the store, not computed.
        saved: The coordinates were written to the store by this call.
    """

    coords: np.ndarray
    backend: str
    seed: int
    perplexity: float
    n_iter: int
    seconds: float
    fallback: str | None = None
    rows: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)
    cached: bool = False
    saved: bool = False


def resolve_backend(backend: str) -> tuple[str, str | None]:
    """``(library to run, fallback note or None)`` for a requested backend.

    Raises:
        InvalidArgumentError: Unknown backend, or ``"opentsne"`` when it is not installed.
    """
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}; got {backend!r}")
    has_opentsne = _importable("openTSNE")
    if backend == "opentsne" and not has_opentsne:
        raise InvalidArgumentError(
            "backend 'opentsne' was asked for but openTSNE is not installed; "
            "pip install openTSNE, or use backend 'sklearn'"
        )
    if backend == "auto" and not has_opentsne:
        return "sklearn", (
            "openTSNE is not installed, so scikit-learn's TSNE ran instead (slower on large "
            "sets; same settings); pip install openTSNE to use it"
        )
    return ("opentsne" if backend == "auto" else backend), None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # sys.modules[name] is None: import blocked
        return False


def tsne_embed(
    x: np.ndarray,
    *,
    seed: int,
    perplexity: float = 30.0,
    backend: Backend = "auto",
    n_jobs: int | None = None,
    n_iter: int = DEFAULT_N_ITER,
) -> TSNEResult:
    """t-SNE of embeddings to two dimensions.

    Args:
        x: ``(n, d)`` embeddings, finite; L2-normalised here (a float32 copy).
        seed: Seed of everything random (PCA initialisation, approximate neighbours).
        perplexity: Effective number of neighbours; needs ``n > 3 * perplexity``.
        backend: ``"auto"`` (openTSNE if importable, else scikit-learn), ``"opentsne"`` or
            ``"sklearn"``.
        n_jobs: Threads; default all usable cores. Does not change the result.
        n_iter: Iterations after the 250 of early exaggeration.

    Returns:
        :class:`TSNEResult` with ``coords (n, 2) float32``.

    Raises:
        InvalidArgumentError: ``x`` is not 2-D or not finite, too few points for the
            perplexity, or a bad seed, backend, ``n_jobs`` or ``n_iter``.

    Examples:
        >>> res = tsne_embed(x, seed=0)                  # doctest: +SKIP
        >>> res.coords.shape, res.backend                # doctest: +SKIP
        ((2000, 2), 'opentsne')
    """
    x = _check_inputs(x, seed, perplexity, n_iter)
    library, fallback = resolve_backend(backend)
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
        raise InvalidArgumentError(f"n_jobs must be a positive int or None; got {n_jobs!r}")
    x = l2_normalize(x)  # euclidean on unit vectors ranks neighbours as cosine does
    t = time.perf_counter()
    run = _run_opentsne if library == "opentsne" else _run_sklearn
    coords = np.ascontiguousarray(run(x, seed, float(perplexity), n_jobs, n_iter), np.float32)
    seconds = time.perf_counter() - t
    return TSNEResult(coords, library, seed, float(perplexity), n_iter, seconds, fallback)


def _check_inputs(x: np.ndarray, seed: int, perplexity: float, n_iter: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] < 1:
        raise InvalidArgumentError(f"x must be a 2-D (n, d) array; got shape {x.shape}")
    _check_params(seed, perplexity, n_iter)
    n = len(x)
    if n <= 3 * perplexity:
        # Both libraries look at 3 * perplexity neighbours; openTSNE would lower the perplexity
        # with a log message and scikit-learn refuse, so refuse here, with the way out.
        top = (n - 1) // 3
        fix = f"use a perplexity of at most {top}" if top >= 1 else "embed more points"
        raise InvalidArgumentError(
            f"t-SNE with perplexity {perplexity:g} needs more than {3 * perplexity:g} points "
            f"(3 x perplexity neighbours each); got {n}. {fix[0].upper()}{fix[1:]}"
        )
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise InvalidArgumentError(f"x has non-finite values (first in row {bad}); fix the input")
    return x


def _check_params(seed: int, perplexity: float, n_iter: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative int; got {seed!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int | np.integer) or n_iter < 0:
        raise InvalidArgumentError(f"n_iter must be a non-negative int; got {n_iter!r}")
    if not isinstance(perplexity, int | float | np.number) or not perplexity > 0:
        raise InvalidArgumentError(f"perplexity must be a positive number; got {perplexity!r}")


def _run_opentsne(
    x: np.ndarray, seed: int, perplexity: float, n_jobs: int, n_iter: int
) -> np.ndarray:
    from openTSNE import TSNE
    from openTSNE.affinity import PerplexityBasedNN

    # Affinities on one thread: from 1,000 points openTSNE finds neighbours with Annoy, whose
    # forest depends on how many threads build it (each seeds its own trees), so coordinates
    # would differ between machines with different core counts (measured: 2,500 points, 1 vs 2
    # threads). The gradient descent, where the time goes, uses n_jobs threads and gives the
    # same result on any number of them.
    affinities = PerplexityBasedNN(
        x, perplexity=perplexity, metric="euclidean", n_jobs=1, random_state=seed
    )
    tsne = TSNE(
        initialization="pca",
        early_exaggeration_iter=EARLY_EXAGGERATION_ITER,
        n_iter=n_iter,
        negative_gradient_method="auto",  # BH below 10,000 points, FFT from there (see top)
        n_jobs=n_jobs,
        random_state=seed,
        verbose=False,
    )
    return np.asarray(tsne.fit(x, affinities=affinities))


def _run_sklearn(
    x: np.ndarray, seed: int, perplexity: float, n_jobs: int, n_iter: int
) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        metric="euclidean",
        learning_rate="auto",
        max_iter=EARLY_EXAGGERATION_ITER + n_iter,
        method="barnes_hut",
        random_state=seed,
        n_jobs=n_jobs,  # scikit-learn uses it for the neighbour search only
    )
    # Its Barnes-Hut gradient runs on every OpenMP thread; the limit makes n_jobs hold there too.
    with threadpool_limits(limits=n_jobs, user_api="openmp"):
        return tsne.fit_transform(x)


# -- labels and subsampling --------------------------------------------------------------------
def class_groups(labels: np.ndarray) -> np.ndarray:
    """``(n,)`` int64 colour/stratum of each sample.

    Single-label: the label itself (``-1`` unknown). Multi-label ``(n, L)``: the first
    positive label, or ``L`` (:data:`NO_FINDING`) when no label is positive (as chest X-ray
    sets such as NIH CXR14 name their all-negative images). Each sample gets one colour, so a
    sample with several findings is shown by its first.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    positive = labels == 1
    return np.where(positive.any(axis=1), positive.argmax(axis=1), labels.shape[1]).astype(np.int64)


def group_names(class_names: tuple[str, ...] | list[str], labels: np.ndarray) -> list[str]:
    """Names of the :func:`class_groups` codes ``0..``: the classes, plus :data:`NO_FINDING`
    for multi-label ``labels``. (Code ``-1`` is "unknown".)"""
    names = list(class_names)
    return [*names, NO_FINDING] if np.asarray(labels).ndim == 2 else names


def stratified_subsample(groups: np.ndarray, max_points: int | None, seed: int) -> np.ndarray:
    """Positions of at most ``max_points`` samples, each group keeping its share.

    Args:
        groups: ``(n,)`` int group of each sample (e.g. :func:`class_groups`).
        max_points: Sample size; ``None`` or ``>= n`` keeps every position.
        seed: Seed of the draw within each group.

    Returns:
        ``(m,)`` int64 positions into ``groups``, ascending. Group ``g`` of ``c_g`` samples gets
        ``floor(c_g * m / n)`` plus one for the largest remainders (Hamilton's method), so
        shares are exact to one sample and every group with ``c_g * m / n >= 1`` is present.

    Raises:
        InvalidArgumentError: ``max_points < 1``.
    """
    groups = np.asarray(groups)
    n = len(groups)
    if max_points is not None and (isinstance(max_points, bool) or max_points < 1):
        raise InvalidArgumentError(f"max_points must be a positive int or None; got {max_points!r}")
    if max_points is None or max_points >= n:
        return np.arange(n, dtype=np.int64)
    values, counts = np.unique(groups, return_counts=True)
    share = counts * max_points / n
    quota = np.floor(share).astype(np.int64)
    extra = np.argsort(-(share - quota), kind="stable")[: max_points - int(quota.sum())]
    quota[extra] += 1
    rng = np.random.default_rng(seed)
    picked = [
        rng.choice(np.flatnonzero(groups == g), size=int(q), replace=False)
        for g, q in zip(values, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)).astype(np.int64)


# -- store wrapper -----------------------------------------------------------------------------
def tsne_for_model(
    ds: DatasetGroup,
    model: str,
    *,
    split: str | None = "test",
    max_points: int | None = DEFAULT_MAX_POINTS,
    seed: int = 0,
    perplexity: float = 30.0,
    backend: Backend = "auto",
    n_iter: int = DEFAULT_N_ITER,
    n_jobs: int | None = None,
    cache: bool = True,
) -> TSNEResult:
    """t-SNE of ``model``'s embeddings of one split, cached in the store.

    A class-stratified, seeded subsample of at most ``max_points`` usable rows of ``split`` is
    embedded. The coordinates are read from ``<dataset>/tsne/`` when a record with the same
    parameters and the same embeddings fingerprint exists; otherwise they are computed and,
    if the store was opened with ``mode="a"``, saved (re-extracted embeddings change the
    fingerprint, so they are recomputed).

    Args:
        ds: The dataset.
        model: Stored model (or view) name.
        split: ``"train"``, ``"val"``, ``"test"``, ``"unlabeled"`` (or ``""``); ``None`` or
            ``"all"``: every usable row.
        max_points: Subsample size; ``None`` keeps every row.
        seed: Seed of the subsample and of the t-SNE.
        perplexity, backend, n_iter, n_jobs: As :func:`tsne_embed`.
        cache: Read and write the store's cache; ``False`` always computes and saves nothing.

    Returns:
        :class:`TSNEResult` with ``rows``, ``labels`` and ``cached`` set.

    Raises:
        UnknownModelError, IncompleteEmbeddingError: As ``ds.rows``.
        InvalidArgumentError: Unknown split, bad parameters (see :func:`tsne_embed`).

    Examples:
        >>> ds = featlab.open_store("featlab.zarr", mode="a")["pcam"]   # doctest: +SKIP
        >>> res = tsne_for_model(ds, "dino-vits8", max_points=5000)      # doctest: +SKIP
        >>> res.coords.shape, res.cached                                 # doctest: +SKIP
        ((5000, 2), False)
    """
    from featlab.store._index import embeddings_fingerprint
    from featlab.store._tsne import load_tsne, save_tsne

    _check_params(seed, perplexity, n_iter)
    split = {"all": None, "unlabeled": ""}.get(split, split) if split is not None else None
    library, fallback = resolve_backend(backend)
    rows_all = ds.rows(model, split)
    pos = stratified_subsample(class_groups(ds.labels[rows_all]), max_points, seed)
    rows = rows_all[pos]
    params = {
        "model": model,
        "split": split,
        "seed": int(seed),
        "max_points": None if max_points is None else int(max_points),
        "perplexity": float(perplexity),
        "n_iter": int(n_iter),
        "backend": library,
    }
    fingerprint = embeddings_fingerprint(ds, model, split) if cache else ""
    record = load_tsne(ds, params, fingerprint) if cache else None
    if record is not None and np.array_equal(record.rows, rows):
        return TSNEResult(
            record.coords, library, int(seed), float(perplexity), int(n_iter),
            float(record.attrs.get("seconds", 0.0)), fallback,
            rows=rows, labels=ds.labels[rows], cached=True,
        )  # fmt: skip
    res = tsne_embed(
        ds.values_at(model, rows),
        seed=seed, perplexity=perplexity, backend=library, n_jobs=n_jobs, n_iter=n_iter,
    )  # fmt: skip
    saved = False
    if cache and ds.store.mode == "a":
        extra = {"seconds": round(res.seconds, 3), "library_version": _library_version(library)}
        saved = save_tsne(ds, params, fingerprint, res.coords, rows, extra) is None
    return dataclasses.replace(
        res, fallback=fallback, rows=rows, labels=ds.labels[rows], saved=saved
    )


def _library_version(library: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openTSNE" if library == "opentsne" else "scikit-learn")
    except PackageNotFoundError:
        return "?"


__all__ = [
    "BACKENDS",
    "NO_FINDING",
    "TSNEResult",
    "class_groups",
    "group_names",
    "resolve_backend",
    "stratified_subsample",
    "tsne_embed",
    "tsne_for_model",
]
