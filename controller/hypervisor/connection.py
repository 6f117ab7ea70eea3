"""One persistent libvirt connection per host, reopened when it dies.

A host with client certificates (the Host spec's ``tls``, for qemu+tls:// and xen+tls://) is
opened with the URI parameter ``pkipath=DIR``: libvirt loads cacert.pem, clientcert.pem and
clientkey.pem from DIR. DIR is private (0700, under $XDG_RUNTIME_DIR/virtsync/pki, else the
cache directory), holds only symlinks to the spec's files, and is removed as soon as the open
call returns: libvirt has read the credentials by then, and each reconnect makes a new one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import NamedTuple, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import libvirt

from controller.errors import HostUnreachable
from controller.hypervisor.deadline import Bounded, CallRunner, bounded
from controller.hypervisor.errors import map_error, quiet_libvirt
from controller.hypervisor.event_loop import start_event_loop

# Seconds one libvirt call may take before its host counts as hung (the Host spec's callTimeout).
DEFAULT_CALL_TIMEOUT = 30.0

# The names libvirt looks for in a pkipath directory.
PKI_NAMES = {"ca_file": "cacert.pem", "cert_file": "clientcert.pem", "key_file": "clientkey.pem"}


class ClientCerts(Protocol):
    """Paths of a client's TLS files (the Host spec's ``tls``, already absolute)."""

    @property
    def ca_file(self) -> str: ...
    @property
    def cert_file(self) -> str: ...
    @property
    def key_file(self) -> str: ...


def with_pkipath(uri: str, pkipath: str | Path) -> str:
    """``uri`` with the parameter pkipath=DIR (replacing one it has), other parameters kept
    as they were written."""
    parts = urlsplit(uri)
    params = [p for p in parts.query.split("&") if p and p.split("=", 1)[0] != "pkipath"]
    params.append("pkipath=" + quote(str(pkipath), safe="/"))
    return urlunsplit(parts._replace(query="&".join(params)))


def pki_base() -> Path:
    """Where the per-connection pkipath directories are made: $XDG_RUNTIME_DIR/virtsync/pki
    when there is a runtime directory, else $XDG_CACHE_HOME (~/.cache)/virtsync/pki."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime) / "virtsync" / "pki"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "virtsync" / "pki"


def make_pkipath(host: str, certs: ClientCerts, base: Path | None = None) -> Path:
    """A new private directory with the three files as libvirt names them (symlinks)."""
    base = pki_base() if base is None else base
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in host)
    path = Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=base))  # 0700
    try:
        for attr, name in PKI_NAMES.items():
            (path / name).symlink_to(getattr(certs, attr))
    except OSError:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path


class TlsPaths(NamedTuple):
    ca_file: str
    cert_file: str
    key_file: str


def _certs_key(certs: ClientCerts | None) -> TlsPaths | None:
    return None if certs is None else TlsPaths(certs.ca_file, certs.cert_file, certs.key_file)


# Connections one host gets at most, for calls made at the same time (an apply's concurrent
# objects): a connection's calls take turns (see deadline.CallRunner), so starting 20 guests
# over one would be 20 starts in a row. As many as apply's default --concurrency: a start waits
# on the daemon for seconds, and two objects sharing a lane wait on each other. Lanes open on
# first use, so a no-op (lane 0) or a light resync costs no more connections.
MAX_LANES = 8


def missing_test_file(uri: str) -> str | None:
    """The host file a test-driver URI (test:///path/host.xml) names, when it does not exist."""
    parsed = urlsplit(uri)
    if parsed.scheme != "test" or parsed.netloc or parsed.path in ("", "/default"):
        return None
    return None if os.path.exists(parsed.path) else parsed.path


class HostConnection:
    """A host's connection: opened on first use and again after it died; every call on it is
    bounded by ``call_timeout`` (see deadline.py) and watched by libvirt's keepalive.

    Work that runs in parallel on one host (``lane(k)`` around it) gets up to MAX_LANES
    connections; everything else uses lane 0. libvirt's test driver keeps its state per
    connection, so a test:// host has one lane only."""

    def __init__(self, host: str, uri: str, timeout: float = 10.0, tls: ClientCerts | None = None,
                 call_timeout: float | None = DEFAULT_CALL_TIMEOUT):
        self.host = host
        self.uri = uri  # as the spec says: what errors and outputs show
        self.timeout = timeout
        self.tls = _certs_key(tls)
        self.lanes = 1 if uri.startswith("test:") else MAX_LANES
        self._runners = [CallRunner(host, uri, call_timeout) for _ in range(self.lanes)]
        self._conns: list[Bounded | None] = [None] * self.lanes
        self._close_hooks: list[Callable[[libvirt.virConnect], None]] = []
        self._opening: Future[libvirt.virConnect] | None = None  # an open still under way
        self._lock = threading.Lock()
        self._here = threading.local()  # .lane: the lane this thread's calls use

    @property
    def call_timeout(self) -> float | None:
        return self._runners[0].timeout

    @call_timeout.setter
    def call_timeout(self, value: float | None) -> None:
        for runner in self._runners:
            runner.timeout = value

    @property
    def current(self) -> Bounded | None:
        """Lane 0's connection open now, if any (no call is made)."""
        return self._conns[0]

    @contextlib.contextmanager
    def lane(self, k: int) -> Iterator[None]:
        """This thread's calls (``get()``) go over lane ``k`` (modulo the host's lanes) inside."""
        before = getattr(self._here, "lane", 0)
        self._here.lane = k % self.lanes
        try:
            yield
        finally:
            self._here.lane = before

    def lane_here(self) -> int:
        """The lane this thread's calls go over now."""
        return int(getattr(self._here, "lane", 0))

    def get(self, lane: int | None = None) -> libvirt.virConnect:
        """The open connection of this thread's lane (or of ``lane``); opened (again) when there
        is none, it died, or it stopped answering (then the old one is left to the calls still
        inside it, not waited for)."""
        k = getattr(self._here, "lane", 0) if lane is None else lane % self.lanes
        with self._lock:
            conn, runner = self._conns[k], self._runners[k]
        # Asked outside the lock: isAlive takes its turn on the lane, behind a call there that
        # may take seconds (a start), and must not hold up the other lanes' get() meanwhile.
        if conn is not None and not runner.hung:
            try:
                if conn.isAlive():
                    return conn
            except (libvirt.libvirtError, HostUnreachable):
                pass
        with self._lock:
            if self._conns[k] is not conn and self._conns[k] is not None:
                return self._conns[k]  # another thread opened the lane again meanwhile
            self._retire(k)
            # Each connection has a runner of its own: the old one's count of calls inside
            # libvirt is what says when the old connection may be closed.
            runner = CallRunner(self.host, self.uri, self._runners[k].timeout)
            conn = self._conns[k] = bounded(self._open(runner.timeout), runner)
            self._runners[k] = runner
            return conn

    def on_close(self, hook: Callable[[libvirt.virConnect], None]) -> None:
        """``hook(conn)`` runs before each connection of this host is closed (event
        registrations are undone there: libvirt holds the Python connection while they last)."""
        self._close_hooks.append(hook)

    def _open(self, timeout: float | None) -> libvirt.virConnect:
        quiet_libvirt()
        start_event_loop()  # keepalive needs it, and libvirt wants it before the first open
        if self._opening is not None:
            # A previous open overran its timeout: use it if it has finished meanwhile,
            # never start a second one beside it.
            if not self._opening.done():
                raise HostUnreachable(f"no answer from {self.uri} yet (still connecting)", host=self.host)
            finished, self._opening = self._opening, None
            return self._opened(finished, None, timeout)
        missing = missing_test_file(self.uri)
        if missing:  # else libvirt's XML parser prints an "I/O warning" to stderr before it fails
            raise HostUnreachable(f"cannot connect to {self.uri}: {missing}: no such file", host=self.host)
        # libvirt.open blocks for as long as the transport does (an SSH or TCP host that drops
        # packets, a stopped daemon): bound it, on a daemon thread that never holds up exit.
        uri, pkipath = self.uri, None
        if self.tls is not None:
            try:
                pkipath = make_pkipath(self.host, self.tls)
            except OSError as exc:
                raise HostUnreachable(f"cannot prepare the TLS client certificates for {self.uri}: "
                                      f"{exc.strerror or exc}", host=self.host) from None
            uri = with_pkipath(self.uri, pkipath)
        future: Future[libvirt.virConnect] = Future()

        def connect() -> None:
            try:
                future.set_result(libvirt.open(uri))
            except BaseException as exc:
                future.set_exception(exc)
            finally:
                if pkipath is not None:  # once open returns, libvirt holds the credentials
                    shutil.rmtree(pkipath, ignore_errors=True)

        threading.Thread(target=connect, name=f"connect-{self.host}", daemon=True).start()
        try:
            future.result(timeout=self.timeout)
        except FutureTimeout:
            self._opening = future
            raise HostUnreachable(f"no answer from {self.uri} within {self.timeout:g}s",
                                  host=self.host) from None
        except libvirt.libvirtError:
            pass  # _opened maps it
        return self._opened(future, pkipath, timeout)

    def _opened(self, future: Future[libvirt.virConnect], pkipath: Path | None,
                timeout: float | None) -> libvirt.virConnect:
        try:
            conn = future.result(timeout=0)
        except libvirt.libvirtError as exc:
            err = map_error(exc, self.host, f"cannot connect to {self.uri}")
            message = str(err).removeprefix(f"{self.host}: ")
            if pkipath is not None and self.tls is not None:
                # Name the spec's files, not the short-lived directory libvirt read them from.
                for attr, name in PKI_NAMES.items():
                    message = message.replace(str(pkipath / name), getattr(self.tls, attr))
            if self.tls is not None and "TLS confirmation" in message:
                # libvirtd sends that byte once it has accepted the client certificate.
                message += " (the host refused this client certificate: is it signed by a CA in its ca_file?)"
            raise HostUnreachable(message, host=self.host) from None
        if conn is None:
            raise HostUnreachable(f"cannot connect to {self.uri}", host=self.host)
        with contextlib.suppress(libvirt.libvirtError):  # drivers without keepalive (test://)
            # A daemon that stops answering is cut off within about 4 intervals; its blocked
            # calls then fail, which frees the workers an overrun call left behind.
            conn.setKeepAlive(max(1, min(5, int((timeout or 30) // 6))), 3)
        return conn

    def _retire(self, k: int) -> None:
        """Close lane ``k``'s connection once no call is inside it (see CallRunner.retire): at
        once when none is, else after the last one returns, which for a daemon that stopped
        answering is when keepalive gives up on it."""
        old, self._conns[k] = self._conns[k], None
        if old is None:
            return
        raw, hooks = old.unbounded, list(self._close_hooks)

        def close() -> None:
            for hook in hooks:
                # A dead connection fails the hook's calls: that must not keep it open.
                with contextlib.suppress(Exception):
                    hook(raw)
            with contextlib.suppress(libvirt.libvirtError):
                raw.close()

        self._runners[k].retire(close, f"the connection to {self.uri} was replaced (it died or stopped answering)")

    def close(self) -> None:
        with self._lock:
            for k in range(self.lanes):
                self._retire(k)


class ConnectionPool:
    """Connections by host name, shared by everything in one process."""

    def __init__(self) -> None:
        self._conns: dict[str, HostConnection] = {}
        self._lock = threading.Lock()

    def for_host(self, host: str, uri: str, timeout: float = 10.0, tls: ClientCerts | None = None,
                 call_timeout: float | None = DEFAULT_CALL_TIMEOUT) -> HostConnection:
        with self._lock:
            conn = self._conns.get(host)
            if conn is None or conn.uri != uri or conn.tls != _certs_key(tls):
                if conn is not None:
                    conn.close()
                conn = HostConnection(host, uri, timeout, tls, call_timeout)
                self._conns[host] = conn
            conn.timeout, conn.call_timeout = timeout, call_timeout
            return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.close()
            self._conns.clear()
