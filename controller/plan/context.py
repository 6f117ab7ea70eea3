"""What the planner knows besides specs and observed state: pure inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from datetime import UTC, datetime
from typing import Any

from controller.fields.applied import applied_fields, declared, digest
from controller.fields.patches import unsatisfied_in
from controller.model.records import record
from controller.plan.actions import FieldChange, Impact
from controller.spec.patches import XmlPatch

__all__ = ["SUSPEND_ANNOTATION", "PlanOptions", "applied_fields", "declared", "digest", "ownership_problem"]

SUSPEND_ANNOTATION = "virtsync/suspend"  # "true": the object is only reported, never changed


@record
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


def patch_changes(xml: str, patches: Sequence[XmlPatch], impact: Impact) -> list[FieldChange]:
    """Each xmlPatch the observed definition does not satisfy, as a change landing with ``impact``
    (the next write of the definition applies every patch again)."""
    return [FieldChange(m.pointer, m.want, m.have, None, impact, m.note) for m in unsatisfied_in(xml, patches)]
