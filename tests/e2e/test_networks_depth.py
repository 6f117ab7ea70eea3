"""Networks beyond one NAT bridge, on real hermetic libvirtd hosts (issue 13, networks).

Dual stack with DHCPv6, DNS records, static leases and port groups changed live through
networkUpdate (the network is not restarted: dnsmasq's PID and the bridge's ifindex stay, a
running guest keeps its NIC), an Open vSwitch bridge in userspace with a guest port tagged
VLAN 42, and a macvtap pool over a veth. Each ends with export → plan: nothing to do.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.engine_helpers import ok, virtsync
from tests.hosts import ovs
from tests.hosts.hermetic import HermeticHost

pytestmark = [pytest.mark.e2e, pytest.mark.networks]
DHCP6_CLIENT = Path(__file__).resolve().parents[1] / "hosts" / "dhcp6_client.py"


def _host_doc(host: HermeticHost) -> str:
    return f"""apiVersion: virtsync/v1
kind: Host
metadata: {{name: lab}}
spec:
  uri: "{host.uri}"
"""


def _guest_doc(name: str, mac: str, network: str, extra: str = "") -> str:
    return f"""---
apiVersion: virtsync/v1
kind: Guest
metadata: {{name: {name}}}
spec:
  host: lab
  state: running
  vcpus: 1
  memory: 64MiB
  firmware: bios
  interfaces:
    - {{network: {network}, mac: "{mac}"{extra}}}
"""


def _write(specs: Path, *docs: str) -> Path:
    specs.mkdir(exist_ok=True)
    (specs / "lab.yaml").write_text("".join(docs))
    return specs


def _apply_then_no_changes(specs: Path) -> str:
    out = ok(virtsync("apply", str(specs), "--yes"))
    plan = ok(virtsync("plan", str(specs)))  # exit 0: nothing left to do
    assert "No changes" in plan, plan
    return out


def _export_then_no_changes(host: HermeticHost, tmp: Path) -> None:
    """export of the host, then plan of what it wrote: nothing to do (lossless)."""
    out = tmp / "exported.yaml"
    ok(virtsync("export", "--connect", host.uri, "--host", "lab", "-o", str(out)))
    plan = ok(virtsync("plan", str(out), "--connect", host.uri))
    assert "No changes" in plan, f"{plan}\n--- exported:\n{out.read_text()}"


def _netns(host: HermeticHost, *argv: str) -> str:
    done = host.run_in_netns(list(argv))
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


def _ifindex(host: HermeticHost, dev: str) -> int:
    return int(_netns(host, "cat", f"/sys/class/net/{dev}/ifindex"))


def _dhcpv6_offer(host: HermeticHost, bridge: str) -> dict[str, Any]:
    """What a DHCPv6 client (tests/hosts/dhcp6_client.py) in a namespace of its own, on a veth
    whose other end is a port of ``bridge``, is offered."""
    client = subprocess.Popen(
        ["nsenter", "--target", str(host.netns_pid), "--net", "--mount", "--pid", "--",
         "unshare", "--net", "--", sys.executable, str(DHCP6_CLIENT), "dh6c", "52:54:00:66:00:01", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the client's process, seen from inside the host's PID namespace: its netns takes the veth
        deadline = time.monotonic() + 10
        inner = ""
        while not inner and time.monotonic() < deadline:
            found = host.run_in_netns(["pgrep", "-f", "dhcp6_client.py dh6c"]).stdout.split()
            inner = found[-1] if found else ""
            time.sleep(0.05)
        assert inner, "the DHCPv6 client did not start"
        _netns(host, "ip", "link", "add", "dh6c", "type", "veth", "peer", "name", "dh6b")
        _netns(host, "ip", "link", "set", "dh6b", "master", bridge, "up")
        _netns(host, "ip", "link", "set", "dh6c", "netns", inner)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, err
    offer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return offer


def _dnsmasq_pids(host: HermeticHost, network: str) -> set[int]:
    """The dnsmasq processes (the server and its lease-script helper) of one network."""
    return {p for p in host.pids_of("dnsmasq")
            if f"/{network}.conf" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")}


def _guest_tap(host: HermeticHost, guest: str) -> str:
    out = host.virsh("domiflist", guest)
    taps = re.findall(r"^\s*(\S+)\s+(?:network|bridge|direct)\s", out, re.M)
    assert taps, out
    return taps[0]


# ------------------------------------------------------------------- dual stack, live updates

DUAL = """---
apiVersion: virtsync/v1
kind: Network
metadata: {name: lab}
spec:
  host: lab
  mode: nat
  bridge: virbr-lab
  ipv4:
    address: 192.168.150.1/24
    dhcp:
      start: 192.168.150.10
      end: 192.168.150.99
EXTRA_V4
  ipv6:
    address: fd00:150::1/64
    dhcp: {start: "fd00:150::100", end: "fd00:150::1ff"}
EXTRA
"""
LEASE = """      hosts:
        - {mac: "52:54:00:15:00:22", ip: 192.168.150.22, name: printer}"""
LIVE_ADDITIONS = """  dns:
    hosts:
      - {ip: 192.168.150.5, hostnames: [nas, files]}
  portgroups:
    - {name: slow, bandwidth: {inbound: {average: 1000}}}"""


def _dual(extra_v4: str = "", extra: str = "") -> str:
    return DUAL.replace("EXTRA_V4\n", extra_v4 + "\n" if extra_v4 else "").replace(
        "EXTRA\n", extra + "\n" if extra else "")


def test_a_dual_stack_network_serves_dhcpv6_and_takes_dns_leases_and_portgroups_live(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    host = hermetic_host
    specs = _write(tmp_path / "specs", _host_doc(host), _dual(),
                   _guest_doc("g1", "52:54:00:15:00:01", "lab"))
    _apply_then_no_changes(specs)

    # both families on the bridge, in the host's network namespace
    v4 = _netns(host, "ip", "-4", "addr", "show", "virbr-lab")
    v6 = _netns(host, "ip", "-6", "addr", "show", "virbr-lab")
    assert "192.168.150.1/24" in v4, v4
    assert "fd00:150::1/64" in v6, v6
    # dnsmasq serves DHCPv6 on the range (and router advertisements)
    conf = host.path_outside("/var/lib/libvirt/dnsmasq/lab.conf").read_text()
    assert re.search(r"^dhcp-range=fd00:150::100,fd00:150::1ff", conf, re.M), conf
    assert "enable-ra" in conf, conf
    # a DHCPv6 client on a veth into the bridge is offered an address of the range, and router
    # advertisements reach it
    offer = _dhcpv6_offer(host, "virbr-lab")
    assert offer["address"] is not None, offer
    assert ipaddress.IPv6Address("fd00:150::100") <= ipaddress.IPv6Address(offer["address"]) \
        <= ipaddress.IPv6Address("fd00:150::1ff"), offer
    assert any(r.startswith("default via fe80:") for r in offer["ra_routes"]), offer  # the bridge's RA
    dnsmasq = _dnsmasq_pids(host, "lab")
    assert dnsmasq, "no dnsmasq serves the network"
    bridge = _ifindex(host, "virbr-lab")
    tap = _guest_tap(host, "g1")
    domid = host.virsh("domid", "g1").strip()
    assert _netns(host, "cat", f"/sys/class/net/{tap}/master/ifindex").strip() == str(bridge)

    # a static lease, DNS hosts and a port group: planned live, as networkUpdate calls
    _write(specs, _host_doc(host), _dual(LEASE, LIVE_ADDITIONS), _guest_doc("g1", "52:54:00:15:00:01", "lab"))
    plan = ok(virtsync("plan", str(specs)), 2)
    assert "update-network Network lab (live)" in plan and "recreate-network" not in plan, plan
    assert "networkUpdate ip-dhcp-host" in plan, plan
    assert "networkUpdate dns-host" in plan and "networkUpdate portgroup" in plan, plan
    out = _apply_then_no_changes(specs)
    assert "recreate-network" not in out, out

    # the network was not restarted, the guest kept its NIC on the same bridge
    assert _dnsmasq_pids(host, "lab") == dnsmasq, "dnsmasq was restarted"
    assert _ifindex(host, "virbr-lab") == bridge, "the bridge was recreated"
    assert host.virsh("domid", "g1").strip() == domid
    assert _netns(host, "cat", f"/sys/class/net/{tap}/master/ifindex").strip() == str(bridge)
    for flags in (("--inactive",), ()):
        xml = host.virsh("net-dumpxml", *flags, "lab")
        assert "<hostname>nas</hostname>" in xml and "<hostname>files</hostname>" in xml, xml
        assert "mac='52:54:00:15:00:22'" in xml and "name='printer'" in xml, xml
        assert "<portgroup name='slow'>" in xml and "average='1000'" in xml, xml
    # dnsmasq answers from the files it re-read (SIGHUP), not from a new process
    hosts_file = host.path_outside("/var/lib/libvirt/dnsmasq/lab.addnhosts").read_text()
    assert re.search(r"^192\.168\.150\.5\s+nas\s+files", hosts_file, re.M), hosts_file
    leases = host.path_outside("/var/lib/libvirt/dnsmasq/lab.hostsfile").read_text()
    assert "52:54:00:15:00:22,192.168.150.22,printer" in leases, leases

    # the DHCPv6 range moves live too (networkUpdate on the IPv6 <ip>): libvirt restarts dnsmasq
    # for a range, never the bridge
    moved = _dual(LEASE, LIVE_ADDITIONS).replace('"fd00:150::100", end: "fd00:150::1ff"',
                                                 '"fd00:150::200", end: "fd00:150::2ff"')
    _write(specs, _host_doc(host), moved, _guest_doc("g1", "52:54:00:15:00:01", "lab"))
    out = _apply_then_no_changes(specs)
    assert "update-network Network lab (live)" in out and "recreate-network" not in out, out
    conf = host.path_outside("/var/lib/libvirt/dnsmasq/lab.conf").read_text()
    assert re.search(r"^dhcp-range=fd00:150::200,fd00:150::2ff", conf, re.M), conf
    assert _ifindex(host, "virbr-lab") == bridge, "the bridge was recreated"
    assert _netns(host, "cat", f"/sys/class/net/{tap}/master/ifindex").strip() == str(bridge)

    _export_then_no_changes(host, tmp_path)


# ------------------------------------------------------------------- Open vSwitch, VLAN 42

def test_a_guest_port_on_a_userspace_ovs_bridge_is_tagged_vlan_42(
    tmp_path: Path, hermetic_host: HermeticHost,
) -> None:
    lacking = ovs.missing()
    if lacking:
        pytest.skip("Open vSwitch (Debian openvswitch-switch) is not installed: " + ", ".join(lacking))
    host = hermetic_host
    switch = ovs.UserspaceOvs(host)
    try:
        switch.start()
        switch.add_bridge("ovsbr0")
        net = """---
apiVersion: virtsync/v1
kind: Network
metadata: {name: ovs}
spec:
  host: lab
  mode: bridge
  bridge: ovsbr0
  virtualport: openvswitch
  portgroups:
    - {name: untagged, default: true}
    - {name: vlan42, vlan: {tags: [42]}}
"""
        specs = _write(tmp_path / "specs", _host_doc(host), net,
                       _guest_doc("g1", "52:54:00:42:00:01", "ovs", ", portgroup: vlan42, bootRom: false"))
        _apply_then_no_changes(specs)
        tap = _guest_tap(host, "g1")
        ports = switch.vsctl("list-ports", "ovsbr0").split()
        assert tap in ports, ports
        assert switch.vsctl("get", "port", tap, "tag").strip() == "42"
        assert host.virsh("domstate", "g1").strip() == "running"
        _export_then_no_changes(host, tmp_path)

        # a recreate (the network's own VLAN trunk) keeps the running guest's port and its tag
        domid = host.virsh("domid", "g1").strip()
        specs = _write(tmp_path / "specs", _host_doc(host), net + "  vlan: {tags: [7, 8], trunk: true}\n",
                       _guest_doc("g1", "52:54:00:42:00:01", "ovs", ", portgroup: vlan42, bootRom: false"))
        out = _apply_then_no_changes(specs)
        assert "recreate-network Network ovs" in out, out
        assert host.virsh("domid", "g1").strip() == domid
        assert tap in switch.vsctl("list-ports", "ovsbr0").split()
        assert switch.vsctl("get", "port", tap, "tag").strip() == "42"
        assert "<tag id='7'/>" in host.virsh("net-dumpxml", "ovs")
    finally:
        if host.running:  # guests off first: libvirtd unplugs their ports while OVS still answers
            for name in host.virsh("list", "--name").split():
                host.virsh("destroy", name)
        switch.stop()


# ------------------------------------------------------------------- macvtap pool over a veth

def test_a_guest_nic_runs_on_a_macvtap_pool_over_a_veth(tmp_path: Path, hermetic_host: HermeticHost) -> None:
    host = hermetic_host
    _netns(host, "ip", "link", "add", "mv0", "type", "veth", "peer", "name", "mv0p")
    for dev in ("mv0", "mv0p"):
        _netns(host, "ip", "link", "set", dev, "up")
    net = """---
apiVersion: virtsync/v1
kind: Network
metadata: {name: mv}
spec:
  host: lab
  mode: macvtap
  devices: [mv0]
"""
    specs = _write(tmp_path / "specs", _host_doc(host), net,
                   _guest_doc("g1", "52:54:00:77:00:01", "mv", ", bootRom: false"))
    _apply_then_no_changes(specs)
    assert host.virsh("domstate", "g1").strip() == "running"
    tap = _guest_tap(host, "g1")
    link = _netns(host, "ip", "-d", "link", "show", tap)
    assert "macvtap" in link and "@mv0" in link, link
    assert "mode bridge" in link, link
    _export_then_no_changes(host, tmp_path)
