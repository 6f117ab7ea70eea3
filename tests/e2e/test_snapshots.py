"""Snapshot policies on a real libvirtd host: 40 simulated days of passes, restore, quiesce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.engine import Engine, select_hosts
from controller.hypervisor.connection import ConnectionPool
from controller.hypervisor.snapshots import SnapshotOps
from controller.snapshots.model import GuestSnapshots, Snapshot
from controller.snapshots.policies import plan_pass
from controller.snapshots.runner import run_pass
from controller.spec.loader import load_specs
from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.snapshots, pytest.mark.timeout(600)]


def _specs(tmp: Path, uri: str, state: str = "stopped", policy: str = "") -> Path:
    d = tmp / "specs"
    d.mkdir(exist_ok=True)
    (tmp / "pool").mkdir(exist_ok=True)
    (d / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: snap}}
spec: {{uri: "{uri}", storage: {{allowedDirs: ["{tmp}"]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: snappool}}
spec: {{host: snap, path: "{tmp}/pool"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: db, labels: {{backup: hourly}}}}
spec:
  host: snap
  state: {state}
  memory: 64MiB
  disks: [{{name: root, pool: snappool, size: 64MiB}}]
  restartPolicy: onChange
  shutdownTimeout: 5s
---
apiVersion: virtsync/v1
kind: SnapshotPolicy
metadata: {{name: hdw}}
spec:
  selector: {{matchLabels: {{backup: hourly}}}}
  schedule: {{every: 4h}}
  retain: {{hourly: 6, daily: 7, weekly: 4}}
  quiesce: off
{policy}""")
    return d


def test_forty_simulated_days_leave_exactly_what_the_retention_rule_keeps(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = _specs(tmp_path, hermetic_host.uri)
    ok(virtsync("apply", str(specs), "--yes"))
    hermetic_host.virsh("snapshot-create-as", "db", "manual-before")  # a person's snapshot
    loaded = select_hosts(load_specs([specs]).raise_for_errors())
    engine = Engine(pool=ConnectionPool())
    obs = engine.observe(loaded)
    conn = engine.pool.for_host("snap", hermetic_host.uri)
    ops = SnapshotOps(conn, "default")
    # The same 40 days, decided by the pure core alone: the expected end state.
    model: list[Snapshot] = [Snapshot("manual-before", datetime(2026, 1, 1, tzinfo=UTC))]
    start = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    took = deleted = 0
    for step in range(40 * 6):
        at = start + timedelta(hours=4 * step)
        outcomes = run_pass(loaded, obs.states, lambda _h: ops, at)
        assert not [o for o in outcomes if o.action == "failed"], outcomes
        took += sum(o.action == "took" for o in outcomes)
        deleted += sum(o.action == "deleted" for o in outcomes)
        for d in plan_pass({"db": GuestSnapshots({"backup": "hourly"}, tuple(model))}, loaded.policies, at):
            gone = set(d.delete)
            model = [s for s in model if s.name not in gone] + ([d.take] if d.take else [])
    listed = set(hermetic_host.virsh("snapshot-list", "db", "--name").split())
    assert listed == {s.name for s in model}
    assert "manual-before" in listed
    assert took == 240 and deleted == 240 - (len(listed) - 1)
    print(f"\n40 days: {took} taken, {deleted} pruned, {len(listed) - 1} kept by policy hdw + 1 manual")
    out = ok(virtsync("snapshots", "list", str(specs)))
    assert "policy=hdw" in out and "manual-before" in out and "policy=-" in out
    engine.close()


def test_snapshots_run_and_restore_bring_back_the_old_definition(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    specs = _specs(tmp_path, hermetic_host.uri)
    ok(virtsync("apply", str(specs), "--yes"))
    out = ok(virtsync("snapshots", "run", str(specs), "--at", "2026-03-01T10:00:00Z"))
    assert "took vs-hdw-20260301T100000Z" in out
    assert "nothing due" in ok(virtsync("snapshots", "run", str(specs), "--at", "2026-03-01T10:00:05Z"))
    (specs / "lab.yaml").write_text((specs / "lab.yaml").read_text().replace("memory: 64MiB", "memory: 96MiB"))
    ok(virtsync("apply", str(specs), "--yes"))
    assert "98304" in hermetic_host.virsh("dumpxml", "--inactive", "db")
    proc = virtsync("snapshots", "restore", "db", "vs-hdw-20260301T100000Z", str(specs))
    ok(proc, 1)  # no terminal and no --yes: refused
    ok(virtsync("snapshots", "restore", "db", "vs-hdw-20260301T100000Z", str(specs), "--yes"))
    assert "65536" in hermetic_host.virsh("dumpxml", "--inactive", "db")


def test_quiesce_records_what_happened_and_required_fails_without_an_agent(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    from tests.hosts.linux_guest import ensure_test_guest, link_or_copy, make_ext4_image, wait_for_agent

    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    specs = _specs(tmp_path, hermetic_host.uri, state="running")
    make_ext4_image(tmp_path / "pool" / "fs.img", 32)
    text = (specs / "lab.yaml").read_text()
    text = text.replace('spec: {uri: "', 'spec: {hypervisor: qemu, uri: "')
    text = text.replace("  quiesce: off\n", "  quiesce: auto\n")
    text += f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: linux, labels: {{backup: hourly}}}}
spec:
  host: snap
  memory: 256MiB
  agent: true
  boot: {{kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=ttyS0"}}
  disks: [{{name: data, pool: snappool, from: fs.img, clone: linked}}]
"""
    (specs / "lab.yaml").write_text(text)
    ok(virtsync("apply", str(specs), "--yes"))
    wait_for_agent(hermetic_host, "linux", timeout=120)
    out = ok(virtsync("snapshots", "run", str(specs), "--at", "2026-05-01T00:00:00Z"))
    assert "snap/linux [hdw] took vs-hdw-20260501T000000Z external, quiesced=True" in out
    assert "snap/db [hdw] took vs-hdw-20260501T000000Z internal, quiesced=False" in out  # no agent: auto
    listed = ok(virtsync("snapshots", "list", str(specs), "--format", "json"))
    assert '"quiesced": true' in listed and '"quiesced": false' in listed
    # the overlay chain is the declared disk now: nothing to repair
    assert "No changes" in ok(virtsync("plan", str(specs)))
    # required, and no agent on db: a clear failure and no snapshot
    (specs / "lab.yaml").write_text((specs / "lab.yaml").read_text().replace("quiesce: auto", "quiesce: required"))
    before = hermetic_host.virsh("snapshot-list", "db", "--name").split()
    proc = virtsync("snapshots", "run", str(specs), "--at", "2026-05-01T04:00:00Z")
    ok(proc, 1)
    assert "snap/db [hdw] failed" in proc.stdout and "quiesce" in proc.stdout
    assert hermetic_host.virsh("snapshot-list", "db", "--name").split() == before


def test_a_restart_of_a_before_restart_guest_is_preceded_by_a_snapshot_that_restore_brings_back(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = _specs(tmp_path, hermetic_host.uri, state="running", policy="  beforeRestart: true\n")
    ok(virtsync("apply", str(specs), "--yes"))
    (specs / "lab.yaml").write_text((specs / "lab.yaml").read_text().replace("memory: 64MiB", "memory: 80MiB\n  "
                                                                             "maxMemory: 80MiB"))
    out = ok(virtsync("apply", str(specs), "--yes"))
    assert "restart" in out
    snaps = hermetic_host.virsh("snapshot-list", "db", "--name").split()
    assert len(snaps) == 1 and snaps[0].startswith("vs-hdw-"), snaps
    assert "81920" in hermetic_host.virsh("dumpxml", "--inactive", "db")
    hermetic_host.virsh("destroy", "db")
    ok(virtsync("snapshots", "restore", "db", snaps[0], str(specs), "--yes"))
    assert "65536" in hermetic_host.virsh("dumpxml", "--inactive", "db")  # the old definition is back


def test_drift_shows_each_guests_newest_snapshot_age(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    import json

    specs = _specs(tmp_path, hermetic_host.uri)
    ok(virtsync("apply", str(specs), "--yes"))
    doc = json.loads(ok(virtsync("drift", str(specs), "--format", "json")))
    db = next(o for h in doc["hosts"] for o in h["objects"] if o["name"] == "db")
    assert db["info"]["snapshots"] == [{"policy": "hdw", "status": "critical", "newest": None, "ageSeconds": None}]
    assert "SNAPSHOTS CRITICAL Guest db: policy hdw, none" in ok(virtsync("drift", str(specs)))
    ok(virtsync("snapshots", "run", str(specs)))  # now: a fresh snapshot
    doc = json.loads(ok(virtsync("drift", str(specs), "--format", "json")))
    db = next(o for h in doc["hosts"] for o in h["objects"] if o["name"] == "db")
    assert db["info"]["snapshots"][0]["status"] == "ok" and db["info"]["snapshots"][0]["ageSeconds"] < 60
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "specs" / "drift.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_pruning_external_snapshots_merges_their_overlays_while_the_guest_runs(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    from tests.hosts.linux_guest import agent, ensure_test_guest, link_or_copy, make_ext4_image, wait_for_agent

    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    specs = _specs(tmp_path, hermetic_host.uri, state="running")
    make_ext4_image(tmp_path / "pool" / "fs.img", 32)
    text = (specs / "lab.yaml").read_text().replace('spec: {uri: "', 'spec: {hypervisor: qemu, uri: "')
    text = text.replace("  quiesce: off\n", "  quiesce: auto\n").replace("retain: {hourly: 6, daily: 7, weekly: 4}",
                                                                      "retain: {hourly: 1}")
    text = text.replace("metadata: {name: db, labels: {backup: hourly}}", "metadata: {name: db}")
    text += f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: linux, labels: {{backup: hourly}}}}
spec:
  host: snap
  memory: 256MiB
  agent: true
  boot: {{kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=ttyS0"}}
  disks: [{{name: data, pool: snappool, from: fs.img, clone: linked}}]
"""
    (specs / "lab.yaml").write_text(text)
    ok(virtsync("apply", str(specs), "--yes"))
    wait_for_agent(hermetic_host, "linux", timeout=120)
    for step in range(3):  # the policy fires every 4h
        out = ok(virtsync("snapshots", "run", str(specs), "--at", f"2026-06-01T{4 * step:02d}:00:00Z"))
        assert "external, quiesced=True" in out
        if step:
            assert f"deleted vs-hdw-20260601T{4 * (step - 1):02d}0000Z" in out
    assert hermetic_host.virsh("snapshot-list", "linux", "--name").split() == ["vs-hdw-20260601T080000Z"]
    chain = hermetic_host.virsh("domblklist", "linux", "--details")
    xml = hermetic_host.virsh("dumpxml", "linux")
    assert xml.count("<backingStore type='file'") == 2, xml  # overlay → clone → image: merged, not piled up
    assert "vs-hdw-20260601T00" not in xml and "vs-hdw-20260601T04" not in xml and chain
    fs = agent(hermetic_host, "linux", {"execute": "guest-get-fsinfo"})["return"]
    assert any(f.get("mountpoint") == "/data" for f in fs)  # the guest kept running on its disk
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_memory_snapshots_keep_a_running_guests_memory_internal_or_in_a_file_beside_its_disk(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    import os

    from lxml import etree

    specs = _specs(tmp_path, hermetic_host.uri, state="running", policy="  memory: true\n")
    text = (specs / "lab.yaml").read_text().replace("retain: {hourly: 6, daily: 7, weekly: 4}", "retain: {hourly: 1}")
    text = text.replace("  quiesce: off\n", "  quiesce: auto\n")
    text += """---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: rawdb, labels: {backup: hourly}}
spec:
  host: snap
  memory: 64MiB
  disks: [{name: root, pool: snappool, size: 64MiB, format: raw}]
"""
    (specs / "lab.yaml").write_text(text)
    ok(virtsync("apply", str(specs), "--yes"))
    out = ok(virtsync("snapshots", "run", str(specs), "--at", "2026-07-01T00:00:00Z"))
    assert "snap/db [hdw] took vs-hdw-20260701T000000Z internal, quiesced=False" in out
    assert "snap/rawdb [hdw] took vs-hdw-20260701T000000Z external, quiesced=False" in out  # raw: no internal
    for guest in ("db", "rawdb"):
        snap = etree.fromstring(hermetic_host.virsh("snapshot-dumpxml", guest, "vs-hdw-20260701T000000Z").encode())
        assert snap.findtext("state") == "running", guest  # the memory is in the snapshot
    mem = etree.fromstring(hermetic_host.virsh("snapshot-dumpxml", "rawdb", "vs-hdw-20260701T000000Z").encode())
    memory_file = mem.find("memory").get("file")
    assert memory_file == f"{tmp_path}/pool/rawdb.vs-hdw-20260701T000000Z.mem"
    assert mem.find("memory").get("snapshot") == "external" and os.path.getsize(memory_file) > 0
    assert "running" in hermetic_host.virsh("domstate", "rawdb")
    assert "No changes" in ok(virtsync("plan", str(specs)))  # the overlay on the raw disk is the disk now

    out = ok(virtsync("snapshots", "run", str(specs), "--at", "2026-07-01T04:00:00Z"))
    # external again (an internal one would live in the overlay that pruning merges away)
    assert "snap/rawdb [hdw] took vs-hdw-20260701T040000Z external, quiesced=False" in out
    assert "snap/rawdb [hdw] deleted vs-hdw-20260701T000000Z" in out
    assert hermetic_host.virsh("snapshot-list", "rawdb", "--name").split() == ["vs-hdw-20260701T040000Z"]
    assert not os.path.exists(memory_file), "a pruned snapshot's memory file is deleted with it"
    assert sorted(p.name for p in (tmp_path / "pool").glob("*.mem")) == ["rawdb.vs-hdw-20260701T040000Z.mem"]
    leftover = [p.name for p in (tmp_path / "pool").iterdir() if "20260701T000000Z" in p.name and "rawdb" in p.name]
    assert not leftover, "the merged overlay is deleted too"
    assert "running" in hermetic_host.virsh("domstate", "rawdb")
    assert "No changes" in ok(virtsync("plan", str(specs)))
