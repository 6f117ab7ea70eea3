"""Guests that boot: images, linked clones, cloud-init seeds, UEFI, the guest agent.

The Linux test guest boots under QEMU's TCG (`hypervisor: qemu` in its Host spec):
KVM on this nested machine cannot boot a Linux kernel, so these tests never
depend on /dev/kvm.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from controller.images.seed import read_seed_iso
from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts.hermetic import HermeticHost
from tests.hosts.linux_guest import agent, ensure_test_guest, link_or_copy, make_ext4_image, wait_for_agent

pytestmark = [pytest.mark.e2e, pytest.mark.boot, pytest.mark.timeout(400)]

USER_DATA = "#cloud-config\nhostname: linux1\nwrite_files:\n  - path: /etc/motd\n    content: héllo\n"


def _host_docs(tmp: Path, uri: str) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{uri}"
  hypervisor: qemu
  storage: {{allowedDirs: ["{tmp}"]}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: bootpool}}
spec: {{host: lab, path: "{tmp}/pool"}}
---
apiVersion: virtsync/v1
kind: Network
metadata: {{name: bootnet}}
spec:
  host: lab
  mode: nat
  bridge: virbr-boot
  ipv4:
    address: 192.168.210.1/24
    dhcp: {{start: 192.168.210.10, end: 192.168.210.99}}
"""


def _linux_guest(kernel: Path, initrd: Path, user_data: str, extra: str = "") -> str:
    block = "\n".join("      " + line for line in user_data.splitlines())
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: linux1}}
spec:
  host: lab
  state: running
  memory: 256MiB
  agent: true
  boot:
    kernel: "{kernel}"
    initrd: "{initrd}"
    cmdline: "console=ttyS0 virtsync.hostname=linux1"
  disks:
    - {{name: data, pool: bootpool, from: base.img, clone: linked, format: qcow2}}
  interfaces:
    - {{network: bootnet, mac: "52:54:00:21:00:01", bootRom: false}}
  cloudInit:
    userData: |
{block}
  restartPolicy: never
{extra}"""


@pytest.fixture
def lab(tmp_path: Path, hermetic_host: HermeticHost) -> Iterator[tuple[Path, HermeticHost, Path]]:
    kernel, initrd = ensure_test_guest()
    boot = tmp_path / "boot"
    kernel, initrd = link_or_copy(kernel, boot), link_or_copy(initrd, boot)
    (tmp_path / "pool").mkdir()
    make_ext4_image(tmp_path / "pool" / "base.img", 64)  # the image the linked clone grows from
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "lab.yaml").write_text(_host_docs(tmp_path, hermetic_host.uri) + _linux_guest(kernel, initrd, USER_DATA))
    yield specs, hermetic_host, tmp_path


def test_linux_guest_from_a_linked_clone_boots_with_agent_and_address(
    lab: tuple[Path, HermeticHost, Path],
) -> None:
    specs, host, tmp = lab
    ok(virtsync("apply", str(specs), "--yes"))
    waited = wait_for_agent(host, "linux1", timeout=120)
    print(f"\nguest agent answered {waited:.1f} s after apply")
    assert agent(host, "linux1", {"execute": "guest-ping"}) == {"return": {}}
    vol = host.virsh("vol-dumpxml", "--pool", "bootpool", "linux1-data.qcow2")
    assert "<backingStore>" in vol and f"{tmp}/pool/base.img" in vol  # a linked clone
    fs = agent(host, "linux1", {"execute": "guest-get-fsinfo"})["return"]
    assert any(f.get("mountpoint") == "/data" for f in fs), fs

    def addresses() -> list[str]:
        doc = json.loads(ok(virtsync("drift", str(specs), "--format", "json"), 0))
        guest = next(o for h in doc["hosts"] for o in h["objects"] if o["name"] == "linux1")
        return [a for a in guest.get("info", {}).get("addresses", []) if a.startswith("192.168.210.")]

    deadline = time.monotonic() + 90
    while not addresses() and time.monotonic() < deadline:
        time.sleep(1)
    found = addresses()
    assert found, "no DHCP address of the guest in drift --format json"
    assert found[0] in host.virsh("net-dhcp-leases", "bootnet")
    # the seed ISO's files, read back with the ISO library, are the spec's cloud-init
    files = read_seed_iso((tmp / "pool" / "linux1-cidata.iso").read_bytes())
    assert files["user-data"] == USER_DATA
    assert "instance-id: linux1" in files["meta-data"]
    assert "No changes" in ok(virtsync("plan", str(specs)))
    # changing userData is a next-boot change (restartPolicy never: pending restart)
    (specs / "lab.yaml").write_text((specs / "lab.yaml").read_text().replace("hostname: linux1", "hostname: linux2"))
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "cloudInit" in plan and "(next boot)" in plan and "write-seed" in plan
    assert "linux2" not in plan  # only digests of cloud-init are ever shown
    ok(virtsync("apply", str(specs), "--yes"))
    assert read_seed_iso((tmp / "pool" / "linux1-cidata.iso").read_bytes())["user-data"].startswith(
        "#cloud-config\nhostname: linux2")


def test_uefi_guest_runs_and_keeps_its_nvram_across_redefinition(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (tmp_path / "pool").mkdir()
    guest = """---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: efi1}
spec:
  host: lab
  state: running
  firmware: uefi
  memory: 128MiB
  vcpus: 1
  maxVcpus: 2
  restartPolicy: onChange
  shutdownTimeout: 5s
"""
    (specs / "lab.yaml").write_text(_host_docs(tmp_path, hermetic_host.uri) + guest)
    ok(virtsync("apply", str(specs), "--yes"))
    assert hermetic_host.virsh("domstate", "efi1").strip() == "running"
    # libvirt 9.0 resolves firmware='efi' when the guest starts: the running XML names the NVRAM
    xml = hermetic_host.virsh("dumpxml", "efi1")
    nvram = xml.split("<nvram", 1)[1].split(">", 1)[1].split("<", 1)[0]
    outside = hermetic_host.path_outside(nvram)
    before = outside.stat().st_ino
    time.sleep(3)  # let the firmware write its variables
    content = hashlib.sha256(outside.read_bytes()).hexdigest()
    (specs / "lab.yaml").write_text((specs / "lab.yaml").read_text().replace("memory: 128MiB", "memory: 160MiB"))
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "restart" in plan
    ok(virtsync("apply", str(specs), "--yes"))
    assert "163840" in hermetic_host.virsh("dumpxml", "--inactive", "efi1")
    assert nvram in hermetic_host.virsh("dumpxml", "efi1")
    assert outside.stat().st_ino == before, "the NVRAM file was replaced"
    assert hermetic_host.virsh("domstate", "efi1").strip() == "running"
    print(f"\nNVRAM {nvram} kept (inode {before}; content sha256 {content[:12]} before the redefinition)")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A loopback HTTP server with one image: (url, its sha256)."""
    root = tmp_path / "www"
    root.mkdir()
    image = make_ext4_image(root / "base.img", 16)
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/base.img", digest
    finally:
        server.shutdown()


def _url_guest(url: str, sha: str) -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: fromurl}}
spec:
  host: lab
  state: stopped
  memory: 64MiB
  disks:
    - {{name: root, pool: bootpool, from: "{url}", sha256: "{sha}", size: 32MiB}}
"""


def test_url_image_with_a_wrong_sha256_is_refused_and_nothing_is_defined(
    tmp_path: Path, hermetic_host: HermeticHost, image_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, good = image_server
    (tmp_path / "pool").mkdir()
    monkeypatch.setenv("VIRTSYNC_CACHE_DIR", str(tmp_path / "cache"))
    specs = tmp_path / "specs"
    specs.mkdir()
    wrong = "0" * 64
    (specs / "lab.yaml").write_text(_host_docs(tmp_path, hermetic_host.uri) + _url_guest(url, wrong))
    proc = virtsync("apply", str(specs), "--yes")
    ok(proc, 1)
    assert "sha256" in proc.stderr
    assert "fromurl" not in hermetic_host.virsh("list", "--all", "--name")
    assert "fromurl" not in hermetic_host.virsh("vol-list", "bootpool")
    # with the right digest: downloaded once into the pool, cloned, defined; then nothing to do
    (specs / "lab.yaml").write_text(_host_docs(tmp_path, hermetic_host.uri) + _url_guest(url, good))
    ok(virtsync("apply", str(specs), "--yes"))
    vols = hermetic_host.virsh("vol-list", "bootpool")
    assert f"image-{good[:16]}.img" in vols and "fromurl-root.qcow2" in vols
    assert "No changes" in ok(virtsync("plan", str(specs)))
