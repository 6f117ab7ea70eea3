"""Storage pools by type on a real libvirtd host.

- An ``fs`` pool on a loop device: virtsync builds it (mkfs.ext4 through buildPool with
  NO_OVERWRITE), starts it (libvirt mounts it in the host's mount namespace) and makes a guest's
  disk volume in it; export of the host plans nothing.
- build: true never writes over data: a device that holds a filesystem already fails the define
  with the reason, the pool is left undefined and the file on the device is still there.
- A type the host's libvirt has no backend for (rbd: libvirt-daemon-driver-storage-rbd is not
  installed here) is refused at plan time, naming the host and the driver; nothing is defined.
- iSCSI for real: Debian's userspace target (tgtd) on loopback inside the host's network
  namespace, libvirt's ``iscsi-direct`` pool (libiscsi, no kernel initiator) logging in with
  CHAP from a kind: Secret; the LUN is listed as a volume. A wrong CHAP password fails the start.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.networks]

TARGET = "iqn.2026-01.dev.virtsync:lun1"
INITIATOR = "iqn.2026-01.dev.virtsync:host1"


@pytest.fixture
def loop_devices(tmp_path: Path) -> Iterator[list[str]]:
    """Two 48 MiB loop devices over files of the test (detached at teardown, after the host,
    which is set up later and so stopped first: its mount namespace holds the pool's mount)."""
    made: list[str] = []
    try:
        for i in range(2):
            backing = tmp_path / f"disk{i}.img"
            subprocess.run(["truncate", "-s", "48M", str(backing)], check=True)
            made.append(subprocess.run(["losetup", "--find", "--show", str(backing)], check=True,
                                       capture_output=True, text=True).stdout.strip())
        yield made
    finally:
        for dev in made:
            subprocess.run(["losetup", "--detach", dev], check=False, capture_output=True)


def _host_doc(host: HermeticHost, tmp: Path) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
  storage: {{allowedDirs: ["{tmp}"]}}
"""


def _fs_pool(name: str, path: Path, device: str) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: {name}}}
spec:
  host: lab
  type: fs
  path: {path}
  source: {{device: {device}, format: ext4}}
  build: true
"""


GUEST = """---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: g1}
spec:
  host: lab
  state: stopped
  vcpus: 1
  memory: 64MiB
  disks: [{name: root, pool: fsp, size: 16MiB, format: qcow2}]
"""


def test_an_fs_pool_on_a_loop_device_is_built_mounted_and_holds_a_guests_volume(
        tmp_path: Path, loop_devices: list[str], hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    fresh, used = loop_devices
    # The second device holds an ext4 filesystem with a file on it already: data.
    subprocess.run(["mkfs.ext4", "-q", used], check=True)
    keep = tmp_path / "keep.txt"
    keep.write_text("keep me\n")
    subprocess.run(["debugfs", "-w", "-R", f"write {keep} keep.txt", used], check=True, capture_output=True)

    specs = tmp_path / "specs"
    specs.mkdir()
    mnt = tmp_path / "fsp"
    (specs / "lab.yaml").write_text(_host_doc(host, tmp_path) + _fs_pool("fsp", mnt, fresh) + GUEST)
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "define-pool" in plan or "StoragePool/fsp" in plan, plan
    ok(virtsync("apply", str(specs), "--yes"))

    info = host.virsh("pool-dumpxml", "fsp")
    assert "<format type='ext4'/>" in info and f"<device path='{fresh}'/>" in info, info
    assert host.virsh("pool-info", "fsp").split("State:")[1].split()[0] == "running"
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", fresh], capture_output=True, text=True)
    assert blkid.stdout.strip() == "ext4", "virtsync's build made the filesystem"
    mounted = host.run_in_netns(["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(mnt)], check=True).stdout.split()
    assert mounted == [fresh, "ext4"], mounted
    vols = host.virsh("vol-list", "fsp")
    assert "g1-root" in vols, vols
    vol = json.loads(ok(virtsync("plan", str(specs), "--format", "json")))
    assert vol["hosts"][0]["actions"] == [], "a second plan has nothing to do"
    vol_xml = host.virsh("vol-dumpxml", "--pool", "fsp", "g1-root.qcow2")
    assert f"<path>{mnt}/" in vol_xml and "<format type='qcow2'/>" in vol_xml, vol_xml
    img = host.run_in_netns(["qemu-img", "info", "--output=json", vol_xml.split("<path>")[1].split("<")[0]])
    assert img.returncode == 0 and json.loads(img.stdout)["format"] == "qcow2", img.stdout + img.stderr

    # export of the host (the pool and the guest on it) plans nothing
    exported = tmp_path / "exported.yaml"
    ok(virtsync("export", "--connect", host.uri, "--host", "lab", "-o", str(exported)))
    text = exported.read_text()
    assert "type: fs" in text and f"device: {fresh}" in text, text
    again = ok(virtsync("plan", str(exported)))
    assert "No changes" in again, again

    # build: true over a device that holds data: refused by libvirt's probe, nothing written
    (specs / "used.yaml").write_text(_fs_pool("used", tmp_path / "used", used))
    failed = virtsync("apply", str(specs), "--yes")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    said = failed.stdout + failed.stderr
    assert "build: true found data on its storage and wrote nothing" in said and "set build: false" in said, said
    assert "used" not in host.virsh("pool-list", "--all", "--name").split()
    kept = subprocess.run(["debugfs", "-R", "cat keep.txt", used], capture_output=True, text=True)
    assert kept.stdout == "keep me\n", kept.stdout + kept.stderr

    # a type this host's libvirt has no backend for: refused at plan time, nothing defined
    caps = host.virsh("pool-capabilities")
    assert "<pool type='rbd' supported='no'>" in caps or "<pool type='rbd' supported='no'/>" in caps, caps
    (specs / "used.yaml").write_text("""---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {name: ceph}
spec:
  host: lab
  type: rbd
  source: {name: vms, monitors: [{host: 192.0.2.1}]}
""")
    refused = virtsync("apply", str(specs), "--yes")
    assert refused.returncode == 1
    assert ("host lab cannot make a 'rbd' pool: libvirt there has no rbd storage driver "
            "(libvirt-daemon-driver-storage-rbd)") in refused.stdout + refused.stderr
    assert sorted(host.virsh("pool-list", "--all", "--name").split()) == ["fsp"]


# ------------------------------------------------------------------------------------ iSCSI


def _iscsi_prerequisites(host: HermeticHost) -> str | None:
    if shutil.which("tgtd") is None or shutil.which("tgtadm") is None:
        return "tgt (tgtd, tgtadm) is not installed"
    if "<pool type='iscsi-direct' supported='yes'>" not in host.virsh("pool-capabilities"):
        return "libvirt here has no iscsi-direct backend (libvirt-daemon-driver-storage-iscsi-direct)"
    return None


@contextlib.contextmanager
def _tgtd(host: HermeticHost, lun: Path, user: str, password: str) -> Iterator[None]:
    """tgtd in the host's namespaces serving ``lun`` as LUN 1 of TARGET, CHAP user ``user``;
    killed by its pid at the end."""
    nsenter = ["nsenter", "--target", str(host.netns_pid), "--net", "--mount", "--pid", "--"]
    log = open(lun.with_suffix(".tgtd.log"), "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*nsenter, "tgtd", "-f"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def tgtadm(*args: str) -> None:
            done = host.run_in_netns(["tgtadm", "--lld", "iscsi", *args])
            assert done.returncode == 0, done.stdout + done.stderr

        for _ in range(50):  # tgtd answers once its control socket exists
            if host.run_in_netns(["tgtadm", "--lld", "iscsi", "--op", "show", "--mode", "sys"]).returncode == 0:
                break
            time.sleep(0.1)
        tgtadm("--op", "new", "--mode", "target", "--tid", "1", "-T", TARGET)
        tgtadm("--op", "new", "--mode", "logicalunit", "--tid", "1", "--lun", "1", "-b", str(lun))
        tgtadm("--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL")
        tgtadm("--op", "new", "--mode", "account", "--user", user, "--password", password)
        tgtadm("--op", "bind", "--mode", "account", "--tid", "1", "--user", user)
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def _iscsi_specs(host: HermeticHost, tmp: Path, password_file: Path) -> str:
    return _host_doc(host, tmp) + f"""---
apiVersion: virtsync/v1
kind: Secret
metadata: {{name: chap}}
spec:
  fromFile: {password_file}
  libvirt: {{usage: iscsi, id: lun1}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: san}}
spec:
  host: lab
  type: iscsi-direct
  autostart: false
  source:
    host: 127.0.0.1
    target: {TARGET}
    initiator: {INITIATOR}
    auth: {{username: vsuser, secretRef: chap}}
"""


def test_an_iscsi_direct_pool_logs_in_to_a_userspace_target_with_chap_from_a_secret(
        tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    missing = _iscsi_prerequisites(host)
    if missing:
        pytest.skip(missing)
    lun = tmp_path / "lun1.img"
    subprocess.run(["truncate", "-s", "32M", str(lun)], check=True)
    password = "chap-pass-1234"  # tgt takes CHAP secrets of 12 to 16 characters
    specs = tmp_path / "specs"
    specs.mkdir()
    secret_file = tmp_path / "chap.txt"
    with _tgtd(host, lun, "vsuser", password):
        # a wrong password: the login fails, and virtsync leaves no pool behind
        secret_file.write_text("wrong-pass-1234\n")
        (specs / "lab.yaml").write_text(_iscsi_specs(host, tmp_path, secret_file))
        failed = virtsync("apply", str(specs), "--yes")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Authentication failure" in failed.stdout + failed.stderr, "tgtd refused the wrong CHAP secret"
        assert "san" not in host.virsh("pool-list", "--all", "--name").split()

        secret_file.write_text(password + "\n")
        done = virtsync("apply", str(specs), "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert password not in done.stdout + done.stderr
        xml = host.virsh("pool-dumpxml", "san")
        assert "<auth type='chap' username='vsuser'>" in xml, xml
        vols = host.virsh("vol-list", "san", "--details")
        assert "unit:0:0:1" in vols and "32.00 MiB" in vols, vols
        assert json.loads(ok(virtsync("plan", str(specs), "--format", "json")))["hosts"][0]["actions"] == []

        exported = tmp_path / "exported.yaml"
        ok(virtsync("export", "--connect", host.uri, "--host", "lab", "--all", "-o", str(exported)))
        text = exported.read_text()
        assert "secretRef: chap" in text and password not in text, text
        assert "adopt" not in text, "the pool virtsync defined is exported as its own (by its UUID)"
        # export --all writes the Secret the pool references too, as a reference (no value, optional
        # until its file is written): the exported tree alone plans nothing
        assert "kind: Secret" in text and "optional: true" in text, text
        alone = tmp_path / "alone"
        alone.mkdir()
        (alone / "exported.yaml").write_text(text)
        again = ok(virtsync("plan", str(alone)))
        assert "No changes" in again, again

        # gone from the specs: pruned (virtsync knows it by its UUID), the target's LUN left as it was
        (specs / "lab.yaml").write_text(_host_doc(host, tmp_path))
        pruned = virtsync("apply", str(specs), "--yes", "--prune")
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "san" not in host.virsh("pool-list", "--all", "--name").split()
        assert lun.stat().st_size == 32 * 2**20
