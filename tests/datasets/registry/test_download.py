"""``featlab download``'s engine against a loopback HTTP server (127.0.0.1 only, never the net).

The server supports ``Range: bytes=N-`` and injects faults: cutting the first response after N
bytes, ignoring ranges, stalling. Every wait is bounded by a short timeout.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from featlab.datasets import register_dataset
from featlab.datasets.download import download_dataset, download_file, manual_steps, plan_download
from featlab.datasets.registry import DatasetInfo, DownloadFile
from featlab.errors import DatasetError, DownloadError, UnknownDatasetError

PAYLOAD = bytes(range(256)) * 20  # 5120 bytes
TIMEOUT = 5.0


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RangeHandler(BaseHTTPRequestHandler):
    """GET with optional ``Range: bytes=N-``; HTTP/1.0, so each response closes its connection."""

    def do_GET(self) -> None:
        state = self.server.state
        rng = self.headers.get("Range")
        state["requests"].append((self.path, rng))
        body = state["files"].get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and not state["ignore_range"]:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = state["cut_after"].pop(self.path, None)
        self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if self.path in state["stall"]:
            time.sleep(state["stall"][self.path])

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@pytest.fixture
def server():
    """A loopback server: ``server.state`` holds files, faults and the requests seen."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.state = {"files": {}, "requests": [], "cut_after": {}, "ignore_range": False, "stall": {}}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def serve(server, name: str, data: bytes, **published) -> DownloadFile:
    """Serve ``data`` at ``/name``; published checksums default to the true ones."""
    server.state["files"]["/" + name] = data
    checks = {"md5": md5(data), "sha256": sha256(data), "size": len(data)}
    return DownloadFile(url=f"{server.base}/{name}", filename=name, **{**checks, **published})


def ranges_seen(server) -> list:
    return [rng for _, rng in server.state["requests"]]


# -- the happy paths ---------------------------------------------------------------------------
def test_full_download_verified(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    result = download_file(file, tmp_path / "ds", progress=False, timeout=TIMEOUT)
    assert result.status == "downloaded"
    assert result.verified == ("md5", "sha256", "size")
    assert result.nbytes == len(PAYLOAD)
    assert (tmp_path / "ds" / "a.bin").read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["a.bin"]
    assert ranges_seen(server) == [None]


def test_already_present_is_verified_and_skipped(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    (tmp_path / "a.bin").write_bytes(PAYLOAD)
    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert result.status == "present"
    assert result.verified == ("md5", "sha256", "size")
    assert server.state["requests"] == []


def test_present_but_wrong_file_is_set_aside_and_fetched(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    (tmp_path / "a.bin").write_bytes(b"stale")
    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert result.status == "downloaded"
    assert result.set_aside == tmp_path / "a.bin.corrupt"
    assert (tmp_path / "a.bin.corrupt").read_bytes() == b"stale"
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_only_md5_published(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD, sha256=None, size=None)
    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert result.verified == ("md5",)


# -- interruption and resume -------------------------------------------------------------------
@pytest.mark.parametrize("size_published", [True, False])
def test_interrupted_transfer_resumes_with_range(server, tmp_path: Path, size_published) -> None:
    file = serve(server, "a.bin", PAYLOAD, **({} if size_published else {"size": None}))
    server.state["cut_after"]["/a.bin"] = 1000
    with pytest.raises(DownloadError, match="connection closed after 1000 of 5120 bytes") as err:
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    part = tmp_path / "a.bin.part"
    assert f"downloading {file.url} failed" in str(err.value)
    assert f"the partial download (1000 bytes) is kept in {part}" in str(err.value)
    assert "run the same command again to resume it" in str(err.value)
    assert part.read_bytes() == PAYLOAD[:1000]
    assert not (tmp_path / "a.bin").exists()

    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert ranges_seen(server) == [None, "bytes=1000-"]
    assert (result.status, result.resumed_from) == ("resumed", 1000)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    server.state["ignore_range"] = True
    # A stale part that is not a prefix: only a restart from zero can end verified.
    (tmp_path / "a.bin.part").write_bytes(b"\xff" * 700)
    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert ranges_seen(server) == ["bytes=700-"]
    assert (result.status, result.resumed_from) == ("restarted", 0)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_without_published_size_is_checked_not_refetched(server, tmp_path) -> None:
    file = serve(server, "a.bin", PAYLOAD, size=None)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    result = download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert ranges_seen(server) == [f"bytes={len(PAYLOAD)}-"]  # answered 416
    assert result.status == "resumed"
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_with_published_size_needs_no_request(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD)
    assert download_file(file, tmp_path, progress=False, timeout=TIMEOUT).status == "resumed"
    assert server.state["requests"] == []


def test_part_longer_than_published_size_starts_over(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    (tmp_path / "a.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 1))
    assert download_file(file, tmp_path, progress=False, timeout=TIMEOUT).status == "downloaded"
    assert ranges_seen(server) == [None]
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


# -- failures ----------------------------------------------------------------------------------
def test_checksum_mismatch_keeps_the_bytes_aside(server, tmp_path: Path) -> None:
    published = b"the real file" * 10
    file = serve(server, "a.bin", PAYLOAD, md5=md5(published), sha256=None, size=None)
    with pytest.raises(DownloadError, match=r"checksum mismatch for a\.bin") as err:
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    message = str(err.value)
    assert f"expected md5 {md5(published)}, got {md5(PAYLOAD)}" in message
    assert f"kept aside as {tmp_path / 'a.bin.corrupt'}" in message
    assert (tmp_path / "a.bin.corrupt").read_bytes() == PAYLOAD
    assert not (tmp_path / "a.bin").exists()
    assert not (tmp_path / "a.bin.part").exists()
    assert isinstance(err.value, DatasetError)


def test_mismatch_names_every_failing_check(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD, md5="0" * 32, sha256="F" * 64, size=5121)
    with pytest.raises(DownloadError) as err:
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    message = str(err.value)
    assert f"expected md5 {'0' * 32}, got {md5(PAYLOAD)}" in message
    assert f"expected sha256 {'f' * 64}, got {sha256(PAYLOAD)}" in message
    assert "expected size 5121 bytes, got 5120 bytes" in message


def test_http_error_names_the_url(server, tmp_path: Path) -> None:
    file = DownloadFile(url=f"{server.base}/missing.bin", filename="missing.bin", md5="0" * 32)
    with pytest.raises(DownloadError, match=r"HTTP 404 Not Found\. nothing was saved") as err:
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)
    assert f"downloading {server.base}/missing.bin failed" in str(err.value)
    assert not (tmp_path / "missing.bin").exists()


def test_stalled_server_times_out_and_keeps_the_part(server, tmp_path: Path) -> None:
    file = serve(server, "a.bin", PAYLOAD)
    server.state["cut_after"]["/a.bin"] = 300
    server.state["stall"]["/a.bin"] = 1.5
    with pytest.raises(DownloadError, match=r"\(300 bytes\) is kept in .*a\.bin\.part"):
        download_file(file, tmp_path, progress=False, timeout=0.3)


def test_refused_connection_is_a_clean_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    file = DownloadFile(url=f"http://127.0.0.1:{port}/a.bin", filename="a.bin", md5="0" * 32)
    with pytest.raises(DownloadError, match=f"downloading http://127.0.0.1:{port}/a.bin failed"):
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)


def test_filename_must_be_plain(tmp_path: Path) -> None:
    file = DownloadFile(url="http://127.0.0.1:9/x", filename="../x.bin", md5="0" * 32)
    with pytest.raises(DatasetError, match="must be a plain file name"):
        download_file(file, tmp_path, progress=False, timeout=TIMEOUT)


# -- plans over registered datasets ------------------------------------------------------------
def info(name: str, **fields) -> DatasetInfo:
    base = {
        "name": name,
        "task": "binary",
        "classes": ("a", "b"),
        "folder": name,
        "expected": ("train.csv", "train_images/"),
        "reader": lambda root, **o: None,
        "present": lambda root, **o: (Path(root) / "train.csv").is_file(),
        "url": "https://www.kaggle.com/c/example",
        "access": "needs a Kaggle login and accepting the competition rules",
    }
    return DatasetInfo(**{**base, **fields})


def test_plan_for_sized_and_unsized_datasets(registry, server, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEATLAB_DATA", str(tmp_path))
    f28, f64 = serve(server, "t.npz", b"28"), serve(server, "t_64.npz", b"64")
    register_dataset(
        info("tmnist", folder="medmnist", sizes=(28, 64), downloads={28: (f28,), 64: (f64,)})
    )
    register_dataset(info("tcam", downloads={0: (f28,)}))
    default = plan_download("tmnist")
    assert (default.size, default.files, default.root) == (28, (f28,), tmp_path / "medmnist")
    assert plan_download("tmnist@64").files == (f64,)
    assert plan_download("tcam", tmp_path / "here").root == tmp_path / "here"
    assert not plan_download("tcam").manual
    with pytest.raises(UnknownDatasetError, match=r"comes in sizes \[28, 64\]; got @32"):
        plan_download("tmnist@32")
    with pytest.raises(UnknownDatasetError, match="has no size variants; drop '@28'"):
        plan_download("tcam@28")


def test_download_dataset_fetches_every_file(registry, server, tmp_path: Path) -> None:
    files = (serve(server, "x.bin", b"x" * 10), serve(server, "y.bin", b"y" * 20))
    register_dataset(info("tpair", downloads={0: files}))
    seen = []
    results = download_dataset(
        plan_download("tpair", tmp_path), progress=False, timeout=TIMEOUT, on_file=seen.append
    )
    assert [r.filename for r in results] == ["x.bin", "y.bin"] == [r.filename for r in seen]
    assert (tmp_path / "y.bin").read_bytes() == b"y" * 20


def test_size_without_a_listed_download(registry, server) -> None:
    f28 = serve(server, "t.npz", b"28")
    register_dataset(info("thalf", sizes=(28, 64), downloads={28: (f28,)}))
    with pytest.raises(
        DatasetError, match=r"no download is listed for size 64; downloadable: \[28"
    ):
        plan_download("thalf@64")


def test_manual_dataset_steps(registry, tmp_path: Path) -> None:
    register_dataset(info("tkaggle"))
    plan = plan_download("tkaggle", tmp_path / "kag")
    assert plan.manual
    steps = manual_steps(plan)
    assert "needs a Kaggle login and accepting the competition rules" in steps
    assert "get it from https://www.kaggle.com/c/example" in steps
    assert f"exactly as distributed, in {tmp_path / 'kag'}" in steps
    assert "train.csv" in steps
    assert "train_images/" in steps
    with pytest.raises(DatasetError, match="tkaggle cannot be downloaded by featlab"):
        download_dataset(plan)
