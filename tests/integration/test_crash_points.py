"""What a run killed between two libvirt calls leaves behind is finished by the next one (the
fault sweep in tests/e2e/test_fault_sweep.py found these on real hosts), and the kill itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import libvirt

from controller.model.state import pool_uuid
from tests.integration.conftest import (
    ROOT,
    VirtsyncCli,
    connection,
    guest_doc,
    host_doc,
    write_host,
    write_specs,
)

MARKER = ".virtsync-owner-default"


def _pool_doc(name: str, path: str) -> dict[str, object]:
    return {"apiVersion": "virtsync/v1", "kind": "StoragePool", "metadata": {"name": name},
            "spec": {"host": "kvm1", "path": path}}


def _pool_xml(name: str, path: str, pool_id: str) -> str:
    return f"<pool type='dir'><name>{name}</name><uuid>{pool_id}</uuid><target><path>{path}</path></target></pool>"


def test_a_pool_a_killed_run_left_defined_but_unstarted_and_unmarked_is_finished(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), _pool_doc("images", "/var/lib/libvirt/images/vs")])
    conn = connection(uri)
    conn.storagePoolDefineXML(_pool_xml("images", "/var/lib/libvirt/images/vs", pool_uuid("default", "images")))
    done = virtsync("apply", specs, "--yes")
    assert done.code == 0, done.out + done.err
    pool = conn.storagePoolLookupByName("images")
    assert pool.isActive() and MARKER in pool.listVolumes()
    assert virtsync("plan", specs).code == 0


def test_a_pool_of_the_same_name_with_another_uuid_is_still_not_ours(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), _pool_doc("images", "/var/lib/libvirt/images/vs")])
    conn = connection(uri)
    conn.storagePoolDefineXML(_pool_xml("images", "/var/lib/libvirt/images/vs", str(uuid.uuid4())))
    refused = virtsync("apply", specs, "--yes")
    assert refused.code == 1 and "is not managed by virtsync" in refused.out + refused.err
    assert not conn.storagePoolLookupByName("images").isActive(), "an unowned pool is left alone"


def test_an_owned_pool_stopped_out_of_band_is_started_again(tmp_path: Path, virtsync: VirtsyncCli) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri), _pool_doc("images", "/var/lib/libvirt/images/vs")])
    assert virtsync("apply", specs, "--yes").code == 0
    conn = connection(uri)
    conn.storagePoolLookupByName("images").destroy()  # its marker volume is unseen now
    audit = tmp_path / "audit.jsonl"
    done = virtsync("apply", specs, "--yes", "--audit-log", audit)
    assert done.code == 0, done.out + done.err
    pool = conn.storagePoolLookupByName("images")
    assert pool.isActive() and pool.listVolumes().count(MARKER) == 1
    (line,) = [json.loads(x) for x in audit.read_text().splitlines()]
    assert (line["action"], line["repair"]) == ("update-pool", True), line  # a repair, not an adoption
    assert virtsync("plan", specs).code == 0


def test_a_guest_an_interrupted_move_left_on_both_hosts_is_undefined_on_the_old_one(
        tmp_path: Path, virtsync: VirtsyncCli) -> None:
    old_uri, new_uri = write_host(tmp_path, name="old.xml"), write_host(tmp_path, name="new.xml")
    hosts = [host_doc(old_uri, "old"), host_doc(new_uri, "new")]
    before = write_specs(tmp_path / "before", [*hosts, guest_doc("g", "old", memory="64MiB", state="stopped")])
    assert virtsync("apply", before, "--yes").code == 0
    old, new = connection(old_uri, "old"), connection(new_uri, "new")
    # what a cold move killed after its define on the new host leaves: the guest on both
    new.defineXML(old.lookupByName("g").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    after = write_specs(tmp_path / "after", [*hosts, guest_doc("g", "new", memory="64MiB", state="stopped")])
    plan = virtsync("plan", after)
    assert plan.code == 2 and "interrupted" in plan.out, plan.out
    done = virtsync("apply", after, "--yes")  # the only guest of host old: no mass-deletion guard
    assert done.code == 0, done.out + done.err
    assert [d.name() for d in old.listAllDomains()] == [] and [d.name() for d in new.listAllDomains()] == ["g"]
    assert virtsync("plan", after).code == 0


def test_the_kill_comes_right_after_the_kth_state_changing_call(tmp_path: Path) -> None:
    uri = write_host(tmp_path)
    specs = write_specs(tmp_path / "specs", [host_doc(uri)] + [
        guest_doc(f"g{i}", memory="64MiB", state="stopped") for i in range(3)])
    log = tmp_path / "calls.log"
    env = dict(os.environ, VIRTSYNC_TEST_KILL_AFTER_CALLS="2", VIRTSYNC_TEST_CALL_LOG=str(log))
    done = subprocess.run([sys.executable, "-m", "controller", "apply", str(specs), "--yes", "--concurrency", "1",
                           "--coordination", f"file://{tmp_path / 'coord'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 137, done.stdout + done.stderr
    assert log.read_text().split() == ["1", "virConnect.defineXML", "2", "virConnect.defineXML"]
    assert "Apply:" not in done.stdout, "it died before its summary"
