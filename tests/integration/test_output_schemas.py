"""Every JSON output validates against its committed schema under specs/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from controller.apply.executor import HANDLERS
from controller.plan.actions import ACTION_TYPES
from controller.report.schemas import output_schemas
from controller.spec.schema import render
from tests.integration.conftest import (
    ROOT,
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    network_doc,
    unmanaged_domain,
    write_host,
    write_specs,
)

SPECS_DIR = ROOT / "specs"


@cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SPECS_DIR / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def assert_valid(name: str, doc: Any) -> None:
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


@pytest.mark.parametrize("name", sorted(output_schemas()))
def test_committed_output_schemas_are_current(name: str) -> None:
    committed = SPECS_DIR / name
    assert committed.is_file(), f"specs/{name} is missing: run `virtsync schema`"
    assert committed.read_text() == render(output_schemas()[name])


def test_plan_schema_names_every_executor_op() -> None:
    variants = output_schemas()["plan.schema.json"]["$defs"]["action"]["oneOf"]
    ops = [v["properties"]["op"]["const"] for v in variants]
    assert sorted(ops) == sorted(t.op for t in HANDLERS)
    assert set(HANDLERS) == set(ACTION_TYPES)  # every typed action has its handler


def _scenario(tmp_path: Path, uri: str) -> Path:
    """Specs that, after the set-up below, give creates, updates, pending, errors and extras."""
    return write_specs(tmp_path / "specs", [
        host_doc(uri),
        network_doc("lab", mode="nat", bridge="vslab0",
                    ipv4={"address": "10.20.0.1/24",
                          "dhcp": {"start": "10.20.0.10", "end": "10.20.0.90",
                                   "hosts": [{"mac": "52:54:00:aa:00:01", "ip": "10.20.0.11"}]}}),
        guest_doc("live", vcpus=1, maxVcpus=2, memory="96MiB", maxMemory="256MiB",
                  interfaces=[{"network": "lab", "mac": "52:54:00:aa:00:01"}]),
        guest_doc("waits", vcpus=4, memory="64MiB", restartPolicy="never"),
        guest_doc("fresh", state="stopped", memory="64MiB"),
        guest_doc("legacy", memory="64MiB"),  # clashes with an unmanaged guest
    ])


def test_plan_drift_apply_and_saved_plan_outputs_match_their_schemas(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, unmanaged_domain("legacy"))
    first = write_specs(tmp_path / "first", [
        host_doc(uri), guest_doc("waits", vcpus=1, memory="64MiB"),
        guest_doc("doomed", memory="64MiB"), guest_doc("doomed2", memory="64MiB"),
        guest_doc("live", vcpus=1, maxVcpus=2, memory="64MiB", maxMemory="256MiB"),
        guest_doc("keep", memory="64MiB"), guest_doc("keep2", memory="64MiB"),
    ])
    applied = virtsync("apply", first, "--yes", "--format", "json")
    assert applied.code == 0, applied.err
    assert_valid("apply.schema.json", applied.json())
    connection(uri).lookupByName("live").setAutostart(1)

    specs = _scenario(tmp_path, uri)
    plan = virtsync("plan", specs, "--prune", "--format", "json", "--out", tmp_path / "plan.json")
    assert plan.code == 1  # the clash
    doc = plan.json()
    assert_valid("plan.schema.json", doc)
    assert_valid("plan.schema.json", json.loads((tmp_path / "plan.json").read_text()))
    ops = {a["op"] for h in doc["hosts"] for a in h["actions"]}
    assert {"define-network", "define", "update", "delete"} <= ops
    assert doc["hosts"][0]["problems"] and doc["hosts"][0]["unmanaged"] == []  # legacy: declared

    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 1
    report = drift.json()
    assert_valid("drift.schema.json", report)
    statuses = {o["status"] for h in report["hosts"] for o in h["objects"]}
    assert {"missing", "drift", "extra", "error"} <= statuses

    done = virtsync("apply", specs, "--prune", "--yes", "--force", "--format", "json")
    assert done.code == 1  # the clash is still an error; everything else is applied
    changeset = done.json()
    assert_valid("apply.schema.json", changeset)
    assert changeset["counts"]["deleted"] == 4 and changeset["counts"]["failed"] == 0

    after = virtsync("plan", specs, "--format", "json")
    assert_valid("plan.schema.json", after.json())
    # waits: 4 vCPUs need a boot; live: a new NIC on a host without hot-plug (test driver)
    assert {p["name"] for p in after.json()["hosts"][0]["pending"]} == {"waits", "live"}
    pending_drift = virtsync("drift", specs, "--format", "json")
    assert_valid("drift.schema.json", pending_drift.json())
    assert pending_drift.json()["summary"]["pending-restart"] == 2


def test_unreachable_host_outputs_match_their_schemas(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = f"test://{tmp_path / 'missing' / 'host.xml'}"
    specs = write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("a", memory="64MiB")])
    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 1
    assert_valid("plan.schema.json", plan.json())
    assert plan.json()["hosts"][0]["error"]
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 1
    assert_valid("drift.schema.json", drift.json())
    assert drift.json()["summary"]["unreachable"] == 1


def test_validate_outputs_match_their_schema(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    good = virtsync("validate", ROOT / "examples", "--format", "json")
    assert good.code == 0
    assert_valid("validate.schema.json", good.json())
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: virtsync/v1\nkind: Guest\nmetadata: {name: x}\n"
                   "spec: {host: h, vcpus: 0, memory: lots}\n")
    invalid = virtsync("validate", bad, "--format", "json")
    assert invalid.code == 1
    doc = invalid.json()
    assert_valid("validate.schema.json", doc)
    assert doc["valid"] is False and doc["diagnostics"]
