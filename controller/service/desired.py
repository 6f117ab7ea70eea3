"""The desired state the service converges to: the last good spec set and its commit.

A spec set that does not validate never replaces the last good one: its
errors are kept for /status, logs and notifications, and nothing of it is applied.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controller.engine import declared_elsewhere
from controller.errors import Diagnostic
from controller.fields.applied import applied_fields, digest
from controller.model.state import ResourceKey
from controller.spec.models import Guest, Network, StoragePool, Volume
from controller.spec.secrets import secret_inputs, value_digests
from controller.spec.specset import SpecSet


def object_digests(specs: SpecSet) -> dict[ResourceKey, str]:
    """Every host-placed object's key and a digest of all it declares."""
    out: dict[ResourceKey, str] = {}
    values = value_digests(specs)
    for item in specs.items:
        obj = item.obj
        if isinstance(obj, Guest | Network | StoragePool | Volume):
            key = ResourceKey(obj.spec.host or "", obj.kind, obj.metadata.name)
            out[key] = digest([applied_fields(obj.spec), obj.metadata.labels, obj.metadata.annotations,
                               secret_inputs(obj, values)])
    for host in specs.hosts:
        out[ResourceKey(host.metadata.name, "Host", host.metadata.name)] = digest(
            [applied_fields(host.spec), host.metadata.labels])
    return out


@dataclass
class LoadError:
    commit: str
    diagnostics: list[Diagnostic]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class DesiredState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.specs: SpecSet | None = None
        self.commit = ""
        self.loaded_at: datetime | None = None
        self.error: LoadError | None = None
        self._digests: dict[ResourceKey, str] = {}
        self._elsewhere: dict[str, frozenset[str]] = {}
        self.complete: SpecSet | None = None  # the whole set ``specs`` was narrowed from (agents)

    def accept(self, specs: SpecSet, commit: str, complete: SpecSet | None = None
               ) -> tuple[set[ResourceKey], set[ResourceKey]]:
        """Take a validated spec set (``complete``: the whole set it was narrowed from, say to
        this agent's host); returns (changed or added keys, removed keys)."""
        digests = object_digests(specs)
        elsewhere = declared_elsewhere(complete or specs)
        with self._lock:
            old = self._digests
            changed = {k for k, d in digests.items() if old.get(k) != d}
            removed = set(old) - set(digests)
            self.specs, self.commit, self._digests = specs, commit, digests
            self.complete = complete or specs
            self._elsewhere = elsewhere
            self.loaded_at = datetime.now(UTC)
            self.error = None
        return changed, removed

    def reject(self, commit: str, diagnostics: list[Diagnostic]) -> None:
        with self._lock:
            self.error = LoadError(commit, diagnostics)

    def elsewhere(self) -> dict[str, frozenset[str]]:
        """Per host, the guests the complete specs place on other hosts (never pruned there)."""
        with self._lock:
            return self._elsewhere

    def digest_of(self, key: ResourceKey) -> str | None:
        with self._lock:
            return self._digests.get(key)

    def snapshot(self) -> tuple[SpecSet | None, str]:
        with self._lock:
            return self.specs, self.commit
