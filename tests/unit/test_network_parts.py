"""Networks beyond one NAT bridge, without a host: golden XML per kind of network (checked by
libvirt's own schema), the networkUpdate command/section/flags mapping, the keyed-list edits
the planner makes, the hostdev capability refusal, spec refusals at file:line:column, and
export of each kind planning nothing."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import libvirt
import pytest

from controller.fields.network import LIVE_LISTS
from controller.hypervisor import network_update
from controller.hypervisor.export import network_spec
from controller.hypervisor.network_xml import network_xml, read_network
from controller.model.network_state import DnsHostState, PortgroupState, VlanState
from controller.model.state import DeviceSupport, HostCapabilities, HostState, ObservedNetwork, Owner
from controller.plan.actions import NetworkEdit, UpdateNetwork
from controller.plan.context import PlanOptions
from controller.plan.networks import list_edits, plan_network
from controller.spec.loader import load_specs
from controller.spec.models import Network
from tests.golden import assert_golden

GOLDEN = Path(__file__).parent / "golden"
OWNER = Owner(instance="default", kind="Network", name="n", digest="sha256:1")
UUID = "5f0c1e0e-0000-4000-8000-00000000000a"
VFIO = HostCapabilities(driver="QEMU", virt_type="kvm", devices=DeviceSupport(vfio=True))
NO_VFIO = HostCapabilities(driver="QEMU", virt_type="kvm", devices=DeviceSupport(vfio=False))

SPECS: dict[str, dict[str, Any]] = {
    "network-dual-stack": {
        "mode": "nat", "bridge": "virbr-lab", "mtu": 9000,
        "bandwidth": {"inbound": {"average": 102400, "peak": 204800, "burst": 1024},
                      "outbound": {"average": 102400}},
        "ipv4": {"address": "192.168.150.1/24",
                 "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99",
                          "hosts": [{"mac": "52:54:00:00:00:22", "ip": "192.168.150.22", "name": "printer"}]}},
        "ipv6": {"address": "fd00:150::1/64", "dhcp": {"start": "fd00:150::100", "end": "fd00:150::1ff"}},
        "dns": {"hosts": [{"ip": "192.168.150.5", "hostnames": ["nas", "files"]}],
                "forwarders": ["9.9.9.9"],
                "srv": [{"service": "ldap", "protocol": "tcp", "target": "ldap.lab", "port": 389,
                         "priority": 10, "weight": 5}],
                "txt": [{"name": "lab", "value": "hello"}]},
        "portgroups": [{"name": "slow", "default": True, "bandwidth": {"inbound": {"average": 1000}}}],
    },
    "network-ovs": {
        "mode": "bridge", "bridge": "ovsbr0", "virtualport": "openvswitch",
        "vlan": {"tags": [10, 20], "trunk": True},
        "portgroups": [{"name": "untagged", "default": True}, {"name": "vlan42", "vlan": {"tags": [42]}}],
    },
    "network-macvtap": {"mode": "macvtap", "macvtapMode": "vepa", "devices": ["eth1", "eth2"]},
    "network-hostdev": {"mode": "hostdev", "pf": "eth3", "vlan": {"tags": [42]}},
}


def _network(spec: dict[str, Any]) -> Network:
    return Network.model_validate({"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": "n"},
                                   "spec": {"host": "h1", **spec}})


def _observed(xml: str, caps: HostCapabilities = VFIO, active: bool = True) -> HostState:
    _, uuid, cfg, own = read_network(xml)
    net = ObservedNetwork("n", uuid, active, True, True, cfg, cfg if active else None, own, xml)
    return HostState("h1", "test:///x", caps, networks={"n": net})


@pytest.mark.parametrize("case", sorted(SPECS))
def test_each_kind_of_network_matches_its_golden_file_and_libvirts_schema(
        case: str, update_golden: bool, tmp_path: Path) -> None:
    xml = network_xml("n", _network(SPECS[case]).spec, OWNER, UUID)
    assert_golden(GOLDEN / f"{case}.xml", xml, update_golden)
    path = tmp_path / "n.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", str(path), "network"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout


@pytest.mark.parametrize("case", sorted(SPECS))
def test_each_kind_of_network_reads_back_as_written_and_exports_to_a_spec_that_plans_nothing(case: str) -> None:
    net = _network(SPECS[case])
    state = _observed(network_xml("n", net.spec, OWNER, UUID))
    assert plan_network(net, state, PlanOptions()).actions == []
    exported = network_spec("h1", state.networks["n"], owned=True)
    again = Network.model_validate({"apiVersion": "virtsync/v1", "kind": "Network", "metadata": {"name": "n"},
                                    "spec": exported})
    out = plan_network(again, state, PlanOptions())
    assert out.actions == [] and out.problems == [], (exported, out)
    assert {k: v for k, v in exported.items() if k not in ("host", "autostart")} == \
        {**SPECS[case], **({"macvtapMode": "vepa"} if case == "network-macvtap" else {})}


# ------------------------------------------------------------------ networkUpdate mapping

@pytest.mark.parametrize(("section", "constant"), [
    ("host", libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST),
    ("range", libvirt.VIR_NETWORK_SECTION_IP_DHCP_RANGE),
    ("dns-host", libvirt.VIR_NETWORK_SECTION_DNS_HOST),
    ("dns-srv", libvirt.VIR_NETWORK_SECTION_DNS_SRV),
    ("dns-txt", libvirt.VIR_NETWORK_SECTION_DNS_TXT),
    ("portgroup", libvirt.VIR_NETWORK_SECTION_PORTGROUP),
    ("forward-interface", libvirt.VIR_NETWORK_SECTION_FORWARD_INTERFACE),
])
def test_each_section_maps_to_libvirts_network_update_section(section: str, constant: int) -> None:
    cmd, sec, parent, xml, flags = network_update.call_args("add", section, "<x/>", "both")
    assert (cmd, sec, parent, xml) == (libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, constant, -1, "<x/>")
    assert flags == libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG


def test_targets_and_commands_map_to_libvirts_flags() -> None:
    assert network_update.call_args("delete", "portgroup", "<p/>", "live")[::4] == (
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)
    assert network_update.call_args("modify", "portgroup", "<p/>", "config")[::4] == (
        libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)


@pytest.mark.parametrize("section", sorted(network_update.NO_MODIFY))
def test_a_modify_libvirt_cannot_do_is_refused_before_the_call(section: str) -> None:
    with pytest.raises(ValueError, match="delete it and add it"):
        network_update.call_args("modify", section, "<x/>", "both")


def test_every_live_list_section_is_one_network_update_knows_and_modifies_only_where_libvirt_can() -> None:
    for name, ll in LIVE_LISTS.items():
        assert ll.section in network_update.SECTIONS, name
        assert ll.modify == (ll.section not in network_update.NO_MODIFY), name


# ------------------------------------------------------------------ keyed-list edits

def test_a_changed_dns_host_is_deleted_then_added_and_removals_come_first() -> None:
    ll = LIVE_LISTS["dns.hosts"]
    have = (DnsHostState("10.0.0.5", ("nas",)), DnsHostState("10.0.0.6", ("old",)))
    want = (DnsHostState("10.0.0.5", ("nas", "files")), DnsHostState("10.0.0.7", ("new",)))
    edits = list_edits(ll, want, have, "both")
    assert [(e.command, e.xml) for e in edits] == [
        ("delete", '<host ip="10.0.0.6"><hostname>old</hostname></host>'),
        ("delete", '<host ip="10.0.0.5"><hostname>nas</hostname></host>'),
        ("add", '<host ip="10.0.0.5"><hostname>nas</hostname><hostname>files</hostname></host>'),
        ("add", '<host ip="10.0.0.7"><hostname>new</hostname></host>'),
    ]
    assert {e.section for e in edits} == {"dns-host"} and {e.target for e in edits} == {"both"}


def test_a_changed_portgroup_is_modified_in_place() -> None:
    ll = LIVE_LISTS["portgroups"]
    edits = list_edits(ll, (PortgroupState("v", vlan=VlanState((43,))),), (PortgroupState("v", vlan=VlanState((42,))),),
                       "config")
    assert edits == [NetworkEdit("modify", "portgroup", '<portgroup name="v"><vlan><tag id="43"/></vlan></portgroup>',
                                 "config")]


def test_live_changes_are_planned_as_network_updates_named_in_the_plan() -> None:
    base = {"mode": "nat", "bridge": "virbr9", "ipv4": {"address": "192.168.150.1/24"}}
    state = _observed(network_xml("n", _network(base).spec, OWNER, UUID))
    new = _network({**base, "dns": {"hosts": [{"ip": "192.168.150.5", "hostnames": ["nas"]}],
                                    "txt": [{"name": "t", "value": "v"}]},
                    "portgroups": [{"name": "p"}]})
    (action,) = plan_network(new, state, PlanOptions()).actions
    assert isinstance(action, UpdateNetwork)
    assert [(e.command, e.section, e.target) for e in action.edits] == [
        ("add", "dns-host", "both"), ("add", "dns-txt", "both"), ("add", "portgroup", "both")]
    notes = {c.path: c.note for c in action.changes}
    assert notes["/spec/dns/hosts"].startswith("networkUpdate dns-host: dnsmasq re-reads")
    assert notes["/spec/dns/txt"].startswith("networkUpdate dns-txt: libvirt restarts dnsmasq")
    assert notes["/spec/portgroups"].startswith("networkUpdate portgroup")


def test_a_stopped_network_gets_its_definition_edited_only() -> None:
    base = {"mode": "nat", "bridge": "virbr9", "ipv4": {"address": "192.168.150.1/24"}}
    state = _observed(network_xml("n", _network(base).spec, OWNER, UUID), active=False)
    new = _network({**base, "portgroups": [{"name": "p"}]})
    action = plan_network(new, state, PlanOptions()).actions[0]
    assert isinstance(action, UpdateNetwork) and [e.target for e in action.edits] == ["config"]


def test_a_macvtap_device_added_is_live_and_a_forwarder_is_a_recreate() -> None:
    mv = _network(SPECS["network-macvtap"])
    state = _observed(network_xml("n", mv.spec, OWNER, UUID))
    (action,) = plan_network(_network({**SPECS["network-macvtap"], "devices": ["eth1", "eth2", "eth4"]}), state,
                             PlanOptions()).actions
    assert isinstance(action, UpdateNetwork)
    assert [(e.command, e.section, e.xml) for e in action.edits] == [
        ("add", "forward-interface", '<interface dev="eth4"/>')]
    nat = _network(SPECS["network-dual-stack"])
    state = _observed(network_xml("n", nat.spec, OWNER, UUID))
    changed = {**SPECS["network-dual-stack"], "dns": {**SPECS["network-dual-stack"]["dns"], "forwarders": ["1.1.1.1"]}}
    (action,) = plan_network(_network(changed), state, PlanOptions()).actions
    assert action.op == "recreate-network"


# ------------------------------------------------------------------ hostdev capability refusal

def test_a_hostdev_network_is_refused_at_plan_time_on_a_host_without_vfio() -> None:
    net = _network(SPECS["network-hostdev"])
    for caps in (NO_VFIO, HostCapabilities(driver="QEMU", virt_type="kvm")):
        out = plan_network(net, HostState("h1", "qemu:///system", caps), PlanOptions())
        assert out.actions == []
        (problem,) = out.problems
        assert "host h1" in problem.message and "SR-IOV" in problem.message and "eth3" in problem.message
    out = plan_network(net, HostState("h1", "qemu:///system", VFIO), PlanOptions())
    assert out.problems == [] and [a.op for a in out.actions] == ["define-network"]


# ------------------------------------------------------------------ spec refusals, file:line:column

REFUSALS = [
    ("  mode: nat\n  vlan: {tags: [42]}\n", "vlan:", "tags VLANs only on Open vSwitch"),
    ("  mode: macvtap\n", "mode: macvtap", "needs 'devices'"),
    ("  mode: nat\n  devices: [eth1]\n", "devices:", "macvtap pool"),
    ("  mode: hostdev\n", "mode: hostdev", "needs 'pf'"),
    ("  mode: nat\n  virtualport: openvswitch\n", "virtualport:", "needs mode bridge"),
    ("  mode: macvtap\n  devices: [eth1]\n  ipv6: {address: 'fd00::1/64'}\n", "ipv6:", "takes no 'ipv6'"),
    ("  ipv6: {address: 'fd00::1/64', dhcp: {start: 'fd01::5', end: 'fd00::9'}}\n", "start:", "outside fd00::/64"),
    ("  portgroups:\n    - {name: a, default: true}\n    - {name: b, default: true}\n", "b, default",
     "only one portgroup"),
    ("  dns: {hosts: [{ip: 10.0.0.5, hostnames: [a]}, {ip: 10.0.0.5, hostnames: [b]}]}\n",
     "{ip: 10.0.0.5, hostnames: [b]",
     "given twice"),
    ("  mode: bridge\n  bridge: ovsbr0\n  vlan: {tags: [1, 2]}\n", "tags: [1, 2]", "make a trunk"),
]


@pytest.mark.parametrize(("body", "at", "message"), REFUSALS, ids=[r[2] for r in REFUSALS])
def test_a_network_libvirt_would_refuse_is_refused_at_its_file_line_and_column(
        tmp_path: Path, body: str, at: str, message: str) -> None:
    path = tmp_path / "net.yaml"
    head = "apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: h1}\nspec: {uri: 'test:///x'}\n---\n"
    text = f"{head}apiVersion: virtsync/v1\nkind: Network\nmetadata: {{name: n}}\nspec:\n  host: h1\n{body}"
    path.write_text(text)
    result = load_specs([path])
    assert len(result.errors) == 1, [d.render() for d in result.diagnostics]
    (err,) = result.errors
    assert message in err.message, err.render()
    # the diagnostic points into the offending entry (line of the needle, at or after its column)
    offset = text.index(at)
    line = text.count("\n", 0, offset) + 1
    assert err.file == str(path) and err.line == line, (err.render(), line)


def test_a_dhcpv6_range_change_is_live_on_the_ipv6_ip_and_a_first_one_is_a_recreate() -> None:
    spec = SPECS["network-dual-stack"]
    state = _observed(network_xml("n", _network(spec).spec, OWNER, UUID))
    moved = {**spec, "ipv6": {**spec["ipv6"], "dhcp": {"start": "fd00:150::200", "end": "fd00:150::2ff"}}}
    (action,) = plan_network(_network(moved), state, PlanOptions()).actions
    assert isinstance(action, UpdateNetwork)
    assert [(e.command, e.section, e.xml, e.target, e.parent) for e in action.edits] == [
        ("delete", "range", '<range start="fd00:150::100" end="fd00:150::1ff"/>', "both", 1),
        ("add", "range", '<range start="fd00:150::200" end="fd00:150::2ff"/>', "both", 1)]
    assert network_update.call_args("add", "range", "<range/>", "both", 1)[2] == 1  # parentIndex
    bare = {**spec, "ipv6": {"address": "fd00:150::1/64"}}
    state = _observed(network_xml("n", _network(bare).spec, OWNER, UUID))
    (action,) = plan_network(_network(spec), state, PlanOptions()).actions
    assert action.op == "recreate-network"


def test_a_vlan_on_a_network_nic_is_refused_pointing_at_the_networks_portgroups(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    text = ("apiVersion: virtsync/v1\nkind: Host\nmetadata: {name: h1}\nspec: {uri: 'test:///x'}\n---\n"
            "apiVersion: virtsync/v1\nkind: Guest\nmetadata: {name: g}\nspec:\n  host: h1\n"
            "  interfaces:\n    - {network: ovs, vlan: 42}\n")
    path.write_text(text)
    (err,) = [e for e in load_specs([path]).errors if "vlan" in e.message]
    assert "portgroup" in err.message and "virtualport: openvswitch" in err.message, err.render()
    assert (err.line, err.column) == (12, text.splitlines()[11].index("42") + 1), err.render()  # its value
