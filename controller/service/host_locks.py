"""Reconciles of several guests of one host at once in `serve`, still one writer per host.

HostLocks (coordination.py) lets one holder have a host at a time: a thread of this process or
another process. With a lock per reconcile, at 1,000 guests and 10 changes a second the repairs
of different guests queued behind each other (a start takes a second or more). Here the service
holds a host's lock once for all of its object reconciles of that host (``shared``): the first
takes the host's lock (tooz / file, so other writers and replicas are still kept out), the last
lets it go. Each guest is reconciled by one worker at a time (the queue never hands a key to
two), and an object reconcile observes, plans and changes that object only.

What reads or changes the host as a whole — a Host reconcile (pruning, networks, pools, moves),
a snapshot or backup pass, a move's other host — holds it alone (``holding``, ``try_hold``): it
waits until the object reconciles in flight are done, and new ones wait behind it.

Under a steady stream of repairs the shared hold could last for ever, and a `virtsync apply` or
another replica waiting for the host would give up at its --lock-timeout. A writer of another
process that waits leaves a record (HostLocks.wanted_elsewhere, file backend): seeing it, new
object reconciles wait until the ones in flight are done, the lock is let go, and the other
writer has had YIELD_SECONDS to take it; then they queue for the lock as any writer does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from controller.coordination import HostLocks, OnWait, _Held, lock_name

# After making way for another process's writer: long enough for its next try (a waiting file
# lock polls at least every 0.1 s), short enough not to hold up repairs when it took nothing.
YIELD_SECONDS = 0.3
WANT_CHECK_SECONDS = 0.25  # how often a shared hold looks for a waiting writer of another process


@dataclass
class _Host:
    shared: int = 0  # object reconciles holding the host now (one held lock between them)
    exclusive: bool = False  # a whole-host writer of this process holds it
    wanting: int = 0  # whole-host writers waiting: new object reconciles wait behind them
    busy: bool = False  # the shared lock is being taken or let go
    held: _Held | None = None
    yielding: bool = False  # another process's writer waits: no new object reconciles join
    yield_until: float = 0.0  # after the lock was let go for it: until then none take it
    checked_at: float = 0.0  # when the shared hold last looked for a waiting writer


class _Exclusive(_Held):
    """A try_hold's lock: released, the host is free again for this process's reconciles."""

    def __init__(self, inner: _Held, done: Any):
        self._inner, self._done = inner, done

    def release(self) -> None:
        try:
            self._inner.release()
        finally:
            self._done()


class _Already(_Held):
    """try_hold of a host this thread holds already: nothing to take, nothing to release."""

    def __init__(self) -> None:
        pass

    def release(self) -> None:
        pass


class SharedHostLocks(HostLocks):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._cond = threading.Condition()
        self._hosts: dict[str, _Host] = {}  # by URI, as the locks are
        self._here = threading.local()  # .uris: the hosts this thread holds through this class

    def _mine_here(self) -> set[str]:
        uris: set[str] | None = getattr(self._here, "uris", None)
        if uris is None:
            uris = self._here.uris = set()
        return uris

    @contextlib.contextmanager
    def _raw(self) -> Iterator[None]:
        """HostLocks' own taking of the tooz/file lock inside (its try_hold, not this class's)."""
        before = getattr(self._here, "raw", False)
        self._here.raw = True
        try:
            yield
        finally:
            self._here.raw = before

    def _host(self, uri: str) -> _Host:
        return self._hosts.setdefault(uri, _Host())

    def _wait(self, ready: Any, deadline: float, name: str, uri: str, on_wait: OnWait | None,
              limit: float | None = None, until: Any = None) -> None:
        """Wait (holding self._cond) until ``ready()``; a LockTimeout at ``deadline``. ``until()``:
        a time ``ready`` may turn true at without a notify."""
        told = False
        while not ready():
            if on_wait is not None and not told:
                told = True
                on_wait(name, self.holder)
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise self._timeout(name, uri, self.timeout if limit is None else limit)
            if until is not None and until() > now:
                left = min(left, until() - now)
            self._cond.wait(left)

    def _yield_to_another_process(self, h: _Host, uri: str) -> bool:
        """Whether a writer of another process waits for this held host (looked for at most every
        WANT_CHECK_SECONDS); if so, from now on no new object reconcile joins the hold."""
        now = time.monotonic()
        if h.held is None or h.yielding or now - h.checked_at < WANT_CHECK_SECONDS:
            return h.yielding
        h.checked_at = now
        if self.wanted_elsewhere(uri) is not None:
            h.yielding = True
        return h.yielding

    @contextlib.contextmanager
    def shared(self, name: str, uri: str, *, on_wait: OnWait | None = None) -> Iterator[None]:
        """Hold ``name`` for one object's reconcile, beside this process's other object reconciles
        of the host; a ``holding`` of it by this thread inside takes nothing more."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            h = self._host(uri)

            def ready() -> bool:
                return not (h.exclusive or h.wanting or h.busy or h.yielding
                            or time.monotonic() < h.yield_until or self._yield_to_another_process(h, uri))

            self._wait(ready, deadline, name, uri, on_wait, until=lambda: h.yield_until)
            h.shared += 1
            take = h.held is None
            h.busy = take
        if take:
            try:
                with self._raw():
                    got = self._acquire(name, uri, max(0.0, deadline - time.monotonic()), on_wait)
            except BaseException:
                with self._cond:
                    h.shared -= 1
                    h.busy = False
                    self._cond.notify_all()
                raise
            with self._cond:
                h.held, h.busy = got, False
                self._cond.notify_all()
        mine = self._mine_here()
        mine.add(uri)
        try:
            yield
        finally:
            mine.discard(uri)
            self._leave_shared(h)

    def _leave_shared(self, h: _Host) -> None:
        with self._cond:
            h.shared -= 1
            last = h.shared == 0
            held = h.held if last else None
            if last:
                h.held, h.busy = None, True
        if held is not None:
            try:
                held.release()
            finally:
                with self._cond:
                    h.busy = False
                    if h.yielding:  # let go for another process's writer: give it its chance
                        h.yielding, h.yield_until = False, time.monotonic() + YIELD_SECONDS
                    self._cond.notify_all()
        elif last:
            with self._cond:
                h.busy = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def holding(self, hosts: Mapping[str, str], *, timeout: float | None = None,
                on_wait: OnWait | None = None) -> Iterator[dict[str, float]]:
        """As HostLocks.holding, alone: after this process's object reconciles of those hosts are
        done. The hosts this thread holds already (its object reconcile's) are not taken again."""
        mine = self._mine_here()
        rest = {n: u for n, u in hosts.items() if u not in mine}
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        taken: list[_Host] = []
        waited: dict[str, float] = {}
        try:
            for name, uri in sorted(rest.items(), key=lambda kv: lock_name(kv[1])):
                started = time.monotonic()
                with self._cond:
                    h = self._host(uri)
                    h.wanting += 1
                    try:
                        self._wait(lambda h=h: not (h.exclusive or h.shared or h.busy
                                                    or time.monotonic() < h.yield_until),
                                   deadline, name, uri, on_wait, limit, until=lambda h=h: h.yield_until)
                    finally:
                        h.wanting -= 1
                        self._cond.notify_all()
                    h.exclusive = True
                taken.append(h)
                if time.monotonic() - started > 0.05:
                    waited[name] = time.monotonic() - started
            left = max(0.0, deadline - time.monotonic())
            with contextlib.ExitStack() as stack:
                with self._raw():  # only while the locks are taken: a try_hold inside is this class's
                    more = stack.enter_context(super().holding(rest, timeout=left, on_wait=on_wait))
                mine.update(rest.values())
                try:
                    yield {**waited, **{n: s + waited.get(n, 0.0) for n, s in more.items()}}
                finally:
                    mine.difference_update(rest.values())
        finally:
            with self._cond:
                for h in taken:
                    h.exclusive = False
                self._cond.notify_all()

    def try_hold(self, name: str, uri: str) -> _Held | None:
        """The host alone if it is free now (no object reconcile of this process in it either)."""
        if getattr(self._here, "raw", False):  # HostLocks taking the lock this class decided to take
            return super().try_hold(name, uri)
        if uri in self._mine_here():
            return _Already()
        with self._cond:
            h = self._host(uri)
            if h.exclusive or h.shared or h.busy or h.wanting or time.monotonic() < h.yield_until:
                return None
            h.exclusive = True

        def free() -> None:
            with self._cond:
                h.exclusive = False
                self._cond.notify_all()

        got = super().try_hold(name, uri)
        if got is None:
            free()
            return None
        return _Exclusive(got, free)
