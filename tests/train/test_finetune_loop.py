"""The finetuning loop itself, on tiny in-memory data: exact resume of a stochastic model, every
kill window between the checkpoint writes, the trailing batch of one, the best checkpoint's
sha check and the weight-decay groups."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from torch import nn

from featlab.datasets.images import ArrayImages
from featlab.errors import InvalidArgumentError, TrainingError
from featlab.train import finetune as loop
from featlab.train.checkpoint import load_state, save_weights, sha256_of
from featlab.train.data import TrainImages
from featlab.train.layout import input_layout
from featlab.train.recipes import FinetuneConfig, recipe_config
from featlab.train.runlog import read_runlog

N_TRAIN, N_VAL, N_TEST, SIZE = 12, 6, 6, 32
# Val loss as the monitor: it improves on most early epochs, so later bests exist to kill at.
CONFIG = FinetuneConfig(lr=1e-3, batch_size=4, max_epochs=4, min_epochs=0, patience=None,
                        monitor="loss", schedule="cosine")


class Killed(Exception):
    pass


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _flip_to_tensor(img):
    from torchvision import transforms as T

    return T.Compose([T.RandomHorizontalFlip(), T.ToTensor()])(img)


def _to_tensor(img):
    from torchvision import transforms as T

    return T.ToTensor()(img)


def _split(n: int, offset: int, transform) -> TrainImages:
    """``n`` images whose dominant channel is the class (3 classes), seeded by ``offset``."""
    rng = np.random.default_rng(offset)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, SIZE, SIZE, 3), dtype=np.uint8)
    for c in range(3):
        images[labels == c, :, :, c] += 150
    return TrainImages(ArrayImages(images), np.arange(n), transform, seed=0, targets=labels)


def _vit() -> nn.Module:
    # Stochastic depth draws from torch's global generator every step: only a restored RNG
    # state makes the resumed steps the uninterrupted ones.
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=3, img_size=SIZE, drop_path_rate=0.3)


def _run(run_dir, model=None, config=CONFIG, callback=None, train=None):
    return loop.finetune(
        model or _vit(), train=train or _split(N_TRAIN, 1, _flip_to_tensor),
        val=_split(N_VAL, 2, _to_tensor), test=_split(N_TEST, 3, _to_tensor),
        task="multiclass", n_classes=3, metric="accuracy", config=config, run_dir=run_dir,
        callback=callback,
    )


def _timeless(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds",
                                                       "images_per_s", "time")}
            for r in history]


def _same_weights(a, b) -> bool:
    wa = torch.load(a, weights_only=True)
    wb = torch.load(b, weights_only=True)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce."""
    run_dir = tmp_path_factory.mktemp("whole")
    return run_dir, _run(run_dir)


def _assert_reproduces(run_dir, resumed, whole):
    whole_dir, reference = whole
    assert _same_weights(run_dir / loop.BEST, whole_dir / loop.BEST)
    assert _timeless(resumed.history) == _timeless(reference.history)
    assert resumed.best_epoch == reference.best_epoch
    np.testing.assert_array_equal(resumed.test_scores, reference.test_scores)
    assert load_state(run_dir / loop.LAST)["run"]["best_sha256"] == sha256_of(run_dir / loop.BEST)
    epochs = [r["epoch"] for r in read_runlog(run_dir / loop.LOG) if r["event"] == "epoch"]
    assert epochs == list(range(CONFIG.max_epochs))  # each epoch logged exactly once
    assert not (run_dir / loop.PENDING_BEST).exists()


def test_killed_mid_epoch_resumes_to_the_uninterrupted_run(tmp_path, whole):
    def kill(record):
        if record["event"] == "step" and record["epoch"] == 1 and record["step"] == 1:
            raise Killed

    with pytest.raises(Killed):
        _run(tmp_path, callback=kill)
    resumed = _run(tmp_path)
    assert resumed.resumed_at == 1
    _assert_reproduces(tmp_path, resumed, whole)


def _kill_before_last_pt(monkeypatch, run_dir):
    real = loop.save_state

    def save_state(path, state):
        # A new best of epoch >= 1 is in best.pt.next, last.pt not yet written.
        if (run_dir / loop.PENDING_BEST).exists() and state["run"]["epoch"] >= 2:
            raise Killed
        real(path, state)

    monkeypatch.setattr(loop, "save_state", save_state)


def _kill_before_rename(monkeypatch, run_dir):
    real, calls = loop._promote_best, []

    def promote(path):
        calls.append(path)
        if len(calls) == 2:  # the second best: last.pt has recorded it, best.pt is older
            raise Killed
        real(path)

    monkeypatch.setattr(loop, "_promote_best", promote)


def _kill_before_log_line(monkeypatch, run_dir):
    class DyingLog(loop.RunLog):
        def write(self, record):
            if record["epoch"] == 1:
                raise Killed
            super().write(record)

    monkeypatch.setattr(loop, "RunLog", DyingLog)


@pytest.mark.parametrize("kill", [_kill_before_last_pt, _kill_before_rename,
                                  _kill_before_log_line])
def test_a_kill_between_the_checkpoint_writes_resumes_consistently(tmp_path, whole, kill):
    with pytest.MonkeyPatch.context() as mp:
        kill(mp, tmp_path)
        with pytest.raises(Killed):
            _run(tmp_path)
    resumed = _run(tmp_path)
    _assert_reproduces(tmp_path, resumed, whole)


def test_scoring_refuses_a_best_checkpoint_last_pt_did_not_record(tmp_path, whole):
    whole_dir, _ = whole
    for name in (loop.BEST, loop.LAST, loop.LOG):
        (tmp_path / name).write_bytes((whole_dir / name).read_bytes())
    save_weights(tmp_path / loop.BEST, _vit())
    with pytest.raises(TrainingError, match="changed outside this run"):
        _run(tmp_path)  # nothing left to train: straight to scoring


def _bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm1d on a batch of one sample fails in train mode ("Expected more than 1 value
    # per channel").
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 8), nn.BatchNorm1d(8),
                         nn.ReLU(), nn.Linear(8, 3))


def test_a_trailing_batch_of_one_is_dropped(tmp_path):
    steps = []
    config = FinetuneConfig(lr=1e-3, batch_size=4, max_epochs=2, min_epochs=0, patience=None,
                            schedule="linear")
    result = _run(tmp_path, model=_bn_mlp(), config=config,
                  train=_split(9, 1, _flip_to_tensor),  # batches of 4, 4 and 1
                  callback=lambda r: steps.append(r) if r["event"] == "step" else None)
    assert loop.steps_per_epoch(9, 4) == 2
    assert [s["epoch"] for s in steps] == [0, 0, 1, 1]
    assert result.epochs_run == 2
    # The schedule counts exactly the steps taken.
    assert load_state(tmp_path / loop.LAST)["schedule"]["step_count"] == 4
    assert loop.steps_per_epoch(8, 4) == 2
    assert loop.steps_per_epoch(10, 4) == 3
    assert loop.steps_per_epoch(1, 4) == 1
    assert not loop.drops_trailing_one(1, 4)


def test_one_training_sample_is_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match="at least 2 training samples"):
        _run(tmp_path, model=_bn_mlp(), train=_split(1, 1, _to_tensor))


def test_the_epoch_record_has_the_lr_of_its_steps_and_training_throughput(tmp_path):
    config = FinetuneConfig(lr=1e-3, batch_size=4, max_epochs=2, min_epochs=0, patience=None,
                            schedule="linear")
    result = _run(tmp_path, model=_bn_mlp(), config=config)
    total = loop.steps_per_epoch(N_TRAIN, 4) * 2
    # Linear decay: the last step of epoch e ran at lr (1 - (3e + 2) / total).
    assert [r["lr"] for r in result.history] == pytest.approx(
        [1e-3 * (1 - 2 / total), 1e-3 * (1 - 5 / total)])
    for r in result.history:
        assert r["train_seconds"] <= r["seconds"]
        # Validation time is not in the throughput (rounding aside).
        assert r["images_per_s"] >= 0.99 * N_TRAIN / r["seconds"]
    assert json.loads((tmp_path / loop.LOG).read_text().splitlines()[0])["val_loss"] > 0


def test_weight_decay_skips_biases_and_norms_like_the_hf_trainer():
    config = recipe_config("beit")
    model = timm.create_model("test_vit", num_classes=3, img_size=SIZE)
    groups = loop._optimizer(config, model).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == config.weight_decay
               for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert config.weight_decay == 0.01
    assert {names[i] for i in decayed} == {
        n for n, p in model.named_parameters()
        if not n.endswith("bias") and ".norm" not in n and not n.startswith(("norm.", "fc_norm."))
    }
    assert "blocks.0.attn.qkv.weight" in {names[i] for i in decayed}
    assert sum(len(g["params"]) for g in groups) == len(names)


def test_cnns_train_channels_last_and_their_checkpoint_loads_in_the_default_layout(tmp_path):
    torch.manual_seed(0)
    cnn = timm.create_model("test_resnet", num_classes=3)
    config = FinetuneConfig(lr=1e-3, batch_size=4, max_epochs=1, min_epochs=0, patience=None)
    result = _run(tmp_path, model=cnn, config=config)
    assert input_layout(cnn) == torch.channels_last
    assert input_layout(_vit()) == torch.contiguous_format
    # best.pt in a plain (contiguous) model predicts what the run scored on test.
    plain = timm.create_model("test_resnet", num_classes=3)
    plain.load_state_dict(torch.load(tmp_path / loop.BEST, weights_only=True))
    assert input_layout(plain) == torch.contiguous_format
    proba = loop.predict(plain, _split(N_TEST, 3, _to_tensor), task="multiclass", batch_size=4,
                         device="cpu", precision="fp32")
    np.testing.assert_allclose(proba, result.test_scores, rtol=1e-4, atol=1e-5)
