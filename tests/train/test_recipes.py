"""Recipe settings against the papers, the recipes' transforms, DINO detection, and probe
configs that name the finetune method."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from featlab.errors import InvalidArgumentError
from featlab.eval.protocol import ProbeConfig, _make_probe, evaluate_rows, run_probe
from featlab.extractors.finetune_job import _is_dino
from featlab.extractors.spec import resolve_spec
from featlab.extractors.train_transforms import resize_side, train_transform
from featlab.store import open_store
from featlab.train.recipes import FinetuneConfig, recipe_config


def test_cass_stops_on_the_validation_loss():
    config = recipe_config("cass")
    # Appendix C.6.2: "a five epoch patience on validation loss", Adam 3e-4, cosine, 50 epochs.
    assert (config.monitor, config.patience, config.max_epochs) == ("loss", 5, 50)
    assert (config.optimizer, config.lr, config.schedule) == ("adam", 3e-4, "cosine")
    assert (config.loss, config.augment) == ("focal", "cass")
    assert recipe_config("truong").monitor == "metric"


def test_truong_dino_settings_apply_to_dino_vits_only():
    vit = timm.create_model("test_vit", num_classes=0)
    resnet = timm.create_model("test_resnet", num_classes=0)
    timm_vit = resolve_spec("timm:test_vit", pretrained=False)
    assert _is_dino(timm_vit, vit, {"kind": "pretrain", "method": "dino"})
    assert not _is_dino(timm_vit, vit, {"kind": "pretrain", "method": "cass"})
    assert not _is_dino(timm_vit, vit, None)
    assert _is_dino(resolve_spec("dino-vits16", pretrained=False), vit, None)
    assert not _is_dino(resolve_spec("dino-resnet50", pretrained=False), resnet, None)
    assert not _is_dino(timm_vit, resnet, {"method": "dino"})
    dino = recipe_config("truong", dino=True)
    assert (dino.lr, dino.batch_size) == (1e-4, 16)


def test_a_bad_setting_names_only_that_setting():
    with pytest.raises(InvalidArgumentError) as err:
        FinetuneConfig(batch_size=0)
    assert str(err.value) == "finetune setting batch_size must be >= 1; got 0"
    with pytest.raises(InvalidArgumentError, match="monitor must be one of"):
        FinetuneConfig(monitor="val_auc")
    with pytest.raises(InvalidArgumentError, match="unknown finetune setting"):
        recipe_config("cass", learning_rate=1e-3)


def test_resize_then_crop_follows_the_papers_256_for_224():
    spec = resolve_spec("timm:test_resnet", pretrained=False, img_size=224)
    assert resize_side(spec) == (256, 256)
    img = Image.fromarray(np.full((300, 200, 3), 128, np.uint8))
    for augment in ("resize-crop-flip", "matsoukas", "cass", "none", "crop-flip"):
        assert train_transform(spec, augment)(img).shape == (3, 224, 224)
    with pytest.raises(InvalidArgumentError, match="augment must be one of"):
        train_transform(spec, "mixup")


def test_random_crop_of_the_resized_image_keeps_the_scale():
    """resize-crop-flip crops S from the 256/224*S resize: a pixel pattern keeps its size."""
    spec = resolve_spec("timm:test_resnet", pretrained=False, img_size=28)
    grid = np.zeros((32, 32, 3), np.uint8)
    grid[:, ::2] = 255  # 1-px stripes at the 32-px resize side: still 1-px after the crop
    torch.manual_seed(0)
    x = train_transform(spec, "resize-crop-flip")(Image.fromarray(grid))
    row = x[0, 5]
    assert x.shape == (3, 28, 28)
    assert torch.all(row[1:] != row[:-1])  # alternates every pixel: not rescaled


def test_probe_configs_naming_finetune_are_refused(tmp_path):
    from conftest import make_store

    store = open_store(make_store(tmp_path / "s.zarr", n=60))
    ds = store["toy"]
    config = ProbeConfig(method="finetune")
    with pytest.raises(InvalidArgumentError, match="probe method must be one of"):
        run_probe(ds, "good", config)
    with pytest.raises(InvalidArgumentError, match="probe method must be one of"):
        evaluate_rows(ds, "good", ["good"], np.ones(ds.n, bool), config)
    for method in ("finetune", "knn"):
        with pytest.raises(InvalidArgumentError, match="no trained probe"):
            _make_probe(ProbeConfig(method=method), 0, None, [16])
