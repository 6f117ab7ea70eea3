"""A `virtsync serve` process for tests: started on a free port, stopped by pid."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.args = args
        self.log_path = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str] | None = None) -> ServeProcess:
        env = dict(os.environ, **self.env, **(extra_env or {}))
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", *self.args, "--listen",
             f"127.0.0.1:{self.port}"], cwd=ROOT, env=env, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: self.get("/healthz", raw=True) == b"ok\n", 20, "service up", self)
        return self

    def get(self, path: str, raw: bool = False) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as resp:
                body = resp.read()
        except OSError:
            return None
        return body if raw else json.loads(body)

    def status(self) -> dict[str, Any]:
        doc = self.get("/status")
        assert doc is not None, "no /status"
        return dict(doc)

    def objects(self) -> dict[str, dict[str, Any]]:
        return {f"{o['kind']}/{o['name']}": o for h in self.status()["hosts"] for o in h["objects"]}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        self._log.close()
        return code

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def wait_for(cond: Callable[[], Any], timeout: float, what: str, svc: ServeProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = cond()
        except Exception:  # the thing being waited for may not answer yet
            value = None
        if value:
            return value
        if svc is not None and svc.proc is not None and svc.proc.poll() is not None:
            raise AssertionError(f"service exited ({svc.proc.returncode}) waiting for {what}:\n"
                                 + svc.logs()[-4000:])
        time.sleep(0.05)
    tail = svc.logs()[-4000:] if svc is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


class NotificationSink:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.messages.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[str]:
        return [m.get("event", "") for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()


def write_test_driver_specs(repo: Path, guest: str, memory: str) -> None:
    """REPO/specs/lab.yaml: a Host on the test driver file REPO/../host.xml and one stopped guest
    (serve's own process keeps the test driver's state)."""
    (repo / "specs").mkdir(parents=True, exist_ok=True)
    (repo / "specs" / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "test://{repo.parent}/host.xml"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {guest}}}
spec: {{host: lab, state: stopped, memory: {memory}}}
""")
