"""HTTP endpoints: /healthz /readyz /metrics /status, the status page, and the git hook.

Read-only apart from POST /hooks/git. Beyond localhost the service listens only with TLS and a
bearer token (``cmd_serve`` refuses to start otherwise, see ``is_loopback``). With a token every
endpoint but /healthz wants ``Authorization: Bearer TOKEN``; the git hook instead proves itself
with its own secret: ``X-Hub-Signature-256: sha256=HMAC`` of the body (as GitHub and Gitea
send) or the plain ``X-Virtsync-Secret`` header, because a forge cannot send a bearer token.
Every comparison is in constant time. Request bodies are bounded (a longer Content-Length is
refused before a byte of the body is read) and the hook is rate-limited (a token bucket).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.logging import get_logger
from controller.report.status_page import CSP_HEADER as PAGE_CSP_HEADER

log = get_logger("virtsync.http")

MAX_BODY = 1 << 20  # bytes of a request body; a larger Content-Length gets 413 unread
REQUEST_TIMEOUT = 10.0  # seconds a connection may take for its TLS handshake, headers and body
DEFAULT_HOOK_RATE = 30  # accepted hooks per minute


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: addresses nobody else can reach."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to anything


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's TLS (1.2 or newer) context from a PEM certificate (chain) and its key.

    Raises ValueError with a message naming the files when they cannot be used."""
    for option, name in (("--tls-cert", cert), ("--tls-key", key)):
        if not (os.path.isfile(name) and os.access(name, os.R_OK)):
            raise ValueError(f"{option} {name}: no such readable file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise ValueError(f"--tls-cert {cert} --tls-key {key}: not a PEM certificate and its private key "
                         f"({why})") from None
    return ctx


class TokenBucket:
    """At most ``rate`` events per ``per`` seconds, in bursts of up to ``rate``."""

    def __init__(self, rate: int, per: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(max(1, rate))
        self.refill = self.capacity / per  # tokens per second
        self.clock = clock
        self.tokens = self.capacity
        self.at = clock()
        self.lock = threading.Lock()

    def take(self) -> float:
        """0 when an event may go ahead (and takes its token), else seconds until one may."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.refill)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.refill


class Routes:
    """What the handler asks the service for (kept apart so the server stays dumb)."""

    def __init__(self, *, health: Callable[[], bool], ready: Callable[[], bool],
                 metrics: Callable[[], bytes], status: Callable[[], dict[str, Any]],
                 page: Callable[[], str], git_hook: Callable[[], None] | None,
                 hook_secret: str | None, token: str | None = None,
                 hook_rate: int = DEFAULT_HOOK_RATE, max_body: int = MAX_BODY) -> None:
        self.health, self.ready, self.metrics = health, ready, metrics
        self.status, self.page = status, page
        self.git_hook, self.hook_secret = git_hook, hook_secret
        self.token, self.max_body = token, max_body
        self.hook_bucket = TokenBucket(hook_rate)


def _same(given: str, want: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), want.encode("utf-8", "replace"))


def hook_signature(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value GitHub and Gitea send for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that goes away, times out or fails its TLS handshake is not the service's fault
        log.debug("http-connection-error", client=str(client_address[0]) if client_address else "")


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve_http(host: str, port: int, routes: Routes, *, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "virtsync"
        timeout = REQUEST_TIMEOUT  # slow clients (headers, body, TLS handshake) are cut off

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # here, in this connection's thread, not in accept()

        def log_message(self, format: str, *args: Any) -> None:
            return  # requests are not worth a log line each

        def _send(self, code: int, body: bytes, ctype: str = "text/plain",
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            """The bearer token, where one is configured; otherwise answers 401 and says False."""
            if routes.token is None:
                return True
            scheme, _, given = (self.headers.get("Authorization") or "").strip().partition(" ")
            if scheme.lower() == "bearer" and _same(given.strip(), routes.token):
                return True
            self._send(401, b"unauthorized: Authorization: Bearer TOKEN wanted\n",
                       headers={"WWW-Authenticate": 'Bearer realm="virtsync"'})
            return False

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                ok = routes.health()
                self._send(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n")
                return
            if not self._authorized():
                return
            if path == "/readyz":
                ok = routes.ready()
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            elif path == "/metrics":
                self._send(200, routes.metrics(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/status":
                self._send(200, json.dumps(routes.status(), indent=2).encode(), "application/json")
            elif path in ("/", "/index.html"):
                # the page's own policy again as a header, where frame-ancestors takes effect
                self._send(200, routes.page().encode(), "text/html; charset=utf-8",
                           headers={"Content-Security-Policy": PAGE_CSP_HEADER, "X-Content-Type-Options": "nosniff",
                                    "Referrer-Policy": "no-referrer"})
            else:
                self._send(404, b"not found\n")

        def _body(self) -> bytes | None:
            """The request body, bounded; None when it was refused (and answered)."""
            self.close_connection = True  # whatever happens, nothing unread is taken for a request
            if self.headers.get("Transfer-Encoding"):
                self._send(411, b"length required: send a Content-Length, not a chunked body\n")
                return None
            text = self.headers.get("Content-Length")
            if text is None:
                self._send(411, b"length required\n")
                return None
            if not text.strip().isdigit():
                self._send(400, b"bad request: Content-Length is not a number\n")
                return None
            length = int(text)
            if length > routes.max_body:
                self._send(413, f"request body too large: at most {routes.max_body} bytes\n".encode())
                return None
            body = self.rfile.read(length)
            if len(body) != length:
                return None  # the client went away mid-body: nobody to answer
            return body

        def _hook_authentic(self, body: bytes) -> bool:
            secret = routes.hook_secret
            if not secret:
                self._send(403, b"forbidden: the hook is off (no --hook-secret-file)\n")
                return False
            signature = self.headers.get("X-Hub-Signature-256")
            plain = self.headers.get("X-Virtsync-Secret")
            if signature is not None:
                ok = _same(signature.strip().lower(), hook_signature(secret, body))
            elif plain is not None:
                ok = _same(plain, secret)
            else:
                ok = False
            if not ok:
                self._send(401, b"unauthorized: X-Hub-Signature-256 (HMAC-SHA256 of the body) "
                           b"or X-Virtsync-Secret wanted\n")
            return ok

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            if path != "/hooks/git" or routes.git_hook is None:
                self.close_connection = True
                self._send(404, b"not found\n")
                return
            body = self._body()
            if body is None or not self._hook_authentic(body):
                return
            wait = routes.hook_bucket.take()
            if wait:
                self._send(429, b"too many hooks: try again later\n",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
                return
            routes.git_hook()
            self._send(202, b"accepted\n")

    server_class = _Server6 if ":" in host else _Server
    server = server_class((host, port), Handler, bind_and_activate=False)
    try:
        if server_class is _Server6:
            server.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.server_bind()
        server.server_activate()
    except BaseException:
        server.server_close()
        raise
    if tls is not None:
        # the handshake happens in each connection's thread (Handler.setup), with its timeout
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.tls = tls
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
