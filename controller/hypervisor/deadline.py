"""Deadlines on libvirt calls: a host that stops answering fails its caller, never holds it.

A libvirt-python call blocks in C for as long as the daemon takes, and a daemon that is
stopped (SIGSTOP, or stuck on a dead NFS mount) takes forever. So every call on a host's
connection runs on one of that host's worker threads while the caller waits at most the
host's ``callTimeout``. A call that overruns makes the host *hung*: the caller gets
HostUnreachable("no answer from URI within Ns"), the host's next call opens a new
connection, and the blocked worker is left to libvirt's keepalive, which closes the dead
transport and so ends the call; only then is the old connection closed (never under a call).
Workers are daemon threads: they never hold up the process's exit.

Long operations (migration, volume copies and uploads, snapshots with memory, stream
transfers) get no call deadline: a daemon that still answers keepalive is working on them,
and one that does not is cut off by keepalive. Callers report their progress instead.
"""

from __future__ import annotations

import _thread
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import libvirt

from controller.errors import HostUnreachable
from controller.hypervisor import fault_injection
from controller.hypervisor.reads import LOCAL_CALLS, is_read

T = TypeVar("T")

# Calls that may rightly take longer than any call deadline.
LONG_CALLS = frozenset({
    "migrate", "migrate2", "migrate3", "migrateToURI", "migrateToURI2", "migrateToURI3",
    "createXMLFrom", "wipe", "wipePattern", "resize", "build",
    "sendAll", "recvAll", "sparseSendAll", "sparseRecvAll",
    "snapshotCreateXML", "revertToSnapshot", "checkpointCreateXML",
    "managedSave", "save", "saveFlags", "restore", "restoreFlags", "coreDump", "coreDumpWithFormat",
    "blockCopy", "blockCommit", "blockPull", "blockRebase",
})

# Calls that start a guest: qemu may rightly take long to come up on a loaded host, or to
# preallocate a large guest's memory, while the daemon answers keepalive all along (100 diskless
# guests started 8 at a time here took 21-32 s each). They take their turn on the connection (see
# CallRunner) but have no call deadline: keepalive alone bounds them, as it bounds LONG_CALLS.
# By libvirt class: a network's or a pool's create is not a guest's start.
START_CALLS = {"virDomain": frozenset({"create", "createWithFlags", "createWithFiles"}),
               "virConnect": frozenset({"createXML", "createXMLWithFiles"})}


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

    __slots__ = ("args", "done", "error", "fn", "kwargs", "result", "runner")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 runner: CallRunner):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.runner = runner  # told when the call has returned, also after its caller gave up
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
            job.runner.returned()
            with self._lock:
                self._idle += 1
            job.done.release()


_WORKERS = _Workers()


class CallRunner:
    """One connection's libvirt calls: each runs on a shared worker while the caller waits for it
    with the host's deadline; the first overrun marks the runner hung.

    One call at a time is inside libvirt per connection (long ones excepted, see ``call``):
    libvirt 9.0's RPC client crashes (SIGSEGV in g_main_loop_quit) when two threads wait on one
    connection and keepalive closes it — the thread the first passes the dispatch to runs the
    first one's leftover socket watch, whose data was on the first one's stack. A host's calls
    go one after the other over its one socket anyway.

    The runner also knows how many calls are inside libvirt now, so its connection is closed only
    once none is: virConnectClose frees what a call still inside it would use."""

    def __init__(self, host: str, uri: str, timeout: float | None):
        self.host = host
        self.uri = uri
        self.timeout = timeout
        self.hung = ""  # why the host counts as hung; set by the first overrun call
        self._retired = ""  # why no call may start any more: its connection is being closed
        self._inside = 0  # calls that have not returned yet (overrun ones too)
        self._when_idle: Callable[[], None] | None = None
        self._count_lock = threading.Lock()
        self._one_at_a_time = threading.Lock()

    def call(self, what: str, fn: Callable[..., Any], *args: Any, timeout: float | None = None,
             long: bool = False, untimed: bool = False, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` within ``timeout`` (default the host's; ``long`` or ``untimed``:
        none; an untimed call still takes its turn).

        A long call (a migration, a stream, a snapshot with memory) does not wait for the host's
        other calls nor they for it: they would stand still for minutes. Two threads inside one
        connection are then possible, and a daemon that stops answering meanwhile can still
        crash libvirt's client (see the class); that double fault is the price."""
        with self._count_lock:
            if self.hung or self._retired:
                raise HostUnreachable(self.hung or self._retired, host=self.host)
            self._inside += 1
        limit = None if long or untimed else (timeout if timeout is not None else self.timeout)
        one = fn if long else self._in_turn
        args = args if long else (fn, args, kwargs)
        kwargs = kwargs if long else {}
        if limit is None:  # keepalive alone bounds it: waiting on a worker would add nothing
            try:
                return one(*args, **kwargs)
            finally:
                self.returned()
        job = _Call(one, args, kwargs, self)
        _WORKERS.submit(job)
        if not job.done.acquire(timeout=limit):
            self.hung = f"no answer from {self.uri} within {limit:g}s ({what})"
            raise HostUnreachable(self.hung, host=self.host)
        if job.error is not None:
            raise job.error
        return job.result

    def _in_turn(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._one_at_a_time:
            if self.hung or self._retired:  # it turned while this call waited for its turn
                raise HostUnreachable(self.hung or self._retired, host=self.host)
            return fn(*args, **kwargs)

    def returned(self) -> None:
        """A call of this runner's has returned (on whichever thread made it)."""
        with self._count_lock:
            self._inside -= 1
            then = self._when_idle if self._inside == 0 else None
            if then is not None:
                self._when_idle = None
        if then is not None:
            threading.Thread(target=then, name=f"close-{self.host}", daemon=True).start()

    def retire(self, close: Callable[[], None], why: str) -> None:
        """No call starts through this runner any more; ``close`` runs once every call already
        inside libvirt has returned: at once (on this thread) when none is, else on a thread of
        its own after the last one (a call blocked on a stopped daemon returns when keepalive
        gives up on it, or when the daemon answers again)."""
        with self._count_lock:
            self._retired = self._retired or why
            if self._inside:
                self._when_idle = close
                return
        close()


def _made(target: Any, name: str, invoke: Callable[[], Any]) -> Any:
    """``invoke()``, libvirt method ``name`` of ``target``, as Bounded and Direct objects make
    their calls: a read whose error lost its code (see is_read) is asked again, and fails as it
    should; the call is counted for fault injection (crash-point tests only, by env var)."""
    try:
        result = invoke()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() is not None or not is_read(name):
            raise
        result = invoke()
    fault_injection.after_call(target, name)
    return result


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
        untimed = name in START_CALLS.get(type(self._target).__name__, ())
        target = self._target

        def call(*args: Any, **kwargs: Any) -> Any:
            made = _made(target, name, lambda: runner.call(name, attr, *args, long=long, untimed=untimed,
                                                            **kwargs))
            return bounded(made, runner)

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


def read_each(obj: Any, what: str, items: Sequence[Any], read: Callable[..., T],
              beside: Sequence[Any] | None = None) -> list[T]:
    """``[read(item) for item in items]`` for libvirt objects of ``obj``'s connection, in as few
    calls of the connection's runner as its deadline allows: one handoff to a worker for a run of
    items instead of one per libvirt call — for an observation of 1,000 domains those handoffs
    cost more than the calls themselves. A run ends once it has taken a tenth of the call
    timeout, so each libvirt call inside still has nine tenths of its deadline, and a host that
    stops answering is found as before. ``read`` gets each item as a Direct object: its calls
    are made right there, inside the run; with ``beside``, also the item's entry there
    (``read(item, beside[i])``: what the caller already knows of it)."""
    runner = obj._runner if isinstance(obj, Bounded) else None
    direct = [Direct(i.unbounded if isinstance(i, Bounded) else i) for i in items]
    args = [(d,) for d in direct] if beside is None else list(zip(direct, beside, strict=True))
    if runner is None:
        return [read(*a) for a in args]
    budget = runner.timeout / 10 if runner.timeout else None

    def run(start: int) -> list[T]:
        began = time.monotonic()
        out = []
        for a in args[start:]:
            out.append(read(*a))
            if budget is not None and time.monotonic() - began >= budget:
                break
        return out

    done: list[T] = []
    while len(done) < len(args):
        done += runner.call(what, run, len(done))
    return done


class Direct:
    """A libvirt object whose calls are made on the calling thread, which is already inside a
    runner's call (see read_each): a read whose error lost its code is asked again and calls are
    counted for fault injection, as a Bounded object's are; what they return is plain."""

    __slots__ = ("_target",)

    def __init__(self, target: Any):
        object.__setattr__(self, "_target", target)

    @property
    def unbounded(self) -> Any:
        return self._target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr) or name in LOCAL_CALLS:
            return attr
        target = self._target

        def call(*args: Any, **kwargs: Any) -> Any:
            return _made(target, name, lambda: attr(*args, **kwargs))

        call.__name__ = name
        return call
