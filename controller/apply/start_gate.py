"""Guests that one apply starts together on a host: started paused, resumed together.

A guest's vCPUs run from the moment it starts: on a host of few CPUs, each guest started
early (firmware, a boot) takes CPU from the starts that follow, and the last starts of a
batch crawl (20 diskless guests on 2 CPUs: 10 s; 100 of them: 280 s, as slow as starting
them one by one, issue 17). So when a power phase has two or more guests to start (running,
not paused), each is started paused — bounded to ``concurrency`` starts at a time, as the
phase's other actions are — and waits at the gate until every start of the phase has
returned (started or failed) or ``MAX_WAIT`` has passed; then each resumes at once. The
guests have not run a single instruction while paused.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from controller.model.state import ResourceKey
from controller.plan import actions as act
from controller.plan.actions import Action

# A start that has not returned by then holds the others no longer (a start has its own call
# deadline, hypervisor/deadline.py; this bounds the wait if that one is raised).
MAX_WAIT = 120.0


def gated_starts(chains: Iterable[list[Action]]) -> set[ResourceKey]:
    """The guests whose chain in this phase is one start of a running guest, if two or more."""
    keys = {chain[0].key for chain in chains
            if len(chain) == 1 and isinstance(chain[0], act.Start) and not chain[0].paused}
    return keys if len(keys) >= 2 else set()


class StartGate:
    """The starts of one power phase on one host."""

    def __init__(self, keys: set[ResourceKey], concurrency: int) -> None:
        self.keys = frozenset(keys)
        self.slots = threading.BoundedSemaphore(max(1, concurrency))  # starts under way at once
        self._waiting = set(keys)
        self._all_in = threading.Condition()

    def arrive(self, key: ResourceKey) -> None:
        """``key``'s start returned (or will not be made): one fewer to wait for."""
        with self._all_in:
            self._waiting.discard(key)
            if not self._waiting:
                self._all_in.notify_all()

    def wait(self, timeout: float = MAX_WAIT) -> float:
        """Until every start has arrived (or ``timeout``); the seconds waited."""
        started = time.monotonic()
        with self._all_in:
            self._all_in.wait_for(lambda: not self._waiting, timeout)
        return time.monotonic() - started
