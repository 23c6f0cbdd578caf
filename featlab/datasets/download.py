"""``featlab download``: fetch openly downloadable datasets into their folder, safely.

Standard library only (``urllib``), so it works wherever featlab installs. Each file is

- **resumable**: bytes go to ``<file>.part``; a rerun continues it with ``Range: bytes=N-``. A
  server that ignores the range (``200`` instead of ``206``) is answered by restarting from zero;
- **verified**: MD5 and/or SHA-256 as published (datasets.md sections 1.1 and 2), hashed while
  streaming, plus over the part already on disk when resuming;
- **atomic**: the final name appears only after verification (``os.replace``), so a file under
  its final name is always complete;
- **never silently wrong**: a checksum mismatch moves the bytes aside to ``<file>.corrupt`` and
  raises :class:`~featlab.errors.DownloadError`; a network error keeps the part and says that the
  same command resumes it.

Files stay exactly as distributed (PCam's ``*.h5.gz`` included: its reader decompresses them once).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from featlab._version import __version__
from featlab.datasets.registry import (
    DatasetInfo,
    DownloadFile,
    dataset_root,
    get_dataset_info,
    parse_name,
)
from featlab.errors import DatasetError, DownloadError, UnknownDatasetError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
PART_SUFFIX = ".part"
CORRUPT_SUFFIX = ".corrupt"
HASHES = ("md5", "sha256")
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class DownloadPlan:
    """What ``featlab download NAME[@size]`` would do.

    Attributes:
        info: The registered dataset.
        size: The image size asked for (MedMNIST), else ``None``.
        root: The folder the files go to.
        files: The files to fetch; empty when the dataset needs a manual download.
    """

    info: DatasetInfo
    size: int | None
    root: Path
    files: tuple[DownloadFile, ...]

    @property
    def manual(self) -> bool:
        """True if featlab cannot fetch this dataset (Kaggle login, licence, ...)."""
        return not self.files

    @property
    def reader_options(self) -> dict[str, Any]:
        """Options telling ``info.present`` which variant to look for."""
        return {} if self.size is None else {"size": self.size}

    def present(self) -> bool:
        """Are the dataset's files already in :attr:`root`?"""
        return bool(self.info.present(self.root, **self.reader_options))


@dataclass(frozen=True)
class FileResult:
    """The outcome for one file.

    Attributes:
        filename: The file's name in the dataset folder.
        path: Where it now is.
        status: ``present`` (already there, verified), ``downloaded``, ``resumed`` (continued a
            part) or ``restarted`` (the server ignored the range; fetched from zero).
        nbytes: Size of the file.
        verified: Checks that passed (``md5``, ``sha256``, ``size``); empty if none published.
        resumed_from: Bytes already on disk when the transfer resumed.
        set_aside: A previous file under the final name that failed verification and was moved
            to ``<file>.corrupt``, else ``None``.
    """

    filename: str
    path: Path
    status: str
    nbytes: int
    verified: tuple[str, ...]
    resumed_from: int = 0
    set_aside: Path | None = None


def plan_download(spec: str, data_root: str | os.PathLike[str] | None = None) -> DownloadPlan:
    """Resolve ``NAME[@size]`` to the files to fetch and the folder they go to.

    Raises:
        UnknownDatasetError: Unknown name, or a size the dataset does not offer.
        DatasetError: The dataset is downloadable, but not in the size asked for.
    """
    name, size = parse_name(spec)
    info = get_dataset_info(name)
    size = _resolve_size(info, size)
    files = info.downloads.get(size or 0, ())
    if info.downloads and not files:
        offered = sorted(info.downloads)
        raise DatasetError(
            f"dataset {name!r}: no download is listed for size {size}; downloadable: {offered}"
        )
    return DownloadPlan(info=info, size=size, root=dataset_root(info, data_root), files=files)


def download_dataset(
    plan: DownloadPlan,
    *,
    progress: bool | None = None,
    timeout: float = TIMEOUT_S,
    on_file: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Fetch every file of ``plan`` into ``plan.root``, in order.

    Args:
        plan: From :func:`plan_download`; must not be manual.
        progress: Show a progress bar; ``None`` means only when stderr is a terminal.
        timeout: Seconds any single connect or read may block.
        on_file: Called with each file's result as soon as it is done.

    Raises:
        DatasetError: The dataset needs a manual download (see :func:`manual_steps`).
        DownloadError: A network error or checksum mismatch (the message says what to do).
    """
    if plan.manual:
        raise DatasetError(manual_steps(plan))
    results = []
    for file in plan.files:
        result = download_file(file, plan.root, progress=progress, timeout=timeout)
        results.append(result)
        if on_file is not None:
            on_file(result)
    return results


def download_file(
    file: DownloadFile,
    folder: Path,
    *,
    progress: bool | None = None,
    timeout: float = TIMEOUT_S,
) -> FileResult:
    """Make ``folder/file.filename`` a verified copy of ``file.url`` (skip if already so).

    Raises:
        DownloadError: Network error (the ``.part`` is kept for resuming) or checksum mismatch
            (the bytes are moved to ``<file>.corrupt``; nothing appears under the final name).
    """
    final = _target(file, folder)
    set_aside = None
    if final.exists():
        bad = _mismatches(file, _hash_file(final, file), final.stat().st_size)
        if not bad:
            return _result(file, final, "present", 0, None)
        # A wrong file under the final name is never used, nor silently overwritten.
        set_aside = _set_aside(final, final)
    part = final.with_name(final.name + PART_SUFFIX)
    status, resumed_from, digests = _fetch(file, part, progress, timeout)
    bad = _mismatches(file, digests, part.stat().st_size)
    if bad:
        raise _checksum_error(file, _set_aside(part, final), bad)
    os.replace(part, final)
    return _result(file, final, status, resumed_from, set_aside)


def manual_steps(plan: DownloadPlan) -> str:
    """The steps to get a dataset featlab cannot download itself (Kaggle, Stanford, NIH Box)."""
    info = plan.info
    expected = "\n".join(f"       {item}" for item in info.expected)
    return "\n".join(
        [
            f"{info.name} cannot be downloaded by featlab: {info.access}",
            f"  1. get it from {info.url}",
            f"  2. put the files, exactly as distributed, in {plan.root}",
            "     (or anywhere, and pass --data-root PATH to featlab extract); expected there:",
            expected,
            f"  3. check: `featlab datasets` shows {info.name} as found",
        ]
    )


# -- resolving ---------------------------------------------------------------------------------
def _resolve_size(info: DatasetInfo, size: int | None) -> int | None:
    """The same size rules as loading: no ``@size`` on unsized sets; default is the first."""
    if not info.sizes:
        if size is not None:
            raise UnknownDatasetError(f"dataset {info.name!r} has no size variants; drop '@{size}'")
        return None
    size = info.sizes[0] if size is None else size
    if size not in info.sizes:
        raise UnknownDatasetError(
            f"dataset {info.name!r} comes in sizes {list(info.sizes)}; got @{size}"
        )
    return size


def _target(file: DownloadFile, folder: Path) -> Path:
    if not file.filename or Path(file.filename).name != file.filename:
        raise DatasetError(f"download filename {file.filename!r} must be a plain file name")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / file.filename


# -- transfer ----------------------------------------------------------------------------------
def _fetch(
    file: DownloadFile, part: Path, progress: bool | None, timeout: float
) -> tuple[str, int, dict[str, str]]:
    """Fill ``part`` with the whole file; returns (status, resumed_from, hex digests)."""
    offset = part.stat().st_size if part.exists() else 0
    if file.size is not None and offset > file.size:
        offset = 0  # longer than the published size: cannot be a prefix of the file
    hashes = _new_hashes(file)
    if offset:
        _hash_into(part, hashes)
        if offset == file.size:
            return "resumed", offset, _hexdigests(hashes)
    headers = {"User-Agent": f"featlab/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with urlopen(Request(file.url, headers=headers), timeout=timeout) as resp:
            start = _start_of(resp, offset, file, part)
            if start != offset:
                hashes = _new_hashes(file)  # server ignored the range: the body starts at zero
            _stream(resp, part, start, _total_of(resp, start) or file.size, hashes, progress, file)
    except HTTPError as err:
        if err.code == 416 and offset:
            # Nothing after byte N: the part is (at least) the whole file; the checksum decides.
            return "resumed", offset, _hexdigests(hashes)
        raise _network_error(file, part, f"HTTP {err.code} {err.reason}") from err
    except URLError as err:
        raise _network_error(file, part, str(err.reason)) from err
    except (OSError, HTTPException) as err:
        raise _network_error(file, part, f"{type(err).__name__}: {err}") from err
    status = "downloaded" if not offset else "resumed" if start == offset else "restarted"
    return status, start, _hexdigests(hashes)


def _start_of(resp: Any, offset: int, file: DownloadFile, part: Path) -> int:
    """The byte the response body starts at: ``offset`` for a 206, 0 for a 200."""
    if resp.status == 200:
        return 0
    content_range = resp.headers.get("Content-Range", "")
    match = CONTENT_RANGE.fullmatch(content_range.strip())
    if resp.status != 206 or match is None or int(match[1]) != offset:
        raise DownloadError(
            f"{file.url}: asked for bytes from {offset}, the server answered HTTP {resp.status} "
            f"with Content-Range {content_range!r}; delete {part} to start over"
        )
    return offset


def _total_of(resp: Any, start: int) -> int | None:
    """Total size of the file as the server announces it, if it does."""
    match = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match and match[3] != "*":
        return int(match[3])
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def _stream(
    resp: Any,
    part: Path,
    start: int,
    total: int | None,
    hashes: dict[str, Any],
    progress: bool | None,
    file: DownloadFile,
) -> None:
    """Append the body to ``part`` (truncate first when it starts at zero), hashing it."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    done = start
    with (
        open(part, "ab" if start else "wb") as out,
        tqdm(
            total=total,
            initial=start,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=file.filename,
            disable=not show,
            leave=False,
        ) as bar,
    ):
        # read1 returns what has arrived (read(n) waits for all n bytes, so a timeout would lose
        # them); it ends at EOF, and each call is bounded by the socket timeout.
        read = getattr(resp, "read1", resp.read)
        while chunk := read(CHUNK_BYTES):
            out.write(chunk)
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
            done += len(chunk)
            if file.size is not None and done > file.size:
                break  # more than published: stop here; the size check rejects it
        out.flush()
        os.fsync(out.fileno())
    if total is not None and done < total:
        # http.client returns b"" on an early close instead of raising: check the length.
        raise _network_error(file, part, f"connection closed after {done} of {total} bytes")


# -- verification ------------------------------------------------------------------------------
def _new_hashes(file: DownloadFile) -> dict[str, Any]:
    return {
        name: hashlib.new(name, usedforsecurity=False) for name in HASHES if getattr(file, name)
    }


def _hexdigests(hashes: dict[str, Any]) -> dict[str, str]:
    return {name: h.hexdigest() for name, h in hashes.items()}


def _hash_into(path: Path, hashes: dict[str, Any]) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashes.values():
                h.update(chunk)


def _hash_file(path: Path, file: DownloadFile) -> dict[str, str]:
    hashes = _new_hashes(file)
    _hash_into(path, hashes)
    return _hexdigests(hashes)


def _mismatches(
    file: DownloadFile, digests: dict[str, str], nbytes: int
) -> list[tuple[str, str, str]]:
    """(check, expected, actual) for every published check the bytes fail."""
    bad = [
        (name, getattr(file, name).lower(), digest)
        for name, digest in digests.items()
        if digest != getattr(file, name).lower()
    ]
    if file.size is not None and nbytes != file.size:
        bad.append(("size", f"{file.size} bytes", f"{nbytes} bytes"))
    return bad


def _checks(file: DownloadFile) -> tuple[str, ...]:
    names = tuple(name for name in HASHES if getattr(file, name))
    return names + (("size",) if file.size is not None else ())


def _set_aside(path: Path, final: Path) -> Path:
    corrupt = final.with_name(final.name + CORRUPT_SUFFIX)
    os.replace(path, corrupt)
    return corrupt


def _result(
    file: DownloadFile, final: Path, status: str, resumed_from: int, set_aside: Path | None
) -> FileResult:
    return FileResult(
        filename=file.filename,
        path=final,
        status=status,
        nbytes=final.stat().st_size,
        verified=_checks(file),
        resumed_from=resumed_from,
        set_aside=set_aside,
    )


# -- errors ------------------------------------------------------------------------------------
def _checksum_error(
    file: DownloadFile, corrupt: Path, bad: list[tuple[str, str, str]]
) -> DownloadError:
    found = "; ".join(f"expected {name} {want}, got {got}" for name, want, got in bad)
    return DownloadError(
        f"checksum mismatch for {file.filename} from {file.url}: {found}. The bad file was kept "
        f"aside as {corrupt} and is not used. Run the same command again to download it afresh; "
        "if the mismatch repeats, the file at that URL is not the published one."
    )


def _network_error(file: DownloadFile, part: Path, reason: str) -> DownloadError:
    have = part.stat().st_size if part.exists() else 0
    kept = (
        f"the partial download ({have} bytes) is kept in {part}; run the same command again to "
        "resume it"
        if have
        else "nothing was saved; run the same command again to retry"
    )
    return DownloadError(f"downloading {file.url} failed: {reason}. {kept}.")
