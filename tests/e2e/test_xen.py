"""virtsync on a real Xen host (Xen 4.17 + libxl, booted under TCG by tests/hosts/xen_host.py):
apply examples/xen, drift after an out-of-band destroy, repair, prune; snapshots refused in plan."""

from __future__ import annotations

import contextlib
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


XEN_CORPUS = {"xenpv-web": "xen-pv-bridge.xml", "xenpv-grub": "xen-pv-pygrub.xml"}


def test_xen_pv_corpus_guests_are_exported_adopted_and_apply_changes_nothing(xen: XenHost, tmp_path: Path) -> None:
    """Issue 20's Xen PV shape (tests/corpus/adoption/xen-pv-*.xml): a direct-kernel-boot guest
    and a pygrub guest with an xvda disk, both with a bridge NIC and its vif script, defined on the
    real Xen host (libxl's own reading of them is the baseline) → export → validate → plan exit 0 →
    adopt → apply: the persistent XML is unchanged apart from the ownership element. Defined, not
    started: a start costs 75–150 s on a loaded machine under TCG (and libxl's hotplug sometimes
    times out there); test_apply_examples_xen already runs a PV guest."""
    import libvirt

    from tests.e2e.test_adoption_corpus import CORPUS, OWNER_NS, canonical

    conn = libvirt.open(xen.uri)
    net = pool = None
    try:
        # what the corpus names: the bridge xenbr0 (here a libvirt network's), the pygrub guest's disk
        net = conn.networkDefineXML("<network><name>xcorp</name><bridge name='xenbr0' stp='off'/></network>")
        net.create()
        pool = conn.storagePoolDefineXML("<pool type='dir'><name>xcorp-images</name><target>"
                                         "<path>/var/lib/libvirt/images</path></target></pool>")
        pool.build(0)
        pool.create()
        if "xenpv-grub.img" not in pool.listVolumes():
            pool.createXML("<volume><name>xenpv-grub.img</name><capacity unit='M'>16</capacity>"
                           "<target><format type='raw'/></target></volume>")
        for file in XEN_CORPUS.values():
            dom = conn.defineXML((CORPUS / file).read_text())
            conn.defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))  # libxl's fixed point
        before = {n: conn.lookupByName(n).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) for n in XEN_CORPUS}
        tree = tmp_path / "tree"
        # an instance of its own: what the module's other tests made (instance default) is not this tree's
        own = ("--instance", "xcorp")
        ok(virtsync("export", "--connect", xen.uri, "--host", "xen1", *XEN_CORPUS, "-o", f"{tree}/", *own,
                    timeout=300))
        web, grub = ((tree / f"guest-{n}.yaml").read_text() for n in XEN_CORPUS)
        assert "xen:\n    mode: pv" in web and "kernel: /var/lib/libvirt/boot/vmlinuz" in web, web
        assert "- bridge: xenbr0\n    mac: 00:16:3e:2a:7c:01" in web and "ignore" not in web, web
        assert "path: /var/lib/libvirt/images/xenpv-grub.img" in grub and "bus: xen" in grub, grub
        assert "model: netfront" in grub and "input" not in grub and "video" not in grub, grub
        ok(virtsync("validate", str(tree), timeout=120))
        assert "No changes" in ok(virtsync("plan", str(tree), *own, timeout=300))
        adopted = ok(virtsync("adopt", str(tree), "--yes", *own, timeout=300))
        assert "adopt Guest xenpv-web on xen1" in adopted and "adopt Guest xenpv-grub on xen1" in adopted, adopted
        proc = virtsync("apply", str(tree), "--yes", *own, timeout=300)
        ok(proc)
        assert "Apply: 0 created, 0 updated" in proc.stderr + proc.stdout, proc.stderr
        for name, xml in before.items():
            after = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            assert OWNER_NS in after, f"{name} not adopted"
            assert canonical(after) == canonical(xml), f"{name} changed:\n{xml}\n---\n{after}"
            assert "<script path='vif-bridge'/>" in after
    finally:
        for name in XEN_CORPUS:
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).undefine()
        for obj in (pool, net):
            if obj is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    obj.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    obj.undefine()
        conn.close()
