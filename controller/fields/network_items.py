"""A network's IPv6, DNS, port groups, VLAN, bandwidth and device pools ⇄ XML and spec values.

One element builder per item serves both the definition writer (network_xml) and the plan's
networkUpdate fragments, so what is sent live is exactly what a recreate would write.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lxml import etree

from controller.model.network_state import (
    BandwidthState,
    DnsHostState,
    DnsSrvState,
    DnsTxtState,
    NetworkExtras,
    PortgroupState,
    Rate,
    VlanState,
)

# libvirt's forward modes of a macvtap pool (mode bridge with a <bridge> element is a host bridge)
MACVTAP_MODES = ("bridge", "private", "vepa", "passthrough")
_SRV_INTS = ("port", "priority", "weight")


# ---------------------------------------------------------------- XML → values

def _int(v: str | None) -> int | None:
    return int(v) if v not in (None, "") else None


def _rate(el: etree._Element | None) -> Rate | None:
    if el is None or el.get("average") is None:
        return None
    return (int(el.get("average", "0")), _int(el.get("peak")), _int(el.get("burst")))


def read_bandwidth(parent: etree._Element) -> BandwidthState | None:
    bw = parent.find("bandwidth")
    if bw is None:
        return None
    return BandwidthState(_rate(bw.find("inbound")), _rate(bw.find("outbound")))


def read_vlan(parent: etree._Element) -> VlanState | None:
    vlan = parent.find("vlan")
    if vlan is None:
        return None
    return VlanState(tuple(int(t.get("id", "0")) for t in vlan.findall("tag")), vlan.get("trunk") == "yes")


def ipv6_element(root: etree._Element) -> etree._Element | None:
    """virtsync's IPv6 ``<ip>``: the first of family ipv6. Others are not modelled."""
    for ip in root.findall("ip"):
        if ip.get("family") == "ipv6":
            return ip
    return None


def read_srv(el: etree._Element) -> DnsSrvState:
    return DnsSrvState(el.get("service", ""), el.get("protocol", ""), el.get("domain"), el.get("target"),
                       *(_int(el.get(k)) for k in _SRV_INTS))


def read_portgroup(el: etree._Element) -> PortgroupState:
    return PortgroupState(el.get("name", ""), el.get("default") == "yes", read_vlan(el), read_bandwidth(el))


def read_extras(root: etree._Element, libvirt_mode: str, has_bridge: bool) -> NetworkExtras:
    fwd = root.find("forward")
    macvtap = libvirt_mode in MACVTAP_MODES and not has_bridge
    devices: tuple[str, ...] = ()
    if macvtap and fwd is not None:
        devices = tuple(i.get("dev", "") for i in fwd.findall("interface"))
        if not devices and fwd.get("dev"):
            devices = (fwd.get("dev", ""),)
    pf = fwd.find("pf") if fwd is not None else None
    vp = root.find("virtualport")
    ips = root.findall("ip")
    ip6 = ipv6_element(root)
    address6 = dhcp6 = None
    if ip6 is not None and ip6.get("address"):
        address6 = str(ipaddress.IPv6Interface(f"{ip6.get('address')}/{ip6.get('prefix') or '64'}"))
        rng = ip6.find("dhcp/range")
        if rng is not None:
            dhcp6 = (rng.get("start", ""), rng.get("end", ""))
    dns = root.find("dns")
    return NetworkExtras(
        macvtap_mode=libvirt_mode if macvtap else None,
        devices=devices,
        pf=pf.get("dev") if pf is not None else None,
        virtualport=vp.get("type") if vp is not None else None,
        vlan=read_vlan(root),
        ipv6_address=address6,
        ipv6_dhcp=dhcp6,
        ipv6_index=ips.index(ip6) if ip6 is not None else -1,
        dns_hosts=tuple(DnsHostState(h.get("ip", ""), tuple(n.text or "" for n in h.findall("hostname")))
                        for h in dns.findall("host")) if dns is not None else (),
        dns_forwarders=tuple(f.get("addr", "") for f in dns.findall("forwarder") if f.get("addr"))
        if dns is not None else (),
        dns_srv=tuple(read_srv(s) for s in dns.findall("srv")) if dns is not None else (),
        dns_txt=tuple(DnsTxtState(t.get("name", ""), t.get("value", "")) for t in dns.findall("txt"))
        if dns is not None else (),
        portgroups=tuple(read_portgroup(p) for p in root.findall("portgroup")),
        bandwidth=read_bandwidth(root),
    )


# ---------------------------------------------------------------- spec → values

def spec_rate(limit: Any) -> Rate | None:
    return (limit.average, limit.peak, limit.burst) if limit is not None else None


def spec_bandwidth(bw: Any) -> BandwidthState | None:
    if bw is None or (bw.inbound is None and bw.outbound is None):
        return None
    return BandwidthState(spec_rate(bw.inbound), spec_rate(bw.outbound))


def spec_vlan(vlan: Any) -> VlanState | None:
    return VlanState(tuple(vlan.tags), vlan.trunk) if vlan is not None else None


def spec_portgroups(groups: Any) -> tuple[PortgroupState, ...]:
    return tuple(PortgroupState(g.name, g.default, spec_vlan(g.vlan), spec_bandwidth(g.bandwidth))
                 for g in groups)


def spec_dns_hosts(dns: Any) -> tuple[DnsHostState, ...]:
    return tuple(DnsHostState(h.ip, tuple(h.hostnames)) for h in dns.hosts) if dns is not None else ()


def spec_srv(dns: Any) -> tuple[DnsSrvState, ...]:
    return tuple(DnsSrvState(s.service, s.protocol, s.domain, s.target, s.port, s.priority, s.weight)
                 for s in dns.srv) if dns is not None else ()


def spec_txt(dns: Any) -> tuple[DnsTxtState, ...]:
    return tuple(DnsTxtState(t.name, t.value) for t in dns.txt) if dns is not None else ()


# ---------------------------------------------------------------- values → XML

def _limit_element(tag: str, rate: Rate) -> etree._Element:
    el = etree.Element(tag, average=str(rate[0]))
    for attr, v in zip(("peak", "burst"), rate[1:], strict=True):
        if v is not None:
            el.set(attr, str(v))
    return el


def bandwidth_element(bw: BandwidthState) -> etree._Element:
    el = etree.Element("bandwidth")
    for tag, rate in (("inbound", bw.inbound), ("outbound", bw.outbound)):
        if rate is not None:
            el.append(_limit_element(tag, rate))
    return el


def vlan_element(vlan: VlanState) -> etree._Element:
    el = etree.Element("vlan")
    if vlan.trunk:
        el.set("trunk", "yes")
    for t in vlan.tags:
        etree.SubElement(el, "tag", id=str(t))
    return el


def dns_host_element(h: DnsHostState) -> etree._Element:
    el = etree.Element("host", ip=h.ip)
    for n in h.hostnames:
        etree.SubElement(el, "hostname").text = n
    return el


def srv_element(s: DnsSrvState) -> etree._Element:
    el = etree.Element("srv", service=s.service, protocol=s.protocol)
    for attr in ("domain", "target", *_SRV_INTS):
        v = getattr(s, attr)
        if v is not None:
            el.set(attr, str(v))
    return el


def txt_element(t: DnsTxtState) -> etree._Element:
    return etree.Element("txt", name=t.name, value=t.value)


def portgroup_element(p: PortgroupState) -> etree._Element:
    el = etree.Element("portgroup", name=p.name)
    if p.default:
        el.set("default", "yes")
    if p.vlan is not None:
        el.append(vlan_element(p.vlan))
    if p.bandwidth is not None:
        el.append(bandwidth_element(p.bandwidth))
    return el


def range_element(r: tuple[str, str]) -> etree._Element:
    return etree.Element("range", start=r[0], end=r[1])


def forward_interface_element(dev: str) -> etree._Element:
    return etree.Element("interface", dev=dev)


def fragment(el: etree._Element) -> str:
    """An element as networkUpdate takes it."""
    return etree.tostring(el, encoding="unicode")
