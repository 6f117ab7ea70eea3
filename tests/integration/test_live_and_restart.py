"""How changes reach running guests: live, pending restart (never), restart (onChange)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    write_host,
    write_specs,
)

MIB = 1024  # libvirt counts memory in KiB


def _specs(tmp_path: Path, uri: str, **spec: Any) -> Path:
    base: dict[str, Any] = {"state": "running", "vcpus": 1, "memory": "128MiB"}
    base.update(spec)
    return write_specs(tmp_path / "specs", [host_doc(uri), guest_doc("vm1", **base)])


def test_memory_increase_within_max_is_applied_live_without_restart(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, memory="128MiB", maxMemory="256MiB")
    assert virtsync("apply", specs, "--yes").code == 0
    dom = connection(uri).lookupByName("vm1")
    domain_id = dom.ID()
    assert dom.info()[2] == 128 * MIB

    specs = _specs(tmp_path, uri, memory="200MiB", maxMemory="256MiB")
    plan = virtsync("plan", specs)
    assert plan.code == 2
    assert "~ update Guest vm1 (live)" in plan.out
    assert "restart" not in plan.out

    assert virtsync("apply", specs, "--yes").code == 0
    dom = connection(uri).lookupByName("vm1")
    assert dom.info()[2] == 200 * MIB, "live memory changed"
    assert dom.ID() == domain_id, "same domain: not restarted"
    assert "<currentMemory unit='KiB'>204800<" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert virtsync("plan", specs).code == 0


def test_vcpus_beyond_the_maximum_with_restart_never_become_pending(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, vcpus=1, maxVcpus=2, restartPolicy="never")
    assert virtsync("apply", specs, "--yes").code == 0
    domain_id = connection(uri).lookupByName("vm1").ID()

    specs = _specs(tmp_path, uri, vcpus=3, maxVcpus=4, restartPolicy="never")
    first = virtsync("plan", specs)
    assert first.code == 2, first.out  # the definition changes
    assert "update Guest vm1 (next boot)" in first.out
    assert "restart Guest" not in first.out

    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    dom = connection(uri).lookupByName("vm1")
    assert dom.isActive() and dom.ID() == domain_id, "the guest kept running"
    assert dom.info()[3] == 1, "running vCPUs unchanged until a restart"
    assert "current='3'>4</vcpu>" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    text = virtsync("plan", specs)
    assert text.code == 0, text.out  # a pending restart is a status, not a change
    assert "pending" in text.out and "restartPolicy: never" in text.out
    js = virtsync("plan", specs, "--format", "json")
    assert js.code == 0
    doc = js.json()
    assert doc["hasChanges"] is False and doc["summary"]["pending"] == 1
    (pending,) = doc["hosts"][0]["pending"]
    assert pending["name"] == "vm1"
    assert {c["path"] for c in pending["changes"]} >= {"/spec/vcpus"}

    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 0, "pending restart is not drift"
    (obj,) = drift.json()["hosts"][0]["objects"]
    assert obj["status"] == "pending-restart"


def test_vcpus_beyond_the_definition_maximum_without_max_declared_are_pending(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, vcpus=1)
    assert virtsync("apply", specs, "--yes").code == 0
    specs = _specs(tmp_path, uri, vcpus=2)
    assert virtsync("plan", specs).code == 2
    assert virtsync("apply", specs, "--yes").code == 0
    dom = connection(uri).lookupByName("vm1")
    assert dom.isActive() and dom.info()[3] == 1
    after = virtsync("plan", specs)
    assert after.code == 0 and "pending" in after.out


def test_restart_on_change_restarts_the_guest_with_the_new_value(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = _specs(tmp_path, uri, memory="128MiB", restartPolicy="onChange")
    assert virtsync("apply", specs, "--yes").code == 0
    domain_id = connection(uri).lookupByName("vm1").ID()

    # Beyond the memory ceiling (maxMemory defaults to memory): a next-boot change.
    specs = _specs(tmp_path, uri, memory="192MiB", vcpus=2, restartPolicy="onChange")
    plan = virtsync("plan", specs)
    assert plan.code == 2
    assert "update Guest vm1 (next boot)" in plan.out
    assert "restart Guest vm1" in plan.out

    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0, applied.out + applied.err
    dom = connection(uri).lookupByName("vm1")
    state, max_mem, mem, vcpus, _ = dom.info()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    assert dom.ID() != domain_id, "restarted"
    assert (max_mem, mem, vcpus) == (192 * MIB, 192 * MIB, 2)
    after = virtsync("plan", specs)
    assert after.code == 0 and "No changes" in after.out and "pending" not in after.out
