"""The committed JSON Schemas are current, and the examples validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

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
