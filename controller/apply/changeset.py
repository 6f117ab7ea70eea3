"""What an apply did: one outcome per action, and counts for people and CI."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from controller.model.records import record
from controller.model.state import ResourceKey

if TYPE_CHECKING:
    from controller.plan.actions import Plan


@record
class Outcome:
    key: ResourceKey
    op: str
    status: str  # created | updated | deleted | skipped | failed
    detail: str = ""
    seconds: float = 0.0
    retryable: bool = False
    delay: float = 0.0  # a failure's earliest sensible retry, in seconds
    conflict: bool = False  # failed because the object changed since it was observed

    def as_json(self) -> dict[str, Any]:
        return {"host": self.key.host, "kind": self.key.kind, "name": self.key.name,
                "op": self.op, "status": self.status, "detail": self.detail,
                "seconds": round(self.seconds, 3), "retryable": self.retryable}


@dataclass
class ChangeSet:
    """What an apply did: an outcome per action, and the objects it left as they were."""

    outcomes: list[Outcome] = field(default_factory=list)
    unchanged: list[ResourceKey] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.outcomes)
        c["unchanged"] = len(self.unchanged)
        return {k: c.get(k, 0) for k in ("created", "updated", "unchanged", "deleted", "skipped",
                                         "failed")}

    def summary(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.counts().items())

    def as_json(self) -> dict[str, Any]:
        # Versioned like plan and drift output: specs/apply.schema.json.
        return {"schemaVersion": 1, "kind": "changeset", "counts": self.counts(),
                "outcomes": [o.as_json() for o in self.outcomes]}


def unchanged_of(plan: Plan, touched: Collection[tuple[str, str, str]]) -> list[ResourceKey]:
    """The objects of ``plan`` in sync (or only waiting for a restart) that no action touched:
    (host, kind, name) of each outcome in ``touched``."""
    return [entry.key for hp in plan.hosts for entry in hp.drift
            if (entry.key.host, entry.key.kind, entry.key.name) not in touched
            and entry.status in ("in-sync", "pending-restart")]
