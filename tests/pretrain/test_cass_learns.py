"""Slow: a few epochs of CASS on digits lift the CNN arm's kNN accuracy above its random init.

The same configuration as ``make demo`` (resnet18 + vit_tiny at 32 px, random init, CASS's
Adam 1e-3, the train split only, fp32 extraction), evaluated like ``featlab probe --method
knn``: embeddings extracted into a store, then DINO's weighted kNN (k = 20) from the train split
to the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DEMO = {
    "cnn": "resnet18",
    "vit": "vit_tiny_patch16_224",
    "img_size": 32,
    "batch_size": 64,
    "epochs": 5,
    "init": "random",
    "splits": ("train",),
}


def _knn_accuracy(store: Path, model: str) -> float:
    from featlab.eval.knn import knn_classify
    from featlab.store import open_store

    group = open_store(store)["digits"]
    train_x, train_y = group.xy(model, "train")
    test_x, test_y = group.xy(model, "test")
    pred = knn_classify(train_x, train_y, test_x, k=20)
    return float(np.mean(pred.labels == test_y))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_cass_pretraining_beats_random_init_on_digits(tmp_path: Path, seed: int) -> None:
    from featlab.datasets import load_digits_table
    from featlab.extractors import ModelSpec, extract
    from featlab.extractors.pretrain_job import pretrain

    table = load_digits_table()
    result = pretrain("cass", table, out=tmp_path / "run", seed=seed, workers=0, **DEMO)
    cnn = next(m for m in result.models if m["role"] == "cnn")
    spec = ModelSpec.from_dict(cnn["spec"])
    store = tmp_path / "s.zarr"
    extract(
        spec,
        table,
        store,
        weights=Path(result.run_dir) / cnn["file"],
        name="cass",
        workers=0,
        precision="fp32",
    )
    extract(
        spec, table, store, random_init=True, seed=seed, name="random", workers=0, precision="fp32"
    )
    pretrained, random = _knn_accuracy(store, "cass"), _knn_accuracy(store, "random")
    assert pretrained > random + 0.15, (pretrained, random)
