"""Removing a device from a guest is destructive: it happens only with --prune (and counts in the
mass-deletion guard); never on the first apply of an adopted guest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import (
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    network_doc,
    write_host,
    write_specs,
)

DATA = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}
ROOT = {"name": "root", "path": "/var/lib/libvirt/images/root.qcow2"}


def _disk_names(conn: libvirt.virConnect) -> list[str]:
    xml = conn.lookupByName("g1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return [f for f in ("root.qcow2", "data.qcow2") if f in xml]


def _specs(uri: str, disks: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    return [host_doc(uri), guest_doc("g1", memory="64MiB", state="stopped", disks=disks, **extra)]


def test_a_disk_removed_from_the_spec_is_detached_only_with_prune(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    write_specs(specs, _specs(uri, [ROOT, DATA]))
    assert virtsync("apply", specs, "--yes").code == 0
    write_specs(specs, _specs(uri, [ROOT]))
    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 0, plan.out  # nothing to do without --prune: a status, not a change
    host = plan.json()["hosts"][0]
    assert host["actions"] == []
    assert any("--prune" in p["reason"] and p["changes"][0]["defined"] == "data" for p in host["pending"])
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0 and "--prune" in applied.out
    assert _disk_names(connection(uri)) == ["root.qcow2", "data.qcow2"]  # kept
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 2  # there is drift, naming the disk
    g1 = next(o for h in drift.json()["hosts"] for o in h["objects"] if o["name"] == "g1")
    assert g1["status"] == "drift" and [c["defined"] for c in g1["changes"]] == ["data"]
    pruned = virtsync("apply", specs, "--yes", "--prune")
    assert pruned.code == 0, pruned.err
    assert _disk_names(connection(uri)) == ["root.qcow2"]
    assert virtsync("plan", specs, "--prune").code == 0


def test_a_held_removal_does_not_hide_in_another_change_of_the_same_guest(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    write_specs(specs, _specs(uri, [ROOT, DATA]))
    assert virtsync("apply", specs, "--yes").code == 0
    write_specs(specs, _specs(uri, [ROOT, {"name": "more", "path": "/var/lib/libvirt/images/more.qcow2"}]))
    assert virtsync("apply", specs, "--yes").code == 0  # attaches `more`, keeps `data`
    xml = connection(uri).lookupByName("g1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "more.qcow2" in xml and "data.qcow2" in xml


def test_removed_devices_count_in_the_mass_deletion_guard(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    write_specs(specs, _specs(uri, [ROOT, DATA]))
    assert virtsync("apply", specs, "--yes").code == 0
    write_specs(specs, _specs(uri, []))
    refused = virtsync("apply", specs, "--yes", "--prune", "--max-deletions", "1")
    assert refused.code == 1 and "detach 2 objects" in refused.err and "g1: detach disk" in refused.err
    assert _disk_names(connection(uri)) == ["root.qcow2", "data.qcow2"]


def test_an_adopted_guest_keeps_its_devices_on_the_first_apply_even_with_prune(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    disk = "<disk type='file' device='disk'><source file='/var/lib/libvirt/images/old.img'/>" \
           "<target dev='vda' bus='virtio'/></disk>"
    nic = "<interface type='network'><mac address='52:54:00:77:00:01'/><source network='lab'/></interface>"
    body = ("<domain type='test'><name>g1</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            f"<os><type>hvm</type></os><devices>{disk}{nic}</devices></domain>")
    uri = write_host(tmp_path, body)
    specs = tmp_path / "specs"
    write_specs(specs, [host_doc(uri), network_doc("lab", mode="isolated", bridge="vs-adopt0"),
                        guest_doc("g1", memory="64MiB", adopt=True, disks=[], interfaces=[])])
    assert virtsync("apply", specs, "--yes", "--prune").code == 0
    xml = connection(uri).lookupByName("g1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "old.img" in xml and "52:54:00:77:00:01" in xml
