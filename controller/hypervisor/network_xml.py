"""Network XML ⇄ model: read a definition's essence, and write spec fields into XML.

Writing edits the XML in place, like domain_xml does for guests: only the
elements of the modelled fields are touched (forward mode, device and pool,
bridge and virtualport, MTU, VLAN, bandwidth, DNS domain and the declared
parts of ``<dns>``, the first IPv4 ``<ip>`` with its DHCP range and static
hosts, the first IPv6 ``<ip>``, port groups, the ownership element), so
whatever virtsync does not model — a second IPv4 ``<ip>``, DNS parts the spec
leaves out, routes, other tools' ``<metadata>`` — survives a redefinition. A
new network is the same edit applied to a skeleton.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from lxml import etree

from controller.fields import network_items as items
from controller.fields.applied import declared
from controller.fields.patches import apply_patches
from controller.fields.xmlutil import child, parse, remove, tostring
from controller.hypervisor import ownership
from controller.model.state import DhcpHostState, NetworkConfig, Owner
from controller.spec.models import NetworkIPv4, NetworkSpec
from controller.spec.network_parts import Dns, NetworkIPv6

SKELETON = "<network><name/></network>"

# The order libvirt writes a network's children in; new elements are placed by it.
_ORDER = ("name", "uuid", "title", "description", "metadata", "forward", "bridge", "mtu", "mac",
          "virtualport", "domain", "dns", "vlan", "bandwidth", "port", "ip", "route", "portgroup")
# Forward modes whose networks are L3 (libvirt routes or NATs for them): a forward device applies.
_L3_FORWARD = ("nat", "route")


# Modes libvirt serves no IP, DHCP or DNS for: the network is the host's L2 (it refuses <ip> on them).
_L2 = ("bridge", "macvtap", "hostdev")


def _forward_mode(root: etree._Element) -> str:
    fwd = root.find("forward")
    return "isolated" if fwd is None else fwd.get("mode", "nat")


def _mode(root: etree._Element) -> str:
    """The spec's mode: libvirt's forward mode, with a bridge-less bridge|private|vepa|passthrough
    forward (a pool of host devices) read as macvtap."""
    mode = _forward_mode(root)
    if mode in items.MACVTAP_MODES and root.find("bridge") is None:
        return "macvtap"
    return mode


def _libvirt_mode(spec: NetworkSpec) -> str:
    return spec.macvtap_mode if spec.mode == "macvtap" else spec.mode


def ipv4_element(root: etree._Element) -> etree._Element | None:
    """virtsync's ``<ip>``: the first one of family ipv4 (or none given). Others are not modelled."""
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") == "ipv4":
            return ip
    return None


def read_network(xml: str) -> tuple[str, str, NetworkConfig, Owner | None]:
    root = parse(xml)
    fwd = root.find("forward")
    mode = _mode(root)
    bridge = root.find("bridge")
    ip = ipv4_element(root)
    address = None
    dhcp_start = dhcp_end = None
    hosts: tuple[DhcpHostState, ...] = ()
    if ip is not None and ip.get("address"):
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
        forward_dev=fwd.get("dev") if fwd is not None and mode in _L3_FORWARD else None,
        address=address,
        dhcp_start=dhcp_start,
        dhcp_end=dhcp_end,
        dhcp_hosts=hosts,
        mtu=int(mtu.get("size", "0")) if mtu is not None else None,
        domain=domain.get("name") if domain is not None else None,
        extras=items.read_extras(root, _forward_mode(root), bridge is not None),
    )
    return root.findtext("name") or "", root.findtext("uuid") or "", config, ownership.find_owner(root)


def network_xml(name: str, spec: NetworkSpec, owner: Owner, uuid: str | None = None,
                base: str | None = None) -> str:
    """A network definition: ``base`` (an existing definition, e.g. the observed persistent XML)
    with the spec's declared fields written into it, or, without ``base``, a new network with
    every field as the spec says."""
    if base is None:
        root = parse(SKELETON)
        edit_network(root, name, spec, owner, uuid, fields=None)
    else:
        root = parse(base)
        edit_network(root, name, spec, owner, uuid, fields=declared(spec))
    return tostring(root)


def edit_network(root: etree._Element, name: str, spec: NetworkSpec, owner: Owner,
                 uuid: str | None = None, fields: Iterable[str] | None = None) -> None:
    """Write spec fields into a network XML tree, in place.

    ``fields`` are spec field names as written in YAML (``mode``, ``bridge``, ``forwardDev``,
    ``mtu``, ``domain``, ``ipv4``); ``None`` writes all of them as the spec says (a new network).
    With ``fields`` given, fields inside ``ipv4`` (``dhcp``, ``dhcp.hosts``) are written only
    where the spec declares them, so what the spec leaves out stays as it is. Name, UUID (when
    given) and ownership are always written, and the spec's xmlPatches are applied after them.
    """
    chosen = None if fields is None else set(fields)

    def want(f: str) -> bool:
        return chosen is None or f in chosen

    name_el = root.find("name")
    if name_el is None:
        name_el = _place(root, "name")
    name_el.text = name
    if uuid:
        uuid_el = root.find("uuid")
        if uuid_el is None:
            uuid_el = _place(root, "uuid")
        uuid_el.text = uuid
    ownership.set_owner(root, owner)
    old_mode = _mode(root)
    if want("mode") or want("macvtapMode"):
        _set_forward(root, _libvirt_mode(spec), _forward_mode(root), spec.mode != old_mode)
    fwd = root.find("forward")
    if want("forwardDev") and fwd is not None:
        _set_forward_dev(fwd, spec.forward_dev)
    if fwd is not None and (want("devices") or want("mode")) and spec.mode == "macvtap":
        _set_pool_devices(fwd, spec.devices)
    if fwd is not None and (want("pf") or want("mode")) and spec.mode == "hostdev":
        _set_pf(fwd, spec.pf)
    mode = spec.mode if want("mode") else old_mode
    if mode in ("macvtap", "hostdev"):
        remove(root.find("bridge"))
    else:
        _set_bridge(root, spec, want("bridge"), old_mode, mode)
    if want("virtualport") or (want("mode") and mode != "bridge"):
        _set_or_remove(root, "virtualport", {"type": spec.virtualport} if spec.virtualport else None)
    if want("vlan"):
        _replace(root, "vlan", items.vlan_element(v) if (v := items.spec_vlan(spec.vlan)) else None)
    if want("bandwidth"):
        _replace(root, "bandwidth", items.bandwidth_element(b) if (b := items.spec_bandwidth(spec.bandwidth))
                 else None)
    if want("portgroups"):
        _set_portgroups(root, spec)
    if want("mtu"):
        _set_or_remove(root, "mtu", {"size": str(spec.mtu)} if spec.mtu else None)
    if want("domain"):
        _set_or_remove(root, "domain", {"name": spec.domain} if spec.domain else None,
                       defaults={"localOnly": "yes"})
    if mode in _L2:
        # A bridge, macvtap or hostdev network is the host's L2: libvirt refuses L3 elements on it
        # (a declared mtu or domain is left for libvirt to refuse, not dropped behind the spec's back).
        drop = ["ip", "mac", "route"] + [t for t, v in (("mtu", spec.mtu), ("domain", spec.domain)) if not v]
        for el in [e for tag in drop for e in root.findall(tag)]:
            root.remove(el)
        dns = root.find("dns")
        if dns is not None and len(dns):
            root.remove(dns)
    else:
        if want("ipv4"):
            _set_ipv4(root, spec.ipv4, full=chosen is None)
        if want("ipv6"):
            _set_ipv6(root, spec.ipv6)
        if want("dns"):
            _set_dns(root, spec, full=chosen is None)
    # Last, whatever fields were chosen: every write (new, recreate, adopt) keeps the patches.
    apply_patches(root, spec.xml_patches)


def _place(root: etree._Element, tag: str) -> etree._Element:
    """A new child ``tag`` of the network, inserted where libvirt's order puts it."""
    el = etree.Element(tag)
    rank = _ORDER.index(tag)
    pos = 0
    for i, c in enumerate(root):
        if isinstance(c.tag, str) and c.tag in _ORDER and _ORDER.index(c.tag) < rank:
            pos = i + 1
    root.insert(pos, el)
    return el


def _set_or_remove(root: etree._Element, tag: str, attrs: dict[str, str] | None,
                   defaults: dict[str, str] | None = None) -> None:
    el = root.find(tag)
    if attrs is None:
        remove(el)
        return
    if el is None:
        el = _place(root, tag)
    for k, v in attrs.items():
        el.set(k, v)
    for k, v in (defaults or {}).items():
        if k not in el.attrib:
            el.set(k, v)


def _drop(el: etree._Element, *attrs: str) -> None:
    for attr in attrs:
        if attr in el.attrib:
            del el.attrib[attr]


def _replace(root: etree._Element, tag: str, new: etree._Element | None) -> None:
    """The child ``tag`` becomes ``new`` (None: removed), where libvirt's order puts it."""
    old = root.find(tag)
    if new is None:
        remove(old)
        return
    if old is not None:
        old.addprevious(new)
        root.remove(old)
        return
    _append(root, new)


def _append(root: etree._Element, el: etree._Element) -> None:
    """Insert ``el`` after every child libvirt writes before it or beside it (same tag)."""
    rank = _ORDER.index(el.tag)
    pos = 0
    for i, c in enumerate(root):
        if isinstance(c.tag, str) and c.tag in _ORDER and _ORDER.index(c.tag) <= rank:
            pos = i + 1
    root.insert(pos, el)


def _set_forward(root: etree._Element, mode: str, old_mode: str, kind_changed: bool = False) -> None:
    fwd = root.find("forward")
    if mode == "isolated":
        remove(fwd)
        return
    if fwd is None:
        fwd = _place(root, "forward")
    elif old_mode != mode or kind_changed:
        # What belonged to the old mode (<nat>, <interface>, <pf>…) goes; a forward device
        # stays when both modes route through one.
        dev = fwd.get("dev") if old_mode in _L3_FORWARD and mode in _L3_FORWARD else None
        for c in list(fwd):
            fwd.remove(c)
        fwd.attrib.clear()
        if dev:
            fwd.set("dev", dev)
    if fwd.get("mode") != mode:
        fwd.set("mode", mode)


def _set_forward_dev(fwd: etree._Element, dev: str | None) -> None:
    if fwd.get("dev") == dev:
        return
    # libvirt lists the device again as <interface dev=…/>: it must match, so it is dropped
    # with the old device and libvirt writes it anew.
    for iface in fwd.findall("interface"):
        fwd.remove(iface)
    if dev:
        fwd.set("dev", dev)
    else:
        del fwd.attrib["dev"]


def _set_pool_devices(fwd: etree._Element, devices: list[str]) -> None:
    """A macvtap pool's ``<interface dev=…/>``: kept ones stay (with what libvirt added), in the
    spec's order; a ``dev`` attribute (libvirt's shorthand for one device) goes with them."""
    old = {i.get("dev"): i for i in fwd.findall("interface")}
    for i in old.values():
        fwd.remove(i)
    if fwd.get("dev") is not None:
        del fwd.attrib["dev"]
    for dev in devices:
        fwd.append(old.get(dev, items.forward_interface_element(dev)))


def _set_pf(fwd: etree._Element, pf: str | None) -> None:
    for el in fwd.findall("pf") + fwd.findall("address"):
        fwd.remove(el)
    if pf:
        fwd.insert(0, etree.Element("pf", dev=pf))
    if fwd.get("managed") is None:
        fwd.set("managed", "yes")  # libvirt detaches each VF from its host driver and back


def _set_portgroups(root: etree._Element, spec: NetworkSpec) -> None:
    """Port groups keyed by name: a kept group keeps what virtsync does not model (its virtualport
    parameters), its default flag, VLAN and bandwidth become the spec's; in the spec's order."""
    old = {p.get("name"): p for p in root.findall("portgroup")}
    for p in old.values():
        root.remove(p)
    for want in items.spec_portgroups(spec.portgroups):
        new = items.portgroup_element(want)
        el = old.get(want.name)
        if el is not None:
            for tag in ("vlan", "bandwidth"):
                remove(el.find(tag))
            if want.default:
                el.set("default", "yes")
            elif "default" in el.attrib:
                del el.attrib["default"]
            for sub in new:
                el.append(sub)
            new = el
        _append(root, new)


def _set_ipv6(root: etree._Element, ipv6: NetworkIPv6 | None) -> None:
    ip = items.ipv6_element(root)
    if ipv6 is None:
        remove(ip)
        return
    if ip is None:
        ip = etree.Element("ip", family="ipv6")
        _append(root, ip)
    iface = ipaddress.IPv6Interface(ipv6.address)
    ip.set("address", str(iface.ip))
    ip.set("prefix", str(iface.network.prefixlen))
    if ipv6.dhcp is None:
        remove(ip.find("dhcp"))
        return
    _set_dhcp_range(ip, ipv6.dhcp.start, ipv6.dhcp.end)


def _forwarders(dns: Dns) -> list[etree._Element]:
    return [etree.Element("forwarder", addr=a) for a in dns.forwarders]


def _txt(dns: Dns) -> list[etree._Element]:
    return [items.txt_element(t) for t in items.spec_txt(dns)]


def _srv(dns: Dns) -> list[etree._Element]:
    return [items.srv_element(s) for s in items.spec_srv(dns)]


def _dns_hosts(dns: Dns) -> list[etree._Element]:
    return [items.dns_host_element(h) for h in items.spec_dns_hosts(dns)]


# <dns> children in libvirt's order, each with the builder of its spec items
_DNS_PARTS: tuple[tuple[str, str, Callable[[Dns], list[etree._Element]]], ...] = (
    ("forwarders", "forwarder", _forwarders),
    ("txt", "txt", _txt),
    ("srv", "srv", _srv),
    ("hosts", "host", _dns_hosts),
)


def _set_dns(root: etree._Element, spec: NetworkSpec, full: bool) -> None:
    """The declared parts of ``<dns>`` (hosts, forwarders, srv, txt) become the spec's; the parts
    it leaves out stay as they are."""
    dns = root.find("dns")
    if spec.dns is None:
        if dns is not None:
            for _, tag, _build in _DNS_PARTS:
                for el in dns.findall(tag):
                    dns.remove(el)
            if not len(dns) and not dns.attrib:
                root.remove(dns)
        return
    if dns is None:
        dns = _place(root, "dns")
    given = declared(spec.dns)
    for part, tag, build in _DNS_PARTS:
        if not full and part not in given:
            continue
        for el in dns.findall(tag):
            dns.remove(el)
        for el in build(spec.dns):
            dns.append(el)
    # libvirt's order (forwarders, txt, srv, host) whatever was kept
    order = [p[1] for p in _DNS_PARTS]
    kids = sorted(dns, key=lambda e: order.index(e.tag) if e.tag in order else len(order))
    for el in kids:
        dns.append(el)
    if not len(dns) and not dns.attrib:
        root.remove(dns)


def _set_bridge(root: etree._Element, spec: NetworkSpec, declared_bridge: bool, old_mode: str,
                mode: str) -> None:
    br = root.find("bridge")
    if spec.bridge and declared_bridge:
        if br is None:
            br = _place(root, "bridge")
        br.set("name", spec.bridge)
    elif declared_bridge or (old_mode == "bridge" and mode != "bridge"):
        # No name: libvirt chooses one (virbrN). A host bridge is never reused as libvirt's own.
        remove(br)
        br = None
    if br is None:
        return
    if mode == "bridge":
        _drop(br, "stp", "delay", "zone")  # libvirt: only for the bridges it makes
    elif spec.bridge and br.get("name") == spec.bridge:
        for attr, value in (("stp", "on"), ("delay", "0")):
            if attr not in br.attrib:
                br.set(attr, value)


def _set_ipv4(root: etree._Element, ipv4: NetworkIPv4 | None, full: bool) -> None:
    ip = ipv4_element(root)
    if ipv4 is None:
        remove(ip)
        return
    if ip is None:
        ip = _place(root, "ip")
    iface = ipaddress.IPv4Interface(ipv4.address)
    ip.set("address", str(iface.ip))
    _drop(ip, "netmask")
    ip.set("prefix", str(iface.network.prefixlen))
    want = ipv4.dhcp
    write_dhcp = full or "dhcp" in ipv4.model_fields_set
    write_hosts = write_dhcp and want is not None and (full or "hosts" in want.model_fields_set)
    dhcp = ip.find("dhcp")
    if write_dhcp and want is None:
        remove(dhcp)
        return
    if dhcp is not None:
        _drop_unfit_dhcp(ip, dhcp, iface.network, spare_first_range=write_dhcp, spare_hosts=write_hosts)
    if not write_dhcp or want is None:
        return
    dhcp = _set_dhcp_range(ip, want.start, want.end)
    if not write_hosts:
        return
    # Static hosts keyed by MAC: kept elements are edited (their other attributes and children
    # stay), the rest removed, new ones added; in the spec's order, before any <bootp>.
    old: dict[str, etree._Element] = {}
    for h in dhcp.findall("host"):
        old.setdefault((h.get("mac") or "").lower(), h)
        dhcp.remove(h)
    bootp = dhcp.find("bootp")
    for host in want.hosts:
        el = old.get(host.mac.lower())
        if el is None:
            el = dhcp_host_element(host.mac, host.ip, host.name)
        else:
            el.set("ip", host.ip)
            if host.name:
                el.set("name", host.name)
            else:
                _drop(el, "name")
        if bootp is not None:
            bootp.addprevious(el)
        else:
            dhcp.append(el)


def _drop_unfit_dhcp(ip: etree._Element, dhcp: etree._Element, net: ipaddress.IPv4Network,
                     spare_first_range: bool, spare_hosts: bool) -> None:
    """Drop the DHCP ranges and static hosts outside the (new) subnet that the spec does not
    rewrite: libvirt refuses them, and a spec that moves the subnet without declaring DHCP must
    still converge. What fits stays; a <dhcp> left with neither goes."""

    def fits(*addrs: str | None) -> bool:
        try:
            return all(a is not None and ipaddress.IPv4Address(a) in net for a in addrs)
        except ValueError:
            return False

    dropped = False
    for i, rng in enumerate(dhcp.findall("range")):
        if not (i == 0 and spare_first_range) and not fits(rng.get("start"), rng.get("end")):
            dhcp.remove(rng)
            dropped = True
    for host in [] if spare_hosts else dhcp.findall("host"):
        if host.get("ip") is not None and not fits(host.get("ip")):
            dhcp.remove(host)
            dropped = True
    if dropped and not spare_first_range and dhcp.find("range") is None and dhcp.find("host") is None:
        ip.remove(dhcp)


def dhcp_host_element(mac: str, ip: str, name: str | None) -> etree._Element:
    el = etree.Element("host", mac=mac, ip=ip)
    if name:
        el.set("name", name)
    return el


def dhcp_host_xml(mac: str, ip: str, name: str | None) -> str:
    return etree.tostring(dhcp_host_element(mac, ip, name), encoding="unicode")


def _set_dhcp_range(ip: etree._Element, start: str, end: str) -> etree._Element:
    """The first <range> of the <ip>'s <dhcp> (made, first in it, if missing) set to start-end;
    the <dhcp>."""
    dhcp = child(ip, "dhcp")
    rng = dhcp.find("range")
    if rng is None:
        rng = etree.Element("range")
        dhcp.insert(0, rng)
    rng.set("start", start)
    rng.set("end", end)
    return dhcp
