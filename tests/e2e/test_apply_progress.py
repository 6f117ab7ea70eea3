"""`virtsync apply` on a real libvirtd host shows an image's download and its upload into the
pool as one updating line each on a terminal (a pty), and as plain lines through a pipe."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.engine_helpers import ROOT
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
MIB = 1 << 20


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def images(tmp_path: Path) -> Iterator[dict[str, tuple[str, str]]]:
    """A loopback HTTP server with two 24 MiB images: name → (url, sha256); stopped afterwards."""
    www = tmp_path / "www"
    www.mkdir()
    out = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: _Quiet(*a, directory=str(www), **kw))
    for name in ("a.img", "b.img"):
        (www / name).write_bytes(os.urandom(24 * MIB))
        out[name] = (f"http://127.0.0.1:{server.server_address[1]}/{name}",
                     hashlib.sha256((www / name).read_bytes()).hexdigest())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _tree(tmp: Path, uri: str, guest: str, url: str, sha: str) -> Path:
    specs = tmp / f"specs-{guest}"
    specs.mkdir()
    (specs / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{uri}", hypervisor: qemu, storage: {{allowedDirs: ["{tmp}"]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: imgs}}
spec: {{host: lab, path: "{tmp}/pool"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {guest}}}
spec:
  host: lab
  state: stopped
  memory: 64MiB
  disks:
    - {{name: root, pool: imgs, from: "{url}", sha256: "{sha}", size: 32MiB}}
""")
    return specs


def _env(tmp: Path, cache: str) -> dict[str, str]:
    return {**os.environ, "VIRTSYNC_CACHE_DIR": str(tmp / cache), "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}


def _apply_in_pty(specs: Path, env: dict[str, str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "controller", "apply", str(specs), "--yes"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child is gone
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return code, b"".join(chunks).decode()


def test_apply_shows_download_and_upload_as_updating_lines_on_a_terminal_and_plain_lines_in_a_pipe(
        tmp_path: Path, hermetic_host: HermeticHost, images: dict[str, tuple[str, str]]) -> None:
    (tmp_path / "pool").mkdir()
    url, sha = images["a.img"]
    code, out = _apply_in_pty(_tree(tmp_path, hermetic_host.uri, "g1", url, sha), _env(tmp_path, "cache-a"))
    assert code == 0, out
    for label in ("download a.img: ", f"upload imgs/image-{sha[:16]}.img: "):
        draws = out.count("\r" + label)
        assert draws >= 2, f"{label!r} drawn {draws} times:\n{out!r}"
        last = out.split("\r" + label)[-1].split("\n")[0]
        assert re.match(r"24\.0 MiB / 24\.0 MiB \(100%\) [\d.]+ [KMG]iB/s\x1b\[K\r?$", last), repr(last)
    assert "[1/" in out and "fetch-image Volume imgs/" in out, out
    vols = hermetic_host.virsh("vol-list", "imgs")
    assert f"image-{sha[:16]}.img" in vols and "g1-root.qcow2" in vols, vols

    url, sha = images["b.img"]
    piped = subprocess.run([sys.executable, "-m", "controller", "apply",
                            str(_tree(tmp_path, hermetic_host.uri, "g2", url, sha)), "--yes"],
                           capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path, "cache-b"), timeout=240,
                           stdin=subprocess.DEVNULL)
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "\r" not in piped.stderr and "\x1b" not in piped.stderr
    downloads = [ln for ln in piped.stderr.splitlines() if ln.startswith("download b.img: ")]
    uploads = [ln for ln in piped.stderr.splitlines() if ln.startswith(f"upload imgs/image-{sha[:16]}.img: ")]
    assert 2 <= len(downloads) <= 12 and 2 <= len(uploads) <= 12, piped.stderr  # about one a tenth
    assert downloads[-1].startswith("download b.img: 24.0 MiB / 24.0 MiB (100%)"), downloads
    assert uploads[-1].startswith(f"upload imgs/image-{sha[:16]}.img: 24.0 MiB / 24.0 MiB (100%)"), uploads
    print(f"\npty: {out.count(chr(13))} redraws; pipe: {len(downloads)} download and {len(uploads)} upload lines")
