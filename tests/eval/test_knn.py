"""k-NN parity: the exact search vs brute force, the weighted vote vs a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from featlab.errors import InvalidArgumentError
from featlab.eval._amx import amx_bf16_available
from featlab.eval.knn import (
    array_blocks,
    build_ivf_index,
    ivf_search,
    knn_classify,
    knn_scores_for_ks,
    knn_search,
    knn_vote,
    l2_normalize,
    recall_at_k,
)

# Every screen this CPU can run; the results must be the same bits for all of them.
KERNELS = ["fp32"] + (["amx-bf16"] if amx_bf16_available() else [])


def test_search_matches_brute_force_cosine():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(50, 16)).astype(np.float32)
    sims, idx = knn_search(queries, base, k=10)
    b = base / np.linalg.norm(base, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    full = q @ b.T
    ref_idx = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_allclose(sims, np.take_along_axis(full, ref_idx, 1), atol=1e-5)
    # Indices may differ only where similarities tie (none expected with continuous data).
    assert (idx == ref_idx).mean() > 0.99


def test_weighted_vote_matches_hand_computation():
    # Train points on the unit circle at angles 0, 10, 20 deg (class 0) and 90, 100 deg (class 1).
    ang = np.deg2rad([0, 10, 20, 90, 100])
    train = np.c_[np.cos(ang), np.sin(ang)].astype(np.float32)
    y = np.array([0, 0, 0, 1, 1])
    q = np.array([[np.cos(np.deg2rad(60)), np.sin(np.deg2rad(60))]], np.float32)
    pred = knn_classify(train, y, q, k=3, temperature=0.1)
    # Nearest 3 of 60 deg: 90 (cos 30), 100 (cos 40), 20 (cos 40) -> ties broken either way at 40.
    c30, c40 = np.cos(np.deg2rad(30)), np.cos(np.deg2rad(40))
    w1 = np.exp(c30 / 0.1) + np.exp(c40 / 0.1)
    w0 = np.exp(c40 / 0.1)
    np.testing.assert_allclose(pred.scores[0], [w0 / (w0 + w1), w1 / (w0 + w1)], rtol=1e-5)
    assert pred.labels.tolist() == [1]


def test_temperature_changes_majority_into_weighted_vote():
    train = np.array([[1, 0], [1, 0.02], [0, 1], [0.05, 1]], np.float32)  # 2 and 2
    y = np.array([0, 0, 1, 1])
    # cos(q, .) = 0.743, 0.757 (class 0) and 0.669, 0.705 (class 1): class 0 is nearer.
    q = np.array([[1, 0.9]], np.float32)
    hot = knn_classify(train, y, q, k=4, temperature=100.0).scores[0]
    np.testing.assert_allclose(hot, [0.5, 0.5], atol=1e-3)  # T large: plain majority (2 vs 2)
    cold = knn_classify(train, y, q, k=4, temperature=0.01)
    assert cold.labels[0] == 0  # T small: the closest neighbour (class 0) dominates


def test_bad_arguments():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(InvalidArgumentError, match=r"k must be in 1\.\.3"):
        knn_search(x, x, k=4)
    with pytest.raises(InvalidArgumentError, match="features"):
        knn_search(np.ones((2, 5), np.float32), x, k=1)
    with pytest.raises(InvalidArgumentError, match="temperature"):
        knn_classify(x, np.zeros(3), x, k=1, temperature=0)


def test_l2_normalize_keeps_zero_rows_finite():
    out = l2_normalize(np.array([[3, 4], [0, 0]], np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0, 0]])


def test_l2_normalize_gives_unit_rows_at_extreme_magnitudes():
    # float32 squares underflow below ~1e-19 and overflow above ~1e19: such rows are normalised
    # in float64. The search's error bounds assume unit rows (to ~2^-23).
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, 300))  # one direction at six magnitudes
    scales = [1.0, 1e-30, 2.0**-140, 1e-19, 1e25, 1e36]  # 2^-140: denormal float32 entries
    rows = (x * np.array(scales)[:, None]).astype(np.float32)
    out = l2_normalize(rows)
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=2**-21)
    same = np.broadcast_to(out[0], out.shape)
    np.testing.assert_allclose(out[[1, 3, 4, 5]], same[[1, 3, 4, 5]], atol=1e-7)
    np.testing.assert_allclose(out[2], same[2], atol=1e-3)  # denormal entries: ~9 bits each
    with np.errstate(invalid="ignore"):
        bad = l2_normalize(np.array([[np.nan, 1.0], [np.inf, 1.0], [0.0, 0.0]], np.float32))
    assert not np.isfinite(bad[:2]).all(axis=1).any()
    assert bad[2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kernel", KERNELS)
def test_search_with_tiny_rows_and_an_empty_first_block(kernel):
    # Rows of ~1e-27 (float32 squares underflow) in near-ties, streamed after an empty block;
    # their entries are whole bf16 values, so the bf16 screen's own error is nil and only a
    # badly normalised row (a float32 norm of 0) breaks its bound.
    rng = np.random.default_rng(1)
    center = rng.normal(size=64)
    near = (center + 0.002 * rng.normal(size=(4000, 64))).astype(np.float32)
    base = (near.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) * np.float32(2**-90)
    queries = rng.normal(size=(100, 64)).astype(np.float32)
    ref = _lowest_id_first_top_k(queries, base, 100)
    _, idx = knn_search(queries, iter([base[:0], base]), k=100, n_base=len(base), kernel=kernel)
    np.testing.assert_array_equal(idx, ref)


def test_majority_limit_matches_sklearn_cosine_knn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 8)) * 2
    y = rng.integers(0, 4, 400)
    x = (centers[y] + rng.normal(size=(400, 8))).astype(np.float32)
    ref = KNeighborsClassifier(n_neighbors=15, metric="cosine").fit(x[:300], y[:300])
    # With a huge temperature every neighbour weighs the same: a plain majority vote.
    ours = knn_classify(x[:300], y[:300], x[300:], k=15, temperature=1e6)
    np.testing.assert_allclose(ours.scores, ref.predict_proba(x[300:]), atol=1e-4)


def test_majority_vote_matches_sklearn_uniform_knn():
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 500)
    x = (rng.normal(size=(3, 12))[y] * 1.5 + rng.normal(size=(500, 12))).astype(np.float32)
    ref = KNeighborsClassifier(n_neighbors=20, metric="cosine").fit(x[:400], y[:400])
    ours = knn_classify(x[:400], y[:400], x[400:], k=20, vote="majority")
    np.testing.assert_allclose(ours.scores, ref.predict_proba(x[400:]), atol=1e-6)


def test_blocked_search_equals_one_block():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(1000, 24)).astype(np.float32)
    q = rng.normal(size=(70, 24)).astype(np.float32)
    whole = knn_search(q, base, k=30)
    blocked = knn_search(q, array_blocks(base, 77), k=30, n_base=len(base))
    np.testing.assert_allclose(blocked[0], whole[0], atol=1e-6)
    np.testing.assert_array_equal(blocked[1], whole[1])


def test_blocked_search_checks_k_after_the_last_block():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match=r"k must be in 1\.\.4"):
        knn_search(x, array_blocks(x, 2), k=5)


def test_scores_for_several_ks_equal_separate_runs():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 300)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    both = knn_scores_for_ks(x[:250], y[:250], x[250:], (5, 20), n_classes=4)
    for k in (5, 20):
        ref = knn_classify(x[:250], y[:250], x[250:], k=k, n_classes=4).scores
        np.testing.assert_allclose(both[k], ref, atol=1e-6)
    capped = knn_scores_for_ks(x[:10], y[:10], x[250:], (200,), n_classes=4)[200]
    np.testing.assert_allclose(capped, knn_classify(x[:10], y[:10], x[250:], k=10,
                                                    n_classes=4).scores, atol=1e-6)


def test_multilabel_vote_averages_known_neighbour_labels():
    sims = np.array([[0.9, 0.8, 0.7]], np.float32)
    idx = np.array([[0, 1, 2]])
    train_y = np.array([[1, 0], [0, -1], [1, -1], [0, 1]], np.int8)
    got = knn_vote(sims, idx, train_y, k=3, vote="majority")
    # Label 0: known for all three -> (1 + 0 + 1) / 3; label 1: only neighbour 0 is known -> 0.
    np.testing.assert_allclose(got, [[2 / 3, 0.0]], atol=1e-6)
    w = np.exp((sims[0] - 0.9) / 0.07)
    got_w = knn_vote(sims, idx, train_y, k=3)
    np.testing.assert_allclose(got_w[0, 0], (w[0] + w[2]) / w.sum(), rtol=1e-5)
    # No neighbour knows label 1: the training prevalence of label 1 (1 of 2 known).
    none_known = knn_vote(sims[:, 1:], idx[:, 1:], train_y, k=2, vote="majority")
    np.testing.assert_allclose(none_known[0, 1], 0.5)


def test_ivf_with_every_list_probed_is_exact():
    rng = np.random.default_rng(5)
    base = rng.normal(size=(2000, 16)).astype(np.float32)
    q = rng.normal(size=(40, 16)).astype(np.float32)
    index = build_ivf_index(base, nlist=8, seed=0)
    _, approx = ivf_search(index, q, 10, nprobe=8)
    _, exact = knn_search(q, base, 10)
    assert recall_at_k(exact, approx) > 0.99
    _, rough = ivf_search(index, q, 10, nprobe=1)
    assert recall_at_k(exact, rough) < 1.0


def test_recall_at_k_by_hand():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 9], [5, 6, 7, 8]])
    assert recall_at_k(exact, approx) == pytest.approx((2 / 4 + 1) / 2)


def test_ties_break_by_lowest_id_so_a_small_k_is_a_prefix_of_a_large_k():
    # 300 distinct vectors ~10 times each in random order: ties span the k-th position, and
    # better rows keep arriving after tied ones were kept (so tied entries get cut).
    rng = np.random.default_rng(5)
    base = rng.normal(size=(300, 8)).astype(np.float32)[rng.integers(0, 300, 3000)]
    queries = rng.normal(size=(40, 8)).astype(np.float32)
    small_s, small_i = knn_search(queries, base, k=20)
    large_s, large_i = knn_search(queries, array_blocks(base, 700), k=200, n_base=len(base))
    np.testing.assert_array_equal(small_i, large_i[:, :20])
    np.testing.assert_array_equal(small_s, large_s[:, :20])
    # Reference: a stable sort of the brute-force similarities (descending, lowest id first).
    np.testing.assert_array_equal(small_i, _lowest_id_first_top_k(queries, base, 20))


def _exact_similarities(queries: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The similarities the search reports: float32 unit rows, dot products summed in float64
    (here by numpy's float64 GEMM, an independent summation), rounded to float32 once."""
    q, b = (l2_normalize(x).astype(np.float64) for x in (queries, base))
    return (q @ b.T).astype(np.float32)


def _lowest_id_first_top_k(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    full = _exact_similarities(queries, base)
    ids = np.broadcast_to(np.arange(len(base)), full.shape)
    return np.lexsort((ids, -full), axis=1)[:, :k]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_search_is_independent_of_threads_and_tiles(threads, kernel, monkeypatch):
    # Tiles of 64 rows x 64 queries (fp32) or 32 rows (AMX): many tiles per block, several
    # query steps per thread (200 queries: 4 groups of 64, the last padded), and buffers cut
    # back to k many times (k = 5: 64 spare slots, 4,000 rows).
    from featlab.eval import _screens

    monkeypatch.setattr(_screens, "TILE_ROWS", 64)
    monkeypatch.setattr(_screens, "MIN_TILE_BYTES", 64 * 4 * 64)
    monkeypatch.setattr(_screens, "AMX_TILE_BYTES", 1)
    rng = np.random.default_rng(11)
    base = rng.normal(size=(500, 6)).astype(np.float32)[rng.integers(0, 500, 4000)]
    queries = rng.normal(size=(200, 6)).astype(np.float32)
    ref = _lowest_id_first_top_k(queries, base, 5)
    _, idx = knn_search(queries, base, k=5, threads=threads, kernel=kernel)
    np.testing.assert_array_equal(idx, ref)
    # Blocks of unknown total size hold 64-bit ids; the result is the same.
    _, streamed = knn_search(
        queries, array_blocks(base.copy(), 333), k=5, threads=threads, kernel=kernel
    )
    np.testing.assert_array_equal(streamed, ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_first_block_smaller_than_k_and_a_warm_start_from_a_partial_block(kernel):
    # The AMX screen bounds each query's k-th best from the first block's first rows (the
    # "warm start") when that block holds at least k rows; here once not (64 < 100) and once
    # from a first block of 150 rows, most of them duplicated later in the stream.
    rng = np.random.default_rng(4)
    base = rng.normal(size=(150, 12)).astype(np.float32)[rng.integers(0, 150, 1500)]
    queries = rng.normal(size=(70, 12)).astype(np.float32)
    ref = _lowest_id_first_top_k(queries, base, 100)
    for rows in (64, 150):
        _, idx = knn_search(
            queries, array_blocks(base.copy(), rows), k=100, n_base=len(base), kernel=kernel
        )
        np.testing.assert_array_equal(idx, ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_duplicates_in_a_partial_tile_and_thread_counts_give_the_same_bits(kernel):
    # d = 384 as a ViT-S. Row 2048 duplicates row 0 and is alone in the last tile (and block
    # group); it must tie with row 0 exactly and rank after it, whatever the threads.
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(130, 384)).astype(np.float32)
    base = rng.normal(size=(2049, 384)).astype(np.float32)
    base[0] = queries[0] + 0.3 * rng.normal(size=384).astype(np.float32)
    base[2048] = base[0]
    one = knn_search(queries, base, k=3, threads=1, kernel=kernel)
    assert one[1][0, :2].tolist() == [0, 2048]
    assert one[0][0, 0] == one[0][0, 1]
    for threads in (2, 3):
        other = knn_search(queries, base, k=3, threads=threads, kernel=kernel)
        np.testing.assert_array_equal(other[0], one[0])
        np.testing.assert_array_equal(other[1], one[1])
    alone = knn_search(queries[:1], base, k=3, threads=1, kernel=kernel)
    np.testing.assert_array_equal(alone[0], one[0][:1])
    np.testing.assert_array_equal(one[1], _lowest_id_first_top_k(queries, base, 3))
    np.testing.assert_array_equal(
        one[0], np.take_along_axis(_exact_similarities(queries, base), one[1], axis=1)
    )


@pytest.mark.skipif(len(KERNELS) < 2, reason="this CPU has no AMX: only the fp32 screen runs")
def test_amx_and_fp32_screens_give_the_same_bits_on_near_ties():
    # Rows packed within ~1e-3 of each other in cosine, far below bf16's resolution (~4e-3):
    # the bf16 screen cannot order them, so the exact re-scoring decides every rank.
    rng = np.random.default_rng(3)
    center = rng.normal(size=96).astype(np.float32)
    base = (center + 0.02 * rng.normal(size=(3000, 96))).astype(np.float32)
    base[2500:2600] = base[100:200]  # exact duplicates, later in the stream
    queries = (center + 0.02 * rng.normal(size=(100, 96))).astype(np.float32)
    ref = _lowest_id_first_top_k(queries, base, 50)
    results = [knn_search(queries, base, k=50, kernel=kernel) for kernel in KERNELS]
    for sims, idx in results:
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_array_equal(sims, results[0][0])
    assert np.diff(results[0][0], axis=1).max() <= 0  # best first
    assert (np.abs(np.diff(results[0][0], axis=1)) < 1e-4).mean() > 0.5  # really near-ties


def test_kernel_is_checked_and_amx_refused_where_it_cannot_run(monkeypatch):
    from featlab.eval import _amx

    x = np.eye(4, dtype=np.float32)
    with pytest.raises(InvalidArgumentError, match="kNN kernel must be one of"):
        knn_search(x, x, k=1, kernel="bf16")
    monkeypatch.setenv("FEATLAB_KNN_KERNEL", "gpu")
    with pytest.raises(InvalidArgumentError, match="FEATLAB_KNN_KERNEL"):
        knn_search(x, x, k=1)
    monkeypatch.setenv("FEATLAB_KNN_KERNEL", "fp32")
    assert knn_search(x, x, k=1)[1].ravel().tolist() == [0, 1, 2, 3]
    monkeypatch.setattr(_amx, "amx_bf16_available", lambda: False)
    with pytest.raises(InvalidArgumentError, match="needs an x86-64 Linux CPU with AMX"):
        knn_search(x, x, k=1, kernel="amx-bf16")


def test_k_must_be_a_positive_whole_number():
    x = np.eye(4, dtype=np.float32)
    for bad in (0, -40, 2.0, True):
        with pytest.raises(InvalidArgumentError, match="k must be"):
            knn_search(x, array_blocks(x, 2), k=bad)


def test_non_finite_embeddings_are_refused():
    x = np.eye(4, dtype=np.float32)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"NaN or inf.*base row 2"):
        knn_search(x, bad, k=2)
    many = np.tile(x, (3000, 1))
    many[9000, 0] = np.inf  # row 9000 of the base, in a later block than the first
    with pytest.raises(InvalidArgumentError, match="base row 9000"):
        knn_search(x, array_blocks(many, 4096), k=2, n_base=len(many))
    with pytest.raises(InvalidArgumentError, match="query"):
        knn_search(bad, x, k=2)


def test_search_runs_without_torch():
    # The kNN probe's process must not pay torch's import (~0.5 GiB resident for CUDA builds).
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from featlab.eval.knn import knn_classify\n"
        "x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)\n"
        "knn_classify(x, np.arange(50) % 2, x[:5], k=3)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
