"""A spec that changes a disk's source (its path, its pool) takes from the guest what it had: the
change is destructive like a detach. Held without --prune (plan: pending, drift: exit 2), counted
by the mass-deletion guard, applied with --prune; the old file or volume stays on the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import libvirt

from tests.integration.conftest import VirtsyncCli, connection, guest_doc, host_doc, write_host, write_specs

ROOT = {"name": "root", "path": "/var/lib/libvirt/images/root.qcow2"}
DATA = {"name": "data", "path": "/var/lib/libvirt/images/data.qcow2"}
MOVED = {"name": "data", "path": "/var/lib/libvirt/images/data-new.qcow2"}


def _sources(uri: str) -> list[str]:
    xml = connection(uri).lookupByName("g1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return [f for f in ("root.qcow2", "data.qcow2", "data-new.qcow2", "g1-data.qcow2") if f"/{f}'" in xml]


def _specs(uri: str, disks: list[dict[str, Any]], *pools: dict[str, Any]) -> list[dict[str, Any]]:
    host = host_doc(uri)
    host["spec"]["storage"] = {"allowedDirs": ["/var/lib/libvirt/images", *(p["spec"]["path"] for p in pools)]}
    return [host, *pools, guest_doc("g1", memory="64MiB", state="stopped", disks=disks)]


def _pending(run: Any) -> list[dict[str, Any]]:
    return [p for h in run.json()["hosts"] for p in h["pending"]]


def test_a_changed_disk_path_is_held_without_prune_and_applied_with_it(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    write_specs(specs, _specs(uri, [ROOT, DATA]))
    assert virtsync("apply", specs, "--yes").code == 0
    write_specs(specs, _specs(uri, [ROOT, MOVED]))

    plan = virtsync("plan", specs, "--format", "json")
    assert plan.code == 0, plan.out  # held: a status, not a change
    assert plan.json()["hosts"][0]["actions"] == []
    held = [c for p in _pending(plan) if "--prune" in p["reason"] and "source" in p["reason"] for c in p["changes"]]
    assert [(c["path"], c["desired"], c["defined"]) for c in held] == [
        ("/spec/disks/1/path", MOVED["path"], DATA["path"])], _pending(plan)
    applied = virtsync("apply", specs, "--yes")
    assert applied.code == 0 and "--prune" in applied.out, applied.out
    assert _sources(uri) == ["root.qcow2", "data.qcow2"]  # the guest keeps its disk
    drift = virtsync("drift", specs, "--format", "json")
    assert drift.code == 2, drift.out
    g1 = next(o for h in drift.json()["hosts"] for o in h["objects"] if o["name"] == "g1")
    assert [(c["desired"], c["defined"]) for c in g1["changes"]] == [(MOVED["path"], DATA["path"])]

    pruning = virtsync("plan", specs, "--prune", "--format", "json")
    assert pruning.code == 2, pruning.out
    update = next(a for a in pruning.json()["hosts"][0]["actions"] if a["kind"] == "Guest")
    change = next(c for c in update["changes"] if c["path"] == "/spec/disks/1/path")
    assert change["impact"] == "next-boot" and change["note"].startswith("destructive: the guest loses "), change
    text = virtsync("plan", specs, "--prune")
    assert "destructive" in text.out and DATA["path"] in text.out, text.out
    pruned = virtsync("apply", specs, "--yes", "--prune")
    assert pruned.code == 0, pruned.err
    assert _sources(uri) == ["root.qcow2", "data-new.qcow2"]
    assert virtsync("plan", specs, "--prune").code == 0


def test_a_changed_disk_source_counts_in_the_mass_deletion_guard(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = tmp_path / "specs"
    write_specs(specs, _specs(uri, [ROOT, DATA]))
    assert virtsync("apply", specs, "--yes").code == 0
    write_specs(specs, _specs(uri, [ROOT, MOVED]))
    refused = virtsync("apply", specs, "--yes", "--prune", "--max-deletions", "0")
    assert refused.code == 1, refused.out
    assert f"g1: detach disk data from {DATA['path']}" in refused.err, refused.err
    assert _sources(uri) == ["root.qcow2", "data.qcow2"]


def _pool(name: str, path: Path) -> dict[str, Any]:
    return {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": name},
            "spec": {"host": "kvm1", "path": str(path)}}


def test_a_disk_moved_to_another_pool_gets_a_new_volume_and_the_old_one_is_kept(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    fast, slow = _pool("fast", tmp_path / "fast"), _pool("slow", tmp_path / "slow")
    specs = tmp_path / "specs"
    disk = {"name": "data", "pool": "fast", "size": "16MiB"}
    write_specs(specs, _specs(uri, [disk], fast, slow))
    assert virtsync("apply", specs, "--yes").code == 0
    assert f"{tmp_path}/fast/g1-data.qcow2" in connection(uri).lookupByName("g1").XMLDesc(0)
    write_specs(specs, _specs(uri, [{**disk, "pool": "slow"}], fast, slow))

    held = virtsync("plan", specs, "--format", "json")
    assert any(c["path"] == "/spec/disks/0/pool" and c["desired"] == f"{tmp_path}/slow/g1-data.qcow2"
               for p in _pending(held) for c in p["changes"]), _pending(held)
    assert virtsync("apply", specs, "--yes", "--prune").code == 0
    conn = connection(uri)
    xml = conn.lookupByName("g1").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"{tmp_path}/slow/g1-data.qcow2" in xml and f"{tmp_path}/fast/g1-data.qcow2" not in xml, xml
    for pool in ("fast", "slow"):  # the new volume was made; the old one is still there
        p = conn.storagePoolLookupByName(pool)
        p.refresh(0)
        assert "g1-data.qcow2" in p.listVolumes(), (pool, p.listVolumes())
    assert virtsync("plan", specs, "--prune").code == 0


def test_an_adopted_guest_keeps_its_disk_source_on_its_first_apply(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path, "<domain type='test'><name>g1</name><memory unit='MiB'>64</memory>"
                               "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
                               f"<source file='{DATA['path']}'/><target dev='vda' bus='virtio'/>"
                               "<alias name='ua-data'/></disk></devices></domain>")
    specs = tmp_path / "specs"
    docs = _specs(uri, [MOVED])
    docs[-1]["spec"]["adopt"] = True
    write_specs(specs, docs)
    applied = virtsync("apply", specs, "--yes", "--prune")
    assert applied.code == 0, applied.err
    assert "adopting: the first apply never removes a device or changes a disk's source" in applied.out, applied.out
    assert _sources(uri) == ["data.qcow2"]
