"""JSON Schemas of the machine-readable reports: plan, drift, and apply's ChangeSet.

`virtsync schema` writes them under specs/ next to the spec format's schema;
tests validate real outputs against them. Bump ``schemaVersion`` (and the
``const`` here) on any incompatible change of an output.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union, get_args, get_origin

from controller.plan.actions import ACTION_TYPES, LIVE_OP_TYPES, Action

SCHEMA_BASE = "https://virtsync.dev/schemas/v1/"  # as in controller/spec/schema.py
DRAFT = "https://json-schema.org/draft/2020-12/schema"

KINDS = ["Guest", "Network", "StoragePool", "Volume"]
IMPACTS = ["create", "live", "next-boot", "recreate", "delete"]
# Every op the executor knows: derived from the typed actions (controller/plan/actions.py).
OPS = [t.op for t in ACTION_TYPES]
DRIFT_STATUSES = ["in-sync", "drift", "missing", "pending-restart", "extra", "unmanaged", "error"]
OUTCOME_STATUSES = ["created", "updated", "deleted", "skipped", "failed"]

_COUNT = {"type": "integer", "minimum": 0}
_NAME = {"type": "string", "minLength": 1}
_NULLABLE_STRING = {"type": ["string", "null"]}
_VALUE = {
    "type": ["string", "number", "boolean", "array", "null"],
    "description": "A field's value as shown to people: sizes as text (\"2GiB\"), lists of "
    "keyed items as text, null where there is none.",
}


def _object(properties: dict[str, Any], required: list[str] | None = None,
            description: str = "") -> dict[str, Any]:
    """A closed object: every listed key required unless ``required`` says otherwise."""
    out: dict[str, Any] = {
        "type": "object",
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
        "properties": properties,
    }
    if description:
        out["description"] = description
    return out


def _counts(keys: list[str]) -> dict[str, Any]:
    return _object({k: _COUNT for k in keys})


_OBJECT_REF = {
    "host": _NAME,
    "kind": {"enum": KINDS},
    "name": _NAME,
}

_FIELD_CHANGE = _object(
    {
        "path": {"type": "string", "pattern": "^/", "description": "JSON Pointer into the spec "
                 "(/spec/memory) or the status (/status/active)."},
        "desired": _VALUE,
        "defined": _VALUE,
        "live": _VALUE,
        "impact": {"enum": IMPACTS},
        "note": {"type": "string"},
        "call": {"type": "string", "description": "The libvirt call(s) that make the change live, e.g. "
                 "pinVcpuFlags (from the field registry)."},
        "waits": {"type": "string", "description": "Why the change waits for the guest's next boot."},
    },
    required=["path", "desired", "defined", "live", "impact"],
    description="One field: what the spec says, what is defined, what runs.",
)

_BASE_FIELDS = {f.name for f in dataclasses.fields(Action)}


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema of a field type of the typed actions (str, int, bool, float, tuples, unions,
    nested frozen dataclasses)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = [_type_schema(a) for a in get_args(tp)]
        return {"anyOf": options}
    if origin is tuple:
        item = get_args(tp)[0]
        return {"type": "array", "items": _type_schema(item)}
    if tp is type(None):
        return {"type": "null"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if any(issubclass(tp, t) for t in LIVE_OP_TYPES) or tp.__name__ == "LiveOp":
            return {"$ref": "#/$defs/liveOp"}
        hints = typing.get_type_hints(tp)
        return _object({f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(tp)})
    raise TypeError(f"no JSON Schema for {tp!r}")


def _args_schema(action_type: type[Action]) -> dict[str, Any]:
    hints = typing.get_type_hints(action_type)
    return _object({f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(action_type)
                    if f.name not in _BASE_FIELDS})


def _live_op_schema() -> dict[str, Any]:
    options = []
    for t in LIVE_OP_TYPES:
        hints = typing.get_type_hints(t)
        options.append(_object({"op": {"const": t.op},
                                **{f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(t)}}))
    return {"oneOf": options, "description": "A typed call on the running guest (or its own API)."}


def _action_schema() -> dict[str, Any]:
    common = {
        **_OBJECT_REF,
        "impact": {"enum": IMPACTS},
        "reason": {"type": "string"},
        "changes": {"type": "array", "items": {"$ref": "#/$defs/fieldChange"}},
    }
    # Only with plan --diff, on actions that define XML: the unified diff of that XML.
    diff = {"xmlDiff": {"type": "string", "description": "plan --diff: unified diff of the libvirt XML "
                        "this action defines, against the definition now (empty: the same)"}}
    variants = [_object({**common, "op": {"const": t.op}, "args": _args_schema(t), **diff},
                        required=[*common, "op", "args"]) for t in ACTION_TYPES]
    return {"oneOf": variants, "description": "One step of the plan: a typed action, tagged by op."}


_ACTION = _action_schema()

_PENDING = _object(
    {
        **_OBJECT_REF,
        "reason": {"type": "string"},
        "changes": {"type": "array", "items": {"$ref": "#/$defs/fieldChange"}},
    },
    description="Defined but waiting for a restart that restartPolicy does not allow: a status.",
)

_PROBLEM = _object(
    {**_OBJECT_REF, "severity": {"enum": ["error", "warning"]}, "message": {"type": "string"}},
    description="Something that stops part of the plan (name clash, shrink, unsupported).",
)

_UNMANAGED = _object(
    {"kind": {"enum": KINDS}, "name": _NAME},
    description="An object on the host that this instance does not own.",
)


def plan_schema() -> dict[str, Any]:
    host = _object(
        {
            "host": _NAME,
            "uri": {"type": "string"},
            "fingerprint": {"type": "string", "description": "Digest of what was observed; "
                            "empty when the host could not be read."},
            "error": {**_NULLABLE_STRING, "description": "Why the host could not be observed."},
            "notes": {"type": "array", "items": {"type": "string"}},
            "actions": {"type": "array", "items": {"$ref": "#/$defs/action"}},
            "pending": {"type": "array", "items": {"$ref": "#/$defs/pending"}},
            "problems": {"type": "array", "items": {"$ref": "#/$defs/problem"}},
            "unmanaged": {"type": "array", "items": {"$ref": "#/$defs/unmanaged"}},
        }
    )
    required = ["schemaVersion", "kind", "instance", "specDigest", "prune", "hasChanges",
                "hasErrors", "summary", "hosts"]
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "plan.schema.json",
        "title": "virtsync plan --format json (and the plan files of plan --out)",
        **_object(
            {
                "schemaVersion": {"const": 1},
                "kind": {"const": "plan"},
                "instance": _NAME,
                "specDigest": {"type": "string", "pattern": "^sha256:[0-9a-f]+$"},
                "prune": {"type": "boolean"},
                "hasChanges": {"type": "boolean"},
                "hasErrors": {"type": "boolean"},
                "summary": _counts(["create", "change", "recreate", "delete", "volumes",
                                    "pending", "errors"]),
                "hosts": {"type": "array", "items": host},
                # Only in saved plans (plan --out): how to make the plan again at apply time.
                "sources": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "createdAt": {"type": "string", "format": "date-time"},
                "hostsFilter": {"type": "array", "items": {"type": "string"}},
                "connect": _NULLABLE_STRING,
            },
            required=required,
        ),
        "$defs": {
            "fieldChange": _FIELD_CHANGE,
            "action": _ACTION,
            "liveOp": _live_op_schema(),
            "pending": _PENDING,
            "problem": _PROBLEM,
            "unmanaged": _UNMANAGED,
        },
    }


def drift_schema() -> dict[str, Any]:
    info = _object(
        {
            "state": {"enum": ["running", "stopped", "paused", "other"]},
            "liveMemory": {**_COUNT, "description": "Bytes the running guest has (balloon)."},
            "addresses": {"type": "array", "items": {"type": "string"},
                          "description": "From the guest agent, else the networks' DHCP leases."},
            "agent": {"enum": ["connected", "not connected", "none"]},
            "uptimeSeconds": {**_COUNT, "description": "From the guest's /proc/uptime, via the agent."},
            "snapshots": {"type": "array", "description": "Newest snapshot per policy selecting the guest: ok, "
                          "warning (older than 1.5 schedule periods), critical (3 periods, or none).",
                          "items": _object({"policy": {"type": "string"},
                                            "status": {"enum": ["ok", "warning", "critical"]},
                                            "newest": {"type": ["string", "null"]},
                                            "ageSeconds": {"type": ["integer", "null"]}})},
            "backups": {"type": "array", "description": "Newest backup per backup policy selecting the guest: "
                        "ok, warning (older than 1.5 schedule periods), critical (3 periods, or none).",
                        "items": _object({"policy": {"type": "string"},
                                          "status": {"enum": ["ok", "warning", "critical"]},
                                          "newest": {"type": ["string", "null"]},
                                          "ageSeconds": {"type": ["integer", "null"]}})},
        },
        required=["state"],
        description="What a guest is doing now: information, never drift.",
    )
    obj = _object(
        {
            **_OBJECT_REF,
            "status": {"enum": DRIFT_STATUSES},
            "reconcile": {"enum": ["enforce", "report", "suspended"]},
            "changes": {"type": "array", "items": {"$ref": "#/$defs/fieldChange"}},
            "message": {"type": "string"},
            "info": info,
        },
        required=["host", "kind", "name", "status", "reconcile", "changes"],
    )
    host = _object(
        {
            "host": _NAME,
            "uri": {"type": "string"},
            "error": _NULLABLE_STRING,
            "objects": {"type": "array", "items": obj},
            "unmanaged": {"type": "array", "items": {"$ref": "#/$defs/unmanaged"}},
            "pending": {"type": "array", "items": {"$ref": "#/$defs/pending"}},
        }
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "drift.schema.json",
        "title": "virtsync drift --format json",
        **_object(
            {
                "schemaVersion": {"const": 1},
                "kind": {"const": "drift"},
                "instance": _NAME,
                "generatedAt": {"type": "string", "format": "date-time"},
                "commit": _NULLABLE_STRING,
                "inSync": {"type": "boolean"},
                "hasErrors": {"type": "boolean"},
                "summary": _counts(["in-sync", "drift", "missing", "extra", "pending-restart",
                                    "error", "unmanaged", "unreachable"]),
                "hosts": {"type": "array", "items": host},
            }
        ),
        "$defs": {"fieldChange": _FIELD_CHANGE, "pending": _PENDING, "unmanaged": _UNMANAGED},
    }


def apply_schema() -> dict[str, Any]:
    outcome = _object(
        {
            **_OBJECT_REF,
            "op": {"enum": OPS},
            "status": {"enum": OUTCOME_STATUSES},
            "detail": {"type": "string"},
            "seconds": {"type": "number", "minimum": 0},
            "retryable": {"type": "boolean"},
        }
    )
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_BASE + "apply.schema.json",
        "title": "virtsync apply --format json (the ChangeSet)",
        **_object(
            {
                "schemaVersion": {"const": 1},
                "kind": {"const": "changeset"},
                "counts": _counts(["created", "updated", "unchanged", "deleted", "skipped",
                                   "failed"]),
                "outcomes": {"type": "array", "items": outcome},
            }
        ),
    }


def output_schemas() -> dict[str, dict[str, Any]]:
    return {
        "plan.schema.json": plan_schema(),
        "drift.schema.json": drift_schema(),
        "apply.schema.json": apply_schema(),
    }
