"""MedMNIST v2 / MedMNIST+ (v3.0.2): every 2D flag at sizes 28, 64, 128 and 224.

Layout (datasets.md sections 2 and 10): all flags share one folder, with the files exactly as
distributed on Zenodo (record 10519652)::

    <root>/<flag>.npz            size 28
    <root>/<flag>_<size>.npz     sizes 64, 128, 224

Each ``.npz`` holds ``{train,val,test}_images`` (``(N, S, S)`` grey or ``(N, S, S, 3)`` RGB, uint8)
and ``{train,val,test}_labels`` (``(N, 1)`` class index, or ``(N, 14)`` multi-hot for ChestMNIST).
Sample counts are not checked against the official ones (synthetic files must work); shapes,
dtypes and label ranges are. Grey images become RGB by replicating the channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from featlab.datasets.array_sources import READ_ERRORS, ConcatImages, NPZImages
from featlab.datasets.registry import (
    DatasetInfo,
    DownloadFile,
    missing_dataset_error,
    register_dataset,
)
from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError

SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
ZENODO = "https://zenodo.org/records/10519652"
# MedMNIST's task strings -> featlab's (datasets.md section 2, INFO "task").
TASKS = {
    "multi-class": "multiclass",
    "binary-class": "binary",
    "ordinal-regression": "ordinal",
    "multi-label, binary-class": "multilabel",
}

ORGAN_CLASSES = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
    "lung-left", "lung-right", "pancreas", "spleen",
)  # fmt: skip


@dataclass(frozen=True)
class Flag:
    """One 2D MedMNIST dataset, as in medmnist 3.0.2's ``INFO`` (datasets.md section 2).

    Attributes:
        name: The flag (``pathmnist``).
        medmnist_task: MedMNIST's task string.
        channels: 1 (grey, arrays without a channel axis) or 3 (RGB).
        classes: Label names in index order.
        split_sizes: Official train/val/test counts (shown in listings; not enforced).
        md5: MD5 of the ``.npz`` per size.
        licence: Licence of the data.
    """

    name: str
    medmnist_task: str
    channels: int
    classes: tuple[str, ...]
    split_sizes: tuple[int, int, int]
    md5: tuple[str, str, str, str]  # sizes 28, 64, 128, 224
    licence: str = "CC BY 4.0"

    @property
    def task(self) -> str:
        return TASKS[self.medmnist_task]

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"


FLAGS = (
    Flag(
        "pathmnist", "multi-class", 3,
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma",
         "colorectal adenocarcinoma epithelium"),
        (89996, 10004, 7180),
        ("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
         "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec"),
    ),
    Flag(
        "chestmnist", "multi-label, binary-class", 1,
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
         "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis",
         "pleural", "hernia"),
        (78468, 11219, 22433),
        ("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
         "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa"),
    ),
    Flag(
        "dermamnist", "multi-class", 3,
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
         "vascular lesions"),
        (7007, 1003, 2005),
        ("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
         "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
        licence="CC BY-NC 4.0",
    ),
    Flag(
        "octmnist", "multi-class", 1,
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        (97477, 10832, 1000),
        ("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
         "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3"),
    ),
    Flag(
        "pneumoniamnist", "binary-class", 1,
        ("normal", "pneumonia"),
        (4708, 524, 624),
        ("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
         "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1"),
    ),
    Flag(
        "retinamnist", "ordinal-regression", 3,
        ("0", "1", "2", "3", "4"),
        (1080, 120, 400),
        ("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
         "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348"),
    ),
    Flag(
        "breastmnist", "binary-class", 1,
        ("malignant", "normal, benign"),
        (546, 78, 156),
        ("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
         "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b"),
    ),
    Flag(
        "bloodmnist", "multi-class", 3,
        # Index 3 is spelled as in medmnist's INFO (no space before the parenthesis).
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
         "monocyte", "neutrophil", "platelet"),
        (11959, 1712, 3421),
        ("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
         "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601"),
    ),
    Flag(
        "tissuemnist", "multi-class", 1,
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
         "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
         "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
        (165466, 23640, 47280),
        ("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
         "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c"),
    ),
    Flag(
        "organamnist", "multi-class", 1, ORGAN_CLASSES,
        (34561, 6491, 17778),
        ("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
         "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170"),
    ),
    Flag(
        "organcmnist", "multi-class", 1, ORGAN_CLASSES,
        (12975, 2392, 8216),
        ("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
         "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1"),
    ),
    Flag(
        "organsmnist", "multi-class", 1, ORGAN_CLASSES,
        (13932, 2452, 8827),
        ("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
         "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1"),
    ),
)  # fmt: skip


def npz_filename(flag: str, size: int) -> str:
    """``pathmnist.npz`` for size 28, ``pathmnist_224.npz`` otherwise (medmnist/dataset.py)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def table_name(flag: str, size: int) -> str:
    """Store name: the flag at size 28, ``flag@size`` otherwise, so sizes never share a name."""
    return flag if size == 28 else f"{flag}@{size}"


def medmnist_present(flag: Flag, root: Path, size: int = 28) -> bool:
    """True if ``<root>/<flag>[_<size>].npz`` exists."""
    return (root / npz_filename(flag.name, size)).is_file()


def open_split_images(flag: Flag, path: Path, split: str, size: int) -> NPZImages:
    """The ``<split>_images`` array, checked to be uint8 ``(N, S, S)`` or ``(N, S, S, 3)``.

    Raises:
        DatasetError: Naming the file and key, for a missing key or another shape or dtype.
    """
    key = f"{split}_images"
    images = NPZImages(path, key)
    expected = (size, size) if flag.channels == 1 else (size, size, 3)
    if images.shape[1:] != expected or images.dtype != np.uint8:
        kind = "grey" if flag.channels == 1 else "RGB"
        raise DatasetError(
            f"{path} (array {key!r}): {flag.name} at size {size} holds {kind} uint8 images of "
            f"shape (N, {', '.join(map(str, expected))}); found shape {images.shape}, dtype "
            f"{images.dtype}. Is it the file of another size or flag?"
        )
    return images


def load_member(path: Path, key: str) -> np.ndarray:
    """One array of an ``.npz``, fully loaded (for the small label arrays).

    Raises:
        DatasetError: Naming the file and key, for a missing key or unreadable data.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise DatasetError(f"{path}: no array {key!r}; found {sorted(z.files)}")
            value = z[key]
    except DatasetError:
        raise
    except READ_ERRORS as err:
        raise DatasetError(
            f"{path} (array {key!r}): unreadable ({type(err).__name__}: {err}); the file may be "
            "truncated or corrupt: delete it and download it again"
        ) from err
    if not isinstance(value, np.ndarray):  # np.load hands back raw bytes for a non-.npy member
        raise DatasetError(
            f"{path} (array {key!r}): unreadable (the member is not an .npy array); the file is "
            "corrupt: delete it and download it again"
        )
    return value


def read_split_labels(flag: Flag, path: Path, split: str, n: int) -> np.ndarray:
    """``(n,)`` int32 class indices, or ``(n, 14)`` uint8 multi-hot for ChestMNIST.

    Raises:
        DatasetError: Naming the file, key and row, for another shape, a non-integer dtype or a
            value outside the classes (0/1 for multi-label).
    """
    key = f"{split}_labels"
    y = load_member(path, key)
    width = len(flag.classes) if flag.multilabel else 1
    if y.shape != (n, width):
        raise DatasetError(
            f"{path} (array {key!r}): expected shape ({n}, {width}) to match {n} images; "
            f"found {y.shape}"
        )
    if y.dtype.kind not in "biu":
        raise DatasetError(f"{path} (array {key!r}): labels must be integers; found {y.dtype}")
    high = 1 if flag.multilabel else len(flag.classes) - 1
    bad = (y < 0) | (y > high)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DatasetError(
            f"{path} (array {key!r}): row {row} has value {y[row, col].item()} (column {col}); "
            f"{flag.name} labels are 0..{high}"
        )
    return y.astype(np.uint8) if flag.multilabel else y[:, 0].astype(np.int32)


def read_medmnist(flag: Flag, root: str | os.PathLike[str], size: int = 28) -> SampleTable:
    """Read ``<root>/<flag>[_<size>].npz`` into a SampleTable (official train/val/test).

    Ids are ``train/000123``; sources ``pathmnist_64.npz#train_images[123]``. Images stay on disk
    and are read lazily (see :class:`~featlab.datasets.array_sources.NPZImages` for memory).

    Raises:
        DatasetError: Missing file, or a missing, unreadable or malformed array (named).
    """
    root = Path(root).expanduser()
    filename = npz_filename(flag.name, size)
    path = root / filename
    info = INFOS[flag.name]
    if not path.is_file():
        raise missing_dataset_error(info, root, f"{filename} not found", expected=(filename,))
    ids, labels, splits, sources, parts = [], [], [], [], []
    for split in SPLITS:
        images = open_split_images(flag, path, split, size)
        y = read_split_labels(flag, path, split, len(images))
        ids += [f"{split}/{i:06d}" for i in range(len(y))]
        sources += [f"{filename}#{split}_images[{i}]" for i in range(len(y))]
        splits += [split] * len(y)
        labels.append(y)
        parts.append(images)
    return SampleTable(
        name=table_name(flag.name, size),
        ids=ids,
        labels=np.concatenate(labels),
        splits=splits,
        sources=sources,
        classes=flag.classes,
        task=flag.task,
        images=ConcatImages(parts),
        attrs={
            "source": f"MedMNIST v3 ({ZENODO})",
            "flag": flag.name,
            "size": size,
            "file": filename,
            "root": str(root.resolve()),
            "split_method": "official (train/val/test arrays of the npz)",
            "medmnist_task": flag.medmnist_task,
            "channels": flag.channels,
            "to_rgb": "grey replicated to 3 channels" if flag.channels == 1 else "as stored",
            "licence": flag.licence,
        },
    )


def downloads(flag: Flag) -> dict[int, tuple[DownloadFile, ...]]:
    """The one ``.npz`` per size, from Zenodo record 10519652, with its MD5."""
    out = {}
    for size, md5 in zip(SIZES, flag.md5, strict=True):
        name = npz_filename(flag.name, size)
        out[size] = (DownloadFile(url=f"{ZENODO}/files/{name}?download=1", filename=name, md5=md5),)
    return out


def register_flag(flag: Flag) -> DatasetInfo:
    size_choices = "|".join(map(str, SIZES))
    return register_dataset(
        DatasetInfo(
            name=flag.name,
            task=flag.task,
            classes=flag.classes,
            folder="medmnist",
            expected=tuple(f"{npz_filename(flag.name, s)} (@{s})" for s in SIZES),
            reader=partial(read_medmnist, flag),
            present=partial(medmnist_present, flag),
            url=ZENODO,
            access=f"open ({flag.licence}); featlab download {flag.name}[@{size_choices}]",
            split_sizes=dict(zip(SPLITS, flag.split_sizes, strict=True)),
            downloads=downloads(flag),
            sizes=SIZES,
        )
    )


INFOS = {flag.name: register_flag(flag) for flag in FLAGS}
