"""crashPolicy on a real libvirtd host: guests that really crash, and one paused on a full pool.

How the faults are provoked (no mock, no monitor trick: `qemu-monitor-command stop` would give
PAUSED_USER, which is a pause to resume): each guest boots a one-sector program from its
disk under SeaBIOS.
- The panic: the program writes 1 to the pvpanic ISA device's port 0x505 (the guest has
  `panic: {model: isa}`), as a Linux kernel's pvpanic driver does when it panics; with
  `onCrash: preserve` libvirt keeps the QEMU process and reports VIR_DOMAIN_CRASHED
  (reason PANICKED); with libvirt's default (destroy) it is VIR_DOMAIN_SHUTOFF_CRASHED.
- A pause libvirt did not ask for: `virsh qemu-monitor-command DOM '{"execute":"stop"}'` gives
  VIR_DOMAIN_PAUSED_UNKNOWN on libvirt 9.0 (not PAUSED_USER), the reason a KVM internal error
  also gives; the recovery tries a resume first, which QEMU grants here (after an internal
  error it refuses, "Resetting the Virtual Machine is required", and the guest is destroyed
  and started: that error cannot be provoked on this host).
- The full pool: the program writes its disk sector after sector through the BIOS (int 13h,
  extended write) until the qcow2 overlay fills the pool's 8 MiB tmpfs (mounted inside the
  host's mount namespace): QEMU's default werror=enospc pauses it, VIR_DOMAIN_PAUSED_IOERROR,
  and virDomainGetDiskErrors says NO_SPACE.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import drift_json, objects, ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(180)]


def _sector(code: bytes) -> bytes:
    return code + b"\0" * (510 - len(code)) + b"\x55\xaa"


# cli; mov al, 1; mov dx, 0x505; out dx, al; hlt; jmp $-1
PANIC = _sector(bytes.fromhex("fa b0 01 ba 05 05 ee f4 eb fd"))
# cli; hlt; jmp $-1
HALT = _sector(bytes.fromhex("fa f4 eb fd"))
# cli; ds = ss = 0; sp = 0x7c00; loop: si = dap; ah = 0x43 (extended write), al = 0, dl = 0x80;
# int 0x13; add dword [lba], 64; jmp loop. dap: size 16, 64 sectors from 1000:0000, lba 1.
WRITER = _sector(bytes.fromhex(
    "fa31c08ed88ed0bc007cbe1d7cb443b000b280cd1366830625 7c40ebed 1000400000000010 0100000000000000".replace(" ", "")
))


def _image(tmp: Path, name: str, sector: bytes) -> Path:
    path = tmp / name
    path.write_bytes(sector + b"\0" * (1024 * 1024 - len(sector)))
    return path


def _host_doc(host: HermeticHost, tmp: Path) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp}", /var/lib/libvirt/small]}}
"""


def _guest_doc(name: str, disk: str, extra: str = "") -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: lab
  memory: 64MiB
  disks: [{disk}]
  panic: {{model: isa}}
{extra}"""


def _apply(specs: Path, host: HermeticHost) -> dict[str, str]:
    """`virtsync apply`: each action's outcome, "op name" → its detail."""
    doc = json.loads(ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--format", "json")))
    assert doc["counts"]["failed"] == 0, doc
    return {f"{o['op']} {o['name']}": o["detail"] for o in doc["outcomes"]}


def _reason(host: HermeticHost, guest: str) -> str:
    return host.virsh("domstate", "--reason", guest).strip()


def _wait_reason(host: HermeticHost, guest: str, want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        got = _reason(host, guest)
        if want in got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_a_panicked_guest_is_destroyed_and_started_and_crash_policy_report_leaves_it(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    """Three guests that panic at boot: two kept by QEMU (onCrash: preserve, CRASHED/PANICKED),
    one destroyed by libvirt (SHUTOFF/CRASHED); a fourth stopped through QEMU's monitor
    (PAUSED/UNKNOWN). The plan recovers the restart ones with a `recover` action naming the
    reason (the fourth resumed, not destroyed), and only reports the crashPolicy: report one."""
    host = hermetic_host
    specs = tmp_path / "specs"
    specs.mkdir()
    docs = [_host_doc(host, tmp_path)]
    for name, extra in (("kept", "  onCrash: preserve\n"),
                        ("watched", "  onCrash: preserve\n  crashPolicy: report\n"),
                        ("gone", "")):
        img = _image(tmp_path, f"{name}.img", PANIC)
        docs.append(_guest_doc(name, f"{{name: boot, path: {img}, format: raw}}", extra))
    docs.append(_guest_doc("halted", "{name: boot, path: " + str(_image(tmp_path, "halted.img", HALT))
                           + ", format: raw}"))
    (specs / "lab.yaml").write_text("".join(docs))
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    host.virsh("qemu-monitor-command", "halted", '{"execute":"stop"}')
    assert "paused (unknown)" in _wait_reason(host, "halted", "paused (unknown)")
    halted_id = host.virsh("domid", "halted").strip()
    assert "crashed (panicked)" in _wait_reason(host, "kept", "crashed (panicked)")
    assert "crashed (panicked)" in _wait_reason(host, "watched", "crashed (panicked)")
    assert "shut off (crashed)" in _wait_reason(host, "gone", "shut off (crashed)")
    kept_id, watched_id = host.virsh("domid", "kept").strip(), host.virsh("domid", "watched").strip()

    plan = ok(virtsync("plan", str(specs), "--connect", host.uri), 2)
    print(plan)
    assert "recover Guest kept" in plan and "crashed (the guest panicked)" in plan
    assert "recover Guest gone" in plan and "shut off (it crashed)" in plan
    assert "resume Guest" not in plan
    assert "recover Guest watched" not in plan and "crashPolicy report" in plan
    assert "recover Guest halted" in plan and "resume it, else destroy and start it" in plan
    objs = objects(drift_json(specs, host.uri))
    state = [c for c in objs["Guest/kept"]["changes"] if c["path"] == "/spec/state"]
    assert state and state[0]["note"] == "crashed (the guest panicked)", state

    out = _apply(specs, host)
    print(out)
    assert "destroyed and started" in out["recover kept"] and "destroyed and started" in out["recover gone"]
    assert not any(name.endswith(" watched") for name in out)
    assert out["recover halted"].endswith(": resumed"), out
    assert host.virsh("domid", "halted").strip() == halted_id and _reason(host, "halted").startswith("running")
    # A new QEMU ran the guest (a new domain ID); this one panics again at once, which is what
    # the service's crash backoff is for.
    new_id = host.virsh("domid", "kept").strip()
    assert new_id not in ("", "-", kept_id), (kept_id, new_id)
    assert host.virsh("domid", "gone").strip() not in ("", "-")
    assert host.virsh("domid", "watched").strip() == watched_id  # reported, left as it was
    assert "crashed (panicked)" in _reason(host, "watched")


def test_a_guest_paused_on_a_full_pool_stays_paused_until_there_is_room_then_resumes(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    host = hermetic_host
    small = "/var/lib/libvirt/small"  # a tmpfs inside the host's mount namespace only
    mounted = host.run_in_netns(["sh", "-c", f"mkdir -p {small} && mount -t tmpfs -o size=8m tmpfs {small}"])
    assert mounted.returncode == 0, mounted.stderr
    img = _image(tmp_path, "writer.img", WRITER)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(_host_doc(host, tmp_path) + f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: small}}
spec: {{host: lab, type: dir, path: {small}}}
""" + _guest_doc("filler", f"{{name: root, pool: small, from: {img}, size: 64MiB}}"))
    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    assert "paused (I/O error)" in _wait_reason(host, "filler", "paused (I/O error)")

    plan = ok(virtsync("plan", str(specs), "--connect", host.uri))  # nothing to do: a warning
    print(plan)
    assert "paused (a disk I/O error)" in plan and "stays paused" in plan and "pool small" in plan
    assert "resume Guest filler" not in plan
    assert _apply(specs, host) == {}
    assert "paused (I/O error)" in _reason(host, "filler")

    grown = host.run_in_netns(["mount", "-o", "remount,size=100m", small])
    assert grown.returncode == 0, grown.stderr
    plan = ok(virtsync("plan", str(specs), "--connect", host.uri), 2)
    assert "resume Guest filler" in plan and "space is back" in plan and "pool small" in plan, plan
    out = _apply(specs, host)
    print(out)
    assert out == {"resume filler": "resumed"}, out
    assert _reason(host, "filler").startswith("running"), _reason(host, "filler")


@pytest.mark.service  # a serve test: runs in the service area (see scripts/run_tests.py)
def test_serve_backs_off_when_a_recovered_guest_crashes_again(hermetic_host: HermeticHost, tmp_path: Path) -> None:
    """Under `serve`, a guest that panics again at once after each recovery is not destroyed and
    started in a loop: the second recovery comes 10 s after the first, the third 20 s after the
    second, and /status says it backs off. The service's log gives when each ran."""
    from datetime import datetime

    from tests.e2e.service_helpers import ServeProcess, wait_for

    host = hermetic_host
    specs = tmp_path / "specs"
    specs.mkdir()
    img = _image(tmp_path, "looper.img", PANIC)
    (specs / "lab.yaml").write_text(_host_doc(host, tmp_path) + _guest_doc(
        "looper", f"{{name: boot, path: {img}, format: raw}}", "  onCrash: preserve\n"))
    svc = ServeProcess([str(specs), "--resync", "10m"], tmp_path / "serve.log").start()
    try:
        def recoveries() -> list[float]:
            return [datetime.fromisoformat(e["timestamp"]).timestamp() for e in svc.log_events()
                    if e.get("event") == "action" and e.get("op") == "recover" and e.get("outcome") == "updated"]

        wait_for(lambda: len(recoveries()) >= 3, 60, "three recoveries", svc)
        times = recoveries()
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
        print(f"recoveries {len(times)}, gaps {gaps} s")
        assert 9 <= gaps[0] <= 16, gaps
        assert 18 <= gaps[1] <= 28, gaps
        assert "backs off" in json.dumps(svc.status()), svc.status()
    finally:
        svc.stop()
