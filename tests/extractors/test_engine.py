"""The engine against timm's own reference pipeline, precision choice, and a CUDA check."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import featlab
from featlab.errors import InvalidArgumentError, UnknownModelError
from featlab.extractors import extract
from featlab.extractors.device import cpu_bf16_kernels, resolve_runtime
from featlab.extractors.spec import ModelSpec, resolve_spec


def _timm_reference(arch: str, table, img_size: int, seed: int = 0) -> np.ndarray:
    """timm model + timm eval transform (ToTensor, Normalize) in fp32: the independent path."""
    torch.manual_seed(seed)
    kwargs = {"img_size": img_size} if "vit" in arch else {}
    model = timm.create_model(arch, num_classes=0, **kwargs).eval()
    cfg = timm.data.resolve_data_config({"input_size": (3, img_size, img_size)}, model=model)
    tf = timm.data.create_transform(**cfg, is_training=False)
    imgs = [img.convert("RGB") for img in table.images.load(range(len(table)))]
    with torch.no_grad():
        return model(torch.stack([tf(i) for i in imgs])).numpy()


@pytest.mark.parametrize("arch", ["test_vit", "test_resnet"])
def test_fp32_extraction_matches_timm_reference(tmp_path, tiny_table, arch):
    r = extract(
        f"timm:{arch}",
        tiny_table,
        tmp_path / "s.zarr",
        random_init=True,
        img_size=32,
        precision="fp32",
        workers=0,
        batch_size=16,
        progress=False,
    )
    assert (r.status, r.complete, r.n_computed) == ("extracted", True, 40)
    ours = featlab.open_store(tmp_path / "s.zarr")["tiny"].embeddings(f"timm:{arch}")
    ref = _timm_reference(arch, tiny_table, 32)
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(cpu_bf16_kernels() is None, reason="no native bf16 on this CPU")
def test_bf16_extraction_is_close_to_fp32(tmp_path, tiny_table):
    r = extract(
        "timm:test_resnet",
        tiny_table,
        tmp_path / "s.zarr",
        random_init=True,
        img_size=32,
        workers=1,
        progress=False,
    )
    assert r.precision == "bf16"
    ours = featlab.open_store(tmp_path / "s.zarr")["tiny"].embeddings("timm:test_resnet")
    ref = _timm_reference("test_resnet", tiny_table, 32)
    cos = np.sum(ours * ref, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() > 0.99


def test_provenance_recorded(tmp_path, tiny_table):
    extract(
        "timm:test_vit",
        tiny_table,
        tmp_path / "s.zarr",
        random_init=True,
        img_size=32,
        workers=0,
        progress=False,
        seed=3,
    )
    a = featlab.open_store(tmp_path / "s.zarr")["tiny"].model_attrs("timm:test_vit")
    assert a["spec"]["architecture"] == "test_vit"
    assert a["spec"]["input_size"] == [3, 32, 32]
    assert a["spec"]["pool"] == "cls"
    assert a["weights"] == {"source": "random-init", "sha256": None, "seed": 3}
    assert a["complete"] is True
    assert a["images_per_s"] > 0
    assert a["featlab_version"] == featlab.__version__
    assert {"precision", "device", "kernels", "created", "view", "batch_size"} <= set(a)


def test_resume_with_other_batch_size_is_refused(tmp_path, tiny_table):
    from featlab.errors import ExtractionError

    extract(
        "timm:test_vit",
        tiny_table,
        tmp_path / "s.zarr",
        random_init=True,
        img_size=32,
        workers=0,
        progress=False,
        limit=10,
        batch_size=4,
    )
    with pytest.raises(ExtractionError, match="batch size 4"):
        extract(
            "timm:test_vit",
            tiny_table,
            tmp_path / "s.zarr",
            random_init=True,
            img_size=32,
            workers=0,
            progress=False,
            batch_size=8,
        )


def test_image_mode_conversion_reaches_the_model(tmp_path):
    """A grayscale PNG folder extracts, and equals the same images stored as RGB."""
    from featlab.datasets import read_image_folder

    for root, mode in ((tmp_path / "gray", "L"), (tmp_path / "rgb", "RGB")):
        rng = np.random.default_rng(0)  # the same pixels in both folders
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for i in range(3):
                g = rng.integers(0, 256, (20, 20), dtype=np.uint8)
                Image.fromarray(g, "L").convert(mode).save(root / cls / f"{i}.png")
    stores = {}
    for name in ("gray", "rgb"):
        extract(
            "timm:test_resnet",
            read_image_folder(tmp_path / name, name=name),
            tmp_path / f"{name}.zarr",
            random_init=True,
            img_size=32,
            workers=0,
            precision="fp32",
            progress=False,
        )
        stores[name] = featlab.open_store(tmp_path / f"{name}.zarr")[name]
    np.testing.assert_array_equal(
        stores["gray"].embeddings("timm:test_resnet"), stores["rgb"].embeddings("timm:test_resnet")
    )


def test_runtime_choice():
    rt = resolve_runtime("cpu", "auto")
    assert rt.precision == ("bf16" if cpu_bf16_kernels() else "fp32")
    assert resolve_runtime("cpu", "fp32").kernels == "cpu fp32"
    with pytest.raises(InvalidArgumentError, match="fp16 on the CPU"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(InvalidArgumentError, match="precision must be one of"):
        resolve_runtime("cpu", "int8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="CUDA is not available"):
            resolve_runtime("cuda", "auto")


def test_spec_round_trip_and_unknown_models():
    spec = resolve_spec("timm:vit_small_patch16_224.augreg_in21k", img_size=96)
    assert spec.input_size == (3, 96, 96)
    assert spec.mean == (0.5, 0.5, 0.5)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UnknownModelError, match="vit_small_patch16_224"):
        resolve_spec("timm:vit_smal_patch16_224")
    with pytest.raises(UnknownModelError, match="or timm:<architecture>"):
        resolve_spec("not-a-model")


@pytest.mark.gpu
def test_cuda_autocast_matches_cpu_fp32(tmp_path, tiny_table):
    gpu = extract(
        "timm:test_resnet",
        tiny_table,
        tmp_path / "g.zarr",
        random_init=True,
        img_size=32,
        device="cuda",
        workers=1,
        progress=False,
    )
    cpu = extract(
        "timm:test_resnet",
        tiny_table,
        tmp_path / "c.zarr",
        random_init=True,
        img_size=32,
        device="cpu",
        precision="fp32",
        workers=0,
        progress=False,
    )
    assert gpu.device == "cuda"
    assert cpu.device == "cpu"
    a = featlab.open_store(tmp_path / "g.zarr")["tiny"].embeddings("timm:test_resnet")
    b = featlab.open_store(tmp_path / "c.zarr")["tiny"].embeddings("timm:test_resnet")
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.999
