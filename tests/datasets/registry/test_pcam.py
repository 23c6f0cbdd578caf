"""``pcam``: synthetic PatchCamelyon HDF5 files in the official Zenodo layout."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from featlab.datasets import get_dataset_info, load_dataset
from featlab.datasets.array_sources import ConcatImages, HDF5RowImages, contiguous_runs
from featlab.datasets.pcam import pcam_present, read_pcam
from featlab.errors import BadImageError, DatasetError

h5py = pytest.importorskip("h5py")

COUNTS = {"train": 6, "valid": 4, "test": 4}  # on-disk split names


def name(split: str, part: str) -> str:
    return f"camelyonpatch_level_2_split_{split}_{part}.h5"


def write_pcam(root: Path, *, seed: int = 0, counts=None) -> dict[str, tuple]:
    """The six ``.h5`` files: x (N, 96, 96, 3) uint8, y (N, 1, 1, 1) uint8; returns the arrays."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (counts or COUNTS).items():
        x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        with h5py.File(root / name(split, "x"), "w") as f:
            f.create_dataset("x", data=x)
        with h5py.File(root / name(split, "y"), "w") as f:
            f.create_dataset("y", data=y)
        arrays[split] = (x, y)
    return arrays


def gzip_file(path: Path) -> Path:
    gz = path.with_name(path.name + ".gz")
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    path.unlink()
    return gz


def rgb(img) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


@pytest.fixture
def pcam_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "pcam"
    return root, write_pcam(root)


def test_reads_the_three_splits(pcam_root):
    root, arrays = pcam_root
    t = load_dataset("pcam", data_root=root)
    assert t.name == "pcam"
    assert len(t) == 14
    assert t.split_counts() == {"train": 6, "val": 4, "test": 4}
    assert t.task == "binary"
    assert t.classes == ("no_tumor", "tumor")
    assert t.ids[[0, 5, 6, 10, 13]].tolist() == [
        "train/000000",
        "train/000005",
        "val/000000",
        "test/000000",
        "test/000003",
    ]
    assert t.sources[7] == "camelyonpatch_level_2_split_valid_x.h5#1"
    np.testing.assert_array_equal(t.labels, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    assert t.labels.dtype == np.int32
    # A batch straddling train/valid and a sparse pick from test, in the order asked.
    out = t.images.load([13, 5, 6, 7])
    np.testing.assert_array_equal(rgb(out[0]), arrays["test"][0][3])
    np.testing.assert_array_equal(rgb(out[1]), arrays["train"][0][5])
    np.testing.assert_array_equal(rgb(out[2]), arrays["valid"][0][0])
    np.testing.assert_array_equal(rgb(out[3]), arrays["valid"][0][1])
    assert t.attrs["licence"] == "CC0"


def test_registry_entry():
    info = get_dataset_info("pcam")
    assert info.folder == "pcam"
    assert info.default_metric == "auc"
    assert info.split_sizes == {"train": 262144, "val": 32768, "test": 32768}
    assert info.url == "https://zenodo.org/records/2546921"
    assert info.access == "open (CC0); featlab download pcam"
    files = {f.filename: f for f in info.downloads[0]}
    assert len(files) == 6
    # The README swaps the md5s of valid and test; these are the corrected ones.
    valid_x = files["camelyonpatch_level_2_split_valid_x.h5.gz"]
    assert valid_x.md5 == "d5b63470df7cfa627aeec8b9dc0c066e"
    assert valid_x.size == 805_965_320
    assert valid_x.url == (
        "https://zenodo.org/records/2546921/files/"
        "camelyonpatch_level_2_split_valid_x.h5.gz?download=1"
    )
    test_y = files["camelyonpatch_level_2_split_test_y.h5.gz"]
    assert test_y.md5 == "60a7035772fbdb7f34eb86d4420cf66a"
    assert test_y.sha256 == "0a522005fccc8bbd04c5a117bfaf81d8da2676f03a29d7499f71d0a0bd6068ef"


def test_gzipped_files_are_decompressed_once(pcam_root, capsys):
    root, _ = pcam_root
    reference = load_dataset("pcam", data_root=root)
    expected = [rgb(img) for img in reference.images.load(range(14))]
    gz = [gzip_file(root / name(s, p)) for s in COUNTS for p in ("x", "y")]
    assert pcam_present(root)
    t = load_dataset("pcam", data_root=root)
    err = capsys.readouterr().err
    assert "decompressing camelyonpatch_level_2_split_train_x.h5.gz" in err
    assert all(p.with_suffix("").is_file() for p in gz)
    assert sorted(p.name for p in root.iterdir() if p.suffix == ".part") == []
    np.testing.assert_array_equal(t.labels, reference.labels)
    for a, img in zip(expected, t.images.load(range(14)), strict=True):
        np.testing.assert_array_equal(rgb(img), a)
    load_dataset("pcam", data_root=root)  # the .h5 files are used from now on
    assert "decompressing" not in capsys.readouterr().err


def test_corrupt_gzip_leaves_no_h5(pcam_root):
    root, _ = pcam_root
    gz = gzip_file(root / name("test", "x"))
    gz.write_bytes(gz.read_bytes()[:200])  # truncated download
    with pytest.raises(DatasetError, match=r"split_test_x\.h5\.gz: cannot decompress"):
        load_dataset("pcam", data_root=root)
    assert not (root / name("test", "x")).exists()
    assert not [p for p in root.iterdir() if p.suffix == ".part"]


def test_missing_files_are_listed_exactly(pcam_root):
    root, _ = pcam_root
    (root / name("test", "x")).unlink()
    gzip_file(root / name("test", "y"))  # present as .gz: not missing
    (root / name("valid", "y")).unlink()
    assert not pcam_present(root)
    with pytest.raises(DatasetError) as exc:
        read_pcam(root)
    msg = str(exc.value)
    assert (
        "2 of 6 files missing: camelyonpatch_level_2_split_valid_y.h5, "
        "camelyonpatch_level_2_split_test_x.h5\n" in msg
    )
    assert "featlab download pcam" in msg
    with pytest.raises(DatasetError, match=r"split_test_x\.h5 \(or .*\.gz\)"):
        load_dataset("pcam", data_root=root)


def test_featlab_data_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_pcam(tmp_path / "pcam", counts={"train": 2, "valid": 1, "test": 1})
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path))
    t = load_dataset("pcam")
    assert len(t) == 4
    assert t.attrs["root"] == str((tmp_path / "pcam").resolve())


def _rewrite(root: Path, split: str, part: str, data: np.ndarray) -> None:
    with h5py.File(root / name(split, part), "w") as f:
        f.create_dataset(part, data=data)


@pytest.mark.parametrize(
    ("split", "part", "data", "match"),
    [
        ("valid", "y", np.array([0, 1, 2, 1], np.uint8).reshape(4, 1, 1, 1),
         r"split_valid_y\.h5: label 2 at row 2 is not 0 or 1"),
        ("test", "y", np.zeros(4, np.uint8),
         r"split_test_y\.h5: 'y' must have shape \(N, 1, 1, 1\)"),
        ("train", "x", np.zeros((6, 64, 64, 3), np.uint8),
         r"split_train_x\.h5: 'x' must have shape \(N, 96, 96, 3\); got \(6, 64, 64, 3\)"),
        ("train", "x", np.zeros((6, 96, 96, 3), np.float32),
         r"split_train_x\.h5: 'x' must be uint8 RGB; got dtype float32"),
        ("test", "x", np.zeros((3, 96, 96, 3), np.uint8),
         r"split_test_x\.h5 has 3 images but camelyonpatch_level_2_split_test_y\.h5 has 4"),
    ],
)  # fmt: skip
def test_malformed_files(pcam_root, split, part, data, match):
    root, _ = pcam_root
    _rewrite(root, split, part, data)
    with pytest.raises(DatasetError, match=match):
        load_dataset("pcam", data_root=root)


def test_wrong_key(pcam_root):
    root, _ = pcam_root
    with h5py.File(root / name("valid", "y"), "w") as f:
        f.create_dataset("labels", data=np.zeros((4, 1, 1, 1), np.uint8))
    with pytest.raises(
        DatasetError, match=r"split_valid_y\.h5: no dataset 'y'; found \['labels'\]"
    ):
        load_dataset("pcam", data_root=root)


@pytest.mark.parametrize("part", ["x", "y"])
def test_truncated_hdf5(pcam_root, part):
    root, _ = pcam_root
    path = root / name("train", part)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        DatasetError, match=rf"split_train_{part}\.h5: cannot .*truncated or corrupt"
    ):
        load_dataset("pcam", data_root=root)


def test_hdf5_row_images_reads_only_requested_runs(pcam_root, monkeypatch):
    root, arrays = pcam_root
    src = HDF5RowImages(root / name("train", "x"), "x")
    reads = []
    real = HDF5RowImages._read
    monkeypatch.setattr(
        HDF5RowImages, "_read", lambda self, lo, hi: reads.append((lo, hi)) or real(self, lo, hi)
    )
    out = src.load([5, 0, 1, 1])
    assert reads == [(0, 2), (5, 6)]  # never rows 2..4
    np.testing.assert_array_equal(rgb(out[0]), arrays["train"][0][5])
    np.testing.assert_array_equal(rgb(out[3]), arrays["train"][0][1])
    assert contiguous_runs(np.array([3, 4, 5, 9, 10])) == [(3, 6), (9, 11)]
    clone = pickle.loads(pickle.dumps(ConcatImages([src, src])))
    assert clone.parts[0]._file is None
    assert len(clone) == 12
    np.testing.assert_array_equal(rgb(clone.load([11])[0]), arrays["train"][0][5])


def test_unreadable_rows_are_bad_images(pcam_root, monkeypatch):
    root, _ = pcam_root
    src = HDF5RowImages(root / name("test", "x"), "x")

    def broken(self, lo, hi):
        raise OSError("Can't synchronously read data (inflate() failed)")

    monkeypatch.setattr(HDF5RowImages, "_read", broken)
    (err,) = src.load([2])
    assert isinstance(err, BadImageError)
    assert "camelyonpatch_level_2_split_test_x.h5#x[2]: cannot read" in str(err)


def test_extract_through_the_cli(pcam_root, tmp_path: Path):
    from click.testing import CliRunner

    from featlab.cli.main import cli
    from featlab.store import open_store

    root, _ = pcam_root
    store = tmp_path / "s.zarr"
    args = ["extract", "--model", "timm:test_vit", "--random-init", "--img-size", "32"]
    args += ["--workers", "0", "pcam", "--data-root", str(root), "--store", str(store)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "pcam: extracted 14 images" in result.output
    ds = open_store(store)["pcam"]
    assert ds.n == 14
    assert ds.embeddings("timm:test_vit").shape[0] == 14
    assert ds.ids[6] == "val/000000"


def _load_pixels(args) -> list[np.ndarray]:
    source, rows = args
    return [np.asarray(img) for img in source.load(rows)]


def test_sources_work_in_forked_workers(pcam_root):
    import multiprocessing

    root, arrays = pcam_root
    t = load_dataset("pcam", data_root=root)
    t.images.load([0])  # the parent holds open handles when the workers fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        (got,) = pool.map(_load_pixels, [(t.images, [9, 10])])
    np.testing.assert_array_equal(got[0], arrays["valid"][0][3])
    np.testing.assert_array_equal(got[1], arrays["test"][0][0])


def test_partly_present_pcam_names_exactly_the_missing_files(tmp_path):
    from featlab.datasets import load_dataset
    from featlab.errors import DatasetError

    root = tmp_path / "pcam"
    root.mkdir()
    (root / "camelyonpatch_level_2_split_train_x.h5").write_bytes(b"")
    with pytest.raises(DatasetError) as err:
        load_dataset("pcam", data_root=root)
    first = str(err.value).splitlines()[0]
    assert "missing camelyonpatch_level_2_split_train_y.h5" in first
    assert "split_train_x.h5," not in first  # present, so not reported missing
