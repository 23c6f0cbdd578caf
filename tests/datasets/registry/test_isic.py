"""``isic2019`` against the challenge files: one-hot ground truth, metadata (datasets.md 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featlab.datasets import load_dataset
from featlab.errors import DatasetError

COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
# 16 images: MEL x5, NV x5, one each of BCC..SCC; one MSK name with the _downsampled suffix.
CLASS_OF = {
    **{f"ISIC_{i:07d}": "MEL" for i in range(5)},
    **{f"ISIC_{i:07d}": "NV" for i in range(5, 9)},
    "ISIC_0000022_downsampled": "NV",
    **{f"ISIC_{10 + k:07d}": c for k, c in enumerate(COLUMNS[2:8])},
}
# lesion_id per image; blank for some, as in the real metadata.
LESION = {
    "ISIC_0000005": "IL_0000001",
    "ISIC_0000006": "IL_0000001",
    "ISIC_0000022_downsampled": "IL_0000001",
    "ISIC_0000000": "IL_0000002",
    "ISIC_0000001": "IL_0000002",
    "ISIC_0000002": "IL_0000003",
}


def _one_hot(cls: str) -> str:
    return ",".join("1.0" if c == cls else "0.0" for c in COLUMNS)


def write_isic(root: Path, rows: dict[str, str] | None = None, metadata: bool = True) -> Path:
    rows = rows if rows is not None else {k: _one_hot(c) for k, c in CLASS_OF.items()}
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    lines = ["image," + ",".join(COLUMNS), *(f"{k},{v}" for k, v in rows.items())]
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    for k in rows:
        img = np.full((16, 16, 3), (200, 120, 90), np.uint8)
        Image.fromarray(img).save(root / "ISIC_2019_Training_Input" / f"{k}.jpg")
    if metadata:
        meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
        meta += [f"{k},55.0,anterior torso,{LESION.get(k, '')},female" for k in rows]
        (root / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(meta) + "\n")
    return root


def test_reads_eight_classes_without_unk(tmp_path):
    t = load_dataset("isic2019", data_root=write_isic(tmp_path / "isic", metadata=False))
    assert t.task == "multiclass"
    assert t.classes == tuple(COLUMNS[:8])
    assert list(t.ids) == list(CLASS_OF)
    assert t.labels.tolist() == [COLUMNS.index(c) for c in CLASS_OF.values()]
    assert t.sources[9].endswith("ISIC_2019_Training_Input/ISIC_0000022_downsampled.jpg")
    # Per class 60/20/20 rounded: MEL 5 -> 3/1/1, NV 5 -> 3/1/1, six singletons -> train.
    assert t.split_counts() == {"train": 12, "val": 2, "test": 2}
    assert "each image its own group" in t.attrs["split_method"]
    assert t.images.load([0])[0].size == (16, 16)


def test_images_of_one_lesion_share_a_split(tmp_path):
    t = load_dataset("isic2019", data_root=write_isic(tmp_path / "isic"))
    split = dict(zip(t.ids, t.splits, strict=True))
    for lesion in set(LESION.values()):
        assert len({split[i] for i, v in LESION.items() if v == lesion}) == 1
    assert "lesion_id" in t.attrs["split_method"]
    assert t.attrs["split_seed"] == 0
    assert set(t.splits) <= {"train", "val", "test"}


def test_missing_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match=r"(?s)files not found.*GroundTruth\.csv.*s3\.amazonaws"):
        load_dataset("isic2019", data_root=tmp_path)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0", "UNK=1.0; UNK is a test-only class"),
        ("1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", "not exactly one-hot"),
        ("0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", "not exactly one-hot"),
        ("0.5,0.5,0.0,0.0,0.0,0.0,0.0,0.0,0.0", "not exactly one-hot"),
        ("x,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", "non-numeric"),
    ],
)
def test_bad_ground_truth_row_is_named(tmp_path, cells, message):
    rows = {k: _one_hot(c) for k, c in CLASS_OF.items()} | {"ISIC_0099999": cells}
    root = write_isic(tmp_path / "isic", rows=rows)
    with pytest.raises(DatasetError, match=rf"'ISIC_0099999' \(.*line 18\).*{message}"):
        load_dataset("isic2019", data_root=root)


def test_missing_image_is_named(tmp_path):
    root = write_isic(tmp_path / "isic")
    (root / "ISIC_2019_Training_Input" / "ISIC_0000003.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*ISIC_0000003\.jpg"):
        load_dataset("isic2019", data_root=root)


def test_duplicate_image_is_named(tmp_path):
    root = write_isic(tmp_path / "isic")
    with (root / "ISIC_2019_Training_GroundTruth.csv").open("a") as fh:
        fh.write(f"ISIC_0000004,{_one_hot('MEL')}\n")
    with pytest.raises(DatasetError, match=r"'ISIC_0000004' appears twice .*lines 6 and 18"):
        load_dataset("isic2019", data_root=root)


def test_metadata_without_lesion_id_is_an_error(tmp_path):
    root = write_isic(tmp_path / "isic")
    (root / "ISIC_2019_Training_Metadata.csv").write_text("image,age_approx\nISIC_0000000,5\n")
    with pytest.raises(DatasetError, match=r"Metadata\.csv has no column\(s\) \['lesion_id'\]"):
        load_dataset("isic2019", data_root=root)
