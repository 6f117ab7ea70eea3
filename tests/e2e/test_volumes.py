"""kind: Volume on a real libvirtd host: made in an fs pool on a loop device (ext4), grown live
while a running guest has it attached (the guest's view changes, the domain stays the same),
copied into a dir pool, and a LUKS-encrypted volume (passphrase from a kind: Secret file)
attached to a running guest."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.networks, pytest.mark.timeout(300)]

MIB = 1 << 20
PASSPHRASE = "volume-passphrase-7f3a9c"


def _host(host: HermeticHost, tmp: Path) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec: {{uri: "{host.uri}", hypervisor: qemu, storage: {{allowedDirs: ["{tmp}"]}}}}
"""


def _pool(name: str, path: Path) -> str:
    # made here, build: false: buildPool with NO_OVERWRITE on a dir pool fails here ('No source device
    # specified when formatting pool'), so the directory is made by the test
    path.mkdir(exist_ok=True)
    return f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {name}}}
spec: {{host: lab, path: "{path}", build: false}}
"""


def _fs_pool(name: str, path: Path, device: str) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {name}}}
spec: {{host: lab, type: fs, path: "{path}", source: {{device: {device}, format: ext4}}, build: true}}
"""


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    """A 64 MiB loop device over a file of the test, detached at teardown (after the host, which
    is set up later and so stopped first: its mount namespace holds the pool's mount)."""
    backing = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(backing)], check=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False, capture_output=True)


def _volume(name: str, pool: str, extra: str) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Volume
metadata: {{name: {name}}}
spec: {{host: lab, pool: {pool}, {extra}}}
"""


def _guest(name: str, volume: str) -> str:
    # no OS, no NIC: QEMU runs (SeaBIOS finds nothing to boot), which is all blockResize needs
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: lab
  state: running
  vcpus: 1
  memory: 64MiB
  disks: [{{name: data, volume: {volume}}}]
  shutdownTimeout: 1s
"""


def _write(specs: Path, *docs: str) -> Path:
    specs.mkdir(exist_ok=True)
    (specs / "lab.yaml").write_text("".join(docs))
    return specs


def _capacity(host: HermeticHost, guest: str, target: str = "vda") -> int:
    found = re.search(r"Capacity:\s+(\d+)", host.virsh("domblkinfo", guest, target))
    assert found, guest
    return int(found.group(1))


def test_a_volume_of_an_fs_pool_grows_live_under_a_running_guest_and_is_copied_into_a_dir_pool(
        tmp_path: Path, loop_device: str, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    base = [_host(host, tmp_path), _fs_pool("src", tmp_path / "src", loop_device),
            _pool("copies", tmp_path / "copies")]
    specs = _write(tmp_path / "specs", *base, _volume("data.qcow2", "src", "size: 16MiB"),
                   _guest("g1", "data.qcow2"))
    ok(virtsync("apply", str(specs), "--yes"))
    assert host.virsh("domstate", "g1").strip() == "running"
    dom_id = host.virsh("domid", "g1").strip()
    assert _capacity(host, "g1") == 16 * MIB
    assert ".virtsync-vol-default-keep--data.qcow2" in host.virsh("vol-list", "src")
    mounted = host.run_in_netns(["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(tmp_path / "src")], check=True)
    assert mounted.stdout.split() == [loop_device, "ext4"], "the source pool is the loop device's ext4"
    assert "No changes" in ok(virtsync("plan", str(specs)))

    specs = _write(tmp_path / "specs", *base, _volume("data.qcow2", "src", "size: 48MiB"),
                   _guest("g1", "data.qcow2"))
    plan = json.loads(ok(virtsync("plan", str(specs), "--format", "json"), 2))
    grow = [a for h in plan["hosts"] for a in h["actions"] if a["kind"] == "Volume"]
    assert [(a["op"], a["impact"]) for a in grow] == [("resize-volume", "live")]
    assert grow[0]["changes"][0]["note"] == "blockResize of g1's vda (live)"
    out = ok(virtsync("apply", str(specs), "--yes"))
    assert _capacity(host, "g1") == 48 * MIB, "the running guest sees the new capacity"
    assert host.virsh("domid", "g1").strip() == dom_id, "the guest was not restarted"
    assert "No changes" in ok(virtsync("plan", str(specs)))

    copy = _volume("copy.qcow2", "copies", "from: data.qcow2")
    specs = _write(tmp_path / "specs", *base, _volume("data.qcow2", "src", "size: 48MiB"),
                   _guest("g1", "data.qcow2"), copy)
    refused = virtsync("plan", str(specs))  # QEMU holds the running disk's write lock
    assert refused.returncode == 1
    assert "its source src/data.qcow2 is attached to the running guest g1" in refused.stdout + refused.stderr
    specs = _write(tmp_path / "specs", *base, _volume("data.qcow2", "src", "size: 48MiB"),
                   _guest("g1", "data.qcow2").replace("state: running", "state: stopped"), copy)
    ok(virtsync("apply", str(specs), "--yes"), 1)  # stops g1; the copy is still refused in this run
    out = ok(virtsync("apply", str(specs), "--yes"))  # the copy, now that nothing holds the source
    assert "storageVolCreateXMLFrom" in out, out
    info = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(tmp_path / "copies" / "copy.qcow2")],
                          capture_output=True, text=True, check=True)
    assert json.loads(info.stdout)["virtual-size"] == 48 * MIB
    assert ".virtsync-vol-default-keep--copy.qcow2" in host.virsh("vol-list", "copies")
    assert "No changes" in ok(virtsync("plan", str(specs)))


def test_a_luks_volume_is_attached_to_a_running_guest_and_its_passphrase_is_never_shown(
        tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "volume.pass").write_text(PASSPHRASE + "\n")
    secret = """---
apiVersion: virtsync/v1
kind: Secret
metadata: {name: vault-key}
spec: {fromFile: volume.pass, libvirt: {usage: volume}}
"""
    _write(specs, _host(host, tmp_path), _pool("enc", tmp_path / "enc"), secret,
           _volume("vault.qcow2", "enc", "size: 32MiB, encryption: {secretRef: vault-key}"),
           _guest("g2", "vault.qcow2"))
    outputs = [ok(virtsync("plan", str(specs)), 2), ok(virtsync("plan", str(specs), "--format", "json"), 2)]
    applied = virtsync("apply", str(specs), "--yes")
    outputs += [ok(applied), applied.stderr]
    outputs += [ok(virtsync("plan", str(specs))), ok(virtsync("drift", str(specs), "--format", "json"))]
    assert "No changes" in outputs[-2]
    assert host.virsh("domstate", "g2").strip() == "running"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", str(tmp_path / "enc" / "vault.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["encrypted"] is True
    assert info["format-specific"]["data"]["encrypt"]["format"] == "luks", info
    live = host.virsh("dumpxml", "g2")
    assert re.search(r"<encryption format='luks'[^>]*>\s*<secret type='passphrase'", live), live
    assert _capacity(host, "g2") == 32 * MIB  # QEMU opened it with the passphrase
    for text in outputs:
        assert PASSPHRASE not in text
    assert PASSPHRASE not in live + host.virsh("vol-dumpxml", "vault.qcow2", "--pool", "enc")
