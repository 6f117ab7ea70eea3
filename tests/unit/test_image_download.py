"""fetch_image against a local HTTP server on 127.0.0.1: resume, restart, verify, cache, errors."""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.images.download import (
    ImageCacheError,
    ImageChecksumError,
    ImageDownloadError,
    ImageSourceError,
    fetch_image,
    image_path,
    parse_sha256,
)
from controller.images.errors import ImageError

pytestmark = pytest.mark.timeout(30)

DATA = random.Random(7).randbytes(3 << 20)
SHA = hashlib.sha256(DATA).hexdigest()
WRONG = hashlib.sha256(b"something else").hexdigest()


@dataclass
class Served:
    """What the test server does, and the requests it saw: (path, Range header, status)."""

    data: bytes = DATA
    drop_after: int | None = None  # send this many body bytes, then close the connection
    ignore_range: bool = False  # answer a Range request with 200 and the whole file
    wrong_range: bool = False  # answer a Range request with 206 from byte 0
    release: threading.Event = field(default_factory=threading.Event)  # ends a stalled response
    log: list[tuple[str, str | None, int]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: Served

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _status(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.served.log.append((self.path, self.headers.get("Range"), code))
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()

    def do_GET(self) -> None:
        s, path = self.served, self.path.split("?", 1)[0]
        errors = {"/missing.qcow2": 404, "/forbidden.qcow2": 403, "/broken.qcow2": 500}
        if path in errors:
            self._status(errors[path], {"Content-Length": "0"})
            return
        if path == "/redirect.qcow2":
            self._status(302, {"Location": "/image.qcow2", "Content-Length": "0"})
            return
        if path == "/stall.qcow2":
            self._status(200, {"Content-Length": str(len(s.data))})
            self.wfile.write(s.data[:1000])
            self.wfile.flush()
            s.release.wait(10)
            self.close_connection = True
            return
        if path not in ("/image.qcow2", "/image"):
            self._status(404, {"Content-Length": "0"})
            return
        start, code, headers = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not s.ignore_range:
            start, code = (0 if s.wrong_range else int(match[1])), 206
            if start >= len(s.data):
                self._status(416, {"Content-Range": f"bytes */{len(s.data)}", "Content-Length": "0"})
                return
            headers["Content-Range"] = f"bytes {start}-{len(s.data) - 1}/{len(s.data)}"
        body = s.data[start:]
        headers["Content-Length"] = str(len(body))
        self._status(code, headers)
        if s.drop_after is not None:
            body = body[:s.drop_after]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def served() -> Iterator[tuple[Served, str]]:
    state = Served()
    handler = type("BoundHandler", (Handler,), {"served": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def listing(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_downloads_verifies_and_names_by_digest(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    seen: list[tuple[int, int | None]] = []
    path = fetch_image(f"{base}/image.qcow2", SHA, tmp_path / "cache", chunk=256 << 10,
                       progress=lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "cache" / f"sha256-{SHA}.qcow2"
    assert path.read_bytes() == DATA
    assert listing(tmp_path / "cache") == [path.name]
    assert seen[-1] == (len(DATA), len(DATA))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert state.log == [("/image.qcow2", None, 200)]


def test_name_suffix_comes_from_the_url_path(served: tuple[Served, str], tmp_path: Path) -> None:
    _, base = served
    assert fetch_image(f"{base}/image", f"sha256:{SHA.upper()}", tmp_path).name == f"sha256-{SHA}.img"
    assert image_path(f"{base}/x/image.qcow2?sig=a.b", SHA, tmp_path).name == f"sha256-{SHA}.qcow2"
    assert image_path(f"{base}/image.tar.xz", SHA, tmp_path).name == f"sha256-{SHA}.xz"
    assert image_path(f"{base}/image.q!", SHA, tmp_path).name == f"sha256-{SHA}.img"


def test_cached_image_makes_no_request(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    first = fetch_image(f"{base}/image.qcow2", SHA, tmp_path)
    count = len(state.log)
    assert fetch_image(f"{base}/image.qcow2", f"sha256:{SHA}", tmp_path) == first
    assert len(state.log) == count == 1


def test_broken_transfer_is_resumed_with_range(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    state.drop_after = 1_000_000
    with pytest.raises(ImageDownloadError) as err:
        fetch_image(f"{base}/image.qcow2", SHA, tmp_path)
    assert err.value.retryable
    part = tmp_path / f"sha256-{SHA}.qcow2.part"
    partial = part.stat().st_size
    assert 0 < partial < len(DATA)
    assert listing(tmp_path) == [part.name]

    state.drop_after = None
    seen: list[tuple[int, int | None]] = []
    path = fetch_image(f"{base}/image.qcow2", SHA, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert path.read_bytes() == DATA
    assert state.log[-1] == ("/image.qcow2", f"bytes={partial}-", 206)
    assert seen[0][0] > partial and seen[-1] == (len(DATA), len(DATA))
    assert listing(tmp_path) == [path.name]


def test_server_ignoring_range_restarts_from_zero(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    state.ignore_range = True
    (tmp_path / f"sha256-{SHA}.qcow2.part").write_bytes(b"\xff" * 500_000)  # wrong bytes: must not be kept
    path = fetch_image(f"{base}/image.qcow2", SHA, tmp_path)
    assert path.read_bytes() == DATA
    assert state.log == [("/image.qcow2", "bytes=500000-", 200)]


def test_resume_at_the_wrong_offset_restarts_from_zero(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    state.wrong_range = True
    (tmp_path / f"sha256-{SHA}.qcow2.part").write_bytes(DATA[:500_000])
    assert fetch_image(f"{base}/image.qcow2", SHA, tmp_path).read_bytes() == DATA
    assert state.log == [("/image.qcow2", "bytes=500000-", 206), ("/image.qcow2", None, 200)]


def test_416_with_a_complete_part_publishes_it(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    (tmp_path / f"sha256-{SHA}.qcow2.part").write_bytes(DATA)
    path = fetch_image(f"{base}/image.qcow2", SHA, tmp_path)
    assert path.read_bytes() == DATA
    assert state.log == [("/image.qcow2", f"bytes={len(DATA)}-", 416)]
    assert listing(tmp_path) == [path.name]


def test_416_with_an_overlong_part_starts_again(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    (tmp_path / f"sha256-{SHA}.qcow2.part").write_bytes(DATA + b"junk")
    assert fetch_image(f"{base}/image.qcow2", SHA, tmp_path).read_bytes() == DATA
    assert state.log == [("/image.qcow2", f"bytes={len(DATA) + 4}-", 416), ("/image.qcow2", None, 200)]


def test_wrong_digest_leaves_nothing_in_the_cache(served: tuple[Served, str], tmp_path: Path) -> None:
    _, base = served
    url = f"{base}/image.qcow2"
    with pytest.raises(ImageChecksumError) as err:
        fetch_image(url, WRONG, tmp_path)
    assert not err.value.retryable
    assert url in str(err.value) and WRONG in str(err.value) and SHA in str(err.value)
    assert listing(tmp_path) == []


def test_redirect_is_followed(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    assert fetch_image(f"{base}/redirect.qcow2", SHA, tmp_path).read_bytes() == DATA
    assert [p for p, _, _ in state.log] == ["/redirect.qcow2", "/image.qcow2"]


@pytest.mark.parametrize("name,status,retryable", [
    ("missing", 404, False), ("forbidden", 403, False), ("broken", 500, True),
])
def test_http_errors(served: tuple[Served, str], tmp_path: Path, name: str, status: int, retryable: bool) -> None:
    _, base = served
    with pytest.raises(ImageDownloadError) as err:
        fetch_image(f"{base}/{name}.qcow2", SHA, tmp_path / "cache")
    assert err.value.retryable is retryable
    assert f"HTTP {status}" in str(err.value)
    assert listing(tmp_path / "cache") == []  # an empty part is not kept


def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageDownloadError) as err:
        fetch_image(f"http://127.0.0.1:{port}/image.qcow2", SHA, tmp_path)
    assert err.value.retryable
    assert listing(tmp_path) == []


def test_stalled_transfer_times_out_retryably(served: tuple[Served, str], tmp_path: Path) -> None:
    _, base = served
    with pytest.raises(ImageDownloadError) as err:
        fetch_image(f"{base}/stall.qcow2", SHA, tmp_path, timeout=0.5)
    assert err.value.retryable
    assert (tmp_path / f"sha256-{SHA}.qcow2.part").stat().st_size == 1000  # kept for the resume


def test_concurrent_fetches_download_once(served: tuple[Served, str], tmp_path: Path) -> None:
    state, base = served
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch_image(f"{base}/image.qcow2", SHA, tmp_path)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 4 and len(set(results)) == 1
    assert results[0].read_bytes() == DATA
    assert len(state.log) == 1
    assert listing(tmp_path) == [results[0].name]


def test_local_file_url_and_absolute_path(tmp_path: Path) -> None:
    source = tmp_path / "src dir" / "base.raw"
    source.parent.mkdir()
    source.write_bytes(DATA)
    cache = tmp_path / "cache"
    by_path = fetch_image(str(source), SHA, cache)
    assert by_path == cache / f"sha256-{SHA}.raw" and by_path.read_bytes() == DATA
    by_path.unlink()
    by_url = fetch_image(source.as_uri(), SHA, cache)
    assert by_url == by_path and by_url.read_bytes() == DATA
    assert listing(cache) == [by_url.name]


def test_local_errors(tmp_path: Path) -> None:
    source = tmp_path / "base.qcow2"
    source.write_bytes(b"not the image")
    with pytest.raises(ImageChecksumError):
        fetch_image(str(source), SHA, tmp_path / "cache")
    assert listing(tmp_path / "cache") == []
    with pytest.raises(ImageDownloadError) as err:
        fetch_image(str(tmp_path / "absent.qcow2"), SHA, tmp_path / "cache")
    assert not err.value.retryable
    assert listing(tmp_path / "cache") == []


@pytest.mark.parametrize("value", [SHA, SHA.upper(), f"sha256:{SHA}", f"SHA256:{SHA.upper()}"])
def test_sha256_formats_accepted(value: str) -> None:
    assert parse_sha256(value) == SHA


@pytest.mark.parametrize("value", ["", SHA[:-1], SHA + "0", f"md5:{SHA}", f"sha256: {SHA}", f" {SHA}",
                                   SHA[:-1] + "g", f"sha256:sha256:{SHA}"])
def test_sha256_formats_rejected(value: str, tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError, match="not a sha256 digest"):
        fetch_image("http://127.0.0.1:9/image.qcow2", value, tmp_path)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/image.qcow2", "relative/image.qcow2", "http:///image.qcow2",
                                 "file://otherhost/image.qcow2", "image.qcow2"])
def test_unsupported_sources_rejected(url: str, tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError):
        fetch_image(url, SHA, tmp_path)


def test_unwritable_cache_is_a_cache_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ImageCacheError):
        fetch_image(str(blocker), SHA, blocker / "cache")


def test_all_errors_are_image_errors() -> None:
    for cls in (ImageCacheError, ImageChecksumError, ImageDownloadError, ImageSourceError):
        assert issubclass(cls, ImageError)
