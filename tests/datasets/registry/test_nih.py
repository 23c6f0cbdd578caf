"""``nih-cxr14``: Box and Kaggle layouts, the malformed CSV header (datasets.md section 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,{sex},View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
# Patients 1..6 have findings, 7..12 none (train_val); 13 and 14 are test patients.
FINDINGS_OF = {
    1: ["Cardiomegaly", "Cardiomegaly|Effusion"],
    2: ["Hernia"],
    3: ["Pleural_Thickening|Mass"],
    4: ["Infiltration", "No Finding"],
    5: ["Nodule"],
    6: ["Atelectasis|Pneumonia|Edema"],
    **{p: ["No Finding"] for p in range(7, 13)},
    13: ["Emphysema|Fibrosis"],
    14: ["No Finding", "Consolidation|Pneumothorax"],
}
ENTRIES = [
    (f"{p:08d}_{k:03d}.png", f, p) for p, fs in FINDINGS_OF.items() for k, f in enumerate(fs)
]  # 17 images
TEST_PATIENTS = {13, 14}


def _row(i: int, image: str, findings: str, patient: int, sex: str = "M") -> str:
    row = f"{image},{findings},{i},{patient},58,{sex},PA,2682,2749,0.143,0.143"
    return row + ("," if i % 2 else "")  # some copies end data rows with a comma too


def write_nih(
    root: Path,
    *,
    layout: str = "kaggle",
    sex: str = "Patient Gender",
    csv_name: str = "Data_Entry_2017.csv",
    entries=ENTRIES,
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER.format(sex=sex), *(_row(i, *e) for i, e in enumerate(entries))]
    (root / csv_name).write_text("\n".join(lines) + "\n")
    test = [e[0] for e in entries if e[2] in TEST_PATIENTS]
    (root / "train_val_list.txt").write_text(
        "".join(f"{e[0]}\n" for e in entries if e[0] not in test)
    )
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    for i, (image, _, _) in enumerate(entries):
        # Kaggle splits the images over images_001/images, images_002/images, ...; Box: images/.
        folder = root / (f"images_{1 + i % 2:03d}/images" if layout == "kaggle" else "images")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16), 40 + i, np.uint8)).save(folder / image)
    return root


def _expected_labels() -> np.ndarray:
    # NIH order, written out by hand (datasets.md section 5).
    order = [
        "Atelectasis",
        "Cardiomegaly",
        "Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural_Thickening",
        "Hernia",
    ]
    out = np.zeros((len(ENTRIES), 14), np.uint8)
    for i, (_, findings, _) in enumerate(ENTRIES):
        for f in findings.split("|"):
            if f != "No Finding":
                out[i, order.index(f)] = 1
    return out


@pytest.mark.parametrize(
    ("layout", "sex", "csv_name"),
    [
        ("kaggle", "Patient Gender", "Data_Entry_2017.csv"),
        ("box", "Patient Sex", "Data_Entry_2017_v2020.csv"),
    ],
)
def test_reads_labels_splits_and_images(tmp_path, layout, sex, csv_name):
    root = write_nih(tmp_path / "nih", layout=layout, sex=sex, csv_name=csv_name)
    t = load_dataset("nih-cxr14", data_root=root)
    assert t.task == "multilabel"
    assert t.classes[0] == "Atelectasis"
    assert t.classes[12:] == ("Pleural_Thickening", "Hernia")
    assert list(t.ids) == [e[0] for e in ENTRIES]
    assert t.labels.dtype == np.uint8
    np.testing.assert_array_equal(t.labels, _expected_labels())
    assert t.labels[ENTRIES.index(("00000001_001.png", "Cardiomegaly|Effusion", 1))].tolist() == (
        [0, 1, 1] + [0] * 11
    )
    assert t.attrs["labels_file"] == csv_name
    is_test = np.array([e[2] in TEST_PATIENTS for e in ENTRIES])
    assert (t.splits[is_test] == "test").all()
    assert set(t.splits[~is_test]) == {"train", "val"}
    img = t.images.load([0])[0]
    assert img.mode == "RGB"
    assert img.size == (16, 16)


def test_val_split_is_per_patient_and_stratified(tmp_path):
    t = load_dataset("nih-cxr14", data_root=write_nih(tmp_path / "nih"))
    patients = np.array([e[2] for e in ENTRIES])
    train_p, val_p = set(patients[t.splits == "train"]), set(patients[t.splits == "val"])
    assert not train_p & val_p
    # 6 sick and 6 healthy train_val patients: round(0.9 * 6) = 5 train, 1 val in each stratum.
    assert len(val_p & set(range(1, 7))) == 1
    assert len(val_p & set(range(7, 13))) == 1
    assert t.attrs["split_seed"] == 0
    assert "Patient ID" in t.attrs["split_method"]
    again = load_dataset("nih-cxr14", data_root=tmp_path / "nih")
    np.testing.assert_array_equal(t.splits, again.splits)


def test_missing_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*Data_Entry_2017\.csv.*nihcc"):
        load_dataset("nih-cxr14", data_root=tmp_path)


def test_missing_split_list(tmp_path):
    root = write_nih(tmp_path / "nih")
    (root / "test_list.txt").unlink()
    with pytest.raises(DatasetError, match=r"test_list\.txt not found"):
        load_dataset("nih-cxr14", data_root=root)


def test_missing_image_is_named(tmp_path):
    root = write_nih(tmp_path / "nih")
    next(root.glob("images_*/images/00000005_000.png")).unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*'00000005_000\.png'"):
        load_dataset("nih-cxr14", data_root=root)


def test_unknown_finding_is_named(tmp_path):
    entries = [*ENTRIES[:-1], ("00000014_001.png", "Pleural Thickening", 14)]
    root = write_nih(tmp_path / "nih", entries=entries)
    with pytest.raises(
        DatasetError, match=r"'00000014_001\.png' has finding\(s\) \['Pleural Thick"
    ):
        load_dataset("nih-cxr14", data_root=root)


def test_duplicate_image_in_csv_is_named(tmp_path):
    root = write_nih(tmp_path / "nih")
    with (root / "Data_Entry_2017.csv").open("a") as fh:
        fh.write(_row(99, "00000002_000.png", "Hernia", 2) + "\n")
    with pytest.raises(DatasetError, match=r"'00000002_000\.png' appears twice"):
        load_dataset("nih-cxr14", data_root=root)


def test_image_in_both_lists_is_named(tmp_path):
    root = write_nih(tmp_path / "nih")
    with (root / "test_list.txt").open("a") as fh:
        fh.write("00000003_000.png\n")
    with pytest.raises(DatasetError, match=r"'00000003_000\.png' is listed twice"):
        load_dataset("nih-cxr14", data_root=root)


def test_unlisted_image_is_named(tmp_path):
    root = write_nih(tmp_path / "nih")
    (root / "test_list.txt").write_text("00000013_000.png\n")
    with pytest.raises(DatasetError, match=r"2 CSV image\(s\) in neither list.*00000014_000\.png"):
        load_dataset("nih-cxr14", data_root=root)


def test_image_in_two_folders_is_an_error(tmp_path):
    root = write_nih(tmp_path / "nih")
    (root / "images").mkdir()
    (root / "images" / "00000001_000.png").write_bytes(
        next(root.glob("images_*/images/00000001_000.png")).read_bytes()
    )
    with pytest.raises(DatasetError, match=r"'00000001_000\.png' is in both"):
        load_dataset("nih-cxr14", data_root=root)
