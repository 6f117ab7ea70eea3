"""What the service knows right now, for /status, the status page and metrics."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from controller.model.records import record
from controller.model.state import HostState, ResourceKey
from controller.plan.actions import HostPlan, ObjectDrift, Pending, Plan
from controller.report.status_page import ActionEntry, ReconcileSample


@dataclass
class HostStatus:
    uri: str
    error: str = ""
    last_sync: datetime | None = None
    unmanaged: tuple[ResourceKey, ...] = ()
    notes: tuple[str, ...] = ()


@record
class ServiceEvent:
    at: datetime
    level: str  # info | warning | error
    message: str


@dataclass
class StatusStore:
    instance: str = "default"
    objects: dict[ResourceKey, ObjectDrift] = field(default_factory=dict)
    pending: dict[ResourceKey, Pending] = field(default_factory=dict)
    hosts: dict[str, HostStatus] = field(default_factory=dict)
    events: deque[ServiceEvent] = field(default_factory=lambda: deque(maxlen=50))
    # For the status page: recent actions (newest first), each object's last change (kept while
    # the object is), and recent reconcile durations (oldest first) for the latency chart.
    actions: deque[ActionEntry] = field(default_factory=lambda: deque(maxlen=100))
    last_change: dict[ResourceKey, ActionEntry] = field(default_factory=dict)
    reconciles: deque[ReconcileSample] = field(default_factory=lambda: deque(maxlen=120))
    # the commit each owned object was last changed by, from its ownership record on the host
    owner_commits: dict[ResourceKey, str] = field(default_factory=dict)
    # when each object was last compared in full (its standing stored by a reconcile)
    compared: dict[ResourceKey, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, level: str, message: str) -> None:
        with self._lock:
            self.events.appendleft(ServiceEvent(datetime.now(UTC), level, message))

    def record_action(self, key: ResourceKey, op: str, outcome: str, *, detail: str = "",
                      seconds: float = 0.0, commit: str = "") -> None:
        entry = ActionEntry(datetime.now(UTC), key, op, outcome, detail, seconds, commit)
        with self._lock:
            self.actions.appendleft(entry)
            if outcome not in ("failed", "skipped"):
                self.last_change[key] = entry

    def record_reconcile(self, key: ResourceKey, seconds: float, ok: bool) -> None:
        with self._lock:
            self.reconciles.append(ReconcileSample(datetime.now(UTC), key, seconds, ok))

    def recent_actions(self) -> list[ActionEntry]:
        with self._lock:
            return list(self.actions)

    def last_changes(self) -> dict[ResourceKey, ActionEntry]:
        with self._lock:
            return {k: v for k, v in self.last_change.items() if k in self.objects}

    def recent_reconciles(self) -> list[ReconcileSample]:
        with self._lock:
            return list(self.reconciles)

    def note_owners(self, state: HostState) -> None:
        """The commits of the owned objects an observation of a host read (known after a restart too)."""
        found = {}
        for kind, objects in (("Guest", state.guests), ("Network", state.networks), ("StoragePool", state.pools)):
            for name, obj in objects.items():
                if obj.owner is not None and obj.owner.commit:
                    found[ResourceKey(state.host, kind, name)] = obj.owner.commit
        with self._lock:
            self.owner_commits.update(found)

    def commits(self) -> dict[ResourceKey, str]:
        with self._lock:
            return {k: v for k, v in self.owner_commits.items() if k in self.objects}

    def set_host(self, name: str, uri: str, *, error: str = "", synced: bool = False,
                 unmanaged: tuple[ResourceKey, ...] | None = None,
                 notes: tuple[str, ...] | None = None) -> None:
        with self._lock:
            hs = self.hosts.setdefault(name, HostStatus(uri))
            hs.uri, hs.error = uri, error
            if synced:
                hs.last_sync = datetime.now(UTC)
            if unmanaged is not None:
                hs.unmanaged = unmanaged
            if notes is not None:
                hs.notes = notes

    def set_object(self, drift: ObjectDrift, pending: Pending | None) -> ObjectDrift | None:
        """Store an object's standing; returns the previous one."""
        with self._lock:
            before = self.objects.get(drift.key)
            if before is not None and "snapshots" in before.info and "snapshots" not in drift.info:
                drift.info["snapshots"] = before.info["snapshots"]  # known until the next full pass
            self.objects[drift.key] = drift
            self.compared[drift.key] = datetime.now(UTC)
            if pending is None:
                self.pending.pop(drift.key, None)
            else:
                self.pending[drift.key] = pending
            return before

    def compared_at(self) -> dict[ResourceKey, datetime]:
        with self._lock:
            return {k: v for k, v in self.compared.items() if k in self.objects}

    def drop_host_objects(self, host: str, keep: set[ResourceKey]) -> None:
        with self._lock:
            for key in [k for k in self.objects if k.host == host and k not in keep]:
                del self.objects[key]
                self.pending.pop(key, None)
                self.last_change.pop(key, None)
                self.owner_commits.pop(key, None)
                self.compared.pop(key, None)

    def forget_object(self, key: ResourceKey) -> None:
        with self._lock:
            self.objects.pop(key, None)
            self.pending.pop(key, None)
            self.last_change.pop(key, None)
            self.owner_commits.pop(key, None)
            self.compared.pop(key, None)

    def forget_hosts(self, keep: set[str]) -> None:
        with self._lock:
            for name in [h for h in self.hosts if h not in keep]:
                del self.hosts[name]
            for key in [k for k in self.objects if k.host not in keep]:
                del self.objects[key]
                self.last_change.pop(key, None)
                self.owner_commits.pop(key, None)
                self.compared.pop(key, None)

    def as_plan(self) -> Plan:
        """The stored standings shaped as a Plan, so the drift renderers can show them."""
        with self._lock:
            hosts = []
            for name, hs in sorted(self.hosts.items()):
                objs = tuple(sorted((o for k, o in self.objects.items() if k.host == name),
                                    key=lambda o: (o.key.kind, o.key.name)))
                pend = tuple(p for k, p in self.pending.items() if k.host == name)
                hosts.append(HostPlan(host=name, uri=hs.uri, fingerprint="", pending=pend,
                                      unmanaged=hs.unmanaged, notes=hs.notes, error=hs.error,
                                      drift=objs))
            return Plan(tuple(hosts), self.instance, "")

    def drift_count(self, host: str) -> int:
        with self._lock:
            return sum(1 for k, o in self.objects.items()
                       if k.host == host and o.status in ("drift", "missing", "extra", "error"))

    def recent(self, n: int = 20) -> list[ServiceEvent]:
        with self._lock:
            return list(self.events)[:n]

    def host_status(self) -> dict[str, HostStatus]:
        with self._lock:
            return {k: replace(v) for k, v in self.hosts.items()}
