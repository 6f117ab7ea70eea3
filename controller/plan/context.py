"""What the planner knows besides specs and observed state: pure inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.fields.applied import applied_fields, declared, digest

__all__ = ["SUSPEND_ANNOTATION", "PlanOptions", "applied_fields", "declared", "digest", "ownership_problem"]

SUSPEND_ANNOTATION = "virtsync/suspend"  # "true": the object is only reported, never changed


@dataclass(frozen=True)
class PlanOptions:
    instance: str = "default"
    prune: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    commit: str = ""


def ownership_problem(key: Any, what: str, exists: bool, owner: Any, adopt: bool, instance: str) -> str | None:
    """Why an existing object may not be touched: it is not virtsync's (and not adopted), or
    another instance owns it. None when it may be changed."""
    if not exists:
        return None
    if owner is None and not adopt:
        return (f"a {what} named {key.name!r} exists on {key.host} and is not managed by virtsync; "
                "set adopt: true to take it over")
    if owner is not None and owner.instance != instance:
        return f"{what} {key.name!r} is managed by virtsync instance {owner.instance!r}, not {instance!r}"
    return None
