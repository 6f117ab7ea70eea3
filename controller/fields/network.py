"""The fields of kind: Network, each declared once: how it compares and how a change lands.

``dhcp`` (the range) lands live where the network has a range already (networkUpdate
delete + add), else by a recreate; static leases always land live. Everything else that
virtsync writes needs the network recreated (destroyed and defined again under the same
UUID, edited in place so what virtsync does not model survives; running guests' NICs
are re-plugged).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from controller.fields.applied import declared
from controller.fields.base import Facts, Field
from controller.fields.patches import write_patches
from controller.model.operations import Impact
from controller.model.state import DhcpHostState, NetworkConfig
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


@dataclass(frozen=True)
class NetworkView:
    """What a network field's impact may consult."""

    spec: NetworkSpec
    persistent: NetworkConfig
    live: NetworkConfig | None
    obs: Any  # ObservedNetwork


def _range_impact(v: NetworkView) -> Impact:
    return Impact.LIVE if v.persistent.dhcp_start else Impact.RECREATE


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
          xpaths=("/network/ip/dhcp/range",),
          same=lambda w, h: w is None or w == h, impact_of=_range_impact,
          is_declared=lambda s: _ipv4_declared(s, "dhcp"),
          samples=({"start": "192.168.150.10", "end": "192.168.150.99"},
                   {"start": "192.168.150.20", "end": "192.168.150.89"})),
    Field("hosts", "static DHCP leases: networkUpdate of the definition and the running network",
          Impact.LIVE, pointer="/spec/ipv4/dhcp/hosts", want=_leases, have=lambda c, _o: c.dhcp_hosts,
          xpaths=("/network/ip/dhcp/host",),
          same=_same_leases, show=_show_leases, is_declared=lambda s: _dhcp_declared(s, "hosts"),
          samples=([], [{"mac": "52:54:00:00:00:01", "ip": "192.168.150.11"}])),
    Field("autostart", "setAutostart", Impact.LIVE, shows_live=False,
          want=lambda s, _f: s.autostart, have=lambda _c, o: o.autostart, export=lambda v: v, samples=(True, False)),
    Field("xmlPatches", "re-applied after the declared fields whenever the definition is written; an "
          "unsatisfied patch is drift, repaired by a recreate", Impact.RECREATE, write=write_patches,
          when=lambda s, _f: bool(s.xml_patches), planned_by="xmlPatches"),
    Field("active", "the network is started; guests' NICs re-plugged", Impact.LIVE,
          pointer="/status/active", planned_by="status"),
)

CONTROL: dict[str, str] = {
    "host": "the host the network is defined on (networks are per host)",
    "ipv4": "holds address, dhcp and dhcp.hosts (above)",
    "adopt": "take over an existing network of this name",
}
