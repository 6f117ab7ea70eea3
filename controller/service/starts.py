"""Guest starts under way on one host at once, in `serve`.

A start waits on the daemon for a second or more (libvirtd here starts about two guests a
second however many are asked at once), while most repairs take a fraction of a second. With
every worker inside a start, the other guests' repairs would wait for a worker behind them; so
at most ``limit`` reconciles of one host carry out a start at once. One that would start one
more carries out nothing yet, leaves its worker, and waits in line: when a start ends, the next
in line is queued again (FIFO: a new start never overtakes one in line).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass

from controller.model.state import ResourceKey

STARTS_AT_ONCE = 4


@dataclass
class Ticket:
    """One reconcile's part: whether it took a start slot (given back when it is done)."""

    took: bool = False


class StartSlots:
    def __init__(self, wake: Callable[[ResourceKey], None], limit: int = STARTS_AT_ONCE):
        self.limit = limit
        self._wake = wake  # queues a key again
        self._lock = threading.Lock()
        self._busy: dict[str, int] = defaultdict(int)  # starts under way, and slots promised
        self._line: dict[str, deque[ResourceKey]] = defaultdict(deque)
        self._promised: set[ResourceKey] = set()  # woken keys, each with a slot kept for it

    def take(self, key: ResourceKey) -> bool:
        """A slot for ``key``'s start now, or False: ``key`` is in line, and queued again later."""
        with self._lock:
            if key in self._promised:
                self._promised.discard(key)
                return True
            line = self._line[key.host]
            if self._busy[key.host] < self.limit and not line:
                self._busy[key.host] += 1
                return True
            if key not in line:
                line.append(key)
            return False

    def done(self, key: ResourceKey, took: bool) -> None:
        """After each reconcile of ``key``: the slot it took (or was promised and did not need)
        goes to the next in line."""
        with self._lock:
            if not took and key not in self._promised:
                return
            self._promised.discard(key)
            self._busy[key.host] -= 1
            line = self._line[key.host]
            nxt = line.popleft() if line else None
            if nxt is not None:
                self._busy[key.host] += 1
                self._promised.add(nxt)
        if nxt is not None:
            self._wake(nxt)

    def waiting(self, host: str) -> int:
        with self._lock:
            return len(self._line.get(host, ()))
