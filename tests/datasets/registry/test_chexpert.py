"""``chexpert-small``: Path prefix, uncertain-label policies, per-patient val (datasets.md 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError, UnknownDatasetError

HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)
FINDINGS = HEADER.split(",")[5:]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
FIRST = {"Cardiomegaly": "1.0", "Edema": "-1.0", "Consolidation": "0.0", "Support Devices": "1.0"}


def _train_rows() -> list[tuple[str, dict[str, str]]]:
    """Patients 1-5 have a positive competition finding, 6-10 none; 13 images."""
    rows = [("patient00001/study1/view1_frontal.jpg", FIRST)]
    rows += [("patient00001/study1/view2_lateral.jpg", {"Atelectasis": "-1.0"})]
    rows += [("patient00001/study2/view1_frontal.jpg", {"No Finding": "1.0"})]
    rows += [(f"patient{p:05d}/study1/view1_frontal.jpg", {"Edema": "1.0"}) for p in range(2, 6)]
    rows += [
        (f"patient{p:05d}/study1/view1_frontal.jpg", {"Lung Opacity": "1.0", "Edema": "0.0"})
        for p in range(6, 11)
    ]
    rows += [("patient00006/study1/view2_lateral.jpg", {"Pleural Effusion": "-1.0"})]
    return rows


VALID = [
    ("patient64541/study1/view1_frontal.jpg", {"Pleural Effusion": "1.0", "Edema": "0.0"}),
    ("patient64542/study1/view1_frontal.jpg", {"No Finding": "1.0"}),
]


def _write_csv(root: Path, name: str, split: str, rows) -> None:
    lines = [HEADER]
    for rel, cells in rows:
        path = f"CheXpert-v1.0-small/{split}/{rel}"
        view = "Frontal" if "frontal" in rel else "Lateral"
        lines.append(
            ",".join([path, "Female", "68", view, "AP", *(cells.get(f, "") for f in FINDINGS)])
        )
        img = root / path
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 120, np.uint8)).save(img, format="JPEG")
    (root / "CheXpert-v1.0-small" / name).write_text("\n".join(lines) + "\n")


def write_chexpert(root: Path, train=None, valid=VALID) -> Path:
    _write_csv(root, "train.csv", "train", train or _train_rows())
    _write_csv(root, "valid.csv", "valid", valid)
    return root


@pytest.fixture
def root(tmp_path) -> Path:
    return write_chexpert(tmp_path / "cx")


def test_default_is_competition_findings_with_unknown_uncertain(root):
    t = load_dataset("chexpert-small", data_root=root)
    assert t.task == "multilabel"
    assert t.classes == tuple(COMPETITION)
    assert len(t) == 15
    assert t.ids[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert t.labels.dtype == np.int8
    # Atelectasis blank -> 0, Cardiomegaly 1.0, Consolidation 0.0, Edema -1.0 -> unknown, PE blank.
    assert t.labels[0].tolist() == [0, 1, 0, -1, 0]
    assert t.labels[1].tolist() == [-1, 0, 0, 0, 0]
    assert t.labels[-2].tolist() == [0, 0, 0, 0, 1]
    assert t.attrs["uncertain"] == "ignore"
    assert t.images.load([0])[0].size == (16, 16)


@pytest.mark.parametrize(("policy", "value"), [("ones", 1), ("zeros", 0)])
def test_uncertain_policies(root, policy, value):
    t = load_dataset("chexpert-small", data_root=root, uncertain=policy)
    assert t.labels.dtype == np.uint8
    assert t.labels[0].tolist() == [0, 1, 0, value, 0]
    assert t.labels[1].tolist() == [value, 0, 0, 0, 0]


def test_all_fourteen_findings(root):
    t = load_dataset("chexpert-small", data_root=root, findings="all")
    assert t.classes == tuple(FINDINGS)
    first = [0] * 14
    first[FINDINGS.index("Cardiomegaly")] = 1
    first[FINDINGS.index("Edema")] = -1
    first[FINDINGS.index("Support Devices")] = 1
    assert t.labels[0].tolist() == first
    assert t.labels[2, FINDINGS.index("No Finding")] == 1


def test_valid_is_test_and_val_is_per_patient(root):
    t = load_dataset("chexpert-small", data_root=root)
    assert list(t.splits[-2:]) == ["test", "test"]
    patient = np.array([i.split("/")[2] for i in t.ids])
    train_p, val_p = set(patient[t.splits == "train"]), set(patient[t.splits == "val"])
    assert not train_p & val_p
    # 5 positive and 5 negative train patients: round(0.9 * 5) = 4 train, 1 val in each stratum.
    assert len(val_p & {f"patient{p:05d}" for p in range(1, 6)}) == 1
    assert len(val_p & {f"patient{p:05d}" for p in range(6, 11)}) == 1
    # The split does not depend on the label options, so every variant is comparable.
    other = load_dataset("chexpert-small", data_root=root, uncertain="ones", findings="all")
    np.testing.assert_array_equal(t.splits, other.splits)


def test_unknown_option_value(root):
    with pytest.raises(UnknownDatasetError, match=r"uncertain='maybe' is not one of"):
        load_dataset("chexpert-small", data_root=root, uncertain="maybe")


def test_missing_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*valid\.csv.*stanfordmlgroup"):
        load_dataset("chexpert-small", data_root=tmp_path)


def test_bad_cell_is_named(tmp_path):
    train = [*_train_rows(), ("patient00011/study1/view1_frontal.jpg", {"Edema": "2.0"})]
    root = write_chexpert(tmp_path / "cx", train=train)
    with pytest.raises(
        DatasetError,
        match=r"patient00011/study1/view1_frontal\.jpg' \(train\.csv "
        r"line 15\) has Edema='2\.0'",
    ):
        load_dataset("chexpert-small", data_root=root)


def test_missing_image_is_named(root):
    (root / "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*valid/patient64542/study1/view1_fr"):
        load_dataset("chexpert-small", data_root=root)


def test_duplicate_path_is_named(tmp_path):
    root = write_chexpert(tmp_path / "cx", train=[*_train_rows(), _train_rows()[0]])
    with pytest.raises(
        DatasetError, match=r"duplicated: \['CheXpert-v1.0-small/train/patient00001"
    ):
        load_dataset("chexpert-small", data_root=root)


def test_extracts_unknown_entries_into_a_store(root, tmp_path):
    from featlab.extractors import extract
    from featlab.store import open_store

    table = load_dataset("chexpert-small", data_root=root)
    store = tmp_path / "s.zarr"
    extract("timm:test_vit", table, store, random_init=True, img_size=32, workers=0, progress=False)
    ds = open_store(store)["chexpert-small"]
    np.testing.assert_array_equal(ds.labels, table.labels)  # -1 entries survive the store
    X, _ = ds.xy("timm:test_vit", split="test")
    assert X.shape[0] == 2
    assert np.isfinite(X).all()


def test_multilabel_entries_other_than_minus_one_zero_one_are_rejected():
    from featlab.datasets import SampleTable

    with pytest.raises(DatasetError, match=r"sample 'b' has multi-label entry 2 in column 1"):
        SampleTable(
            name="x",
            ids=["a", "b"],
            labels=np.array([[1, -1], [0, 2]]),  # uint8 would silently wrap -1 to 255
            splits=["train", "test"],
            sources=["a", "b"],
            classes=("p", "q"),
            task="multilabel",
        )
