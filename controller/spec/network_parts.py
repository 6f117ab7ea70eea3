"""The parts of a kind: Network beyond its forward mode: IPv6, DNS, port groups, VLANs.

NetworkSpec (spec/models.py) holds them; each maps onto one element of libvirt's network XML
(``<ip family='ipv6'>``, ``<dns>``, ``<portgroup>``, ``<vlan>``), read and written by
controller/fields/network_items.py.
"""


import ipaddress
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from controller.spec.base import SpecModel, empty_list
from controller.spec.tuning import Bandwidth
from controller.spec.types import FieldError, Name


def _ipv6(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError as exc:
        raise ValueError(f"not an IPv6 address: {value!r}") from exc


def _ipv6_interface(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"an IPv6 address with its prefix is needed, e.g. fd00:150::1/64, not {value!r}")
    try:
        return str(ipaddress.IPv6Interface(value))
    except ValueError as exc:
        raise ValueError(f"not an IPv6 address/prefix: {value!r}") from exc


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise ValueError(f"not an IP address: {value!r}") from exc


IPv6 = Annotated[str, AfterValidator(_ipv6), Field(examples=["fd00:150::10"])]
IPv6Interface = Annotated[str, AfterValidator(_ipv6_interface), Field(examples=["fd00:150::1/64"])]
IPAddress = Annotated[str, AfterValidator(_ip), Field(examples=["192.168.150.5", "fd00:150::5"])]
HostName = Annotated[str, Field(pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$", examples=["printer"])]
VlanTag = Annotated[int, Field(ge=0, le=4095)]


class Dhcp6(SpecModel):
    start: IPv6
    end: IPv6


class NetworkIPv6(SpecModel):
    """The network's IPv6 side (dual stack beside ipv4). libvirt's dnsmasq sends router
    advertisements on it (stateless autoconfiguration for a /64), and serves DHCPv6 where
    ``dhcp`` is given."""

    address: IPv6Interface = Field(description="The host's IPv6 address on the network, with prefix "
                                   "(a /64 for SLAAC), e.g. fd00:150::1/64.")
    dhcp: Dhcp6 | None = Field(default=None, description="DHCPv6 range {start, end}. Default: none "
                               "(router advertisements only).")

    @model_validator(mode="after")
    def _range_in_prefix(self) -> Self:
        if self.dhcp is not None:
            net = ipaddress.IPv6Interface(self.address).network
            for which in ("start", "end"):
                if ipaddress.IPv6Address(getattr(self.dhcp, which)) not in net:
                    raise FieldError(("dhcp", which), f"DHCPv6 {which} {getattr(self.dhcp, which)} is "
                                     f"outside {net}")
        return self


class DnsHost(SpecModel):
    ip: IPAddress
    hostnames: list[HostName] = Field(min_length=1, description="Names dnsmasq answers with ip.")


class DnsSrv(SpecModel):
    service: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,15}$")] = Field(description="e.g. ldap.")
    protocol: Literal["tcp", "udp"]
    domain: HostName | None = None
    target: HostName | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    priority: int | None = Field(default=None, ge=0, le=65535)
    weight: int | None = Field(default=None, ge=0, le=65535)

    @model_validator(mode="after")
    def _target_needs_port(self) -> Self:
        if (self.target is None) != (self.port is None):
            raise FieldError("port" if self.port is None else "target",
                             "an SRV record with a target needs its port, and a port its target")
        return self


class DnsTxt(SpecModel):
    name: HostName
    value: Annotated[str, Field(min_length=1, max_length=255)]


class Dns(SpecModel):
    """What the network's dnsmasq answers. ``hosts``, ``srv`` and ``txt`` change live
    (networkUpdate); ``forwarders`` by a recreate."""

    hosts: list[DnsHost] = Field(default_factory=empty_list, description="Static names, keyed by ip.")
    forwarders: list[IPAddress] = Field(default_factory=empty_list, description="Upstream DNS servers "
                                        "(default: the host's resolv.conf).")
    srv: list[DnsSrv] = Field(default_factory=empty_list, description="SRV records.")
    txt: list[DnsTxt] = Field(default_factory=empty_list, description="TXT records, keyed by name.")

    @model_validator(mode="after")
    def _keys_unique(self) -> Self:
        for what, keys in (("hosts", [h.ip for h in self.hosts]), ("txt", [t.name for t in self.txt])):
            seen: set[str] = set()
            for i, k in enumerate(keys):
                if k in seen:
                    raise FieldError((what, i), f"{k} is given twice in dns.{what}")
                seen.add(k)
        return self


class Vlan(SpecModel):
    """802.1Q tags libvirt puts on the ports (Open vSwitch networks and SR-IOV VFs only)."""

    tags: list[VlanTag] = Field(min_length=1, description="One tag (access port), or several with "
                                "trunk: true.")
    trunk: bool = Field(default=False, description="A trunk port carrying every tag. Default: false "
                        "(several tags imply a trunk; libvirt says so explicitly).")

    @model_validator(mode="after")
    def _one_tag_or_trunk(self) -> Self:
        if len(self.tags) > 1 and not self.trunk:
            raise FieldError("tags", "several VLAN tags make a trunk: add 'trunk: true'")
        if len(set(self.tags)) != len(self.tags):
            raise FieldError("tags", "a VLAN tag is given twice")
        return self


class Portgroup(SpecModel):
    """A named set of settings guests' NICs choose with ``portgroup:``; changed live."""

    name: Name
    default: bool = Field(default=False, description="NICs that name no portgroup get this one. "
                          "Default: false.")
    vlan: Vlan | None = Field(default=None, description="VLAN tags of the group's ports (Open vSwitch "
                              "or hostdev networks).")
    bandwidth: Bandwidth | None = Field(default=None, description="Traffic shaping of each port "
                                        "(KiB/s, KiB).")


def check_network_parts(spec: Any) -> None:
    """The combinations libvirt refuses, refused with the field named (spec is a NetworkSpec)."""
    mode = spec.mode
    given = spec.model_fields_set
    l2 = mode in ("bridge", "macvtap", "hostdev")  # libvirt runs no IP, DHCP or DNS for these
    if mode == "macvtap" and not spec.devices:
        raise FieldError("mode", "mode macvtap needs 'devices': the host devices guests' NICs sit on")
    if spec.devices and mode != "macvtap":
        raise FieldError("devices", f"'devices' are the host devices of a macvtap pool: mode macvtap, not {mode}")
    if "macvtap_mode" in given and mode != "macvtap":
        raise FieldError("macvtapMode", f"'macvtapMode' applies to mode macvtap, not {mode}")
    if mode == "hostdev" and spec.pf is None:
        raise FieldError("mode", "mode hostdev needs 'pf': the SR-IOV physical function, e.g. eth0")
    if spec.pf is not None and mode != "hostdev":
        raise FieldError("pf", f"'pf' applies to mode hostdev, not {mode}")
    if spec.virtualport is not None and mode != "bridge":
        raise FieldError("virtualport", f"virtualport {spec.virtualport} needs mode bridge (the Open "
                         f"vSwitch bridge), not {mode}")
    if mode in ("macvtap", "hostdev") and spec.bridge is not None:
        raise FieldError("bridge", f"a {mode} network has no bridge")
    for name in ("ipv4", "ipv6", "dns", "domain"):
        if l2 and getattr(spec, name) is not None:
            raise FieldError(name, f"mode {mode} takes no '{name}': libvirt serves no addresses or DNS "
                             "on it (the host's own network does)")
    taggable = spec.virtualport == "openvswitch" or mode == "hostdev"
    if spec.vlan is not None and not taggable:
        raise FieldError("vlan", "libvirt tags VLANs only on Open vSwitch networks (virtualport: "
                         "openvswitch) and hostdev networks")
    names: set[str] = set()
    defaults = 0
    for i, pg in enumerate(spec.portgroups):
        if pg.name in names:
            raise FieldError(("portgroups", i, "name"), f"portgroup {pg.name} is given twice")
        names.add(pg.name)
        defaults += pg.default
        if defaults > 1:
            raise FieldError(("portgroups", i, "default"), "only one portgroup can be the default")
        if pg.vlan is not None and not taggable:
            raise FieldError(("portgroups", i, "vlan"), "libvirt tags VLANs only on Open vSwitch "
                             "networks (virtualport: openvswitch) and hostdev networks")
