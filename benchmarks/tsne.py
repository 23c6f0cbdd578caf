"""t-SNE of 10,000 x 384 points: openTSNE against scikit-learn's TSNE, time ratio and quality.

Data: 10,000 synthetic 384-d embeddings (a ViT-S CLS width), seeded: 10 classes whose centres
sit ``SEPARATION`` noise-std apart, each class made of 4 sub-clusters, plus unit Gaussian noise,
so the map has structure at two scales and is not trivially separable.

Both backends run through ``featlab.eval.tsne.tsne_embed`` with the same settings: L2-normalised
input, euclidean affinities at perplexity 30, seeded PCA initialisation, 250 early-exaggeration
iterations then 500 more (750 in all; openTSNE's default, where scikit-learn's ``max_iter``
default would run 1000), 2 threads each. openTSNE uses FFT-interpolated gradients at this size
(Barnes-Hut below 10,000 points), scikit-learn Barnes-Hut (angle 0.5). Each map is timed once
(t-SNE runs are long; the first call of each library imports it before the clock starts).

Quality, so the speed comparison is fair (both computed the same way for both maps):
- kNN preservation: mean share of each point's 10 nearest neighbours in the input (cosine)
  that are also among its 10 nearest in the map;
- class kNN accuracy in the map: leave-one-out majority vote of the 10 nearest map points.

Determinism: openTSNE is run a second time on 1 thread; the coordinates must be identical.

Targets on 2 cores: openTSNE >= 1.3x faster than scikit-learn, its kNN preservation at most
0.05 below scikit-learn's, identical coordinates on 1 and 2 threads. Exits 1 if one is missed.
(Measured here: 1.5x, 41 s vs 62 s. Of openTSNE's time ~8 s is its Annoy neighbour search,
kept on one thread so coordinates do not depend on the core count; numpy's FFT is used, as
pyFFTW is not installed.)

Usage: python benchmarks/tsne.py [--n 10000] [--dim 384]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table

N_CLASSES, SUBCLUSTERS = 10, 4
SEPARATION = 0.35  # class centres' spread per dimension, in noise std (classes overlap a little)
K = 10
TARGETS = {"speedup": 1.3, "preservation_gap": 0.05}


def clustered(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x (n, dim) float32, y (n,) int)``: classes of sub-clusters plus noise, seeded."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLASSES, dim)) * SEPARATION
    subs = centres[:, None, :] + rng.standard_normal((N_CLASSES, SUBCLUSTERS, dim)) * 0.25
    y = rng.integers(0, N_CLASSES, n)
    s = rng.integers(0, SUBCLUSTERS, n)
    return (subs[y, s] + rng.standard_normal((n, dim)) * 1.0).astype(np.float32), y


def neighbours(x: np.ndarray, k: int, *, cosine: bool) -> np.ndarray:
    """``(n, k)`` exact nearest neighbours of each row, itself left out."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine" if cosine else "euclidean")
    idx = nn.fit(x).kneighbors(x, return_distance=False)
    return idx[:, 1:]


def quality(coords: np.ndarray, high_nn: np.ndarray, y: np.ndarray) -> dict[str, float]:
    low_nn = neighbours(coords, K, cosine=False)
    kept = np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(high_nn, low_nn, strict=True)])
    votes = np.array([np.bincount(y[row], minlength=N_CLASSES).argmax() for row in low_nn])
    return {"knn_preservation": float(kept), "knn_accuracy_2d": float((votes == y).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()

    import openTSNE  # noqa: F401  (imported before the clock starts)
    import sklearn.manifold  # noqa: F401

    from featlab.eval.tsne import tsne_embed

    x, y = clustered(args.n, args.dim)
    high_nn = neighbours(x, K, cosine=True)
    rows, results = [], {}
    for backend in ("opentsne", "sklearn"):
        res = tsne_embed(x, seed=0, backend=backend, n_jobs=2)
        results[backend] = res
        rows.append(
            {
                "backend": backend,
                "points": f"{args.n:,} x {args.dim}",
                "iterations": 250 + res.n_iter,
                "seconds": f"{res.seconds:.1f}",
                **{k: f"{v:.3f}" for k, v in quality(res.coords, high_nn, y).items()},
            }
        )
    speedup = results["sklearn"].seconds / results["opentsne"].seconds
    one_thread = tsne_embed(x, seed=0, backend="opentsne", n_jobs=1)
    identical = bool(np.array_equal(one_thread.coords, results["opentsne"].coords))
    rows[0]["vs sklearn"] = f"{speedup:.1f}x faster"
    rows[0]["same on 1 thread"] = "yes" if identical else "NO"
    print_table(rows, list(rows[0]))
    print(f"\nopenTSNE on 1 thread: {one_thread.seconds:.1f} s")
    gap = float(rows[1]["knn_preservation"]) - float(rows[0]["knn_preservation"])
    missed = []
    if speedup < TARGETS["speedup"]:
        missed.append(f"speedup {speedup:.1f}x < {TARGETS['speedup']}x")
    if gap > TARGETS["preservation_gap"]:
        missed.append(f"kNN preservation {gap:.3f} below scikit-learn's")
    if not identical:
        missed.append("openTSNE coordinates differ between 1 and 2 threads")
    for m in missed:
        print(f"TARGET MISSED: {m}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
