"""HTTP endpoints: /healthz /readyz /metrics /status, the status page, and the git hook.

Read-only apart from POST /hooks/git, which needs the shared secret.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Routes:
    """What the handler asks the service for (kept apart so the server stays dumb)."""

    def __init__(self, *, health: Callable[[], bool], ready: Callable[[], bool],
                 metrics: Callable[[], bytes], status: Callable[[], dict[str, Any]],
                 page: Callable[[], str], git_hook: Callable[[], None] | None,
                 hook_secret: str | None) -> None:
        self.health, self.ready, self.metrics = health, ready, metrics
        self.status, self.page = status, page
        self.git_hook, self.hook_secret = git_hook, hook_secret


def serve_http(host: str, port: int, routes: Routes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "virtsync"

        def log_message(self, format: str, *args: Any) -> None:
            return  # requests are not worth a log line each

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = routes.health()
                self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain")
            elif path == "/readyz":
                ok = routes.ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n", "text/plain")
            elif path == "/metrics":
                self._send(200, routes.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/status":
                self._send(200, json.dumps(routes.status(), indent=2).encode(), "application/json")
            elif path in ("/", "/index.html"):
                self._send(200, routes.page().encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(min(length, 1 << 20))
            if path != "/hooks/git" or routes.git_hook is None:
                self._send(404, b"not found\n", "text/plain")
                return
            given = self.headers.get("X-Virtsync-Secret", "")
            if not routes.hook_secret or not hmac.compare_digest(given, routes.hook_secret):
                self._send(403, b"forbidden\n", "text/plain")
                return
            routes.git_hook()
            self._send(202, b"accepted\n", "text/plain")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
