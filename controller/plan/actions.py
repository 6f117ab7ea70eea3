"""The typed plan: ordered actions with a reason and an impact class each."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

from controller.model.state import ResourceKey


class Impact(StrEnum):
    CREATE = "create"
    LIVE = "live"  # applied to the running object and its definition, no restart
    NEXT_BOOT = "next-boot"  # written to the definition; takes effect at the next start
    RECREATE = "recreate"  # undefine + define under the same UUID; needs the guest stopped
    DELETE = "delete"


class Phase(IntEnum):
    """Creation order (pools → networks → guests → volumes → power); deletes run reversed."""

    POOLS = 10
    NETWORKS = 20
    IMAGES = 25  # base images fetched and verified before anything of their guests is defined
    GUESTS = 30
    VOLUMES = 40
    POWER = 50
    DELETE_GUESTS = 60
    DELETE_VOLUMES = 65
    DELETE_NETWORKS = 70
    DELETE_POOLS = 80


@dataclass(frozen=True)
class FieldChange:
    """One field's values: what the spec says, what is defined, what runs."""

    path: str  # JSON Pointer into the spec: /spec/memory, /spec/disks/root/size
    desired: Any
    defined: Any
    live: Any = None
    impact: Impact = Impact.LIVE
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out = {"path": self.path, "desired": self.desired, "defined": self.defined,
               "live": self.live, "impact": str(self.impact)}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Action:
    key: ResourceKey
    op: str  # define | update | recreate | delete | start | stop | … (see apply/executor.py)
    impact: Impact
    phase: Phase
    reason: str
    changes: tuple[FieldChange, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)  # op-specific, JSON-able

    @property
    def label(self) -> str:
        return f"{self.op} {self.key.kind} {self.key.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "host": self.key.host,
            "kind": self.key.kind,
            "name": self.key.name,
            "op": self.op,
            "impact": str(self.impact),
            "reason": self.reason,
            "changes": [c.as_json() for c in self.changes],
        }


@dataclass(frozen=True)
class Pending:
    """A change that is defined but waits for a restart: a status, not an action."""

    key: ResourceKey
    reason: str
    changes: tuple[FieldChange, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                "reason": self.reason, "changes": [c.as_json() for c in self.changes]}


@dataclass(frozen=True)
class Problem:
    """Something that stops part of the plan (a name clash, a shrink, a missing capability)."""

    key: ResourceKey
    message: str
    severity: str = "error"  # error | warning

    def as_json(self) -> dict[str, Any]:
        return {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class HostPlan:
    host: str
    uri: str
    fingerprint: str
    actions: tuple[Action, ...] = ()
    pending: tuple[Pending, ...] = ()
    problems: tuple[Problem, ...] = ()
    unmanaged: tuple[ResourceKey, ...] = ()
    notes: tuple[str, ...] = ()
    error: str = ""  # the host could not be observed
    drift: tuple[ObjectDrift, ...] = ()

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]


@dataclass(frozen=True)
class Plan:
    hosts: tuple[HostPlan, ...]
    instance: str
    spec_digest: str
    prune: bool = False

    @property
    def actions(self) -> list[Action]:
        return [a for h in self.hosts for a in h.actions]

    @property
    def has_changes(self) -> bool:
        return any(h.actions for h in self.hosts)

    @property
    def has_errors(self) -> bool:
        return any(h.errors or h.error for h in self.hosts)


@dataclass(frozen=True)
class ObjectDrift:
    """One object's standing for the drift report: desired vs defined vs live."""

    key: ResourceKey
    status: str  # in-sync | drift | missing | pending-restart | extra | unmanaged | error
    changes: tuple[FieldChange, ...] = ()
    reconcile: str = "enforce"
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # state, IPs, live memory …

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                               "status": self.status, "reconcile": self.reconcile,
                               "changes": [c.as_json() for c in self.changes]}
        if self.message:
            out["message"] = self.message
        if self.info:
            out["info"] = self.info
        return out
