"""Every registered dataset, as a synthetic miniature in its official layout, extracts through the
CLI into a store whose samples match what the reader produced."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from test_aptos import write_aptos
from test_brain_mri import write_brain
from test_chest_xray import write_kaggle as write_chest_xray
from test_chexpert import write_chexpert
from test_isic import write_isic
from test_medmnist import make_arrays, write_npz
from test_nih import write_nih
from test_pcam import write_pcam
from test_pcam_kaggle import write_kaggle as write_pcam_kaggle

import featlab
from featlab.cli.main import cli
from featlab.datasets import load_dataset


def _medmnist(root):
    write_npz(root / "pneumoniamnist.npz", make_arrays(28, rgb=False), compressed=True)


WRITERS = {
    "aptos2019": write_aptos,
    "brain-tumor-mri": write_brain,
    "chest-xray-pneumonia": write_chest_xray,
    "chexpert-small": write_chexpert,
    "isic2019": write_isic,
    "nih-cxr14": write_nih,
    "pcam": write_pcam,
    "pcam-kaggle": write_pcam_kaggle,
    "pneumoniamnist": _medmnist,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_extract_through_the_cli(tmp_path, name):
    root = tmp_path / "data"
    root.mkdir()
    WRITERS[name](root)
    table = load_dataset(name, data_root=root)
    store = tmp_path / "s.zarr"
    args = [
        "extract",
        "--model",
        "timm:test_vit",
        "--random-init",
        "--img-size",
        "32",
        "--workers",
        "0",
        "--precision",
        "fp32",
        name,
        "--data-root",
        str(root),
        "--store",
        str(store),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    ds = featlab.open_store(store)[table.name]
    assert ds.models == ("timm:test_vit",)
    np.testing.assert_array_equal(ds.ids, table.ids)
    np.testing.assert_array_equal(ds.labels, table.labels)
    np.testing.assert_array_equal(ds.splits, table.splits)
    values = ds.embeddings("timm:test_vit")
    assert values.shape == (len(table), 64)
    assert np.isfinite(values).all()
