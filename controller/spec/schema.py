"""The JSON Schemas virtsync publishes under specs/: the spec format and its outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from controller.spec.models import Resource
from controller.spec.types import DURATION_PATTERN, SIZE_PATTERN
from controller.spec.units import format_duration, format_size

SCHEMA_BASE = "https://virtsync.dev/schemas/v1/"


class _SpecSchemaGenerator(GenerateJsonSchema):
    """Sizes and durations are ints in Python (bytes, seconds) but strings with a unit in
    YAML: their defaults are written the way the schema (and virtsync) accept them."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        default = out.get("default")
        if type(default) is int and out.get("type") == "string":
            if out.get("pattern") == SIZE_PATTERN:
                out["default"] = format_size(default)
            elif out.get("pattern") == DURATION_PATTERN:
                out["default"] = format_duration(default)
        return out


def spec_schema() -> dict[str, Any]:
    schema = TypeAdapter(Resource).json_schema(by_alias=True, mode="validation",
                                               schema_generator=_SpecSchemaGenerator)
    _add_how_changes_land(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE + "virtsync.schema.json",
        "title": "virtsync spec document (apiVersion virtsync/v1)",
        "description": "One YAML document of a virtsync spec tree: Host, Network, StoragePool, "
        "Guest, SnapshotPolicy, BackupPolicy or Secret.",
        **schema,
    }


def _add_how_changes_land(schema: dict[str, Any]) -> None:
    """Each field's description ends with how a change of it lands, from the field registry."""
    from controller.fields.docs import lands

    for kind, model in (("Guest", "GuestSpec"), ("Network", "NetworkSpec"), ("StoragePool", "StoragePoolSpec")):
        props = schema.get("$defs", {}).get(model, {}).get("properties", {})
        for name, how in lands(kind).items():
            if name in props:
                text = props[name].get("description", "")
                props[name]["description"] = (text + " " if text else "") + f"A change lands {how}."


_DIAGNOSTIC = {
    "type": "object",
    "required": ["file", "line", "column", "severity", "message"],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string"},
        "line": {"type": "integer", "minimum": 1},
        "column": {"type": "integer", "minimum": 1},
        "severity": {"enum": ["error", "warning"]},
        "message": {"type": "string"},
    },
}


def validate_output_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_BASE + "validate.schema.json",
        "title": "virtsync validate --format json",
        "type": "object",
        "required": ["schemaVersion", "valid", "files", "objects", "diagnostics"],
        "additionalProperties": False,
        "properties": {
            "schemaVersion": {"const": 1},
            "valid": {"type": "boolean"},
            "files": {"type": "integer", "minimum": 0},
            "objects": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "Objects per kind.",
            },
            "diagnostics": {"type": "array", "items": _DIAGNOSTIC},
        },
    }


def all_schemas() -> dict[str, dict[str, Any]]:
    # Output schemas of later verbs register here too (plan, drift, status).
    from controller.report.schemas import output_schemas

    return {
        "virtsync.schema.json": spec_schema(),
        "validate.schema.json": validate_output_schema(),
        **output_schemas(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = directory / name
        path.write_text(render(schema))
        written.append(path)
    return written
