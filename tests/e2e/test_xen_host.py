"""A real Xen host (tests/hosts/xen_host.py): libvirt's libxl driver runs a PV domU.

Boots Xen 4.17 with a Debian dom0 under QEMU (TCG), connects to dom0's libvirtd over TCP
with libvirt-python, defines a NAT network and a PV domU that boots the test guest (its
kernel and initrd are files inside dom0), and checks that it booted: dom0's xenconsoled logs
the domU's console and dom0's init copies it, prefixed ``[domU NAME] ``, to the host's serial
console log; and that its netfront NIC took a DHCP lease on the NAT network. Also checks domain
metadata (where ownership lives) and what libxl refuses: snapshots.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.hosts.linux_guest import BOOTED_LINE
from tests.hosts.xen_host import DOM0_GUEST_INITRD, DOM0_GUEST_KERNEL, QEMU, XenHost, ensure_xen_host_image

libvirt = pytest.importorskip("libvirt")

pytestmark = [pytest.mark.e2e, pytest.mark.xen, pytest.mark.timeout(1500)]

DOMU = "vspv1"
NETWORK = "vsxennat"
MAC = "00:16:3e:5e:00:31"

NETWORK_XML = f"""\
<network>
  <name>{NETWORK}</name>
  <forward mode='nat'/>
  <bridge name='virbr-vsx' stp='off'/>
  <ip address='192.168.181.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.181.10' end='192.168.181.99'/></dhcp>
  </ip>
</network>
"""

DOMAIN_XML = f"""\
<domain type='xen'>
  <name>{DOMU}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='xenpv'>linux</type>
    <kernel>{DOM0_GUEST_KERNEL}</kernel>
    <initrd>{DOM0_GUEST_INITRD}</initrd>
    <cmdline>console=hvc0 virtsync.hostname={DOMU}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='network'>
      <source network='{NETWORK}'/>
      <mac address='{MAC}'/>
    </interface>
    <console type='pty'><target type='xen' port='0'/></console>
  </devices>
</domain>
"""


@pytest.fixture(scope="module")
def xen_host() -> Iterator[XenHost]:
    if shutil.which(QEMU) is None:
        pytest.skip(f"the Xen test host needs {QEMU}")
    if os.geteuid() != 0:
        pytest.skip("building the Xen test host image needs root (debootstrap, chroot)")
    t0 = time.monotonic()
    image = ensure_xen_host_image()
    print(f"\nxen host image ready in {time.monotonic() - t0:.1f} s ({image})")
    # Its own directory under /tmp (not pytest's tmp_path, which concurrent pytest runs on this
    # machine prune): the console log stays for a look after the run.
    host = XenHost(image)
    try:
        host.start(timeout=300)
        print(f"xen host: libvirtd answered {host.boot_seconds:.1f} s after QEMU started ({host.uri}); "
              f"stalled boots retried: {host.stalls}")
        yield host
    finally:
        host.stop()
        print(f"xen host console log: {host.console_log}")


@pytest.fixture(scope="module")
def conn(xen_host: XenHost) -> Iterator[libvirt.virConnect]:
    c = libvirt.open(xen_host.uri)
    try:
        yield c
    finally:
        for lookup, name in ((c.lookupByName, DOMU), (c.networkLookupByName, NETWORK)):
            try:
                obj = lookup(name)
                if obj.isActive():
                    obj.destroy()
                obj.undefine()
            except libvirt.libvirtError:
                pass
        c.close()


def test_driver_and_capabilities(conn: libvirt.virConnect) -> None:
    assert conn.getType() == "Xen"
    caps = conn.getCapabilities()
    assert "xenpv" in caps, caps
    assert "<os_type>xen</os_type>" in caps, caps


def test_pv_domu_boots_on_nat_network(xen_host: XenHost, conn: libvirt.virConnect) -> None:
    t0 = time.monotonic()
    net = conn.networkDefineXML(NETWORK_XML)
    net.create()
    assert net.isActive()
    print(f"\nNAT network defined + started in {time.monotonic() - t0:.1f} s")

    t0 = time.monotonic()
    dom = conn.defineXML(DOMAIN_XML)
    dom.create()
    started = time.monotonic() - t0
    print(f"PV domU defined + started in {started:.1f} s")
    assert dom.isActive()
    assert dom.ID() > 0
    assert dom.info()[0] in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED)

    t0 = time.monotonic()
    xen_host.wait_for_console(f"[domU {DOMU}] {BOOTED_LINE}", timeout=300)
    print(f"PV domU console showed {BOOTED_LINE!r} {time.monotonic() - t0:.1f} s after start")

    # Its netfront NIC, on dom0's bridge through netback, takes a lease from the network's dnsmasq.
    text = xen_host.wait_for_console(f"[domU {DOMU}] virtsync-test-guest: lease ", timeout=120)
    print(f"PV domU took a DHCP lease {time.monotonic() - t0:.1f} s after start")
    # libvirt's lease file is written by its dnsmasq helper, a moment after the guest has its lease.
    deadline = time.monotonic() + 60
    while True:
        leases = net.DHCPLeases()
        if any(lease["mac"] == MAC for lease in leases):
            break
        assert time.monotonic() < deadline, (leases, text[-2000:])
        time.sleep(1)
    print(f"libvirt lists the lease {time.monotonic() - t0:.1f} s after start: {leases[0]['ipaddr']}")


def test_libxl_metadata_and_refusals(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName(DOMU)
    ns = "https://virtsync.example/ownership"
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<owner name='virtsync'/>", "vs", ns,
                    libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert "virtsync" in dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, ns, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    with pytest.raises(libvirt.libvirtError) as e:
        dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>", 0)
    assert "not supported" in str(e.value), str(e.value)
    print(f"\nsnapshot create refused: {e.value}")
