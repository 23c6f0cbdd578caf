"""The dataset registry: named datasets, where their files live, and what to do when they don't.

Each dataset lives in its own folder ``<datasets-dir>/<folder>/`` with its files exactly as
distributed, where the datasets dir is ``$FEATLAB_DATA`` or else ``~/.cache/featlab/datasets``
(DESIGN section 5). ``data_root`` (``--data-root``) points at one dataset's folder directly.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featlab.datasets.table import SampleTable
from featlab.errors import DatasetError, UnknownDatasetError

DATA_ENV = "FEATLAB_DATA"
DEFAULT_DATASETS_DIR = Path("~/.cache/featlab/datasets")

# Default metric per task (DESIGN section 6): AUC for binary, quadratic kappa for ordinal,
# mean AUC over labels for multi-label; a dataset may override it (ISIC: balanced accuracy).
DEFAULT_METRICS = {
    "binary": "auc",
    "multiclass": "accuracy",
    "ordinal": "quadratic_kappa",
    "multilabel": "mean_auc",
}


@dataclass(frozen=True)
class DownloadFile:
    """One file of an openly downloadable dataset, with what it must hash to.

    Attributes:
        url: Where to fetch it.
        filename: Name in the dataset's folder.
        md5: Hex MD5 of the file as downloaded (``None`` if unpublished).
        sha256: Hex SHA-256 as downloaded (``None`` if unpublished).
        size: Bytes, when known (for progress and a quick sanity check).
    """

    url: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    Attributes:
        name: What users type (``pcam``, ``pneumoniamnist``).
        task: ``binary``, ``multiclass``, ``ordinal`` or ``multilabel``.
        classes: Class (or label) names in index order.
        folder: Folder name under the datasets dir (MedMNIST flags share ``medmnist``).
        expected: Files or folders expected inside the dataset folder, as distributed (shown in
            errors and by ``featlab datasets``).
        reader: ``reader(root, **options) -> SampleTable`` for the files under ``root``.
        present: ``present(root, **options) -> bool``: are the files there?
        url: Where to get the data.
        access: How to get it: licence, login, ``featlab download NAME``.
        split_sizes: Official split sizes, for the listing (``{}`` when not fixed).
        metric: Default metric; ``None`` means the task's default.
        downloads: Files ``featlab download`` fetches (openly downloadable sets only), keyed by
            size for MedMNIST (``{28: (...), 224: (...)}``), else under key 0.
        sizes: Image sizes a name may ask for with ``@size`` (MedMNIST); empty otherwise.
        options: Reader options and their allowed values (e.g. ``{"uncertain": (...)}``).
        missing: ``missing(root, **options) -> names``: which expected files are absent, so a
            partly present dataset is reported exactly (default: all of ``expected``).
    """

    name: str
    task: str
    classes: tuple[str, ...]
    folder: str
    expected: tuple[str, ...]
    reader: Callable[..., SampleTable]
    present: Callable[..., bool]
    url: str
    access: str
    split_sizes: dict[str, int] = field(default_factory=dict)
    metric: str | None = None
    downloads: dict[int, tuple[DownloadFile, ...]] = field(default_factory=dict)
    sizes: tuple[int, ...] = ()
    options: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    missing: Callable[..., Sequence[str]] | None = None

    @property
    def default_metric(self) -> str:
        return self.metric or DEFAULT_METRICS[self.task]


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry.

    Raises:
        ValueError: The name is taken (names are never silently replaced).
    """
    if info.name in _REGISTRY:
        raise ValueError(f"dataset {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def list_datasets() -> list[DatasetInfo]:
    """Every registered dataset, sorted by name."""
    _load_builtin()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def parse_name(spec: str) -> tuple[str, int | None]:
    """``"pneumoniamnist@224"`` -> ``("pneumoniamnist", 224)``; ``"pcam"`` -> ``("pcam", None)``.

    Raises:
        UnknownDatasetError: A malformed ``@size`` suffix.
    """
    name, sep, size = spec.partition("@")
    if not sep:
        return name, None
    if not size.isdigit():
        raise UnknownDatasetError(f"dataset {spec!r}: the size after '@' must be an integer")
    return name, int(size)


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered dataset called ``name`` (without an ``@size`` suffix).

    Raises:
        UnknownDatasetError: No such dataset; close names are suggested.
    """
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}.{hint} Registered: {', '.join(sorted(_REGISTRY))}; or use "
            "folder:PATH or csv:PATH. `featlab datasets` lists them with where they were found."
        )
    return _REGISTRY[name]


def datasets_dir() -> Path:
    """``$FEATLAB_DATA`` if set, else ``~/.cache/featlab/datasets``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else DEFAULT_DATASETS_DIR.expanduser()


def dataset_root(info: DatasetInfo, data_root: str | os.PathLike[str] | None = None) -> Path:
    """The folder the dataset's files are looked for in: ``data_root`` or its default folder."""
    if data_root is not None:
        return Path(data_root).expanduser()
    return datasets_dir() / info.folder


def missing_dataset_error(
    info: DatasetInfo, root: Path, problem: str, expected: tuple[str, ...] | None = None
) -> DatasetError:
    """A DatasetError listing what was expected, where, what was found and how to get it."""
    if root.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        found = (
            ", ".join(entries[:15]) + (f" ... (+{len(entries) - 15})" if len(entries) > 15 else "")
            if entries
            else "an empty folder"
        )
    else:
        found = "nothing (the folder does not exist)"
    lines = [
        f"dataset {info.name!r}: {problem}",
        f"  looked in: {root}",
        "  expected there: " + ", ".join(expected or info.expected),
        f"  found: {found}",
        f"  get it: {info.url} ({info.access})",
        f"  put the files in {datasets_dir() / info.folder} (set ${DATA_ENV} to move the datasets "
        "dir), or point --data-root at the folder that holds them",
    ]
    return DatasetError("\n".join(lines))


def load_registered(
    spec: str, *, data_root: str | os.PathLike[str] | None = None, **options: Any
) -> SampleTable:
    """Read a registered dataset (``name`` or ``name@size``) from disk.

    Raises:
        UnknownDatasetError: Unknown name, size or option value.
        DatasetError: The files are missing or malformed (the message says what to do).
    """
    name, size = parse_name(spec)
    info = get_dataset_info(name)
    if size is not None or info.sizes:
        if not info.sizes:
            raise UnknownDatasetError(f"dataset {name!r} has no size variants; drop '@{size}'")
        size = info.sizes[0] if size is None else size
        if size not in info.sizes:
            raise UnknownDatasetError(
                f"dataset {name!r} comes in sizes {list(info.sizes)}; got @{size}"
            )
        options["size"] = size
    for key, value in options.items():
        allowed = info.options.get(key) if key != "size" else info.sizes
        if allowed is None:
            raise UnknownDatasetError(f"dataset {name!r} takes no option {key!r}")
        if value not in allowed:
            raise UnknownDatasetError(
                f"dataset {name!r}: {key}={value!r} is not one of {list(allowed)}"
            )
    root = dataset_root(info, data_root)
    if not info.present(root, **options):
        absent = list(info.missing(root, **options)) if info.missing else []
        problem = f"missing {', '.join(absent)}" if absent else "files not found"
        raise missing_dataset_error(info, root, problem)
    table = info.reader(root, **options)
    # Recorded with the dataset in the store, so evaluations score with the dataset's metric.
    table.attrs.setdefault("metric", info.default_metric)
    return table


def _load_builtin() -> None:
    """Import the modules that register the built-in datasets (once)."""
    import featlab.datasets.builtin  # noqa: F401
