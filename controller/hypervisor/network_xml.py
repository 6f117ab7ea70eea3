"""Network XML ⇄ model."""

from __future__ import annotations

import ipaddress

from lxml import etree

from controller.hypervisor import ownership
from controller.hypervisor.xmlutil import parse, tostring
from controller.model.state import DhcpHostState, NetworkConfig, Owner
from controller.spec.models import NetworkSpec


def read_network(xml: str) -> tuple[str, str, NetworkConfig, Owner | None]:
    root = parse(xml)
    fwd = root.find("forward")
    mode = "isolated" if fwd is None else fwd.get("mode", "nat")
    bridge = root.find("bridge")
    ip = root.find("ip")
    address = None
    dhcp_start = dhcp_end = None
    hosts: tuple[DhcpHostState, ...] = ()
    if ip is not None and ip.get("family", "ipv4") == "ipv4" and ip.get("address"):
        prefix = ip.get("prefix") or ip.get("netmask") or "24"
        address = str(ipaddress.IPv4Interface(f"{ip.get('address')}/{prefix}"))
        rng = ip.find("dhcp/range")
        if rng is not None:
            dhcp_start, dhcp_end = rng.get("start"), rng.get("end")
        hosts = tuple(
            DhcpHostState((h.get("mac") or "").lower(), h.get("ip") or "", h.get("name"))
            for h in ip.findall("dhcp/host")
        )
    mtu = root.find("mtu")
    domain = root.find("domain")
    config = NetworkConfig(
        mode=mode,
        bridge=bridge.get("name") if bridge is not None else None,
        forward_dev=fwd.get("dev") if fwd is not None else None,
        address=address,
        dhcp_start=dhcp_start,
        dhcp_end=dhcp_end,
        dhcp_hosts=hosts,
        mtu=int(mtu.get("size", "0")) if mtu is not None else None,
        domain=domain.get("name") if domain is not None else None,
    )
    return root.findtext("name") or "", root.findtext("uuid") or "", config, ownership.find_owner(root)


def network_xml(name: str, spec: NetworkSpec, owner: Owner, uuid: str | None = None) -> str:
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    if uuid:
        etree.SubElement(root, "uuid").text = uuid
    ownership.set_owner(root, owner)
    if spec.mode != "isolated":
        fwd = etree.SubElement(root, "forward", mode=spec.mode)
        if spec.forward_dev:
            fwd.set("dev", spec.forward_dev)
    if spec.bridge:
        attrs = {"name": spec.bridge}
        if spec.mode != "bridge":
            attrs.update(stp="on", delay="0")
        etree.SubElement(root, "bridge", attrs)
    if spec.mtu:
        etree.SubElement(root, "mtu", size=str(spec.mtu))
    if spec.domain:
        etree.SubElement(root, "domain", name=spec.domain, localOnly="yes")
    if spec.ipv4 is not None:
        iface = ipaddress.IPv4Interface(spec.ipv4.address)
        ip = etree.SubElement(root, "ip", address=str(iface.ip), prefix=str(iface.network.prefixlen))
        if spec.ipv4.dhcp is not None:
            dhcp = etree.SubElement(ip, "dhcp")
            etree.SubElement(dhcp, "range", start=spec.ipv4.dhcp.start, end=spec.ipv4.dhcp.end)
            for h in spec.ipv4.dhcp.hosts:
                dhcp.append(dhcp_host_element(h.mac, h.ip, h.name))
    return tostring(root)


def dhcp_host_element(mac: str, ip: str, name: str | None) -> etree._Element:
    el = etree.Element("host", mac=mac, ip=ip)
    if name:
        el.set("name", name)
    return el


def dhcp_host_xml(mac: str, ip: str, name: str | None) -> str:
    return etree.tostring(dhcp_host_element(mac, ip, name), encoding="unicode")


def with_owner(xml: str, owner: Owner) -> str:
    root = parse(xml)
    ownership.set_owner(root, owner)
    return tostring(root)


