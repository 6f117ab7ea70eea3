"""Resource faults on a real libvirtd host: a pool that fills up, a guest QEMU refuses to start,
libvirtd restarted in the middle of an apply. Each fails what it must, says why, leaves nothing
half-made, lets the other guests converge, and the next apply converges."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ROOT, ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.reliability, pytest.mark.timeout(240)]

SMALL = "/var/lib/libvirt/small"  # a tmpfs inside the host's mount namespace only


def _host_doc(host: HermeticHost, tmp: Path) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp}", {SMALL}]}}
"""


def _pool_doc(name: str, path: str | Path) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {name}}}
spec: {{host: lab, type: dir, path: "{path}"}}
"""


def _guest_doc(name: str, extra: str = "") -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: lab
  memory: 64MiB
{extra}"""


def _apply_json(specs: Path, host: HermeticHost, code: int) -> dict[str, dict[str, str]]:
    proc = virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--format", "json")
    doc = json.loads(ok(proc, code))
    return {f"{o['op']} {o['name']}": o for o in doc["outcomes"]}


def _state(host: HermeticHost, guest: str) -> str:
    return host.virsh("domstate", guest).strip()


def _sh(host: HermeticHost, script: str) -> None:
    done = host.run_in_netns(["sh", "-c", script])
    assert done.returncode == 0, done.stderr


def test_a_full_pool_fails_the_copy_naming_the_pool_and_the_bytes_and_the_others_converge(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    """An 8 MiB tmpfs pool holding a 3 MiB image of random bytes: the first full copy fits,
    the second does not. It fails before writing anything, naming the pool, the bytes it needs
    and the bytes free; a guest on another pool converges; once the pool grows, one apply
    converges."""
    host = hermetic_host
    _sh(host, f"mkdir -p {SMALL} && mount -t tmpfs -o size=8m tmpfs {SMALL} "
              f"&& head -c 3145728 /dev/urandom > {SMALL}/base.img")
    big = tmp_path / "big"
    big.mkdir()
    specs = tmp_path / "specs"
    specs.mkdir()
    copy = "  disks: [{name: root, pool: small, from: base.img, clone: full, format: raw}]\n"
    (specs / "lab.yaml").write_text(
        _host_doc(host, tmp_path) + _pool_doc("small", SMALL) + _pool_doc("big", big)
        + _guest_doc("copy1", copy) + _guest_doc("copy2", copy)
        + _guest_doc("other", "  disks: [{name: root, pool: big, size: 16MiB}]\n"))
    outcomes = _apply_json(specs, host, 1)
    failed = {k: o for k, o in outcomes.items() if o["status"] == "failed"}
    print(json.dumps(failed, indent=1))
    assert len(failed) == 1, outcomes
    (what, out), = failed.items()
    assert what in ("create-volume small/copy1-root.img", "create-volume small/copy2-root.img"), what
    loser = "copy1" if "copy1" in what else "copy2"
    winner = "copy2" if loser == "copy1" else "copy1"
    free = re.search(r"pool small is full: a full copy of base.img as \S+ needs 3145728 bytes, it has (\d+) bytes free",
                     out["detail"])
    assert free and int(free.group(1)) < 3145728, out["detail"]
    assert outcomes[f"start {loser}"]["status"] == "skipped"
    # nothing half-made: no volume of the failed copy; the rest is running
    vols = host.virsh("vol-list", "small")
    assert f"{loser}-root.img" not in vols and f"{winner}-root.img" in vols, vols
    assert _state(host, loser) == "shut off"
    assert _state(host, winner) == "running" and _state(host, "other") == "running"

    _sh(host, f"mount -o remount,size=16m {SMALL}")
    again = _apply_json(specs, host, 0)
    assert again[f"create-volume small/{loser}-root.img"]["status"] == "created", again
    assert _state(host, loser) == "running"
    assert "No changes" in ok(virtsync("plan", str(specs), "--connect", host.uri))


# Two ways a start fails after the define went through: libvirt refuses it (the disk's file is
# missing), on every machine; QEMU aborts (host-passthrough on a nested host: "failed to set
# MSR"), on machines whose CPU makes it so (one that runs such guests skips that case).
REFUSED_STARTS = {
    "missing-disk-file": "  disks:\n  - {{name: root, path: {tmp}/absent.qcow2}}\n",
    "qemu-aborts": "  cpu: {{mode: host-passthrough}}\n",
}


@pytest.mark.parametrize("cause", REFUSED_STARTS)
def test_a_guest_whose_start_fails_is_its_own_error_and_the_others_converge(
    hermetic_host: HermeticHost, tmp_path: Path, cause: str,
) -> None:
    host = hermetic_host
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(
        _host_doc(host, tmp_path) + _guest_doc("refused", REFUSED_STARTS[cause].format(tmp=tmp_path))
        + _guest_doc("fine1") + _guest_doc("fine2"))
    proc = virtsync("apply", str(specs), "--connect", host.uri, "--yes", "--format", "json")
    if cause == "qemu-aborts" and proc.returncode == 0:
        pytest.skip("QEMU starts host-passthrough guests on this machine: nothing refuses to start")
    doc = json.loads(ok(proc, 1))
    by = {f"{o['op']} {o['name']}": o for o in doc["outcomes"]}
    failed = [k for k, o in by.items() if o["status"] == "failed"]
    assert failed == ["start refused"], by
    assert "start guest refused" in by["start refused"]["detail"] or "refused" in by["start refused"]["detail"]
    print(by["start refused"]["detail"])
    assert "Traceback" not in proc.stderr
    assert _state(host, "fine1") == "running" and _state(host, "fine2") == "running"
    assert _state(host, "refused") == "shut off"
    # the next run tries again, fails the same way, and touches nothing else
    again = _apply_json(specs, host, 1)
    assert [k for k, o in again.items() if o["status"] != "failed"] == [], again


def test_libvirtd_restarted_in_the_middle_of_an_apply_fails_it_cleanly_and_the_next_converges(
    hermetic_host: HermeticHost, tmp_path: Path,
) -> None:
    """Twelve guests applied one action at a time (all are defined first, then started); libvirtd
    is killed and started again once three run. The run ends with exit 1 and an error, not a
    traceback or a hang; the next apply converges with each guest defined once."""
    host = hermetic_host
    specs = tmp_path / "specs"
    specs.mkdir()
    names = [f"g{i:02d}" for i in range(12)]
    (specs / "lab.yaml").write_text(_host_doc(host, tmp_path) + "".join(_guest_doc(n) for n in names))
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "apply", str(specs), "--connect", host.uri, "--yes",
         "--concurrency", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        running: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            running = host.virsh("list", "--name").split()
            if len(running) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the apply ended before libvirtd could be restarted"
        assert len(running) < len(names), running
        host.kill_libvirtd()
        started = time.monotonic()
        host.restart_libvirtd()
        out, err = proc.communicate(timeout=120)
        print(f"libvirtd restarted once {len(running)} guests ran; the apply ended "
              f"{time.monotonic() - started:.1f}s later with exit {proc.returncode}:\n{err.strip()[-600:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in err, err
    assert "lab" in out + err
    after = host.virsh("list", "--name").split()
    assert len(after) < len(names), "libvirtd's restart did not interrupt the run"

    ok(virtsync("apply", str(specs), "--connect", host.uri, "--yes"))
    listed = host.virsh("list", "--all", "--name").split()
    assert sorted(listed) == names, listed  # each defined once
    assert all(_state(host, n) == "running" for n in names)
    assert "No changes" in ok(virtsync("plan", str(specs), "--connect", host.uri))
