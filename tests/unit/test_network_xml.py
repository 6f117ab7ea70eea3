"""Network (and pool) XML written in place: the spec's fields go into an existing definition and
everything virtsync does not model stays as it was; a new network is the same edit on a skeleton."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from lxml import etree

from controller.fields.xmlutil import parse, tostring
from controller.hypervisor.network_xml import edit_network, ipv4_element, network_xml, read_network
from controller.hypervisor.ownership import NAMESPACE, owner_element
from controller.hypervisor.pool_xml import pool_xml
from controller.model.network_state import NetworkExtras
from controller.model.state import DhcpHostState, NetworkConfig, Owner
from controller.spec.models import NetworkSpec, StoragePoolSpec

OWNER = Owner(instance="default", kind="Network", name="lab", digest="sha256:1", applied={"mode": "nat"})
OLD_OWNER = Owner(instance="default", kind="Network", name="lab", digest="sha256:0")
UUID = "0b7f2a3c-1d2e-4f50-8a6b-7c8d9e0f1a2b"


def desired_config(spec: NetworkSpec) -> NetworkConfig:
    """The essence a network defined from ``spec`` must read back as (the test's own expectation)."""
    ip = spec.ipv4
    dhcp = ip.dhcp if ip else None
    return NetworkConfig(
        mode=spec.mode,
        bridge=spec.bridge,
        forward_dev=spec.forward_dev,
        address=str(ipaddress.IPv4Interface(ip.address)) if ip else None,
        dhcp_start=dhcp.start if dhcp else None,
        dhcp_end=dhcp.end if dhcp else None,
        dhcp_hosts=tuple(DhcpHostState(h.mac, h.ip, h.name) for h in dhcp.hosts) if dhcp else (),
        mtu=spec.mtu,
        domain=spec.domain,
    )


def _modelled_v4(config: NetworkConfig) -> NetworkConfig:
    """The essence without IPv6, DNS, port groups…, which these specs do not declare (kept as observed)."""
    return dataclasses.replace(config, extras=NetworkExtras())


def _spec(**fields: Any) -> NetworkSpec:
    return NetworkSpec.model_validate({"host": "h", **fields})


# ------------------------------------------------------- the writer before it edited in place

def _legacy_network_xml(name: str, spec: NetworkSpec, owner: Owner, uuid: str | None = None) -> str:
    """network_xml() as it was when it built every definition from scratch (commit 71e8ff0)."""
    from controller.hypervisor import ownership

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
                el = etree.SubElement(dhcp, "host", mac=h.mac, ip=h.ip)
                if h.name:
                    el.set("name", h.name)
    return tostring(root)


NEW_NETWORKS: dict[str, dict[str, Any]] = {
    "nat-full": {"mode": "nat", "bridge": "virbr-lab", "forwardDev": "eth0", "mtu": 9000,
                 "domain": "lab.lan",
                 "ipv4": {"address": "192.168.150.1/24",
                          "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99",
                                   "hosts": [{"mac": "52:54:00:00:01:01", "ip": "192.168.150.11",
                                              "name": "web1"},
                                             {"mac": "52:54:00:00:01:02", "ip": "192.168.150.12"}]}}},
    "nat-defaults": {"ipv4": {"address": "10.0.0.1/16"}},
    "isolated": {"mode": "isolated", "bridge": "virbr-back",
                 "ipv4": {"address": "10.77.0.1/24", "dhcp": {"start": "10.77.0.100", "end": "10.77.0.199"}}},
    "isolated-bare": {"mode": "isolated"},
    "route": {"mode": "route", "forwardDev": "eth1", "ipv4": {"address": "172.16.5.1/25"}},
    "open": {"mode": "open", "bridge": "virbr-open", "ipv4": {"address": "172.16.6.1/24"}},
    "bridge": {"mode": "bridge", "bridge": "br0"},
}


@pytest.mark.parametrize("case", sorted(NEW_NETWORKS))
@pytest.mark.parametrize("uuid", [None, UUID])
def test_a_new_network_is_what_the_old_builder_made(case: str, uuid: str | None) -> None:
    spec = _spec(**NEW_NETWORKS[case])
    assert network_xml("lab", spec, OWNER, uuid) == _legacy_network_xml("lab", spec, OWNER, uuid)


@pytest.mark.parametrize("case", sorted(NEW_NETWORKS))
def test_a_new_network_reads_back_as_its_spec(case: str) -> None:
    spec = _spec(**NEW_NETWORKS[case])
    name, uuid, config, owner = read_network(network_xml("lab", spec, OWNER, UUID))
    assert (name, uuid, owner) == ("lab", UUID, OWNER)
    assert config == desired_config(spec)


# ------------------------------------------------------------ an observed network, edited

# As libvirt 9.0 writes a NAT network's persistent definition, with what virtsync does not
# model: another tool's metadata, a <nat> port range, DNS forwarder/host/txt, bandwidth, a second
# IPv4 <ip>, an IPv6 <ip> with its own DHCP, a static host with a lease child, port groups.
OBSERVED = f"""<network>
  <name>lab</name>
  <uuid>{UUID}</uuid>
  <metadata>
    <vs:owner xmlns:vs="{NAMESPACE}" instance="default" kind="Network" name="lab" digest="sha256:0">
      <vs:applied>{{}}</vs:applied>
    </vs:owner>
    <other:tag xmlns:other="http://example.com/other/1">keep me</other:tag>
  </metadata>
  <forward mode='nat'>
    <nat>
      <port start='1024' end='65535'/>
    </nat>
  </forward>
  <bridge name='virbr-lab' stp='on' delay='0'/>
  <mac address='52:54:00:aa:bb:cc'/>
  <domain name='lab.lan' localOnly='yes'/>
  <dns>
    <forwarder addr='9.9.9.9'/>
    <txt name='example' value='example value'/>
    <host ip='192.168.150.5'>
      <hostname>printer</hostname>
    </host>
  </dns>
  <bandwidth>
    <inbound average='1000' peak='5000' burst='1024'/>
  </bandwidth>
  <ip address='192.168.150.1' prefix='24'>
    <dhcp>
      <range start='192.168.150.10' end='192.168.150.99'>
        <lease expiry='1' unit='hours'/>
      </range>
      <host mac='52:54:00:00:01:01' name='web1' ip='192.168.150.11'>
        <lease expiry='30' unit='minutes'/>
      </host>
    </dhcp>
  </ip>
  <ip address='10.9.0.1' prefix='24'>
  </ip>
  <ip family='ipv6' address='fd00:150::1' prefix='64'>
    <dhcp>
      <range start='fd00:150::100' end='fd00:150::1ff'/>
    </dhcp>
  </ip>
  <portgroup name='engineering' default='yes'>
    <bandwidth>
      <outbound average='500'/>
    </bandwidth>
  </portgroup>
</network>
"""

BASE_SPEC: dict[str, Any] = {
    "mode": "nat", "bridge": "virbr-lab", "domain": "lab.lan",
    "ipv4": {"address": "192.168.150.1/24",
             "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99",
                      "hosts": [{"mac": "52:54:00:00:01:01", "ip": "192.168.150.11", "name": "web1"}]}},
}


def _c14n(el: etree._Element) -> str:
    return etree.tostring(el, method="c14n").decode()


def _unmodelled(xml: str) -> dict[str, str]:
    """The parts of a definition virtsync does not model, serialised for comparison."""
    root = parse(xml)
    ips = [ip for ip in root.findall("ip") if ip is not ipv4_element(root)]
    meta = root.find("metadata")
    out = {
        "foreign metadata": "".join(_c14n(c) for c in (meta if meta is not None else [])
                                    if not str(c.tag).startswith(f"{{{NAMESPACE}}}")),
        "other ips": "".join(_c14n(ip) for ip in ips),
    }
    for tag in ("dns", "bandwidth", "portgroup", "mac"):
        out[tag] = "".join(_c14n(e) for e in root.findall(tag))
    return out


def _edited(base: str, **spec: Any) -> str:
    return network_xml("lab", _spec(**spec), OWNER, UUID, base=base)


def test_an_address_change_keeps_everything_virtsync_does_not_model_golden() -> None:
    spec = {**BASE_SPEC, "ipv4": {"address": "192.168.160.1/24",
                                  "dhcp": {"start": "192.168.160.10", "end": "192.168.160.99",
                                           "hosts": [{"mac": "52:54:00:00:01:01", "ip": "192.168.160.11",
                                                      "name": "web1"}]}}}
    got = _edited(OBSERVED, **spec)
    # expected: the observed definition with exactly the three addresses and the owner changed
    want = parse(OBSERVED)
    meta = want.find("metadata")
    assert meta is not None
    owner_el = meta.find(f"{{{NAMESPACE}}}owner")
    assert owner_el is not None
    meta.remove(owner_el)  # set_owner puts the new element last in <metadata>
    meta.append(owner_element(OWNER))
    ip = ipv4_element(want)
    assert ip is not None
    ip.set("address", "192.168.160.1")
    rng = ip.find("dhcp/range")
    host = ip.find("dhcp/host")
    assert rng is not None and host is not None
    rng.set("start", "192.168.160.10")
    rng.set("end", "192.168.160.99")
    host.set("ip", "192.168.160.11")
    assert got == tostring(want)


@pytest.mark.parametrize("change", [
    pytest.param({"ipv4": {"address": "192.168.160.1/24",
                           "dhcp": {"start": "192.168.160.10", "end": "192.168.160.50"}}}, id="address"),
    pytest.param({"ipv4": {"address": "192.168.150.1/24",
                           "dhcp": {"start": "192.168.150.100", "end": "192.168.150.200",
                                    "hosts": BASE_SPEC["ipv4"]["dhcp"]["hosts"]}}}, id="dhcp-range"),
    pytest.param({"ipv4": {"address": "192.168.150.1/24",
                           "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99",
                                    "hosts": [{"mac": "52:54:00:00:01:09", "ip": "192.168.150.19"}]}}},
                 id="dhcp-hosts"),
    pytest.param({"mode": "route"}, id="mode-route"),
    pytest.param({"mode": "open"}, id="mode-open"),
    pytest.param({"mode": "isolated"}, id="mode-isolated"),
    pytest.param({"mtu": 1400}, id="mtu"),
    pytest.param({"domain": "other.lan"}, id="domain"),
    pytest.param({"bridge": "virbr-new"}, id="bridge"),
    pytest.param({"forwardDev": "eth0"}, id="forward-dev"),
])
def test_a_change_keeps_what_virtsync_does_not_model(change: dict[str, Any]) -> None:
    spec = {**BASE_SPEC, **change}
    got = _edited(OBSERVED, **spec)
    assert _unmodelled(got) == _unmodelled(OBSERVED)
    # the modelled fields are written as the spec says
    assert _modelled_v4(read_network(got)[2]) == desired_config(_spec(**spec))
    assert read_network(got)[:2] == ("lab", UUID)
    assert read_network(got)[3] == OWNER
    # and written once: no second owner, forward, bridge or virtsync <ip>
    root = parse(got)
    assert len(root.findall(f"metadata/{{{NAMESPACE}}}owner")) == 1
    for tag in ("forward", "bridge", "mtu", "domain"):
        assert len(root.findall(tag)) <= 1, tag
    assert len(root.findall("ip")) == 3


def test_a_dhcp_range_change_keeps_the_range_lease_and_the_static_hosts() -> None:
    spec = {**BASE_SPEC, "ipv4": {"address": "192.168.150.1/24",
                                  "dhcp": {"start": "192.168.150.100", "end": "192.168.150.200"}}}
    root = parse(_edited(OBSERVED, **spec))
    ip = ipv4_element(root)
    assert ip is not None
    rng = ip.find("dhcp/range")
    assert rng is not None
    assert (rng.get("start"), rng.get("end")) == ("192.168.150.100", "192.168.150.200")
    assert rng.find("lease") is not None and rng.find("lease").get("expiry") == "1"  # type: ignore[union-attr]
    # hosts are not declared: the static lease stays, with its own lease child
    host = ip.find("dhcp/host")
    assert host is not None and host.get("mac") == "52:54:00:00:01:01"
    assert host.find("lease") is not None


def test_static_hosts_are_keyed_by_mac_and_edited_in_place() -> None:
    spec = {**BASE_SPEC, "ipv4": {"address": "192.168.150.1/24",
                                  "dhcp": {"start": "192.168.150.10", "end": "192.168.150.99",
                                           "hosts": [{"mac": "52:54:00:00:01:02", "ip": "192.168.150.12"},
                                                     {"mac": "52:54:00:00:01:01", "ip": "192.168.150.21"}]}}}
    root = parse(_edited(OBSERVED, **spec))
    hosts = root.findall("ip/dhcp/host")
    assert [(h.get("mac"), h.get("ip"), h.get("name")) for h in hosts] == [
        ("52:54:00:00:01:02", "192.168.150.12", None),
        ("52:54:00:00:01:01", "192.168.150.21", None),   # its name is no longer declared
    ]
    assert hosts[1].find("lease") is not None            # the kept element's child stays
    # the IPv6 <ip>'s DHCP is not virtsync's
    assert root.find("ip[@family='ipv6']/dhcp/range") is not None


def test_nat_to_bridge_drops_what_a_host_bridge_cannot_have_and_keeps_the_rest() -> None:
    got = parse(_edited(OBSERVED, mode="bridge", bridge="br0"))
    assert got.find("forward") is not None and dict(got.find("forward").attrib) == {"mode": "bridge"}  # type: ignore[union-attr]
    assert got.find("forward/nat") is None
    assert dict(got.find("bridge").attrib) == {"name": "br0"}  # type: ignore[union-attr]
    for tag in ("ip", "mac", "dns", "domain"):  # libvirt 9.0 refuses each of them in mode bridge
        assert got.find(tag) is None, tag
    assert got.find("portgroup") is not None and got.find("bandwidth") is not None
    assert got.find("metadata/{http://example.com/other/1}tag") is not None
    assert _modelled_v4(read_network(tostring(got))[2]) == desired_config(_spec(mode="bridge", bridge="br0"))


def test_bridge_to_nat_lets_libvirt_make_its_own_bridge() -> None:
    bridged = _edited(OBSERVED, mode="bridge", bridge="br0")
    back = parse(_edited(bridged, mode="nat", ipv4={"address": "192.168.150.1/24"}))
    assert back.find("bridge") is None            # not br0: libvirt names its own virbrN
    assert back.find("forward").get("mode") == "nat"  # type: ignore[union-attr]
    assert ipv4_element(back) is not None


def test_undeclared_fields_are_left_as_they_are() -> None:
    root = parse(OBSERVED)
    mtu = etree.Element("mtu", size="1450")
    bridge = root.find("bridge")
    assert bridge is not None
    bridge.addnext(mtu)
    base = tostring(root)
    # only ipv4 declared: mode, bridge, domain, mtu and the DHCP section stay as observed
    got = parse(network_xml("lab", _spec(ipv4={"address": "192.168.150.1/24"}), OWNER, UUID, base=base))
    assert got.find("mtu").get("size") == "1450"  # type: ignore[union-attr]
    assert got.find("domain").get("name") == "lab.lan"  # type: ignore[union-attr]
    assert got.find("forward/nat/port") is not None
    assert got.find("ip/dhcp/range").get("start") == "192.168.150.10"  # type: ignore[union-attr]
    # declared as nothing: removed
    got = parse(_edited(base, **{**BASE_SPEC, "mtu": None, "domain": None}))
    assert got.find("mtu") is None and got.find("domain") is None


def test_a_subnet_move_without_declared_dhcp_drops_only_what_no_longer_fits() -> None:
    got = parse(_edited(OBSERVED, ipv4={"address": "10.20.0.1/16"}))
    ip = ipv4_element(got)
    assert ip is not None and (ip.get("address"), ip.get("prefix")) == ("10.20.0.1", "16")
    assert ip.find("dhcp") is None       # range and host were in 192.168.150.0/24: libvirt refuses them
    # a wider subnet that still holds them keeps them
    got = parse(_edited(OBSERVED, ipv4={"address": "192.168.150.1/23"}))
    assert got.find("ip/dhcp/range") is not None and got.find("ip/dhcp/host") is not None


def test_virtsyncs_ip_is_the_first_ipv4_one_even_after_an_ipv6_one() -> None:
    xml = f"""<network><name>lab</name><uuid>{UUID}</uuid><forward mode='nat'/>
      <ip family='ipv6' address='fd00::1' prefix='64'/>
      <ip address='192.168.150.1' netmask='255.255.255.0'/>
      <ip family='ipv4' address='10.9.0.1' prefix='24'/></network>"""
    assert read_network(xml)[2].address == "192.168.150.1/24"
    got = parse(_edited(xml, ipv4={"address": "192.168.170.1/24"}))
    ips = [(ip.get("family"), ip.get("address"), ip.get("prefix"), ip.get("netmask"))
           for ip in got.findall("ip")]
    assert ips == [("ipv6", "fd00::1", "64", None), (None, "192.168.170.1", "24", None),
                   ("ipv4", "10.9.0.1", "24", None)]


def test_an_ipv4_section_is_added_before_the_unmodelled_ones() -> None:
    xml = f"""<network><name>lab</name><uuid>{UUID}</uuid><forward mode='nat'/>
      <bridge name='virbr-lab'/><ip family='ipv6' address='fd00::1' prefix='64'/>
      <portgroup name='pg'/></network>"""
    got = parse(_edited(xml, ipv4={"address": "192.168.170.1/24"}))
    assert [c.tag for c in got] == ["name", "uuid", "metadata", "forward", "bridge", "ip", "ip", "portgroup"]
    assert got.findall("ip")[0].get("address") == "192.168.170.1"


def test_a_forward_device_change_drops_libvirts_interface_list() -> None:
    xml = f"""<network><name>lab</name><uuid>{UUID}</uuid>
      <forward dev='eth0' mode='nat'><nat><port start='1024' end='65535'/></nat>
        <interface dev='eth0'/></forward><bridge name='virbr-lab'/></network>"""
    got = parse(_edited(xml, forwardDev="eth1"))
    fwd = got.find("forward")
    assert fwd is not None and fwd.get("dev") == "eth1" and fwd.find("interface") is None
    assert fwd.find("nat/port") is not None
    got = parse(_edited(xml, mode="route", ipv4={"address": "10.1.0.1/24"}))
    fwd = got.find("forward")
    assert fwd is not None and dict(fwd.attrib) == {"dev": "eth0", "mode": "route"}
    assert len(fwd) == 0  # <nat> belonged to the old mode


def test_the_uuid_is_kept_and_the_owner_replaced() -> None:
    got = parse(network_xml("lab", _spec(**BASE_SPEC), OWNER, None, base=OBSERVED))
    assert got.findtext("uuid") == UUID
    owners = got.findall(f"metadata/{{{NAMESPACE}}}owner")
    assert len(owners) == 1 and owners[0].get("digest") == OWNER.digest
    other = "11111111-2222-4333-8444-555555555555"
    assert parse(network_xml("lab", _spec(**BASE_SPEC), OWNER, other, base=OBSERVED)).findtext("uuid") == other


def test_editing_twice_changes_nothing_more() -> None:
    spec = _spec(**{**BASE_SPEC, "mode": "route", "mtu": 1400})
    once = network_xml("lab", spec, OWNER, UUID, base=OBSERVED)
    assert network_xml("lab", spec, OWNER, UUID, base=once) == once


def test_edit_network_on_a_tree_with_all_fields_is_the_new_network_writer() -> None:
    root = parse("<network><name/></network>")
    spec = _spec(**NEW_NETWORKS["nat-full"])
    edit_network(root, "lab", spec, OWNER, UUID, fields=None)
    assert tostring(root) == network_xml("lab", spec, OWNER, UUID)


# ------------------------------------------------------------------------------------ pools

def test_a_new_pool_is_what_the_old_builder_made() -> None:
    assert pool_xml("images", StoragePoolSpec(host="h", path="/var/lib/libvirt/images/x")) == (
        '<pool type="dir">\n  <name>images</name>\n  <target>\n    <path>/var/lib/libvirt/images/x</path>\n'
        "  </target>\n</pool>\n"
    )


def test_a_pool_edited_in_place_keeps_its_permissions_and_source() -> None:
    observed = """<pool type='dir'>
      <name>images</name><uuid>9f0c2a3b-1d2e-4f50-8a6b-7c8d9e0f1a2b</uuid>
      <capacity unit='bytes'>1</capacity><allocation unit='bytes'>0</allocation>
      <available unit='bytes'>1</available><source></source>
      <target><path>/srv/images</path>
        <permissions><mode>0711</mode><owner>0</owner><group>0</group></permissions></target></pool>"""
    got = parse(pool_xml("images", StoragePoolSpec(host="h", path="/srv/images"), base=observed))
    assert got.findtext("uuid") == "9f0c2a3b-1d2e-4f50-8a6b-7c8d9e0f1a2b"
    assert got.findtext("target/path") == "/srv/images"
    assert got.findtext("target/permissions/mode") == "0711"
    assert got.find("source") is not None
