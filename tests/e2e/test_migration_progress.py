"""Moves between two real libvirtd hosts show their progress: a live migration (bytes of the job's
total, from libvirt's job statistics) as an updating line when `virtsync apply` runs on a
terminal, a cold move's volume copy as plain lines through a pipe."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ROOT, ok, virtsync
from tests.e2e.test_fleet import join
from tests.hosts.hermetic import HostFactory

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.timeout(300)]


def _apply_in_pty(specs: Path) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "controller", "apply", str(specs), "--yes"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"})
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child is gone
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return code, b"".join(chunks).decode()


def test_a_live_migration_on_a_terminal_shows_an_updating_progress_line(
        hermetic_host_factory: HostFactory, tmp_path: Path) -> None:
    a = hermetic_host_factory("pa", listen_tcp=True)
    b = hermetic_host_factory("pb", listen_tcp=True)
    ip_a, ip_b = join(a, b, "pm", "10.97.0")
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(where: str) -> None:
        docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}", hypervisor: qemu, migrationUri: "qemu+tcp://{ip}/system", migrationAddress: {ip}}}
""" for name, host, ip in (("pa", a, ip_a), ("pb", b, ip_b))]
        docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: mover}}
spec: {{host: {where}, memory: 1GiB, state: running}}
""")
        (specs / "fleet.yaml").write_text("---\n".join(docs))

    write("pa")
    ok(virtsync("apply", str(specs), "--yes"))
    assert a.virsh("domstate", "mover").strip() == "running"
    # 1 GiB (mostly zero pages) over a slow link: long enough for the job to be watched a few times.
    a.virsh("migrate-setspeed", "mover", "1")
    write("pb")
    code, out = _apply_in_pty(specs)
    assert code == 0, out
    assert b.virsh("domstate", "mover").strip() == "running"
    label = "\rmigrate mover pa → pb: "
    assert out.count(label) >= 2, out
    final = out.split(label)[-1].split("\n")[0]
    assert re.match(r"([\d.]+ [KMG]?i?B) / \1 \(100%\)", final), repr(final)
    print(f"\nmigration progress drawn {out.count(label)} times; last: {final.strip()!r}")


def test_a_cold_moves_volume_copy_in_a_pipe_shows_plain_progress_lines(
        hermetic_host_factory: HostFactory, tmp_path: Path) -> None:
    a, b = hermetic_host_factory("qa"), hermetic_host_factory("qb")
    specs = tmp_path / "specs"
    specs.mkdir()

    def write(where: str) -> None:
        docs = [f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: {name}}}
spec: {{uri: "{host.uri}"}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: movepool}}
spec: {{host: {name}, path: /var/lib/libvirt/images/movepool}}
""" for name, host in (("qa", a), ("qb", b))]
        docs.append(f"""apiVersion: virtsync/v1
kind: Guest
metadata: {{name: boxed}}
spec:
  host: {where}
  state: stopped
  memory: 64MiB
  disks: [{{name: root, pool: movepool, size: 8MiB, format: raw}}]
""")
        (specs / "fleet.yaml").write_text("---\n".join(docs))

    write("qa")
    ok(virtsync("apply", str(specs), "--yes"))
    write("qb")
    proc = virtsync("apply", str(specs), "--yes")  # stdout and stderr are pipes
    ok(proc)
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("copy movepool/boxed-root.img qa → qb: ")]
    assert lines and lines[-1].startswith("copy movepool/boxed-root.img qa → qb: 8.0 MiB"), proc.stderr
    assert "boxed-root.img" in b.virsh("vol-list", "movepool")
