"""The fields of kind: Network, each declared once: how it compares and how a change lands.

``dhcp`` (the range) lands live where the network has a range already (networkUpdate
delete + add), else by a recreate; static leases, DNS hosts/SRV/TXT, port groups and a
macvtap pool's devices always land live (networkUpdate of the definition and the running
network, item by item: ``LIVE_LISTS`` names each one's section; the bridge is never
restarted). Everything else that virtsync writes needs the network recreated (destroyed and
defined again under the same UUID, edited in place so what virtsync does not model
survives; running guests' NICs are re-plugged).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from lxml import etree

from controller.fields import network_items as items
from controller.fields.applied import declared
from controller.fields.base import Facts, Field
from controller.fields.patches import write_patches
from controller.model.network_state import Rate
from controller.model.operations import Impact
from controller.model.records import record
from controller.model.state import DhcpHostState, HostCapabilities, NetworkConfig
from controller.spec.models import NetworkSpec


def _ipv4_declared(spec: NetworkSpec, name: str) -> bool:
    return spec.ipv4 is not None and name in declared(spec.ipv4)


def _dhcp_declared(spec: NetworkSpec, name: str) -> bool:
    return spec.ipv4 is not None and spec.ipv4.dhcp is not None and name in declared(spec.ipv4.dhcp)


def _address(spec: NetworkSpec, _facts: Facts) -> str | None:
    return str(ipaddress.IPv4Interface(spec.ipv4.address)) if spec.ipv4 else None


def _range(spec: NetworkSpec, _facts: Facts) -> str | None:
    dhcp = spec.ipv4.dhcp if spec.ipv4 else None
    return f"{dhcp.start}-{dhcp.end}" if dhcp else None


def _have_range(c: NetworkConfig, _obs: Any) -> str | None:
    return f"{c.dhcp_start}-{c.dhcp_end}" if c.dhcp_start else None


def _leases(spec: NetworkSpec, _facts: Facts) -> tuple[DhcpHostState, ...]:
    dhcp = spec.ipv4.dhcp if spec.ipv4 else None
    return tuple(DhcpHostState(h.mac, h.ip, h.name) for h in dhcp.hosts) if dhcp else ()


def _show_leases(value: tuple[DhcpHostState, ...]) -> list[str]:
    return [f"{h.mac}={h.ip}" for h in value]


def _same_leases(want: tuple[DhcpHostState, ...], have: tuple[DhcpHostState, ...]) -> bool:
    return {h.mac: h for h in want} == {h.mac: h for h in have}


@record
class NetworkView:
    """What a network field's impact may consult."""

    spec: NetworkSpec
    persistent: NetworkConfig
    live: NetworkConfig | None
    obs: Any  # ObservedNetwork


def _range_impact(v: NetworkView) -> Impact:
    return Impact.LIVE if v.persistent.dhcp_start else Impact.RECREATE


@record
class LiveList:
    """A keyed list of a network that networkUpdate edits item by item (add/delete/modify)."""

    section: str  # networkUpdate section, as network_update.py names it: dns-host, portgroup…
    key: Callable[[Any], Any]  # the item's identity in the list
    element: Callable[[Any], etree._Element]  # the item's XML, as networkUpdate takes it
    modify: bool  # libvirt modifies an item in place; else a changed item is deleted and added
    effect: str  # what the running network goes through, for the plan
    items: Callable[[Any], tuple[Any, ...]] = tuple  # the field's value as the list's items
    parent: Callable[[NetworkConfig], int] | None = None  # the <ip> an item is under (parentIndex)


def _refuse_hostdev(spec: NetworkSpec, caps: HostCapabilities, host: str) -> str | None:
    """A hostdev pool hands SR-IOV VFs to guests through VFIO: a host whose libvirt offers no VFIO
    PCI passthrough (no vfio in its kernel, or a driver without it) cannot start such a NIC."""
    if spec.mode != "hostdev" or (caps.devices is not None and caps.devices.vfio):
        return None
    why = "its capabilities were not probed" if caps.devices is None else "its libvirt offers no VFIO PCI passthrough"
    return (f"host {host} ({caps.driver}) cannot give SR-IOV VFs of {spec.pf} to guests: {why} "
            f"(no vfio in its kernel): a hostdev network needs it")


def _part(name: str, sub: str) -> Callable[[NetworkSpec], bool]:
    def is_declared(spec: NetworkSpec) -> bool:
        parent = getattr(spec, name)
        return parent is not None and name in declared(spec) and sub in declared(parent)
    return is_declared


def _dns(spec: NetworkSpec) -> Any:
    return spec.dns


def _keyed_same(key: Callable[[Any], Any]) -> Callable[[Any, Any], bool]:
    return lambda w, h: {key(x): x for x in w} == {key(x): x for x in h}


def _rate_json(rate: Rate | None) -> dict[str, int] | None:
    if rate is None:
        return None
    return {k: v for k, v in zip(("average", "peak", "burst"), rate, strict=True) if v is not None}


def _bandwidth_json(bw: Any) -> dict[str, Any] | None:
    if bw is None:
        return None
    return {k: r for k, r in (("inbound", _rate_json(bw.inbound)), ("outbound", _rate_json(bw.outbound)))
            if r is not None}


def _vlan_json(v: Any) -> dict[str, Any] | None:
    return None if v is None else {"tags": list(v.tags), **({"trunk": True} if v.trunk else {})}


def _portgroup_json(p: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name}
    if p.default:
        out["default"] = True
    if p.vlan is not None:
        out["vlan"] = _vlan_json(p.vlan)
    if p.bandwidth is not None:
        out["bandwidth"] = _bandwidth_json(p.bandwidth)
    return out


def _srv_json(s: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(s).items() if v is not None}


LIVE_LISTS: dict[str, LiveList] = {
    "dns.hosts": LiveList("dns-host", lambda h: h.ip, items.dns_host_element, False,
                          "dnsmasq re-reads its hosts file (SIGHUP, same process)"),
    "dns.srv": LiveList("dns-srv", lambda s: s, items.srv_element, False,
                    "libvirt restarts dnsmasq (its config file); the bridge stays"),
    "dns.txt": LiveList("dns-txt", lambda t: t.name, items.txt_element, False,
                    "libvirt restarts dnsmasq (its config file); the bridge stays"),
    "portgroups": LiveList("portgroup", lambda p: p.name, items.portgroup_element, True,
                           "new ports take it; dnsmasq and the bridge are untouched"),
    "devices": LiveList("forward-interface", lambda d: d, items.forward_interface_element, False,
                        "the pool's devices change; NICs in use stay"),
    "ipv6.dhcp": LiveList("range", lambda _r: "range", items.range_element, False,
                          "libvirt restarts dnsmasq (its config file); the bridge stays",
                          items=lambda v: (v,) if v else (), parent=lambda c: c.extras.ipv6_index),
}


NETWORK_FIELDS: tuple[Field[NetworkSpec], ...] = (
    Field("mode", "forward mode: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/forward/@mode",),
          want=lambda s, _f: s.mode, have=lambda c, _o: c.mode,
          export=lambda v: v or None, samples=("nat", "isolated")),
    Field("bridge", "bridge device: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/bridge/@name",),
          want=lambda s, _f: s.bridge, have=lambda c, _o: c.bridge,
          export=lambda v: v or None, samples=("virbr-a", "virbr-b")),
    Field("forwardDev", "forward device: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/forward/@dev", "/network/forward/interface"),
          want=lambda s, _f: s.forward_dev, have=lambda c, _o: c.forward_dev,
          export=lambda v: v or None, samples=("eth0", "eth1")),
    Field("mtu", "MTU: the network is recreated", Impact.RECREATE, shows_live=False, xpaths=("/network/mtu",),
          want=lambda s, _f: s.mtu, have=lambda c, _o: c.mtu,
          export=lambda v: v or None, samples=(1500, 9000)),
    Field("domain", "DNS domain: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/domain/@name",),
          want=lambda s, _f: s.domain, have=lambda c, _o: c.domain,
          export=lambda v: v or None, samples=("lab", "lab2")),
    Field("address", "the host's address: the network is recreated (restarted), guests' NICs re-plugged",
          Impact.RECREATE, shows_live=False, pointer="/spec/ipv4/address", want=_address, have=lambda c, _o: c.address,
          xpaths=("/network/ip/@address", "/network/ip/@prefix", "/network/ip/@netmask"),
          is_declared=lambda s: _ipv4_declared(s, "address"),
          samples=("192.168.150.1/24", "192.168.151.1/24")),
    Field("dhcp", "DHCP range: networkUpdate (delete + add) where the network has one, else recreate",
          Impact.LIVE, shows_live=False, pointer="/spec/ipv4/dhcp", want=_range, have=_have_range,
          xpaths=("/network/ip/dhcp/range",), calls=("networkUpdate",),
          same=lambda w, h: w is None or w == h, impact_of=_range_impact,
          note="networkUpdate ip-dhcp-range (where the network has one): libvirt restarts dnsmasq; "
          "the bridge stays",
          is_declared=lambda s: _ipv4_declared(s, "dhcp"),
          samples=({"start": "192.168.150.10", "end": "192.168.150.99"},
                   {"start": "192.168.150.20", "end": "192.168.150.89"})),
    Field("hosts", "static DHCP leases: networkUpdate of the definition and the running network",
          Impact.LIVE, pointer="/spec/ipv4/dhcp/hosts", want=_leases, have=lambda c, _o: c.dhcp_hosts,
          xpaths=("/network/ip/dhcp/host",), calls=("networkUpdate",),
          same=_same_leases, show=_show_leases, is_declared=lambda s: _dhcp_declared(s, "hosts"),
          note="networkUpdate ip-dhcp-host: dnsmasq re-reads its hosts file (SIGHUP, same process)",
          samples=([], [{"mac": "52:54:00:00:00:01", "ip": "192.168.150.11"}])),
    Field("macvtapMode", "macvtap forward mode: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/forward/@mode",), when=lambda s, _f: s.mode == "macvtap",
          want=lambda s, _f: s.macvtap_mode, have=lambda c, _o: c.extras.macvtap_mode,
          export=lambda v: v if v and v != "bridge" else None, samples=("bridge", "vepa")),
    Field("devices", "a macvtap pool's host devices: networkUpdate forward-interface (add/delete), live",
          Impact.LIVE, xpaths=("/network/forward/interface",), when=lambda s, _f: s.mode == "macvtap",
          want=lambda s, _f: tuple(s.devices), have=lambda c, _o: c.extras.devices, calls=("networkUpdate",),
          same=lambda w, h: set(w) == set(h), show=list, note="networkUpdate forward-interface",
          export=lambda v: list(v) or None, samples=(["mv0"], ["mv0", "mv1"])),
    Field("pf", "SR-IOV physical function of a hostdev pool: the network is recreated", Impact.RECREATE,
          shows_live=False, xpaths=("/network/forward/pf",), when=lambda s, _f: s.mode == "hostdev",
          want=lambda s, _f: s.pf, have=lambda c, _o: c.extras.pf, refuse=_refuse_hostdev,
          export=lambda v: v or None, samples=("eth0", "eth1")),
    Field("virtualport", "Open vSwitch bridge or not: the network is recreated", Impact.RECREATE,
          shows_live=False, xpaths=("/network/virtualport",),
          want=lambda s, _f: s.virtualport, have=lambda c, _o: c.extras.virtualport,
          export=lambda v: v or None, samples=(None, "openvswitch")),
    Field("vlan", "VLAN tags of every port: the network is recreated", Impact.RECREATE, shows_live=False,
          xpaths=("/network/vlan",), want=lambda s, _f: items.spec_vlan(s.vlan),
          have=lambda c, _o: c.extras.vlan, show=_vlan_json, export=_vlan_json,
          samples=({"tags": [42]}, {"tags": [42, 43], "trunk": True})),
    Field("bandwidth", "the network's traffic shaping: the network is recreated", Impact.RECREATE,
          shows_live=False, xpaths=("/network/bandwidth",), want=lambda s, _f: items.spec_bandwidth(s.bandwidth),
          have=lambda c, _o: c.extras.bandwidth, show=_bandwidth_json, export=_bandwidth_json,
          samples=({"inbound": {"average": 1000}}, {"inbound": {"average": 2000, "peak": 4000}})),
    Field("ipv6.address", "the host's IPv6 address: the network is recreated, guests' NICs re-plugged; "
          "dnsmasq sends router advertisements for it", Impact.RECREATE, shows_live=False,
          pointer="/spec/ipv6/address", xpaths=("/network/ip[@family='ipv6']/@address",),
          want=lambda s, _f: s.ipv6.address if s.ipv6 else None, have=lambda c, _o: c.extras.ipv6_address,
          is_declared=_part("ipv6", "address"), export=lambda v: v or None,
          samples=("fd00:150::1/64", "fd00:151::1/64")),
    Field("ipv6.dhcp", "DHCPv6 range: networkUpdate (delete + add, on the IPv6 <ip>) where the network "
          "has one, else recreate", Impact.LIVE, shows_live=False, pointer="/spec/ipv6/dhcp",
          xpaths=("/network/ip[@family='ipv6']/dhcp",), is_declared=_part("ipv6", "dhcp"),
          impact_of=lambda v: Impact.LIVE if v.persistent.extras.ipv6_dhcp else Impact.RECREATE,
          calls=("networkUpdate",),
          note="networkUpdate ip-dhcp-range (parentIndex: the IPv6 <ip>)",
          want=lambda s, _f: (s.ipv6.dhcp.start, s.ipv6.dhcp.end) if s.ipv6 and s.ipv6.dhcp else None,
          have=lambda c, _o: c.extras.ipv6_dhcp, show=lambda v: "-".join(v) if v else None,
          export=lambda v: {"start": v[0], "end": v[1]} if v else None,
          samples=({"start": "fd00:150::10", "end": "fd00:150::99"},
                   {"start": "fd00:150::20", "end": "fd00:150::89"})),
    Field("dns.hosts", "DNS host records: networkUpdate dns-host (add/delete), live; dnsmasq re-reads "
          "them without a restart", Impact.LIVE, pointer="/spec/dns/hosts", xpaths=("/network/dns/host",),
          want=lambda s, _f: items.spec_dns_hosts(s.dns), have=lambda c, _o: c.extras.dns_hosts,
          calls=("networkUpdate",),
          same=_keyed_same(lambda h: h.ip), is_declared=_part("dns", "hosts"), note="networkUpdate dns-host",
          show=lambda v: [f"{h.ip}={','.join(h.hostnames)}" for h in v],
          export=lambda v: [{"ip": h.ip, "hostnames": list(h.hostnames)} for h in v] or None,
          samples=([], [{"ip": "192.168.150.5", "hostnames": ["printer"]}])),
    Field("dns.forwarders", "upstream DNS servers: the network is recreated", Impact.RECREATE, shows_live=False,
          pointer="/spec/dns/forwarders", xpaths=("/network/dns/forwarder",), is_declared=_part("dns", "forwarders"),
          want=lambda s, _f: tuple(s.dns.forwarders) if s.dns else (), have=lambda c, _o: c.extras.dns_forwarders,
          show=list, export=lambda v: list(v) or None, samples=(["9.9.9.9"], ["1.1.1.1"])),
    Field("dns.srv", "DNS SRV records: networkUpdate dns-srv (add/delete), live; libvirt restarts dnsmasq, "
          "not the network", Impact.LIVE, pointer="/spec/dns/srv", xpaths=("/network/dns/srv",),
          want=lambda s, _f: items.spec_srv(s.dns), have=lambda c, _o: c.extras.dns_srv, calls=("networkUpdate",),
          same=lambda w, h: set(w) == set(h), is_declared=_part("dns", "srv"), note="networkUpdate dns-srv",
          show=lambda v: [f"_{x.service}._{x.protocol}" + (f" {x.target}:{x.port}" if x.target else "") for x in v],
          export=lambda v: [_srv_json(x) for x in v] or None,
          samples=([], [{"service": "ldap", "protocol": "tcp", "target": "ldap.lab", "port": 389}])),
    Field("dns.txt", "DNS TXT records: networkUpdate dns-txt (add/delete), live; libvirt restarts dnsmasq, "
          "not the network", Impact.LIVE, pointer="/spec/dns/txt", xpaths=("/network/dns/txt",),
          want=lambda s, _f: items.spec_txt(s.dns), have=lambda c, _o: c.extras.dns_txt, calls=("networkUpdate",),
          same=_keyed_same(lambda t: t.name), is_declared=_part("dns", "txt"), note="networkUpdate dns-txt",
          show=lambda v: [f"{t.name}={t.value}" for t in v],
          export=lambda v: [{"name": t.name, "value": t.value} for t in v] or None,
          samples=([], [{"name": "lab", "value": "hello"}])),
    Field("portgroups", "port groups: networkUpdate portgroup (add/modify/delete), live; new ports "
          "take them", Impact.LIVE, xpaths=("/network/portgroup",),
          want=lambda s, _f: items.spec_portgroups(s.portgroups), have=lambda c, _o: c.extras.portgroups,
          calls=("networkUpdate",),
          same=_keyed_same(lambda p: p.name), note="networkUpdate portgroup",
          show=lambda v: [_portgroup_json(p) for p in v], export=lambda v: [_portgroup_json(p) for p in v] or None,
          samples=([], [{"name": "slow", "bandwidth": {"inbound": {"average": 1000}}}])),
    Field("autostart", "setAutostart", Impact.LIVE, shows_live=False, calls=("setAutostart",),
          want=lambda s, _f: s.autostart, have=lambda _c, o: o.autostart, export=lambda v: v, samples=(True, False)),
    Field("xmlPatches", "re-applied after the declared fields whenever the definition is written; an "
          "unsatisfied patch is drift, repaired by a recreate", Impact.RECREATE, write=write_patches,
          when=lambda s, _f: bool(s.xml_patches), planned_by="xmlPatches"),
    Field("active", "the network is started; guests' NICs re-plugged", Impact.LIVE,
          pointer="/status/active", planned_by="status", calls=("create",)),
)

# The spec (beside host) a field's samples fit, for fields of some modes only; others fit a NAT
# network with a DHCP range. Tests and `explain` write the samples into it.
_OVS: dict[str, Any] = {"mode": "bridge", "bridge": "ovsbr0"}
SAMPLE_BASES: dict[str, dict[str, Any]] = {
    "macvtapMode": {"mode": "macvtap", "devices": ["mv0"]},
    "devices": {"mode": "macvtap", "devices": ["mv0"]},
    "pf": {"mode": "hostdev", "pf": "eth0"},
    "virtualport": _OVS,
    "vlan": {**_OVS, "virtualport": "openvswitch"},
    "ipv6.dhcp": {"mode": "nat", "bridge": "virbr9", "ipv6": {"address": "fd00:150::1/64"}},
}

CONTROL: dict[str, str] = {
    "host": "the host the network is defined on (networks are per host)",
    "ipv4": "holds address, dhcp and dhcp.hosts (above)",
    "ipv6": "holds ipv6.address and ipv6.dhcp (above)",
    "dns": "holds dns.hosts, dns.forwarders, dns.srv and dns.txt (above)",
    "adopt": "take over an existing network of this name",
}
