"""Backoff of crash recoveries (crashPolicy: restart) per guest, in the service.

A guest that crashes again right after each recovery would otherwise be destroyed and started
as fast as libvirt's lifecycle events arrive. The first recovery runs at once; each further one
within ``window`` of the previous waits ``base``·2^(n−1) after it (10 s, 20 s, 40 s … at most
5 min); a guest that stayed up for ``window`` starts from nothing again. `virtsync apply` runs
once and needs none of this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from controller.model.state import ResourceKey
from controller.plan.actions import Action, Recover


class CrashBackoff:
    def __init__(self, base: float = 10.0, cap: float = 300.0, window: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base, self.cap, self.window, self.clock = base, cap, window, clock
        self._last: dict[ResourceKey, tuple[int, float]] = {}  # recoveries in a row, when the last ran
        self._lock = threading.Lock()

    def wait(self, key: ResourceKey) -> tuple[float, int]:
        """Seconds before ``key`` may be recovered again (0: now), and its recoveries in a row."""
        with self._lock:
            count, last = self._last.get(key, (0, 0.0))
            since = self.clock() - last
            if count == 0 or since > self.window:
                return 0.0, 0
            return max(0.0, min(self.cap, self.base * 2 ** (count - 1)) - since), count

    def record(self, key: ResourceKey) -> int:
        """Note a recovery of ``key`` now; returns its recoveries in a row."""
        with self._lock:
            count, last = self._last.get(key, (0, 0.0))
            now = self.clock()
            count = count + 1 if count and now - last <= self.window else 1
            self._last[key] = (count, now)
            return count


def hold_recoveries(actions: Sequence[Action], backoff: CrashBackoff,
                    held: Callable[[Recover, float, int], None]) -> list[Action]:
    """The actions without the recoveries still backing off (``held`` is told of each, to say so
    and to queue the guest again when its wait is over); the recoveries let through are recorded."""
    out: list[Action] = []
    for a in actions:
        if isinstance(a, Recover):
            wait, count = backoff.wait(a.key)
            if wait > 0:
                held(a, wait, count)
                continue
            backoff.record(a.key)
        out.append(a)
    return out
