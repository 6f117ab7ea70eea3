"""The parts of a network's essence beyond its first IPv4: plain values both sides compare."""

from __future__ import annotations

from controller.model.records import record

# A traffic limit: (average, peak, burst), KiB/s and KiB; None where not set.
Rate = tuple[int, int | None, int | None]


@record
class DnsHostState:
    ip: str
    hostnames: tuple[str, ...]


@record
class DnsSrvState:
    service: str
    protocol: str
    domain: str | None = None
    target: str | None = None
    port: int | None = None
    priority: int | None = None
    weight: int | None = None


@record
class DnsTxtState:
    name: str
    value: str


@record
class VlanState:
    tags: tuple[int, ...]
    trunk: bool = False


@record
class BandwidthState:
    inbound: Rate | None = None
    outbound: Rate | None = None


@record
class PortgroupState:
    name: str
    default: bool = False
    vlan: VlanState | None = None
    bandwidth: BandwidthState | None = None


@record
class NetworkExtras:
    """IPv6, DNS, port groups, VLAN, bandwidth and the device pools of macvtap/hostdev/OVS."""

    macvtap_mode: str | None = None  # forward mode of a macvtap network: bridge | private | vepa | passthrough
    devices: tuple[str, ...] = ()  # a macvtap pool's <forward><interface dev=…/>
    pf: str | None = None  # a hostdev pool's <forward><pf dev=…/>
    virtualport: str | None = None  # openvswitch
    vlan: VlanState | None = None
    ipv6_address: str | None = None  # "fd00:150::1/64"
    ipv6_dhcp: tuple[str, str] | None = None  # (start, end)
    ipv6_index: int = -1  # the IPv6 <ip>'s position among the <ip> elements (networkUpdate's parentIndex)
    dns_hosts: tuple[DnsHostState, ...] = ()
    dns_forwarders: tuple[str, ...] = ()
    dns_srv: tuple[DnsSrvState, ...] = ()
    dns_txt: tuple[DnsTxtState, ...] = ()
    portgroups: tuple[PortgroupState, ...] = ()
    bandwidth: BandwidthState | None = None
