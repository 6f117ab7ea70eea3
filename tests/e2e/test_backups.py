"""Backup policies on a real libvirtd host: full + incrementals through libvirt's backup API,
restores at every point compared byte for byte, verify, a stopped guest's copy, quiesce, copyTo.

The guest runs in firmware only (no OS): data is written into its qcow2 disk by QEMU itself
(`qemu-io` through the monitor, on the disk's device, so the writes go through the same block
layer the guest's would and set the same dirty bitmaps).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.backups, pytest.mark.timeout(600)]

MiB = 1 << 20
DISK = 64 * MiB
# (pattern, offset, length): A fills 24 MiB; B rewrites 1 MiB inside A; C writes 1 MiB elsewhere.
A, B, C = (0xAA, 0, 24 * MiB), (0xBB, 4 * MiB, MiB), (0xCC, 30 * MiB, MiB)
D = (0xDD, 40 * MiB, MiB)  # written while the guest is stopped


def _specs(tmp: Path, uri: str, extra: str = "") -> Path:
    d = tmp / "specs"
    d.mkdir(exist_ok=True)
    for sub in ("pool", "backups", "copies"):
        (tmp / sub).mkdir(exist_ok=True)
    data = tmp / "pool" / "db-data.qcow2"
    if not data.exists():  # qemu-img makes qcow2 v3, which carries dirty bitmaps
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), str(DISK)], check=True)
    (d / "lab.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: bk}}
spec: {{uri: "{uri}", storage: {{allowedDirs: ["{tmp}"]}}}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: guests}}
spec: {{host: bk, path: "{tmp}/pool"}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: backups}}
spec: {{host: bk, path: "{tmp}/backups"}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: db, labels: {{backup: nightly}}}}
spec:
  host: bk
  state: running
  memory: 64MiB
  disks:
    - {{name: root, pool: guests, size: 8MiB, format: raw}}
    - {{name: data, path: "{data}"}}
  shutdownTimeout: 5s
---
apiVersion: virtsync/v1
kind: BackupPolicy
metadata: {{name: nightly}}
spec:
  selector: {{matchLabels: {{backup: nightly}}}}
  schedule: "0 3 * * *"
  target: {{pool: backups, copyTo: "{tmp}/copies"}}
  fullEvery: 7
  retain: {{daily: 7}}
  quiesce: auto
  compress: zstd
{extra}""")
    return d


def _alias(host: HermeticHost, guest: str, path: str) -> str:
    xml = host.virsh("dumpxml", guest)
    at = xml.index(f"file='{path}'")
    return xml[xml.index("<alias name='", at) + len("<alias name='"):].split("'")[0]


def _write(host: HermeticHost, guest: str, path: str, pattern: tuple[int, int, int]) -> None:
    value, offset, length = pattern
    dev = f"{_alias(host, guest, path)}/virtio-backend"
    out = host.virsh("qemu-monitor-command", guest, "--hmp",
                     f'qemu-io -d {dev} "write -P {value:#x} {offset} {length}"')
    assert "rror" not in out, out
    check = host.virsh("qemu-monitor-command", guest, "--hmp",
                       f'qemu-io -d {dev} "read -P {value:#x} {offset} {length}"')
    assert "fail" not in check.lower(), check


def _expected(*patterns: tuple[int, int, int], size: int = 48 * MiB) -> str:
    data = bytearray(size)
    for value, offset, length in patterns:
        data[offset:offset + length] = bytes([value]) * length
    return hashlib.sha256(data).hexdigest()


def _content(image: Path, tmp: Path, size: int = 48 * MiB) -> str:
    raw = tmp / f"{image.name}.raw"
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(image), str(raw)], check=True)
    with raw.open("rb") as f:
        digest = hashlib.sha256(f.read(size)).hexdigest()
    raw.unlink()
    return digest


def _list(specs: Path, guest: str, *extra: str) -> list[dict[str, Any]]:
    doc = json.loads(ok(virtsync("backups", "list", guest, str(specs), "--format", "json", *extra)))
    rows: list[dict[str, Any]] = doc["backups"]
    return rows


def _disk(row: dict[str, Any], target: str) -> dict[str, Any]:
    return next(d for d in row["disks"] if d["target"] == target)


def test_full_and_two_incrementals_restore_each_point_exactly_and_verify(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = _specs(tmp_path, hermetic_host.uri)
    data = str(tmp_path / "pool" / "db-data.qcow2")
    ok(virtsync("apply", str(specs), "--yes"))
    assert "BACKUPS CRITICAL Guest db: policy nightly, none" in ok(virtsync("drift", str(specs)))
    points = []
    for day, pattern in enumerate((A, B, C), start=1):
        _write(hermetic_host, "db", data, pattern)
        run = virtsync("backups", "run", str(specs), "--at", f"2026-03-0{day}T03:00:00Z")
        out = ok(run)
        points.append(out)
        assert "bytes" in run.stderr  # progress lines on the terminal
    assert "took vs-nightly-20260301T030000Z full (push)" in points[0]
    assert "full: the policy has no backup of the guest yet" in points[0]
    assert "incremental (push)" in points[1] and "incremental: from vs-nightly-20260301T030000Z" in points[1]
    assert "incremental: from vs-nightly-20260302T030000Z" in points[2]
    assert "raw disk: no dirty bitmaps" in points[1]  # the root disk is copied whole every time, and says so
    assert "nothing due" in ok(virtsync("backups", "run", str(specs), "--at", "2026-03-03T03:00:10Z"))

    rows = _list(specs, "db")
    assert [r["kind"] for r in rows] == ["full", "incremental", "incremental"]
    assert rows[2]["chain"] == [r["id"] for r in rows]
    full, second = _disk(rows[0], "vdb"), _disk(rows[2], "vdb")
    untouched = A[2] - C[2]  # of what the full holds, C rewrote none: at least A minus C's size stays out
    print(f"\nvdb: full {full['size']} bytes, incrementals {_disk(rows[1], 'vdb')['size']} and {second['size']}")
    assert full["size"] - second["size"] >= untouched
    assert second["backing"] == _disk(rows[1], "vdb")["file"]
    assert _disk(rows[1], "vda")["mode"] == "full" and "raw disk" in _disk(rows[1], "vda")["reason"]
    # Only the newest backup's checkpoint is left on the guest (the next incremental starts from it).
    assert hermetic_host.virsh("checkpoint-list", "db", "--name").split() == [rows[2]["checkpoint"]]

    expected = [_expected(A), _expected(A, B), _expected(A, B, C)]
    for i, row in enumerate(rows):
        out = ok(virtsync("backups", "restore", "db", "--at", row["id"], "--as", f"db-r{i}", str(specs), "--yes"))
        assert f"bk/db-r{i} restored from {row['id']}" in out
        restored = tmp_path / "pool" / f"db-r{i}-vdb.qcow2"
        assert _content(restored, tmp_path) == expected[i], f"restore of point {i + 1} differs"
        xml = hermetic_host.virsh("dumpxml", "--inactive", f"db-r{i}")
        assert str(restored) in xml and "<uuid>" in xml
    uuid = hermetic_host.virsh("domuuid", "db").strip()
    assert uuid not in hermetic_host.virsh("dumpxml", "--inactive", "db-r0")
    # --at a time: the newest backup at or before it
    ok(virtsync("backups", "restore", "db", "--at", "2026-03-02T12:00:00Z", "--as", "db-t", str(specs), "--yes"))
    assert _content(tmp_path / "pool" / "db-t-vdb.qcow2", tmp_path) == expected[1]

    # drift (and /status) carry the newest backup's freshness per policy
    report = json.loads(ok(virtsync("drift", str(specs), "--format", "json")))
    [db] = [o for h in report["hosts"] for o in h["objects"] if o["kind"] == "Guest"]
    [fresh] = db["info"]["backups"]
    assert fresh["policy"] == "nightly" and fresh["newest"] == rows[2]["created"]

    verify = virtsync("backups", "verify", str(specs), "--format", "json")
    doc = json.loads(ok(verify))
    assert doc["ok"] and len(doc["backups"]) == 3 and not any(b["problems"] for b in doc["backups"])

    # A running guest's disks are never overwritten.
    refused = virtsync("backups", "restore", "db", "--at", rows[0]["id"], str(specs), "--yes")
    ok(refused, 1)
    assert "db is running" in refused.stderr

    # copyTo: the chain was streamed off the host, zstd-compressed; it verifies and restores from the copy.
    copies = sorted(p.name for p in (tmp_path / "copies" / "db").iterdir())
    assert len([n for n in copies if n.endswith(".manifest.json")]) == 3
    packed = tmp_path / "copies" / "db" / f"{full['file']}.zst"
    assert f"{full['file']}.zst" in copies and packed.stat().st_size < full["size"] // 2
    doc = json.loads(ok(virtsync("backups", "verify", str(specs), "--from-copy", "--format", "json")))
    assert doc["ok"] and len(doc["backups"]) == 3
    ok(virtsync("backups", "restore", "db", "--at", rows[2]["id"], "--as", "db-c", "--from-copy", str(specs),
                "--yes"))
    assert _content(tmp_path / "pool" / "db-c-vdb.qcow2", tmp_path) == expected[2]

    # A corrupted backup file fails verify, naming the file: on the host (a changed digest) and in
    # the copy (zstd's own checksum).
    name = _disk(rows[1], "vdb")["file"]
    for victim in (tmp_path / "backups" / name, tmp_path / "copies" / "db" / f"{name}.zst"):
        saved = victim.read_bytes()
        with victim.open("r+b") as f:
            f.seek(len(saved) - 1)
            f.write(bytes([saved[-1] ^ 1]))
        bad = virtsync("backups", "verify", str(specs), *(["--from-copy"] if "copies" in str(victim) else []))
        ok(bad, 1)
        assert f"{rows[1]['id']} BAD" in bad.stdout and f"vdb: {name}" in bad.stdout, bad.stdout
        victim.write_bytes(saved)
    stray = tmp_path / "copies" / "db" / "db.vs-nightly-20260309T030000Z.vdb.qcow2"
    stray.write_bytes(b"half a backup")
    bad = virtsync("backups", "verify", str(specs), "--from-copy", "--format", "json")
    ok(bad, 1)
    assert json.loads(bad.stdout)["problems"] == [f"bk/db [nightly]: {stray}: no manifest names this file "
                                                  "(an interrupted backup?)"]
    stray.unlink()

    # A stopped guest: its disks are copied whole, and the copy restores.
    hermetic_host.virsh("destroy", "db")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P {D[0]:#x} {D[1]} {D[2]}", data], check=True,
                   capture_output=True)
    out = ok(virtsync("backups", "run", str(specs), "--at", "2026-03-04T03:00:00Z"))
    assert "full (copy)" in out and "the guest is stopped" in out
    assert "checkpoint left until a pass finds the guest running" in out
    stopped = _list(specs, "db")[-1]
    assert stopped["method"] == "copy" and stopped["checkpoint"] is None and stopped["parent"] is None
    ok(virtsync("backups", "restore", "db", "--at", stopped["id"], "--as", "db-s", str(specs), "--yes"))
    assert _content(tmp_path / "pool" / "db-s-vdb.qcow2", tmp_path) == _expected(A, B, C, D)
    # and the stopped guest itself, in place (same UUID)
    ok(virtsync("backups", "restore", "db", "--at", rows[0]["id"], str(specs), "--yes"))
    assert _content(Path(data), tmp_path) == expected[0]
    assert hermetic_host.virsh("domuuid", "db").strip() == uuid
    # each disk keeps its path and format (the raw root disk is raw again), and no scratch copy is left
    xml = hermetic_host.virsh("dumpxml", "--inactive", "db")
    assert f"file='{data}'" in xml and "type='raw'" in xml and "type='qcow2'" in xml
    assert not [p for p in (tmp_path / "pool").iterdir() if p.name.endswith(".restoring")]


def test_quiesce_required_without_an_agent_fails_and_leaves_nothing(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = _specs(tmp_path, hermetic_host.uri)
    lab = specs / "lab.yaml"
    lab.write_text(lab.read_text().replace("quiesce: auto", "quiesce: required"))
    ok(virtsync("apply", str(specs), "--yes"))
    run = virtsync("backups", "run", str(specs), "--at", "2026-03-01T03:00:00Z")
    ok(run, 1)
    assert "failed vs-nightly-20260301T030000Z" in run.stdout
    assert "quiesce: required" in run.stdout and "no backup was made" in run.stdout
    assert not [p.name for p in (tmp_path / "backups").iterdir() if not p.name.startswith(".virtsync-owner")]
    assert not hermetic_host.virsh("checkpoint-list", "db", "--name").split()
    # auto: the same guest is backed up unfrozen, and the manifest says so
    lab.write_text(lab.read_text().replace("quiesce: required", "quiesce: auto"))
    ok(virtsync("backups", "run", str(specs), "--at", "2026-03-01T03:00:00Z"))
    assert _list(specs, "db")[0]["quiesced"] is False


def test_a_backup_of_the_linux_guest_frozen_through_its_agent_records_quiesced_true(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    from tests.hosts.linux_guest import ensure_test_guest, link_or_copy, make_ext4_image, wait_for_agent

    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    specs = _specs(tmp_path, hermetic_host.uri)
    fs = make_ext4_image(tmp_path / "pool" / "fs.img", 32)
    text = (specs / "lab.yaml").read_text()
    text = text.replace('spec: {uri: "', 'spec: {hypervisor: qemu, uri: "')
    text = text.replace("metadata: {name: db, labels: {backup: nightly}}", "metadata: {name: db, labels: {}}")
    text = text.replace("quiesce: auto", "quiesce: required")
    text += f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: linux, labels: {{backup: nightly}}}}
spec:
  host: bk
  memory: 256MiB
  agent: true
  boot: {{kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=ttyS0"}}
  disks: [{{name: data, path: "{fs}", format: raw}}]
"""
    (specs / "lab.yaml").write_text(text)
    ok(virtsync("apply", str(specs), "--yes"))
    wait_for_agent(hermetic_host, "linux", timeout=120)
    out = ok(virtsync("backups", "run", str(specs), "--at", "2026-05-01T03:00:00Z"))
    assert "bk/linux [nightly] took vs-nightly-20260501T030000Z full (push)" in out
    assert "quiesced=True" in out and "raw disk: no dirty bitmaps" in out
    [row] = _list(specs, "linux")
    assert row["quiesced"] is True and row["checkpoint"] is None  # a raw disk alone: no bitmap to mark
    doc = json.loads(ok(virtsync("backups", "verify", str(specs), "--format", "json")))
    assert doc["ok"] and [b["guest"] for b in doc["backups"]] == ["linux"]


def test_the_service_backs_up_on_schedule_and_backs_off_after_a_failure_with_one_alert(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    from tests.e2e.service_helpers import NotificationSink, ServeProcess, wait_for

    strict = """---
apiVersion: virtsync/v1
kind: BackupPolicy
metadata: {name: strict}
spec:
  selector: {matchLabels: {backup: nightly}}
  schedule: {every: 1h}
  target: {path: "%s"}
  quiesce: required
""" % (tmp_path / "strict")
    specs = _specs(tmp_path, hermetic_host.uri, strict)
    ok(virtsync("apply", str(specs), "--yes"))
    sink = NotificationSink()
    svc = ServeProcess([str(specs), "--snapshot-interval", "2s", "--notify", sink.url], tmp_path / "serve.log")
    try:
        svc.start()
        wait_for(lambda: any(e.get("event") == "backup" and e.get("outcome") == "took" for e in svc.log_events()),
                 60, "a backup taken by the service", svc)
        assert len([n for n in (tmp_path / "backups").iterdir() if n.name.endswith(".manifest.json")]) == 1
        def fresh() -> dict[str, str]:
            return {f["policy"]: f["status"] for f in svc.objects()["Guest/db"].get("info", {}).get("backups", [])}

        wait_for(lambda: fresh().get("nightly") == "ok", 20, "the new backup's freshness in /status", svc)
        assert fresh() == {"nightly": "ok", "strict": "critical"}
        metrics = svc.get("/metrics", raw=True).decode()
        assert 'virtsync_backup_newest_timestamp_seconds{guest="db",host="bk",policy="nightly"}' in metrics
        wait_for(lambda: "backup-failed" in sink.events(), 20, "the failure's notification", svc)
        time.sleep(8)  # four more scheduler passes: the failed pair waits out its backoff (1 min)
        assert sink.events().count("backup-failed") == 1, sink.messages
        assert "quiesce: required" in next(m for m in sink.messages if m.get("event") == "backup-failed")["text"]
        assert 'virtsync_backup_failures_total{guest="db",host="bk",policy="strict"} 1.0' in \
            svc.get("/metrics", raw=True).decode()
        # nothing is retaken while not due: still one backup of the nightly policy
        assert len([n for n in (tmp_path / "backups").iterdir() if n.name.endswith(".manifest.json")]) == 1
    finally:
        svc.stop()
        sink.close()


def test_daily_passes_on_a_real_host_leave_the_chains_and_checkpoint_the_pure_core_decides(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    from datetime import UTC, datetime, timedelta

    from controller.backups import Backup, GuestBackups, plan_pass
    from controller.backups.runner import run_pass
    from controller.engine import Engine, select_hosts
    from controller.hypervisor.connection import ConnectionPool
    from controller.spec.loader import load_specs

    specs = _specs(tmp_path, hermetic_host.uri)
    lab = specs / "lab.yaml"
    text = lab.read_text().replace("fullEvery: 7", "fullEvery: 3").replace("retain: {daily: 7}", "retain: {daily: 2}")
    # a {path: DIR} target this time: virtsync opens a transient dir pool on it for each pass
    lab.write_text(text.replace("target: {pool: backups,", f'target: {{path: "{tmp_path}/bypath",'))
    ok(virtsync("apply", str(specs), "--yes"))
    hermetic_host.virsh("checkpoint-create-as", "db", "someone-elses", "--diskspec", "vda,checkpoint=no",
                        "--diskspec", "vdb,checkpoint=bitmap")  # not virtsync's: left alone
    loaded = select_hosts(load_specs([specs]).raise_for_errors())
    engine = Engine(pool=ConnectionPool())
    try:
        obs = engine.observe(loaded)
        ops = engine.backup_ops(loaded.hosts[0])
        model: list[Backup] = []
        checkpoints: dict[str, str] = {}
        data = str(tmp_path / "pool" / "db-data.qcow2")
        start = datetime(2026, 4, 6, 3, 0, tzinfo=UTC)  # a Monday
        for day in range(8):
            _write(hermetic_host, "db", data, (0x10 + day, day * MiB, MiB))
            at = start + timedelta(days=day)
            outcomes = run_pass(loaded, obs.states, lambda _h: ops, at)
            assert not [o for o in outcomes if o.action == "failed"], outcomes
            [d] = plan_pass({"db": GuestBackups({"backup": "nightly"}, True, tuple(model), checkpoints)},
                            loaded.backup_policies, at)
            assert d.take is not None
            model = [b for b in model if b not in d.retention.delete] + [d.take]
            checkpoints = {c: p for c, p in {**checkpoints, d.take.id: "nightly"}.items()
                           if c not in d.retention.checkpoints_delete}
        listed = [r["id"] for r in _list(specs, "db")]
        assert listed == [b.id for b in model]
        # fulls on days 0, 3, 6; daily 2 keeps days 6 and 7, whose chain is 6..7
        assert [b.created.day - 6 for b in model] == [6, 7]
        on_host = set(hermetic_host.virsh("checkpoint-list", "db", "--name").split())
        assert on_host == {model[-1].checkpoint, "someone-elses"}
        files = {p.name for p in (tmp_path / "bypath").iterdir()}
        assert files == {f"db.{b.id}.{t}" for b in model for t in ("manifest.json", "vda.qcow2", "vdb.qcow2")}
        assert "virtsync-backup-" not in hermetic_host.virsh("pool-list", "--all", "--name")  # closed again
    finally:
        engine.close()
