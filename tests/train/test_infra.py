"""Training infrastructure: RNG state, atomic state files, seeded data, run folders."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

from featlab.datasets.images import ArrayImages
from featlab.errors import TrainingError
from featlab.train.checkpoint import (
    capture_rng,
    load_state,
    restore_rng,
    save_state,
    save_weights,
)
from featlab.train.data import TrainImages, epoch_loader
from featlab.train.precision import autocast, grad_scaler
from featlab.train.run_dir import MANIFEST, prepare_run_dir, read_manifest


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_survives_a_state_file(tmp_path):
    torch.manual_seed(1)
    save_state(tmp_path / "s.pt", {"rng": capture_rng(), "epoch": 3})
    expected = _draws()
    _draws()
    state = load_state(tmp_path / "s.pt")
    restore_rng(state["rng"])
    assert _draws() == expected
    assert state["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary left behind


def test_unreadable_state_is_a_training_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="delete it"):
        load_state(tmp_path / "last.pt")
    with pytest.raises(TrainingError, match="does not exist"):
        load_state(tmp_path / "missing.pt")


def test_save_weights_is_a_flat_weights_only_file_with_its_sha(tmp_path):
    model = torch.nn.Linear(3, 2)
    sha = save_weights(tmp_path / "w.pt", model)
    assert sha == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    loaded = torch.load(tmp_path / "w.pt", weights_only=True)
    assert set(loaded) == {"weight", "bias"}
    assert torch.equal(loaded["weight"], model.weight.detach())


def _random_crop(img):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(8), T.ToTensor()])(img)


def _dataset(seed=0):
    rng = np.random.default_rng(0)
    images = ArrayImages(rng.integers(0, 256, (10, 16, 16, 3), dtype=np.uint8))
    return TrainImages(images, np.arange(10), _random_crop, seed=seed,
                       targets=np.arange(10) % 2)


def test_augmentation_depends_on_seed_epoch_and_row_only():
    a, b = _dataset(), _dataset()
    a.set_epoch(2)
    b.set_epoch(2)
    torch.manual_seed(123)  # the global RNG does not matter...
    x = a[4][0]
    torch.manual_seed(999)
    assert torch.equal(x, b[4][0])
    state = torch.get_rng_state()
    b.set_epoch(3)  # ... but the epoch does, and the global RNG is left untouched
    assert not torch.equal(x, b[4][0])
    assert torch.equal(state, torch.get_rng_state())


def test_epoch_order_is_fixed_by_seed_and_epoch_whatever_the_workers():
    def batches(workers, epoch):
        loader = epoch_loader(_dataset(), batch_size=4, seed=7, epoch=epoch, workers=workers)
        return [(x, y) for x, y in loader]

    first, again, other = batches(0, 1), batches(1, 1), batches(0, 2)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2)
        assert torch.equal(y1, y2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other, strict=True))


def test_run_folder_resumes_same_settings_and_refuses_others(tmp_path):
    run = prepare_run_dir(tmp_path / "r", kind="finetune", method="cass", config={"lr": 1e-3})
    assert read_manifest(run)["status"] == "running"
    assert prepare_run_dir(run, kind="finetune", method="cass", config={"lr": 1e-3}) == run
    with pytest.raises(TrainingError, match=r"lr: 0.001 -> 0.01"):
        prepare_run_dir(run, kind="finetune", method="cass", config={"lr": 1e-2})
    with pytest.raises(TrainingError, match="already holds"):
        prepare_run_dir(run, kind="finetune", method="cass", config={"lr": 1e-3}, resume=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not a featlab run folder"):
        prepare_run_dir(other, kind="finetune", method="cass", config={})
    assert json.loads((run / MANIFEST).read_text())["kind"] == "finetune"


def test_autocast_bf16_on_cpu_and_fp32_untouched():
    a = torch.randn(4, 4)
    with autocast("cpu", "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (a @ a).dtype == torch.float32
    assert not grad_scaler("cpu", "bf16").is_enabled()


@pytest.mark.gpu
def test_fp16_autocast_and_scaler_on_cuda():
    a = torch.randn(4, 4, device="cuda")
    with autocast("cuda", "fp16"):
        assert (a @ a).dtype == torch.float16
    assert grad_scaler("cuda", "fp16").is_enabled()
