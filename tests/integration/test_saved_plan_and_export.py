"""Saved plans are refused once a host changed; export round-trips to an empty plan."""

from __future__ import annotations

import json
from pathlib import Path

import libvirt

from tests.integration.conftest import (
    QUICKSTART,
    VirtsyncCli,
    connection,
    snapshot,
    unmanaged_domain,
    unmanaged_network,
    write_host,
)


def test_saved_plan_is_refused_after_an_out_of_band_change(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    conn.lookupByName("web1").setMemoryFlags(200 * 1024, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    plan_file = tmp_path / "plan.json"
    made = virtsync("plan", QUICKSTART, "--connect", uri, "--out", plan_file)
    assert made.code == 2
    saved = json.loads(plan_file.read_text())
    assert saved["kind"] == "plan" and saved["connect"] == uri

    conn.lookupByName("web2").destroy()  # another writer, after the plan was made
    before = snapshot(conn)
    refused = virtsync("apply", plan_file)
    assert refused.code == 1
    assert "changed since the plan was made" in refused.err
    assert snapshot(conn) == before, "nothing changed"


def test_saved_plan_applies_when_nothing_changed(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert virtsync("plan", QUICKSTART, "--connect", uri, "--out", plan_file).code == 2
    applied = virtsync("apply", plan_file)  # a reviewed plan needs no --yes
    assert applied.code == 0, applied.out + applied.err
    assert connection(uri).lookupByName("web1").isActive()
    assert virtsync("plan", QUICKSTART, "--connect", uri).code == 0


def test_saved_plan_is_refused_when_the_specs_changed(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "lab.yaml"
    specs.write_text((QUICKSTART / "lab.yaml").read_text())
    plan_file = tmp_path / "plan.json"
    assert virtsync("plan", specs, "--connect", uri, "--out", plan_file).code == 2
    specs.write_text(specs.read_text().replace("memory: 128MiB\n  maxMemory", "memory: 192MiB\n"
                                               "  maxMemory"))
    refused = virtsync("apply", plan_file)
    assert refused.code == 1 and "specs changed since the plan was made" in refused.err
    assert [d.name() for d in connection(uri).listAllDomains(0)] == []


def test_export_of_a_host_plans_no_changes(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    body = (unmanaged_domain("legacy") + unmanaged_domain("old", running=False)
            + unmanaged_network("legacy-net", 7))
    uri = write_host(tmp_path, body)
    assert virtsync("apply", QUICKSTART, "--connect", uri, "--yes").code == 0
    conn = connection(uri)
    conn.lookupByName("old").setAutostart(1)

    out = tmp_path / "out.yaml"
    exported = virtsync("export", "--connect", uri, "--host", "kvm1", "-o", out)
    assert exported.code == 0, exported.err
    text = out.read_text()
    for name in ("web1", "web2", "legacy", "old", "lab", "legacy-net"):
        assert f"name: {name}\n" in text, name
    assert text.count("adopt: true") == 3  # the unmanaged guests and network

    assert virtsync("validate", out).code == 0
    plan = virtsync("plan", out, "--connect", uri)
    assert plan.code == 0, plan.out + plan.err
    assert "No changes" in plan.out
    before = snapshot(conn)
    assert virtsync("apply", out, "--connect", uri, "--yes").code == 0
    assert snapshot(conn) == before
