"""What the planner knows besides specs and observed state: pure inputs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class PlanOptions:
    instance: str = "default"
    prune: bool = False
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    commit: str = ""


def applied_fields(spec: BaseModel) -> dict[str, Any]:
    """The declared fields of a spec, as JSON: what ownership records as last applied."""
    out: dict[str, Any] = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(out.get("cloudInit"), dict):
        # cloud-init may hold secrets: only its digest is ever recorded or shown
        out["cloudInit"] = digest(out["cloudInit"])
    return out


def digest(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:32]


def declared(spec: BaseModel) -> set[str]:
    """Spec field names (as written in YAML) the user declared."""
    fields = type(spec).model_fields  # instance access is deprecated since pydantic 2.11
    return {fields[f].alias or f for f in spec.model_fields_set}


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
