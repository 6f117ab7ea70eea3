"""Deadlines on libvirt calls: a host that stops answering fails its caller, never holds it.

A libvirt-python call blocks in C for as long as the daemon takes, and a daemon that is
stopped (SIGSTOP, or stuck on a dead NFS mount) takes forever. So every call on a host's
connection runs on one of that host's worker threads while the caller waits at most the
host's ``callTimeout``. A call that overruns makes the host *hung*: the caller gets
HostUnreachable("no answer from URI within Ns"), the connection is abandoned (closing it
would block as well), and the blocked worker is left to libvirt's keepalive, which closes
the dead transport and so ends the call. Workers are daemon threads: they never hold up the
process's exit.

Long operations (migration, volume copies and uploads, snapshots with memory, stream
transfers) get no call deadline: a daemon that still answers keepalive is working on them,
and one that does not is cut off by keepalive. Callers report their progress instead.
"""

from __future__ import annotations

import _thread
import queue
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from controller.errors import HostUnreachable
from controller.hypervisor import fault_injection

# Calls that may rightly take longer than any call deadline.
LONG_CALLS = frozenset({
    "migrate", "migrate2", "migrate3", "migrateToURI", "migrateToURI2", "migrateToURI3",
    "createXMLFrom", "wipe", "wipePattern", "resize", "build",
    "sendAll", "recvAll", "sparseSendAll", "sparseRecvAll",
    "snapshotCreateXML", "revertToSnapshot", "checkpointCreateXML",
    "managedSave", "save", "saveFlags", "restore", "restoreFlags", "coreDump", "coreDumpWithFormat",
    "blockCopy", "blockCommit", "blockPull", "blockRebase",
})

# Methods answered from the client's own copy, never the daemon (virDomainGetName, …GetUUID,
# …GetID read the handle): handing them to a worker would only cost a thread switch each, and
# an observe of 1,000 domains makes thousands of them.
LOCAL_CALLS = frozenset({"name", "UUID", "UUIDString", "ID"})

# The libvirt objects whose methods talk to the daemon.
_BOUNDED_TYPES = tuple(t for t in (
    getattr(libvirt, name, None) for name in (
        "virConnect", "virDomain", "virNetwork", "virNetworkPort", "virStoragePool", "virStorageVol",
        "virDomainSnapshot", "virDomainCheckpoint", "virSecret", "virNodeDevice", "virStream",
        "virInterface", "virNWFilter", "virNWFilterBinding"))
    if isinstance(t, type))


class _Call:
    """One call handed to a worker; ``done`` is released when it has returned or raised (a bare
    lock: cheaper than a Future, and every libvirt call pays for it)."""

    __slots__ = ("args", "done", "error", "fn", "kwargs", "result")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = _thread.allocate_lock()
        self.done.acquire()


class _Workers:
    """The process's daemon threads that make libvirt calls, shared by every host (a fleet of
    hosts must not cost a thread each): grown when every worker is busy, shrunk when idle. A
    call that never returns keeps its worker; keepalive usually frees it later."""

    IDLE_EXIT = 30.0  # seconds an idle worker waits for work before it ends

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._idle = 0  # idle workers no job has been promised to
        self._count = 0
        self._lock = threading.Lock()

    def submit(self, job: _Call) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1  # an idle worker takes the job put below
            else:
                self._count += 1
                threading.Thread(target=self._work, name=f"libvirt-call-{self._count}", daemon=True).start()
        self._queue.put(job)

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=self.IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no job is promised to this idle capacity: end
                        self._idle -= 1
                        self._count -= 1
                        return
                continue  # a job was promised to an idle worker: it is on its way
            try:
                job.result = job.fn(*job.args, **job.kwargs)
            except BaseException as exc:  # handed to the caller, who maps it
                job.error = exc
            with self._lock:
                self._idle += 1
            job.done.release()


_WORKERS = _Workers()


class CallRunner:
    """A host's libvirt calls: each runs on a shared worker while the caller waits for it with
    the host's deadline; the first overrun marks the host hung."""

    def __init__(self, host: str, uri: str, timeout: float | None):
        self.host = host
        self.uri = uri
        self.timeout = timeout
        self.hung = ""  # why the host counts as hung; set by the first overrun call

    def call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
             long: bool = False, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` within ``timeout`` (default the host's; ``long``: none)."""
        if self.hung:
            raise HostUnreachable(self.hung, host=self.host)
        limit = None if long else (timeout if timeout is not None else self.timeout)
        if limit is None:  # keepalive alone bounds it: waiting on a worker would add nothing
            return fn(*args, **kwargs)
        job = _Call(fn, args, kwargs)
        _WORKERS.submit(job)
        if not job.done.acquire(timeout=limit):
            self.hung = f"no answer from {self.uri} within {limit:g}s ({what})"
            raise HostUnreachable(self.hung, host=self.host)
        if job.error is not None:
            raise job.error
        return job.result


_READ_PREFIXES = ("list", "lookup", "get", "is", "num", "has")
_READS = frozenset({"XMLDesc", "info", "state", "autostart", "memoryStats", "blockInfo", "jobInfo", "capabilities",
                    "vcpus", "vcpuPinInfo", "emulatorPinInfo", "schedulerParameters", "schedulerParametersFlags",
                    "interfaceParameters", "blockIoTune", "hostname", "blockStats", "interfaceStats",
                    "interfaceAddresses", "snapshotCurrent", "snapshotNum"})


def is_read(method: str) -> bool:
    """A call that only reads, safe to ask twice. libvirt-python reads a failed call's error after
    the call has returned; a libvirt object freed in that moment (the garbage collector's) resets
    the thread's last error, and the exception comes without a code: the test driver's "no
    secret driver" (VIR_ERR_NO_SUPPORT) then looked like a real failure."""
    return method in _READS or method.startswith(_READ_PREFIXES)


class Bounded:
    """A libvirt object whose daemon calls run through a CallRunner. Attribute reads (and the
    ``_o`` handle libvirt-python passes between objects) reach the object itself, so a Bounded
    object can be handed to any libvirt method as the plain one."""

    __slots__ = ("_runner", "_target")

    def __init__(self, target: Any, runner: CallRunner):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    @property
    def unbounded(self) -> Any:
        """The plain libvirt object (for event registrations, which libvirt calls back)."""
        return self._target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr) or name in LOCAL_CALLS:
            return attr
        runner = self._runner
        long = name in LONG_CALLS
        target = self._target

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = runner.call(name, attr, *args, long=long, **kwargs)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() is not None or not is_read(name):
                    raise
                # The error lost its code (see is_read): a read is asked again, and fails as it should.
                result = runner.call(name, attr, *args, long=long, **kwargs)
            fault_injection.after_call(target, name)  # crash-point tests only (env var)
            return bounded(result, runner)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"Bounded({self._target!r})"


def bounded(value: Any, runner: CallRunner) -> Any:
    """``value`` with its libvirt objects (also inside a returned list) made Bounded."""
    if isinstance(value, _BOUNDED_TYPES):
        return Bounded(value, runner)
    if isinstance(value, list) and value and isinstance(value[0], _BOUNDED_TYPES):
        return [Bounded(v, runner) for v in value]
    return value
