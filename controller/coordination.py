"""One writer per host at a time, through tooz (OpenStack's coordination library).

Every writer (`apply`, `adopt`, `snapshots run`, `backups run`, each reconcile of `serve`)
holds a host's lock from before it observes the host until its changes are made, so two
writers never plan from the same observation. The lock is keyed by the host's libvirt URI
(one daemon, one lock, whatever a spec tree calls it) and named ``virtsync-host-<digest>``.

Backends: ``file://DIR`` (the default, a directory on the machine that runs virtsync) or any
tooz URL (``etcd3+http://HOST:2379`` through etcd's gateway, ``redis://``, ``zookeeper://``)
when several machines write to the same hosts. A second writer waits up to the lock timeout,
then gives up naming the holder: the file backend keeps a small record of who holds each
lock next to it (``holders/``); other backends say only that another writer holds it.

Threads of one process are serialised here too (a threading lock per name), since not every
tooz driver tells two threads of one member apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.errors import ConflictError, HostError, UsageError

DEFAULT_LOCK_TIMEOUT = 60.0
SYSTEM_DIR = "/var/lib/virtsync/coord"

# on_wait(host, holder): a writer is about to wait for a host's lock.
OnWait = Callable[[str, str], None]


class HostBusy(ConflictError):
    """A host this work needs is held by another writer right now: retried soon, not a failure."""


class LockTimeout(HostError):
    """The host's lock stayed held by another writer: retryable, after the holder is done."""

    retryable = True
    delay = 5.0


def default_url() -> str:
    """VIRTSYNC_COORDINATION, else file:///var/lib/virtsync/coord when that can be made (root),
    else a directory under $XDG_STATE_HOME (~/.local/state)/virtsync/coord."""
    env = os.environ.get("VIRTSYNC_COORDINATION")
    if env:
        return env
    system = Path(SYSTEM_DIR)
    try:
        system.mkdir(parents=True, exist_ok=True)
        if os.access(system, os.W_OK):
            return f"file://{system}"
    except OSError:
        pass
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return f"file://{Path(state) / 'virtsync' / 'coord'}"


def lock_name(uri: str) -> str:
    return "virtsync-host-" + hashlib.sha256(uri.encode()).hexdigest()[:24]


def check_url(url: str) -> str:
    """``url`` if tooz can take it; a UsageError otherwise (before any host is touched)."""
    parts = urlsplit(url)
    if not parts.scheme:
        raise UsageError(f"--coordination {url!r} is not a URL (file:///DIR, etcd3+http://HOST:2379, …)")
    if parts.scheme == "file" and not parts.path.startswith("/"):
        raise UsageError(f"--coordination {url!r}: a file:// URL needs an absolute directory, "
                         "e.g. file:///var/lib/virtsync/coord")
    return url


class HostLocks:
    """The per-host write locks of one process (one tooz member, started on first use)."""

    def __init__(self, url: str | None = None, *, holder: str = "virtsync",
                 timeout: float = DEFAULT_LOCK_TIMEOUT, member: str | None = None):
        self.url = check_url(url or default_url())
        self.timeout = timeout
        self.holder = f"{holder} pid {os.getpid()} on {os.uname().nodename}"  # gethostname(), without importing socket
        # The tooz member id: a serve replica's stable --replica-id, else unique to this process.
        self.member = member or self.holder.replace(" ", "-")
        self._coordinator: Any = None
        self._start_lock = threading.Lock()
        self._local: dict[str, threading.Lock] = {}
        self._local_lock = threading.Lock()
        parts = urlsplit(self.url)
        self._holders = Path(parts.path) / "holders" if parts.scheme == "file" else None
        # file:// locks are taken here, on the very files and with the very fcntl locks tooz's
        # file driver uses (so both kinds of writer exclude each other): importing tooz costs a
        # no-op apply ~0.25 s of CPU. tooz still serves group membership (coordinator()).
        self._dir = Path(parts.path) if parts.scheme == "file" else None

    # --------------------------------------------------------------- locking

    @contextlib.contextmanager
    def holding(self, hosts: Mapping[str, str], *, timeout: float | None = None,
                on_wait: OnWait | None = None) -> Iterator[dict[str, float]]:
        """Hold the locks of ``hosts`` (name → URI), taken in one global order so that two
        writers wanting the same hosts never deadlock. Yields the seconds waited per host."""
        from controller.noop_memo import unrecorded  # a no-op apply's answer takes no lock

        held: list[_Held] = []
        waited: dict[str, float] = {}
        try:
            with unrecorded():
                if hosts and self._dir is None:
                    self._start()  # before the clock: starting the backend is no wait for a lock
                for name, uri in sorted(hosts.items(), key=lambda kv: lock_name(kv[1])):
                    started = time.monotonic()
                    held.append(self._acquire(name, uri, timeout, on_wait))
                    if time.monotonic() - started > 0.05:
                        waited[name] = time.monotonic() - started
            yield waited
        finally:
            with unrecorded():
                for h in reversed(held):
                    h.release()

    def try_hold(self, name: str, uri: str) -> _Held | None:
        """The host's lock if it is free now, else None (no waiting)."""
        local = self._thread_lock(uri)
        if not local.acquire(blocking=False):
            return None
        lock = self._tooz_lock(uri)
        if not _acquire(lock, 0):
            local.release()
            return None
        return self._held(name, uri, local, lock)

    def holder_of(self, uri: str) -> str:
        """Who holds the host's lock, as its holder recorded it (file backend), else a guess."""
        if self._holders is not None:
            with contextlib.suppress(OSError, ValueError):
                rec = json.loads((self._holders / lock_name(uri)).read_text())
                return f"{rec['holder']} since {rec['since']}"
        return "another writer"

    def _holder_soon(self, uri: str, within: float = 1.0) -> str:
        """The holder, allowing it a moment to write its record: it takes the lock first."""
        deadline = time.monotonic() + within
        holder = self.holder_of(uri)
        while self._holders is not None and holder == "another writer" and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = self.holder_of(uri)
        return holder

    def close(self) -> None:
        with self._start_lock:
            if self._coordinator is not None:
                with contextlib.suppress(Exception):
                    self._coordinator.stop()
                self._coordinator = None

    # --------------------------------------------------------------- internals

    def _acquire(self, name: str, uri: str, timeout: float | None, on_wait: OnWait | None) -> _Held:
        limit = self.timeout if timeout is None else timeout
        held = self.try_hold(name, uri)
        if held is not None:
            return held
        if on_wait is not None:
            on_wait(name, self._holder_soon(uri))
        deadline = time.monotonic() + limit
        with self._wanting(uri):
            local = self._thread_lock(uri)
            if not local.acquire(timeout=max(0.0, limit)):
                raise self._timeout(name, uri, limit)
            lock = self._tooz_lock(uri)
            if not _acquire(lock, max(0.0, deadline - time.monotonic())):
                local.release()
                raise self._timeout(name, uri, limit)
            return self._held(name, uri, local, lock)

    @contextlib.contextmanager
    def _wanting(self, uri: str) -> Iterator[None]:
        """While this writer waits for a host: a record saying so beside the holder's (file
        backend), which lets a serve that holds the host for a stream of repairs make way
        (SharedHostLocks). The etcd backend has no such record: there the wait is as before."""
        record = None
        if self._holders is not None:
            record = self._holders / f"{lock_name(uri)}{_WANT}{os.getpid()}.{threading.get_ident()}"
            with contextlib.suppress(OSError):
                self._holders.mkdir(parents=True, exist_ok=True)
                record.write_text(json.dumps({"holder": self.holder}))
        try:
            yield
        finally:
            if record is not None:
                with contextlib.suppress(OSError):
                    record.unlink()

    def wanted_elsewhere(self, uri: str) -> str | None:
        """Who in another live process waits for this host's lock (file backend), else None."""
        if self._holders is None:
            return None
        prefix = f"{lock_name(uri)}{_WANT}"
        try:
            names = [e.name for e in os.scandir(self._holders) if e.name.startswith(prefix)]
        except OSError:
            return None
        for name in names:
            pid = int(name[len(prefix):].split(".", 1)[0] or 0)
            if pid == os.getpid() or not _alive(pid):
                continue  # this process's own wait, or one that died waiting
            with contextlib.suppress(OSError, ValueError, KeyError):
                return str(json.loads((self._holders / name).read_text())["holder"])
        return None

    def _timeout(self, name: str, uri: str, limit: float) -> LockTimeout:
        return LockTimeout(f"another writer holds this host's lock ({self.holder_of(uri)}); gave up "
                           f"after {limit:g}s (--lock-timeout)", host=name)

    def _held(self, name: str, uri: str, local: threading.Lock, lock: Any) -> _Held:
        record = None
        if self._holders is not None:
            record = self._holders / lock_name(uri)
            with contextlib.suppress(OSError):
                self._holders.mkdir(parents=True, exist_ok=True)
                tmp = record.with_suffix(f".{os.getpid()}.{threading.get_ident()}")
                tmp.write_text(json.dumps({"host": name, "uri": uri, "holder": self.holder,
                                           "since": datetime.now(UTC).isoformat(timespec="seconds")}))
                tmp.replace(record)
        return _Held(local, lock, record)

    def _thread_lock(self, uri: str) -> threading.Lock:
        with self._local_lock:
            return self._local.setdefault(uri, threading.Lock())

    def _tooz_lock(self, uri: str) -> Any:
        if self._dir is not None:
            return _FileLock(self._dir / lock_name(uri))
        return self._start().get_lock(lock_name(uri).encode())

    def coordinator(self) -> Any:
        """The started tooz coordinator (group membership for serve replicas)."""
        return self._start()

    def _start(self) -> Any:
        with self._start_lock:
            if self._coordinator is None:
                from tooz import coordination  # imported by writers only: it is not light

                try:
                    coordinator = coordination.get_coordinator(self.url, self.member.encode())
                    coordinator.start(start_heart=True)
                except Exception as exc:  # tooz raises its own tree, and OSError for file://
                    raise HostError(f"cannot start the coordination backend {self.url}: {exc}",
                                    retryable=True, delay=5.0) from None
                self._coordinator = coordinator
            return self._coordinator


_WANT = ".want."  # a waiting writer's record: <lock name>.want.<pid>.<thread>


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True


class _Held:
    """One held host lock; release() lets the next writer in."""

    def __init__(self, local: threading.Lock, lock: Any, record: Path | None):
        self._local, self._lock, self._record = local, lock, record

    def release(self) -> None:
        if self._record is not None:
            with contextlib.suppress(OSError):
                self._record.unlink()
        with contextlib.suppress(Exception):
            self._lock.release()
        self._local.release()


class _FileLock:
    """An exclusive fcntl (POSIX record) lock on one file, as tooz's file driver takes it through
    fasteners: a writer through tooz and one through this class exclude each other."""

    # POSIX locks do not exclude each other within one process: two HostLocks of one process
    # (as tooz's barrier per path does) first take this process's lock of the path.
    _in_process: dict[Path, threading.Lock] = {}
    _table_lock = threading.Lock()

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        with self._table_lock:
            self._mine = self._in_process.setdefault(path, threading.Lock())

    def acquire(self, blocking: float | bool = True) -> bool:
        deadline = None if blocking is True else time.monotonic() + float(blocking or 0)
        if not self._mine.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
        try:
            gotten = self._lock_file(deadline)
        except BaseException:
            self._mine.release()
            raise
        if not gotten:
            self._mine.release()
        return gotten

    def _lock_file(self, deadline: float | None) -> bool:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise HostError(f"cannot start the coordination backend file://{self.path.parent}: {exc}",
                            retryable=True, delay=5.0) from None
        delay = 0.01
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
                delay = min(delay * 2, 0.1)
                continue
            self._fd = fd
            return True

    def release(self) -> None:
        import fcntl

        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
                os.close(fd)
            finally:
                self._mine.release()


def _acquire(lock: Any, timeout: float) -> bool:
    try:
        return bool(lock.acquire(blocking=timeout if timeout > 0 else False))
    except Exception as exc:  # a backend that stopped answering
        raise HostError(f"the coordination backend failed: {exc}", retryable=True, delay=5.0) from None
