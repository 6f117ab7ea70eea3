"""A journal of every libvirt call a process makes, and its replay: how a no-op is proven again.

While a journal records, every public method of libvirt's object classes and ``libvirt.open``
are wrapped: each call made from outside libvirt-python (the outermost one) is written down
per connection as (object, method, arguments, digest of the result or of the error's code).
The objects a call returns are numbered in the order they appear, so that a replay can name
them the same way. A call that is not a read (deadline.is_read, or a local getter) refuses
the journal: a replay must never change a host.

``replay`` opens each connection again and makes the same calls in the same order on the new
objects. If every result has the same digest, a process making those calls now would have
read exactly what the recorded one read (each call depends only on the results before it), so
its plan of the same inputs would be the same. The first difference stops the replay.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import libvirt

from controller.hypervisor.reads import LOCAL_CALLS, is_read

# The classes whose methods talk to libvirt (virStream is left out: a plan never streams).
_CLASSES = tuple(c for c in (getattr(libvirt, n, None) for n in (
    "virConnect", "virDomain", "virNetwork", "virNetworkPort", "virStoragePool", "virStorageVol",
    "virSecret", "virDomainSnapshot", "virDomainCheckpoint", "virNodeDevice", "virInterface",
    "virNWFilter", "virNWFilterBinding")) if isinstance(c, type))
_OPENERS = ("open", "openReadOnly")
# Calls that are not reads of the host and that a replay skips: they tune or end this
# process's own connection (keepalive needs an event loop a replay does not run).
_SKIPPED = frozenset({"setKeepAlive", "close", "registerCloseCallback", "unregisterCloseCallback", "ref",
                      "connect", "c_pointer"})
_LOCAL = frozenset(LOCAL_CALLS) | {"isAlive", "getURI", "isSecure", "isEncrypted", "key", "path", "getName"}
# Reads beyond deadline.is_read's (the observers' and probes'); any other call refuses the journal.
_MORE_READS = frozenset({
    "maxMemory", "maxVcpus", "OSType", "hostname", "memoryParameters", "numaParameters", "blkioParameters",
    "schedulerType", "blockJobInfo", "jobStats", "controlInfo", "diskErrors", "metadata", "vcpusFlags",
    "ioThreadInfo", "fsInfo", "guestInfo", "guestVcpus", "blockStatsFlags", "snapshotListNames",
    "bridgeName", "securityLabel", "securityLabelList", "DHCPLeases",
})
# Past this many calls a journal stops (a fleet's drift): its replay would cost what it saves.
MAX_CALLS = 50_000

Entry = tuple[int, str, str, str, int]  # (object, method, arguments, result digest, objects it returned)


def _read(name: str) -> bool:
    return name in _LOCAL or name in _MORE_READS or "LookupBy" in name or is_read(name)


class Journal:
    """The calls over one connection, opened with ``opener(uri)``."""

    def __init__(self, opener: str, uri: str):
        self.opener, self.uri = opener, uri
        self.entries: list[Entry] = []
        self.objects: list[Any] = []  # by number: kept alive while recording (ids stay unique)

    def as_json(self) -> dict[str, Any]:
        return {"opener": self.opener, "uri": self.uri, "entries": [list(e) for e in self.entries]}


def _identity(obj: Any) -> str:
    """What names a listed object for as long as it exists (all local getters)."""
    for getter in ("UUIDString", "key", "getName", "name"):
        fn = getattr(obj, getter, None)
        if fn is not None:
            try:
                return str(fn())
            except libvirt.libvirtError:
                continue
    return ""


def _in_order(value: Any) -> Any:
    """A list of objects (or of tuples led by one: the bulk stats) sorted by their identities:
    libvirt lists in its hash tables' order, which the test driver seeds anew in each process."""
    if isinstance(value, list) and value and all(
            isinstance(v, _CLASSES) or (isinstance(v, tuple) and v and isinstance(v[0], _CLASSES)) for v in value):
        return sorted(value, key=lambda v: _identity(v if isinstance(v, _CLASSES) else v[0]))
    return value


def _leases(leases: Any) -> Any:
    """The MAC and address of each lease, in order: all observe_leases reads."""
    if not isinstance(leases, list) or not all(isinstance(lease, dict) for lease in leases):
        return leases
    return sorted((lease.get("mac"), lease.get("ipaddr")) for lease in leases)


# What of an answer is compared, where not all of it, because it changes between calls and
# virtsync does not read it:
# - virNodeGetInfo's 4th value is the CPU's current MHz (frequency scaling); capabilities.py
#   reads the memory, CPUs and NUMA nodes;
# - a DHCP lease's expiry time moves on with every renewal (a guest's DHCP client renews,
#   iPXE asks again and again); observe_leases reads its MAC and address.
_COMPARED: dict[str, Callable[[Any], Any]] = {
    "getInfo": lambda info: [v for i, v in enumerate(info) if i != 3] if isinstance(info, list) else info,
    "DHCPLeases": _leases,
}


def answer_text(method: str, value: Any, found: list[Any]) -> str:
    """encode() of the part of ``method``'s answer that is compared."""
    compared = _COMPARED.get(method)
    return encode(compared(value) if compared is not None else value, found)


def encode(value: Any, found: list[Any]) -> str:
    """A canonical text of a call's result; libvirt objects in it appended to ``found``."""
    value = _in_order(value)
    if isinstance(value, _CLASSES):
        found.append(value)
        return f"<{type(value).__name__}>"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, found) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ",".join(encode(v, found) for v in value) + ")"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k!r}:{encode(value[k], found)}" for k in sorted(value, key=repr)) + "}"
    if value is None or isinstance(value, (str, int, float, bytes)):
        return repr(value)
    raise _Unknown(type(value).__name__)


class _Unknown(Exception):
    pass


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _error_text(exc: libvirt.libvirtError) -> str:
    return f"!{exc.get_error_code()}:{exc}"


class Recorder:
    """Records while installed; ``refused`` says why its journals must not be replayed."""

    def __init__(self) -> None:
        self.journals: list[Journal] = []
        self.refused = ""
        self._ids: dict[int, tuple[Journal, int]] = {}
        self._depth = threading.local()
        self._saved: list[tuple[Any, str, Any]] = []
        self._lock = threading.Lock()
        self.calls = 0

    def refuse(self, why: str) -> None:
        if not self.refused:
            self.refused = why
        self._drop()

    def _drop(self) -> None:
        self.journals, self._ids = [], {}

    # ------------------------------------------------------------ installing

    def install(self) -> None:
        for cls in _CLASSES:
            for name, fn in list(vars(cls).items()):
                if name.startswith("_") or not callable(fn) or isinstance(fn, (staticmethod, classmethod)):
                    continue
                self._saved.append((cls, name, fn))
                setattr(cls, name, self._method(name, fn))
        for name in _OPENERS:
            fn = getattr(libvirt, name)
            self._saved.append((libvirt, name, fn))
            setattr(libvirt, name, self._opener(name, fn))

    def uninstall(self) -> None:
        for owner, name, fn in reversed(self._saved):
            setattr(owner, name, fn)
        self._saved.clear()

    # ------------------------------------------------------------ wrappers

    def _outermost(self) -> bool:
        return not getattr(self._depth, "n", 0)

    def _opener(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def opened(uri: str | None = None, *args: Any, **kwargs: Any) -> Any:
            conn = fn(uri, *args, **kwargs)
            if self.refused or not self._outermost():
                return conn
            if args or kwargs or conn is None:
                self.refuse(f"libvirt.{name} with more than a URI")
                return conn
            journal = Journal(name, uri or "")
            with self._lock:
                self.journals.append(journal)
                self._number(journal, conn)
            return conn
        return opened

    def _number(self, journal: Journal, obj: Any) -> None:
        self._ids[id(obj)] = (journal, len(journal.objects))
        journal.objects.append(obj)

    def _method(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        skipped = name in _SKIPPED
        read = _read(name)

        @functools.wraps(fn)
        def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if self.refused or not self._outermost() or skipped:
                return self._inner(fn, obj, args, kwargs)
            if not read:
                self.refuse(f"{type(obj).__name__}.{name} is not a read")
                return self._inner(fn, obj, args, kwargs)
            try:
                result = self._inner(fn, obj, args, kwargs)
            except libvirt.libvirtError as exc:
                self._note(obj, name, args, kwargs, None, _error_text(exc))
                raise
            self._note(obj, name, args, kwargs, result, None)
            return result
        return call

    def _inner(self, fn: Callable[..., Any], obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            return fn(obj, *args, **kwargs)
        finally:
            self._depth.n -= 1

    def _note(self, obj: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              result: Any, error: str | None) -> None:
        with self._lock:
            if self.refused:
                return
            owner = self._ids.get(id(obj))
            if owner is None:
                self.refuse(f"a call on a {type(obj).__name__} not read through a recorded connection")
                return
            journal, number = owner
            self._depth.n = getattr(self._depth, "n", 0) + 1  # the identities' getters: not recorded
            try:
                arg_text = self._arguments(journal, args, kwargs)
                found: list[Any] = []
                text = error if error is not None else answer_text(name, result, found)
            except _Unknown as exc:
                self.refuse(f"{type(obj).__name__}.{name}: a value of type {exc} in its call")
                return
            finally:
                self._depth.n -= 1
            for o in found:
                self._number(journal, o)
            journal.entries.append((number, name, arg_text, digest(text), len(found)))
            self.calls += 1
            if self.calls > MAX_CALLS:
                self.refuse(f"more than {MAX_CALLS} libvirt calls")

    def _arguments(self, journal: Journal, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """JSON of [each argument's text (an object of the journal: #its number), keyword names]."""
        parts = []
        for a in [*args, *(kwargs[k] for k in sorted(kwargs))]:
            if isinstance(a, _CLASSES):
                owner = self._ids.get(id(a))
                if owner is None or owner[0] is not journal:
                    raise _Unknown(type(a).__name__)
                parts.append(f"#{owner[1]}")
            else:
                parts.append(encode(a, []))
        return json.dumps([parts, sorted(kwargs)])


# ---------------------------------------------------------------- replay


def _decode_args(text: str, objects: list[Any]) -> tuple[list[Any], dict[str, Any]] | None:
    """The arguments of a recorded call, or None where they are not plain (never replayed)."""
    import ast

    parts, names = json.loads(text)
    values: list[Any] = []
    for p in parts:
        if p.startswith("#"):
            values.append(objects[int(p[1:])])
        else:
            try:
                values.append(ast.literal_eval(p))
            except (ValueError, SyntaxError):
                return None
    if names:
        return values[:-len(names)], dict(zip(names, values[-len(names):], strict=True))
    return values, {}


def _replay_one(journal: dict[str, Any]) -> str:
    """"" when every call answers as recorded, else what differed."""
    opener = getattr(libvirt, journal["opener"], None)
    if journal["opener"] not in _OPENERS or opener is None:
        return f"unknown opener {journal['opener']}"
    try:
        conn = opener(journal["uri"])
    except libvirt.libvirtError as exc:
        return f"cannot open {journal['uri']}: {exc}"
    objects: list[Any] = [conn]
    try:
        for number, name, arg_text, want, returned in journal["entries"]:
            if name in _SKIPPED or not _read(name):
                return f"{name} is not a read"
            decoded = _decode_args(arg_text, objects)
            if decoded is None or number >= len(objects):
                return f"{name}: arguments"
            args, kwargs = decoded
            found: list[Any] = []
            try:
                text = answer_text(name, getattr(objects[number], name)(*args, **kwargs), found)
            except libvirt.libvirtError as exc:
                text = _error_text(exc)
            except _Unknown as exc:
                return f"{name}: {exc}"
            if digest(text) != want or len(found) != returned:
                return f"{name} on {journal['uri']} answered differently"
            objects.extend(found)
        return ""
    finally:
        objects.clear()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def replay(journals: list[dict[str, Any]], timeout: float) -> str:
    """"" when every journal replays as recorded within ``timeout`` seconds, else why not. Each
    host's journals run on a daemon thread of their own, as the recorded run read its hosts at
    once: a host that stops answering leaves its thread behind, never the caller."""
    by_host: dict[str, list[dict[str, Any]]] = {}
    for journal in journals:
        by_host.setdefault(journal["uri"], []).append(journal)
    outcome: list[str] = []
    left = [len(by_host)]
    lock, done = threading.Lock(), threading.Event()

    def run(mine: list[dict[str, Any]]) -> None:
        try:
            why = next((why for why in map(_replay_one, mine) if why), "")
        except Exception as exc:  # a journal this code cannot read: not replayed
            why = f"{type(exc).__name__}: {exc}"
        with lock:
            left[0] -= 1
            if why:
                outcome.append(why)
            if why or not left[0]:
                done.set()

    # libvirt prints a failed call's error on stderr unless a handler takes it (the errors a
    # replay compares are its answers, not news); what errors.quiet_libvirt does, without its imports.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    if not by_host:
        return ""
    for mine in by_host.values():
        threading.Thread(target=run, args=(mine,), name="replay", daemon=True).start()
    if not done.wait(timeout):
        return f"no answer within {timeout:g}s"
    with lock:
        return outcome[0] if outcome else ""


def journals_of(recorder: Recorder) -> Iterator[dict[str, Any]]:
    return (j.as_json() for j in recorder.journals)
