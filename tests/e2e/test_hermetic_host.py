"""Smoke tests of the hermetic libvirtd test host: real libvirtd, real KVM (or TCG) guests."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.hosts.hermetic import HermeticHost, HermeticHostError, HostFactory, virt_type

pytestmark = [pytest.mark.e2e, pytest.mark.kvm]

BRIDGE = "virbr-t1"
NETWORK_XML = f"""\
<network>
  <name>t1</name>
  <forward mode='nat'/>
  <bridge name='{BRIDGE}' stp='on' delay='0'/>
  <ip address='192.168.150.1' netmask='255.255.255.0'>
    <dhcp><range start='192.168.150.10' end='192.168.150.100'/></dhcp>
  </ip>
</network>
"""


def domain_xml(name: str, devices: str = "") -> str:
    # No <cpu>: this machine is a VM, where host-model and host-passthrough make QEMU abort.
    # Diskless, the guest sits in SeaBIOS, which is all these tests need.
    return f"""\
<domain type='{virt_type()}'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>{devices}</devices>
</domain>
"""


def start_guest(host: HermeticHost, name: str, devices: str = "") -> int:
    """Define and start a guest; return its domain ID."""
    conn = host.connect()
    try:
        dom = conn.defineXML(domain_xml(name, devices))
        dom.create()
        state, _ = dom.state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
        assert dom.ID() > 0
        return int(dom.ID())
    finally:
        conn.close()


def qemu_pid(host: HermeticHost, guest: str) -> int:
    """Global PID of the QEMU process running guest on host."""
    found = [pid for pid in host.pids_of("qemu-system-x86") if f"guest={guest}," in cmdline(pid)]
    assert len(found) == 1, f"QEMU processes of {guest} on {host.name}: {found}"
    return found[0]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_guest_runs_and_dies_with_its_host(hermetic_host: HermeticHost) -> None:
    start_guest(hermetic_host, "smoke")
    assert hermetic_host.virsh("domstate", "smoke").strip() == "running"
    pid = qemu_pid(hermetic_host, "smoke")
    all_pids = hermetic_host.pids()
    assert pid in all_pids
    assert netns_inode(pid) == netns_inode(hermetic_host.netns_pid) != netns_inode(os.getpid())
    # virtlogd writes the guest's log into the host's private /var/log/libvirt.
    log = hermetic_host.path_outside("/var/log/libvirt/qemu/smoke.log")
    assert log.is_relative_to(hermetic_host.root)
    assert "guest=smoke," in log.read_text()

    hermetic_host.stop()

    assert "guest=smoke," not in cmdline(pid)
    assert hermetic_host.pids() == []
    assert not [p for p in all_pids if Path(f"/proc/{p}").exists() and "libvirt" in cmdline(p)]
    hermetic_host.stop()  # idempotent


def test_nat_network_and_its_bridge_live_in_the_host_netns(hermetic_host: HermeticHost) -> None:
    conn = hermetic_host.connect()
    try:
        net = conn.networkDefineXML(NETWORK_XML)
        net.create()
        assert net.isActive()
    finally:
        conn.close()

    inside = hermetic_host.run_in_netns(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE])
    assert inside.returncode == 0, inside.stderr
    assert "inet 192.168.150.1/24" in inside.stdout
    outside = subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True, text=True)
    assert outside.returncode != 0
    assert "does not exist" in outside.stderr
    assert hermetic_host.pids_of("dnsmasq"), "no dnsmasq serves the network"
    # The NAT rules went to the host's netfilter, not the machine's.
    rules = hermetic_host.run_in_netns(["iptables-save"], check=True).stdout
    assert "192.168.150.0/24" in rules
    root_rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert "192.168.150.0/24" not in root_rules

    start_guest(
        hermetic_host,
        "netguest",
        "<interface type='network'><source network='t1'/><model type='virtio'/></interface>",
    )
    live = ET.fromstring(hermetic_host.virsh("dumpxml", "netguest"))
    target = live.find("./devices/interface/target")
    assert target is not None
    tap = target.get("dev")
    assert tap
    ports = hermetic_host.run_in_netns(["ip", "-o", "link", "show", "master", BRIDGE], check=True)
    assert f" {tap}:" in ports.stdout
    outside = subprocess.run(["ip", "link", "show", tap], capture_output=True, text=True)
    assert outside.returncode != 0


def test_two_hosts_are_independent(hermetic_host_factory: HostFactory) -> None:
    a = hermetic_host_factory("a")
    b = hermetic_host_factory("b")
    assert a.uri != b.uri
    assert netns_inode(a.netns_pid) != netns_inode(b.netns_pid)
    assert f"<uuid>{a.host_uuid}</uuid>" in a.virsh("capabilities")
    assert f"<uuid>{b.host_uuid}</uuid>" in b.virsh("capabilities")
    assert a.host_uuid != b.host_uuid

    start_guest(a, "only-on-a")
    assert "only-on-a" in a.virsh("list", "--all", "--name").split()
    assert "only-on-a" not in b.virsh("list", "--all", "--name").split()

    # The same guest name on both: no shared paths, cgroups or sockets get in the way.
    start_guest(a, "twin")
    start_guest(b, "twin")
    twin_a, twin_b = qemu_pid(a, "twin"), qemu_pid(b, "twin")
    assert twin_a != twin_b

    a.stop()
    assert "guest=twin," not in cmdline(twin_a)
    assert b.virsh("domstate", "twin").strip() == "running"
    assert qemu_pid(b, "twin") == twin_b


def test_guest_survives_a_libvirtd_restart(hermetic_host: HermeticHost) -> None:
    dom_id = start_guest(hermetic_host, "survivor")
    qemu = qemu_pid(hermetic_host, "survivor")
    (old_libvirtd,) = hermetic_host.pids_of("libvirtd")

    hermetic_host.kill_libvirtd()

    assert hermetic_host.pids_of("libvirtd") == []
    assert qemu_pid(hermetic_host, "survivor") == qemu
    with pytest.raises(HermeticHostError, match="Failed to connect socket"):
        hermetic_host.virsh("list")

    hermetic_host.restart_libvirtd()

    (new_libvirtd,) = hermetic_host.pids_of("libvirtd")
    assert new_libvirtd != old_libvirtd
    conn = hermetic_host.connect()
    try:
        dom = conn.lookupByName("survivor")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.ID() == dom_id
    finally:
        conn.close()
    assert qemu_pid(hermetic_host, "survivor") == qemu


def test_listen_tcp_serves_inside_the_host_netns(
    hermetic_session: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with HermeticHost(tmp_path_factory.mktemp("hh"), "tcp", listen_tcp=True) as host:
        caps = host.run_in_netns(
            ["virsh", "-c", "qemu+tcp://127.0.0.1/system", "capabilities"], check=True
        ).stdout
        assert f"<uuid>{host.host_uuid}</uuid>" in caps
    assert not host.running
    assert host.pids() == []
