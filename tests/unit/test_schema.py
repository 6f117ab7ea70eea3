"""The committed JSON Schemas are current, and the examples validate against them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
from pydantic import TypeAdapter

from controller.spec.loader import find_spec_files, load_specs
from controller.spec.schema import all_schemas, render
from controller.spec.yaml_reader import read_documents

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(all_schemas()))
def test_committed_schema_is_current(name: str) -> None:
    committed = ROOT / "specs" / name
    assert committed.is_file(), f"specs/{name} is missing: run `virtsync schema`"
    assert committed.read_text() == render(all_schemas()[name]), (
        f"specs/{name} is stale: run `virtsync schema` and commit it"
    )


def test_every_example_directory_validates() -> None:
    examples = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
    with_specs = [p for p in examples if find_spec_files([p])[0]]
    assert {p.name for p in with_specs} >= {"quickstart", "homelab", "multi-host", "xen"}
    for directory in with_specs:
        result = load_specs([directory])
        assert not result.errors, [d.render() for d in result.errors]


def test_example_documents_satisfy_the_published_json_schema() -> None:
    schema = json.loads((ROOT / "specs" / "virtsync.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    files, _ = find_spec_files([ROOT / "examples"])
    checked = 0
    for path in files:
        for doc in read_documents(path.read_text()):
            errors = sorted(validator.iter_errors(doc.data), key=str)
            assert not errors, f"{path}: {errors[0].message}"
            checked += 1
    assert checked >= 15


def test_examples_point_editors_at_the_schema() -> None:
    files, _ = find_spec_files([ROOT / "examples"])
    for path in files:
        assert path.read_text().startswith("# yaml-language-server: $schema="), path


def _defaults(node: object, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every subschema of ``node`` that carries a default, with its JSON Pointer."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if "default" in node:
            found.append((path, node))
        for key, value in node.items():
            found += _defaults(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _defaults(value, f"{path}/{i}")
    return found


def test_every_default_in_the_spec_schema_is_a_value_the_schema_accepts() -> None:
    # An editor that inserts a default must write a valid spec (sizes and durations need units).
    schema = all_schemas()["virtsync.schema.json"]
    with_defaults = _defaults(schema)
    assert len(with_defaults) > 40
    wrong = []
    for pointer, sub in with_defaults:
        alone = {k: v for k, v in sub.items() if k != "default"}
        validator = jsonschema.Draft202012Validator({**alone, "$defs": schema["$defs"]})
        errors = list(validator.iter_errors(sub["default"]))
        if errors:
            wrong.append(f"{pointer}: default {sub['default']!r}: {errors[0].message}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("model", "field", "written", "python"), [
    ("GuestSpec", "memory", "512MiB", 512 * 1024**2),
    ("GuestSpec", "shutdownTimeout", "2m", 120),
    ("HostSpec", "connectTimeout", "10s", 10),
    ("RestartWindow", "duration", "1h", 3600),
    ("SnapshotPolicySpec", "frequentPeriod", "15m", 900),
])
def test_unit_defaults_are_written_with_units_and_mean_the_python_default(
        model: str, field: str, written: str, python: int) -> None:
    from controller.spec import models

    schema = all_schemas()["virtsync.schema.json"]
    assert schema["$defs"][model]["properties"][field]["default"] == written
    cls = getattr(models, model)
    name = next(n for n, f in cls.model_fields.items() if (f.alias or n) == field)
    assert cls.model_fields[name].default == python
    info = cls.model_fields[name]
    assert TypeAdapter(Annotated[info.annotation, *info.metadata]).validate_python(written) == python
