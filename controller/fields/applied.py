"""What ownership records as last applied: a spec's declared fields, as JSON, and digests."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


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


# model class → its fields' YAML names (pydantic's model_fields is a costly descriptor since 2.11)
_YAML_NAMES: dict[type[BaseModel], dict[str, str]] = {}


def declared(spec: BaseModel) -> set[str]:
    """Spec field names (as written in YAML) the user declared."""
    names = _YAML_NAMES.get(type(spec))
    if names is None:
        names = _YAML_NAMES[type(spec)] = {n: f.alias or n for n, f in type(spec).model_fields.items()}
    return {names[f] for f in spec.model_fields_set}
