"""virtsync on a real Xen host (Xen 4.17 + libxl, booted under TCG by tests/hosts/xen_host.py):
apply examples/xen, drift after an out-of-band destroy, repair, prune; snapshots refused in plan."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.engine_helpers import EXAMPLES, ok, virtsync
from tests.hosts.xen_host import XenHost, ensure_xen_host_image

pytestmark = [pytest.mark.e2e, pytest.mark.xen, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def xen() -> Iterator[XenHost]:
    ensure_xen_host_image()
    host = XenHost()
    host.start()
    try:
        yield host
    finally:
        host.stop()


def test_apply_examples_xen_runs_a_pv_guest_then_drift_repair_and_prune(xen: XenHost, tmp_path: Path) -> None:
    import libvirt

    specs = tmp_path / "xen"
    shutil.copytree(EXAMPLES / "xen", specs)
    out = ok(virtsync("apply", str(specs), "--connect", xen.uri, "--yes", timeout=600))
    assert "+ define Guest pv1" in out and "+ define-network Network xennat" in out
    conn = libvirt.open(xen.uri)
    try:
        dom = conn.lookupByName("pv1")
        assert dom.isActive() and dom.ID() > 0  # running under Xen, with a domain id
        xen.wait_for_console("[domU pv1] virtsync-test-guest: booted", timeout=180)
        assert "No changes" in ok(virtsync("plan", str(specs), "--connect", xen.uri, timeout=300))
        dom.destroy()
        drift = ok(virtsync("drift", str(specs), "--connect", xen.uri, timeout=300), 2)
        assert "Guest pv1" in drift and "desired=running" in drift
        ok(virtsync("apply", str(specs), "--connect", xen.uri, "--yes", timeout=600))
        assert conn.lookupByName("pv1").isActive()
        # snapshot policies are refused at plan time on this host
        (specs / "policy.yaml").write_text(
            "apiVersion: virtsync/v1\nkind: SnapshotPolicy\nmetadata: {name: nightly}\n"
            "spec: {selector: {matchLabels: {}}, schedule: '0 3 * * *', retain: {daily: 7}}\n")
        plan = ok(virtsync("plan", str(specs), "--connect", xen.uri, timeout=300))
        assert "snapshots are not supported on host xen1" in plan
        # the guest leaves the specs: --prune deletes it (and only it)
        text = (specs / "xen.yaml").read_text()
        (specs / "xen.yaml").write_text(text[: text.index("---\napiVersion: virtsync/v1\nkind: Guest")])
        ok(virtsync("apply", str(specs), "--connect", xen.uri, "--yes", "--prune", "--force", timeout=600))
        names = [d.name() for d in conn.listAllDomains(0)]
        assert "pv1" not in names and "Domain-0" in names
    finally:
        conn.close()


def test_a_pv_guests_kernel_and_initrd_are_uploaded_into_a_pool_of_the_xen_host(xen: XenHost, tmp_path: Path) -> None:
    import libvirt

    from tests.hosts.linux_guest import ensure_test_guest

    kernel, initrd = ensure_test_guest(pvh=False)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "up.yaml").write_text(f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: xen1}}
spec: {{uri: "xen:///system", hypervisor: xen}}
---
apiVersion: virtsync/v1
kind: StoragePool
metadata: {{name: bootfiles}}
spec: {{host: xen1, path: /var/lib/libvirt/images/bootfiles}}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: pv2}}
spec:
  host: xen1
  xen: {{mode: pv}}
  memory: 256MiB
  maxMemory: 320MiB
  vcpus: 1
  maxVcpus: 2
  boot: {{pool: bootfiles, kernel: "{kernel}", initrd: "{initrd}", cmdline: "console=hvc0"}}
""")
    out = ok(virtsync("apply", str(specs), "--connect", xen.uri, "--yes", timeout=600))
    assert "upload-file" in out
    conn = libvirt.open(xen.uri)
    try:
        vols = [v.name() for v in conn.storagePoolLookupByName("bootfiles").listAllVolumes(0)]
        assert f"boot-pv2-{kernel.name}" in vols and f"boot-pv2-{initrd.name}" in vols
        assert conn.lookupByName("pv2").isActive()
        xen.wait_for_console("[domU pv2] virtsync-test-guest: booted", timeout=180)
        assert "No changes" in ok(virtsync("plan", str(specs), "--connect", xen.uri, timeout=300))
        # what libxl does live: balloon within maxMemory, vCPU hot-plug within maxVcpus
        dom_id = conn.lookupByName("pv2").ID()
        text = (specs / "up.yaml").read_text()
        (specs / "up.yaml").write_text(text.replace("memory: 256MiB", "memory: 288MiB").replace("vcpus: 1", "vcpus: 2"))
        plan = ok(virtsync("plan", str(specs), "--connect", xen.uri, timeout=300), 2)
        assert "~ update Guest pv2 (live)" in plan
        ok(virtsync("apply", str(specs), "--connect", xen.uri, "--yes", timeout=600))
        dom = conn.lookupByName("pv2")
        assert dom.ID() == dom_id, "pv2 was restarted"
        assert dom.info()[3] == 2  # vCPUs now
        assert "294912" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        dom.destroy()
    finally:
        conn.close()


def test_plan_refuses_hvm_and_pvh_guests_on_a_xen_host_without_them(xen: XenHost, tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "hvm.yaml").write_text("""apiVersion: virtsync/v1
kind: Host
metadata: {name: xen1}
spec: {uri: "xen:///system"}
---
apiVersion: virtsync/v1
kind: Guest
metadata: {name: hvm1}
spec: {host: xen1, xen: {mode: hvm}, memory: 256MiB}
""")
    proc = virtsync("plan", str(specs), "--connect", xen.uri, timeout=300)
    ok(proc, 1)
    assert "host xen1 cannot run Xen HVM guests" in proc.stdout and "'hvm'" in proc.stdout
