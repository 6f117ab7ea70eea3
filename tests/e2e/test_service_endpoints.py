"""Authenticated endpoints (issue 15, part 5): `virtsync serve` listens beyond localhost only with
TLS and a bearer token; with a token every endpoint but /healthz wants it; the git hook wants the
HMAC of its body (X-Hub-Signature-256, as GitHub and Gitea send) or X-Virtsync-Secret; bodies are
bounded (a 10 MB one is refused before it is read) and the hook is rate-limited. A test CA and
server certificate made with the openssl CLI, curl over TLS with that CA; the hosts are libvirt's
test driver (the service's own process keeps their state)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.service_helpers import ROOT, ServeProcess, wait_for, write_test_driver_specs

pytestmark = [pytest.mark.e2e, pytest.mark.trust]

TOKEN = "t0ken-0f-the-endp0ints"
HOOK_SECRET = "h00k-secret"


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("openssl", "curl", "git"):
        assert shutil.which(tool), f"{tool} is missing (scripts/install-system-deps.sh test installs it)"


def _run(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True, timeout=30).stdout


def _pki(tmp: Path) -> dict[str, Path]:
    """A CA and a server certificate it signed for 127.0.0.1 and localhost (EC P-256: quick)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=virtsync test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp)
    _run("openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=tmp)
    (tmp / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
                                    "basicConstraints=CA:FALSE\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=tmp)
    return {"ca": tmp / "ca.pem", "cert": tmp / "server.pem", "key": tmp / "server.key"}


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(repo.parent)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env, timeout=30).stdout.strip()


def _repo(tmp: Path) -> Path:
    (tmp / "host.xml").write_text("<node></node>\n")
    repo = tmp / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    write_test_driver_specs(repo, "desk", "64MiB")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    return repo


class Response:
    def __init__(self, code: int, headers: dict[str, str], body: bytes) -> None:
        self.code, self.headers, self.body = code, headers, body


class EndpointServe(ServeProcess):
    """serve on --listen HOST:PORT of the test's choosing, spoken to with curl (over TLS with the CA)."""

    def __init__(self, args: list[str], log: Path, *, listen: str = "127.0.0.1", ca: Path | None = None):
        super().__init__(args, log)
        self.listen, self.ca = listen, ca

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def start(self, extra_env: dict[str, str] | None = None) -> EndpointServe:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", *self.args, "--listen", f"{self.listen}:{self.port}"],
            cwd=ROOT, env=dict(os.environ, **(extra_env or {})), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        wait_for(lambda: self.curl("/healthz").code == 200, 20, "service up", self)
        return self

    def curl(self, path: str, *args: str, token: str | None = None) -> Response:
        head = self.log_path.parent / "curl.headers"
        body = self.log_path.parent / "curl.body"
        cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", str(body), "-D", str(head),
               "-w", "%{http_code}", *(["--cacert", str(self.ca)] if self.ca else []),
               *(["-H", f"Authorization: Bearer {token}"] if token else []), *args, self.url + path]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        headers = {}
        for line in head.read_text(errors="replace").splitlines()[1:] if head.exists() else []:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        code = int(done.stdout or 0)
        return Response(code, headers, body.read_bytes() if code and body.exists() else b"")

    def hook(self, body: bytes, *headers: str) -> Response:
        data = self.log_path.parent / "hook.body"
        data.write_bytes(body)
        return self.curl("/hooks/git", "-X", "POST", "--data-binary", f"@{data}",
                         "-H", "Content-Type: application/json", *(a for h in headers for a in ("-H", h)))

    def raw(self, request: bytes, wait: float = 5) -> tuple[bytes, float]:
        """Sends request (headers, maybe part of a body) over TLS; the answer and how long it took."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait) as plain, \
                ctx.wrap_socket(plain, server_hostname="localhost") as tls:
            tls.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer, time.monotonic() - started


def _signature(body: bytes, secret: str = HOOK_SECRET) -> str:
    return "X-Hub-Signature-256: sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _serve_refused(*runs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """`serve` with each argument list, all at once (each one should exit at once)."""
    procs = [subprocess.Popen([sys.executable, "-m", "controller", "serve", *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for args in runs]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=30)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    return done


def test_beyond_localhost_serve_starts_only_with_tls_and_a_token(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    pki = _pki(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    specs, token = str(repo / "specs"), str(tmp_path / "token")
    tls = ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    bare, tls_only, token_only, wrong_key = _serve_refused(
        [specs, "--listen", "0.0.0.0:18080"],
        [specs, "--listen", "0.0.0.0:18080", *tls],
        [specs, "--listen", "[::]:18080", "--token-file", token],
        [specs, "--listen", "0.0.0.0:18080", "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["ca"]),
         "--token-file", token])
    assert bare.returncode == 64, bare.stderr
    assert all(o in bare.stderr for o in ("--tls-cert", "--tls-key", "--token-file", "localhost")), bare.stderr
    assert tls_only.returncode == 64 and "missing --token-file" in tls_only.stderr, tls_only.stderr
    assert token_only.returncode == 64 and "missing --tls-cert FILE, --tls-key FILE" in token_only.stderr, \
        token_only.stderr
    assert wrong_key.returncode == 64 and "--tls-cert" in wrong_key.stderr, wrong_key.stderr


def test_tls_token_hmac_body_limit_and_rate_limit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    pki = _pki(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "hook-secret").write_text(HOOK_SECRET + "\n")
    svc = EndpointServe(["--git", str(repo), "--branch", "main", "--git-path", "specs", "--git-interval", "1h",
                         "--cache-dir", str(tmp_path / "cache"), "--resync", "1h",
                         "--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"]),
                         "--token-file", str(tmp_path / "token"), "--hook-secret-file", str(tmp_path / "hook-secret"),
                         "--hook-rate", "3"],
                        tmp_path / "serve.log", listen="0.0.0.0", ca=pki["ca"])
    svc.start()
    try:
        # TLS with the test CA's certificate; /healthz wants no token, everything else does
        assert svc.curl("/healthz").body == b"ok\n"
        unverified = subprocess.run(["curl", "-sS", "--noproxy", "*", "--max-time", "10", svc.url + "/healthz"],
                                    capture_output=True, text=True, timeout=20)
        assert unverified.returncode != 0, "the server's certificate is the test CA's, not a public one"
        for path in ("/status", "/metrics", "/readyz", "/"):
            denied = svc.curl(path)
            assert denied.code == 401 and denied.headers.get("www-authenticate", "").startswith("Bearer"), path
        assert svc.curl("/status", token="not-" + TOKEN).code == 401
        assert svc.curl("/status", "-H", f"Authorization: Basic {TOKEN}").code == 401
        first = _git(repo, "rev-parse", "HEAD")
        wait_for(lambda: json.loads(svc.curl("/status", token=TOKEN).body)["commit"] == first, 20, "first commit", svc)
        assert svc.curl("/metrics", token=TOKEN).code == 200
        # the hook: the HMAC of the body with the hook secret (no bearer token: a forge sends none)
        push = b'{"ref": "refs/heads/main"}'
        assert svc.hook(push).code == 401
        assert svc.hook(push, _signature(push, "wrong-secret")).code == 401
        assert svc.hook(push, _signature(b"another body")).code == 401
        assert svc.hook(push, "X-Virtsync-Secret: wrong").code == 401
        write_test_driver_specs(repo, "desk", "96MiB")
        _git(repo, "commit", "-q", "-am", "more memory")
        second = _git(repo, "rev-parse", "HEAD")
        assert svc.hook(push, _signature(push)).code == 202
        wait_for(lambda: json.loads(svc.curl("/status", token=TOKEN).body)["commit"] == second, 20, "hook", svc)
        assert svc.hook(push, f"X-Virtsync-Secret: {HOOK_SECRET}").code == 202  # the simple alternative
        # bodies are bounded: a 10 MB hook is refused before the server reads it
        answer, took = svc.raw(b"POST /hooks/git HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 10485760\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 413") and took < 3, (answer, took)
        big = tmp_path / "big.json"
        big.write_bytes(b"[" + b"0," * (5 * 1024 * 1024) + b"0]")
        assert svc.curl("/hooks/git", "-X", "POST", "--data-binary", f"@{big}", "-H", _signature(big.read_bytes())
                        ).code == 413
        answer, _ = svc.raw(b"POST /hooks/git HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 411"), answer
        answer, _ = svc.raw(b"POST /hooks/git HTTP/1.1\r\nHost: localhost\r\nContent-Length: lots\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 400"), answer
        # the hook is rate-limited (3 a minute here; two are spent): 429 with Retry-After beyond
        codes = [svc.hook(push, _signature(push)) for _ in range(4)]
        assert [r.code for r in codes][:1] == [202] and 429 in [r.code for r in codes], [r.code for r in codes]
        limited = next(r for r in codes if r.code == 429)
        assert int(limited.headers["retry-after"]) >= 1
        assert svc.proc is not None and svc.proc.poll() is None
        assert TOKEN not in svc.logs() and HOOK_SECRET not in svc.logs()
    finally:
        svc.stop()


def test_a_token_is_wanted_on_localhost_too(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    (tmp_path / "token").write_text(TOKEN + "\n")
    svc = EndpointServe([str(repo / "specs"), "--resync", "1h", "--token-file", str(tmp_path / "token")],
                        tmp_path / "serve.log")
    svc.start()
    try:
        assert svc.curl("/healthz").code == 200
        assert svc.curl("/status").code == 401
        assert svc.curl("/status", token=TOKEN).code == 200
        assert svc.curl("/hooks/git", "-X", "POST", "--data-binary", "{}").code == 404  # no --git: no hook
    finally:
        svc.stop()
