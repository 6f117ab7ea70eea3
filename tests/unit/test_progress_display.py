"""Transfer progress for people: one updating line on a terminal (a real pty), plain lines in a
pipe; fed by a real image download from a loopback HTTP server."""

from __future__ import annotations

import hashlib
import io
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controller.report.progress import ProgressDisplay, human, progress_text, say, transfer, transfers_to

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def image_url(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A loopback HTTP server with a 12 MiB image: (url, its sha256); stopped afterwards."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "base.img").write_bytes(os.urandom(12 * MIB))
    digest = hashlib.sha256((www / "base.img").read_bytes()).hexdigest()
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: _Quiet(*a, directory=str(www), **kw))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/base.img", digest
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# The download as the executor runs it (apply/executor.py _fetch_image), in a process of its own
# whose stderr is a pty or a pipe; the display decides by isatty(), as `virtsync apply` does.
SCRIPT = """
import sys
from pathlib import Path
from controller.apply.executor import _reporter
from controller.images.download import fetch_image
from controller.report.progress import ProgressDisplay, transfers_to, say
url, sha, cache = sys.argv[1:]
with transfers_to(ProgressDisplay(sys.stderr, tty=sys.stderr.isatty())):
    fetch_image(url, sha, Path(cache), chunk=1 << 20, progress=_reporter("download base.img"))
    say("[1/1] fetch-image Volume pool/base.img: ok", sys.stderr)
"""


def _run_in_pty(argv: list[str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode()


def test_a_download_on_a_terminal_is_one_updating_line(tmp_path: Path, image_url: tuple[str, str]) -> None:
    url, sha = image_url
    code, out = _run_in_pty([sys.executable, "-c", SCRIPT, url, sha, str(tmp_path / "cache")])
    assert code == 0, out
    assert "\r" in out and "\x1b[K" in out, "redrawn in place"
    redraws = out.count("\rdownload base.img: ")
    assert redraws >= 2, out
    final = out.split("\rdownload base.img: ")[-1]
    assert final.startswith("12.0 MiB / 12.0 MiB (100%)") and "/s" in final.split("\n")[0], repr(final)
    # one line only: the updates never printed a newline of their own before the end
    before_end = out[: out.rindex("\rdownload base.img: ")]
    assert "\n" not in before_end.replace("\r\n", ""), repr(before_end)
    assert out.rstrip().endswith("[1/1] fetch-image Volume pool/base.img: ok"), repr(out[-200:])


def test_a_download_in_a_pipe_is_plain_lines(tmp_path: Path, image_url: tuple[str, str]) -> None:
    url, sha = image_url
    proc = subprocess.run([sys.executable, "-c", SCRIPT, url, sha, str(tmp_path / "cache")], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = proc.stderr.splitlines()
    progress = [ln for ln in lines if ln.startswith("download base.img: ")]
    assert 2 <= len(progress) <= 12, lines  # about one per tenth, and the last
    assert progress[-1].startswith("download base.img: 12.0 MiB / 12.0 MiB (100%)"), lines
    assert lines[-1] == "[1/1] fetch-image Volume pool/base.img: ok"


def test_tty_redraws_at_most_ten_times_a_second_and_lines_do_not_run_into_it() -> None:
    now = [0.0]
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, clock=lambda: now[0])
    with transfers_to(display):
        for i in range(1, 101):
            now[0] = i * 0.01  # 100 chunks in one second
            transfer("copy a", i * MIB, 100 * MIB)
            if i == 50:
                say("[1/2] start Guest g: ok", out)
    text = out.getvalue()
    assert 9 <= text.count("\rcopy a: ") <= 13, text.count("\rcopy a: ")
    assert "\r\x1b[K[1/2] start Guest g: ok\n" in text, "the updating line is cleared before another line"
    # 100 MiB in the 0.99 s since the first chunk was reported
    assert text.endswith("\rcopy a: 100.0 MiB / 100.0 MiB (100%) 101.0 MiB/s\x1b[K\n"), repr(text[-80:])


def test_without_a_display_transfers_are_silent_and_lines_go_to_the_stream() -> None:
    transfer("download x", 1, 2)  # no sink (as under serve): nothing happens
    out = io.StringIO()
    say("plain", out)
    assert out.getvalue() == "plain\n"


def test_sizes_and_rates_read_as_people_write_them() -> None:
    assert [human(n) for n in (0, 1023, 1536, 2 << 30)] == ["0 B", "1023 B", "1.5 KiB", "2.0 GiB"]
    assert progress_text("download a", 512 * MIB, 2048 * MIB, 10.0) == \
        "download a: 512.0 MiB / 2.0 GiB (25%) 51.2 MiB/s"
    assert progress_text("copy b", 3 * MIB, None, 0.0) == "copy b: 3.0 MiB"
