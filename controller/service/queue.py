"""A de-duplicating work queue with per-key exponential backoff (controller-runtime's).

A key is in the queue at most once; a key being processed is never handed to a
second worker, and if it is added meanwhile it is queued again when done.
Failures back off per key (0.5 s doubling up to 5 min); success forgets.

Two classes of work: what a change announced (an event, a spec change, a retry) goes before
what a periodic pass queued (``background``: the resyncs): at 1,000 guests a light resync
pass may queue dozens of keys, and a repair must not wait behind them. A background key
added again as announced work moves ahead; one that has waited ``patience`` seconds goes first
(a change libvirt sent no event for is found by the light resync alone: it must not wait
for as long as events keep coming).
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, base_delay: float = 0.5, max_delay: float = 300.0, patience: float = 5.0):
        self._cond = threading.Condition()
        self._urgent: deque[K] = deque()
        self._background: deque[K] = deque()
        self._dirty: dict[K, bool] = {}  # queued (or to be queued when done) → background?
        self._since: dict[K, float] = {}  # when a dirty key was first added
        self._latest: dict[K, float] = {}  # … and last
        self._waited: dict[K, float] = {}  # seconds the key last waited before a worker took it
        self._processing: set[K] = set()
        self._delayed: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._base = base_delay
        self._patience = patience
        self._max = max_delay
        self._closed = False
        self.covered = 0  # adds dropped as seen by the processing that was under way (done)

    def add(self, key: K, *, background: bool = False) -> None:
        with self._cond:
            if self._closed:
                return
            self._mark(key, background)

    def _mark(self, key: K, background: bool) -> None:
        self._latest[key] = time.monotonic()
        was = self._dirty.get(key)
        if was is not None:
            if was and not background:  # announced work overtakes a resync's queueing of it
                self._dirty[key] = False
                if key not in self._processing:
                    self._background.remove(key)
                    self._urgent.append(key)
                    self._cond.notify()
            return
        self._dirty[key] = background
        self._since[key] = time.monotonic()
        if key not in self._processing:
            (self._background if background else self._urgent).append(key)
            self._cond.notify()

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: K, at_least: float = 0.0) -> float:
        """Re-queue after a failure, no sooner than ``at_least`` (the error's own delay, like
        controller-runtime's RequeueAfter); returns the delay used."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = max(at_least, min(self._max, self._base * (2**n)) * random.uniform(0.9, 1.1))
        self.add_after(key, delay)
        return float(delay)

    def forget(self, key: K) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def _promote_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one, or None."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            self._mark(key, False)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float | None = None) -> K | None:
        """The next key to process (marked as processing), or None on timeout/close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                wait = self._promote_due()
                if self._urgent or self._background:
                    late = self._background and time.monotonic() - self._since[self._background[0]] >= self._patience
                    key = (self._background if late or not self._urgent else self._urgent).popleft()
                    del self._dirty[key]
                    self._latest.pop(key, None)
                    self._waited[key] = time.monotonic() - self._since.pop(key)
                    self._processing.add(key)
                    return key
                if self._closed:
                    return None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def waited(self, key: K) -> float:
        """Seconds ``key`` waited in the queue before it was last handed out (0 if never)."""
        with self._cond:
            return self._waited.get(key, 0.0)

    def done(self, key: K, seen_at: float | None = None) -> None:
        """``key`` is processed. Added again meanwhile, it is queued again, unless every add came
        before ``seen_at``: the processing observed its object after them (and found it in sync),
        so they asked for nothing it did not see — the events of its own repair, typically."""
        with self._cond:
            self._processing.discard(key)
            self._waited.pop(key, None)
            background = self._dirty.get(key)
            if background is not None and seen_at is not None and self._latest.get(key, seen_at) < seen_at:
                del self._dirty[key]
                self._since.pop(key, None)
                self._latest.pop(key, None)
                self.covered += 1
                return
            if background is not None:
                (self._background if background else self._urgent).append(key)
                self._cond.notify()

    def depth(self) -> int:
        with self._cond:
            return len(self._urgent) + len(self._background) + len(self._delayed)

    def idle(self) -> bool:
        with self._cond:
            return not self._urgent and not self._background and not self._processing

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
