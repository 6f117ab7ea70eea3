"""The light resync: out-of-band changes libvirt sends no event for, seen within seconds.

Every ``interval`` seconds each host this service holds is fingerprinted
(hypervisor/fingerprints.py: a few bulk calls, plus the definitions of a rotating slice of
the domains); an object whose fingerprint changed since the last pass is queued alone, as an
event would have queued it. The full resync (every 5 minutes by default) stays the backstop.
The first pass only learns the fingerprints: the start of the service reconciles every host.
A repair by the service itself changes a fingerprint too, which costs one more (no-op)
reconcile of that object at the next pass.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from controller.hypervisor.fingerprints import Fingerprint, HostFingerprints, Key, changed
from controller.model.state import ResourceKey
from controller.spec.models import Host
from controller.spec.specset import SpecSet

DEFAULT_INTERVAL = 4.0
# Each domain's definitions are read every SLICES passes: with the default interval, every 12 s.
DEFAULT_SLICES = 3


@dataclass
class PassStats:
    at: datetime | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    objects: int = 0
    queued: int = 0  # objects queued by this pass
    queued_total: int = 0
    error: str = ""


class LightResync:
    """Fingerprints per host and the pass that compares them; ``enqueue`` gets the changed keys."""

    def __init__(self, connect: Callable[[Host], Any], enqueue: Callable[[ResourceKey], None], *,
                 interval: float = DEFAULT_INTERVAL, slices: int = DEFAULT_SLICES):
        self.connect = connect  # Host → a libvirt connection (the engine's, shared)
        self.enqueue = enqueue
        self.interval = interval
        self.slices = slices
        self._hosts: dict[str, HostFingerprints] = {}
        self._last: dict[str, dict[Key, Fingerprint]] = {}
        self._checked: dict[str, tuple[datetime, frozenset[Key]]] = {}  # host → last pass, its objects
        self._lock = threading.Lock()
        self.stats = PassStats()

    def run_pass(self, specs: SpecSet, mine: Callable[[str], bool]) -> set[ResourceKey]:
        """Fingerprint every held host of ``specs``; queue and return the declared objects that changed."""
        started, cpu = time.monotonic(), 0.0
        queued: set[ResourceKey] = set()
        errors: list[str] = []
        count = 0
        for host in specs.hosts:
            name = host.metadata.name
            if not mine(name):
                self._forget(name)
                continue
            fp = self._hosts.setdefault(name, HostFingerprints(name, self.slices))
            try:
                now = fp.read(self.connect(host))
            except Exception as exc:  # unreachable now: its own reconcile reports it
                errors.append(f"{name}: {exc}")
                continue
            finally:
                cpu += fp.cpu_seconds
            count += len(now)
            before = self._last.get(name)
            self._last[name] = now
            with self._lock:
                self._checked[name] = (datetime.now(UTC), frozenset(now))
            declared = specs.memo(f"light-resync-declared:{name}", partial(_declared, host=name))
            if before is None:
                continue  # first pass: learn only
            for kind, obj in sorted(changed(before, now)):
                key = ResourceKey(name, kind, obj)
                if key in declared:  # the full resync handles what the specs do not name
                    queued.add(key)
                    self.enqueue(key)
        self.stats = PassStats(datetime.now(UTC), time.monotonic() - started, cpu,
                               count, len(queued), self.stats.queued_total + len(queued), "; ".join(errors))
        return queued

    def _forget(self, host: str) -> None:
        self._hosts.pop(host, None)
        self._last.pop(host, None)
        with self._lock:
            self._checked.pop(host, None)

    def checked(self) -> dict[ResourceKey, datetime]:
        """When each object was last fingerprinted."""
        with self._lock:
            return {ResourceKey(host, kind, name): at
                    for host, (at, keys) in self._checked.items() for kind, name in keys}

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"intervalSeconds": self.interval, "slices": self.slices,
                "lastPassAt": s.at.isoformat() if s.at else None, "lastPassSeconds": round(s.seconds, 4),
                "lastPassCpuSeconds": round(s.cpu_seconds, 4), "objects": s.objects,
                "queuedLastPass": s.queued, "queuedTotal": s.queued_total, "error": s.error or None}


def _declared(specs: SpecSet, host: str) -> set[ResourceKey]:
    mine = specs.for_host(host)
    return ({ResourceKey(host, "Guest", g.metadata.name) for g in mine.guests}
            | {ResourceKey(host, "Network", n.metadata.name) for n in mine.networks}
            | {ResourceKey(host, "StoragePool", p.metadata.name) for p in mine.pools})
